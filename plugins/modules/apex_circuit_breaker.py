#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_circuit_breaker
short_description: The Apex circuit breaker and the LLM providers' status pages; reset only when the provider is healthy
version_added: 0.4.0
description:
  - Reads the circuit breaker (state, consecutive failures, the provider that opened it, when) from the API's C(/health),
    and the status pages (Statuspage C(/api/v2/status.json)) of the LLM providers, concurrently.
  - O(state=reset) is the runbook's manual reset, C(POST /admin/circuit-breaker/reset) with the admin bearer token,
    B(only after confirming the provider is healthy) as the runbook says - the provider the breaker names must have a
    status page answering C(indicator=none). Otherwise the reset is refused (RV(refused)) and nothing is sent. A
    closed breaker is no change. The breaker is read again after the reset.
  - The admin token is a C(no_log) option; it is sent only in the C(Authorization) header and never returned.
author:
  - Apex platform team (@apex-platform)
attributes:
  check_mode:
    support: full
    description: Reads and decides; a reset that would be sent is reported (changed) but not sent.
  diff_mode:
    support: none
    description: No diff.
options:
  state:
    description: C(facts) reads; C(reset) resets the breaker when it is safe.
    type: str
    choices: [facts, reset]
    default: facts
  api_url:
    description: Base URL of the Apex API. Falls back to E(APEX_API_URL).
    type: str
    required: true
  admin_token:
    description: Bearer token of C(/admin/*) (needed for O(state=reset)). Falls back to E(APEX_ADMIN_TOKEN).
    type: str
  ca_file:
    description: CA bundle verifying the API and the status pages; empty uses the system trust store.
    type: path
  validate_certs:
    description: Verify TLS certificates.
    type: bool
    default: true
  timeout:
    description: Seconds per HTTP request.
    type: float
    default: 10.0
  providers:
    description: The providers whose status pages are read.
    type: list
    elements: str
    default: [openai, anthropic]
  provider_status_urls:
    description: Status page URL per provider (overrides O(provider_status_url) and the public pages).
    type: dict
    default: {}
  provider_status_url:
    description:
      - Base URL of status pages served as C(<url>/<provider>) (a status proxy; the lab's fakes). Empty uses the
        providers' public Statuspage URLs. Falls back to E(APEX_PROVIDER_STATUS_URL).
    type: str
notes:
  - A status page that cannot be read is C(healthy=null) (unknown), which refuses a reset like an outage does.
"""

EXAMPLES = r"""
- name: Breaker and provider status
  apex.ops.apex_circuit_breaker:
    api_url: https://apex.example.com
  register: breaker

- name: Reset it once the provider is healthy (refused otherwise)
  apex.ops.apex_circuit_breaker:
    state: reset
    api_url: https://apex.example.com
    admin_token: "{{ apex_admin_token }}"
  register: reset
  failed_when: reset.failed and not reset.refused | default(false)
"""

RETURN = r"""
circuit_breaker:
  description: The breaker after the call (state closed/open/unknown, failures, provider, opened_at, reset_at; error when unknown).
  returned: always
  type: dict
  sample: {state: open, failures: 5, provider: openai, opened_at: "2026-12-02T16:00:00Z", reset_at: null}
previous:
  description: The breaker before the call (O(state=reset)).
  returned: success
  type: dict
api_status:
  description: The C(status) of C(/health) (healthy, degraded, ...), null when it did not answer with JSON.
  returned: always
  type: str
force_provider:
  description: The provider routing is forced to (C(APEX__ROUTING__FORCE_PROVIDER)) as C(/health) reports it.
  returned: always
  type: str
providers:
  description: Per provider - url, indicator (none/minor/major/critical), description, healthy (true/false/null = unknown), error.
  returned: always
  type: dict
  sample: {openai: {url: "https://status.openai.com/api/v2/status.json", indicator: major, description: Partial System Outage,
                    healthy: false}}
action:
  description: What O(state=reset) did or would do - C(reset), C(none) (already closed).
  returned: success
  type: str
refused:
  description: Why the reset was refused (the provider is not known to be healthy, the breaker state is unknown).
  returned: failure
  type: str
"""

from ansible.module_utils.basic import env_fallback

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule

ARGUMENT_SPEC = dict(
    state=dict(type="str", choices=["facts", "reset"], default="facts"),
    api_url=dict(type="str", required=True, fallback=(env_fallback, ["APEX_API_URL"])),
    admin_token=dict(type="str", no_log=True, fallback=(env_fallback, ["APEX_ADMIN_TOKEN"])),
    ca_file=dict(type="path"),
    validate_certs=dict(type="bool", default=True),
    timeout=dict(type="float", default=10.0),
    providers=dict(type="list", elements="str", default=["openai", "anthropic"]),
    provider_status_urls=dict(type="dict", default={}),
    provider_status_url=dict(type="str", fallback=(env_fallback, ["APEX_PROVIDER_STATUS_URL"])),
)


def main():
    module = ApexModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    from ansible_collections.apex.ops.plugins.module_utils import circuit_breaker, provider_status
    from ansible_collections.apex.ops.plugins.module_utils.health_gather import probe_api

    p = module.params
    http = dict(timeout=p["timeout"], ca_file=p["ca_file"], validate_certs=p["validate_certs"])
    health_url = p["api_url"].rstrip("/") + "/health"

    def read_breaker():
        return circuit_breaker.breaker_from_health(probe_api(health_url, **http))

    breaker, health = read_breaker()
    urls = provider_status.status_urls(p["providers"], p["provider_status_urls"], p["provider_status_url"])
    providers = provider_status.read_all(urls, **http)
    result = dict(changed=False, circuit_breaker=breaker, providers=providers,
                  api_status=(health or {}).get("status"), force_provider=(health or {}).get("force_provider"))
    if p["state"] == "facts":
        module.exit_json(**result)

    try:
        action = circuit_breaker.plan_reset(breaker, providers)
    except circuit_breaker.ResetRefused as exc:
        module.fail("circuit breaker reset refused: %s" % exc, refused=str(exc), **result)
    result.update(previous=breaker, action="reset" if action == "reset" else "none")
    if action == "reset":
        result["changed"] = True
        if not module.check_mode:
            try:
                circuit_breaker.post_reset(p["api_url"], p["admin_token"], **http)
            except RuntimeError as exc:
                module.fail(str(exc), **result)
            result["circuit_breaker"], health = read_breaker()
            result["api_status"] = (health or {}).get("status")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
