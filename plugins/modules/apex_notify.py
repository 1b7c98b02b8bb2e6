#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_notify
short_description: Post the runbook's incident and maintenance messages to Slack and JSON webhooks
version_added: 0.2.0
description:
  - Renders one of the runbook's communication templates - incident declared (C(incident_initial)), incident update
    (C(incident_update)), incident resolved (C(incident_resolved)), maintenance started (C(maintenance_start)), maintenance
    complete (C(maintenance_complete)) - from the facts given, and posts it to each webhook in O(webhooks) - a
    Slack-compatible incoming webhook (C(kind=slack), the text in mrkdwn) or a generic JSON webhook such as a status page
    (C(kind=json), the same content as fields).
  - Delivery is retried (connection errors, timeouts, 429 and 5xx; with a doubling delay). A delivery that still fails is
    reported in RV(deliveries) and as a warning, and does not fail the task unless O(fail_on_error=true) - a message must
    never stop a maintenance midway.
  - Nothing secret goes into a message - facts whose name says secret (password, token, key, DSN, webhook URL...) are
    dropped and listed in RV(redacted_fields), and every text is cleaned of URL credentials, DSN and SQL passwords, bearer
    tokens and Slack webhook URLs. Webhook URLs are credentials - they are never shown; a target is named by its host and kind.
author:
  - Apex platform team (@apex-platform)
attributes:
  check_mode:
    support: full
    description: Renders the message and posts nothing.
  diff_mode:
    support: none
    description: No diff.
options:
  template:
    description: Which template.
    type: str
    required: true
    choices: [incident_initial, incident_update, incident_resolved, maintenance_start, maintenance_complete]
  title:
    description: Brief description (incident title, or what the maintenance does). Required for every message but C(incident_update).
    type: str
  severity:
    description: C(P1) to C(P4) (C(1) to C(4) also accepted). Required for incident messages.
    type: str
  status:
    description:
      - Incident status (C(Investigating), C(Identified), C(Monitoring), C(Resolved)) or the maintenance's status/outcome.
        Required for C(incident_update) and C(maintenance_complete).
    type: str
  summary:
    description: What is known / what changed / what was done, in a sentence or two.
    type: str
  impact:
    description: What users are experiencing (or will, during a maintenance).
    type: str
  actions:
    description: Actions being taken (initial) or completed (update, maintenance).
    type: list
    elements: str
  next_steps:
    description: Next steps (update) or follow-up actions (resolved).
    type: list
    elements: str
  facts:
    description:
      - The template's other fields, by name - C(detection_time), C(incident_commander), C(next_update), C(channel), C(time),
        C(duration), C(metrics) (a dict such as C(error_rate), C(latency_p95_ms)), C(resolution_time), C(root_cause),
        C(resolution), C(impact_summary), C(postmortem), C(maintenance_type), C(change_request), C(approved_by), C(window),
        C(expected_duration), C(checks) (a dict). Unknown names are kept in the JSON payload.
    type: dict
    default: {}
  webhooks:
    description:
      - Where to post. Empty - the message is only rendered (and returned).
    type: list
    elements: dict
    default: []
    suboptions:
      url:
        description: The webhook URL. A credential - never shown.
        type: str
        required: true
      kind:
        description: C(slack) (an incoming webhook, C({"text"}) in mrkdwn) or C(json) (the message as fields).
        type: str
        choices: [slack, json]
        default: json
      headers:
        description: Extra request headers, for example the authorization of a status page. Never shown.
        type: dict
  retries:
    description: Attempts per webhook (at least 1).
    type: int
    default: 3
  retry_delay:
    description: Delay before the first retry, doubling after each (at most 10 s); a duration such as C(1s) or seconds.
    type: raw
    default: 1s
  timeout:
    description: Timeout of one attempt, a duration or seconds.
    type: raw
    default: 10s
  validate_certs:
    description: Verify the webhooks' TLS certificates.
    type: bool
    default: true
  ca_file:
    description: CA bundle to verify the webhooks' certificates with (default the system's).
    type: path
  fail_on_error:
    description: Fail the task when a webhook could not be reached after the retries (default - warn and go on).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Declare an incident
  apex.ops.apex_notify:
    template: incident_initial
    severity: P2
    title: Task execution failing
    impact: Tasks submitted since 14:05 UTC are not processed
    summary: Workers crash-loop after the 1.4.2 deploy
    actions: [Roll back to 1.4.1, Requeue the dead letters]
    facts:
      detection_time: "2026-12-02 14:07 UTC"
      incident_commander: "@oncall"
      next_update: "14:45 UTC"
    webhooks: "{{ apex_notify_webhooks }}"

- name: Maintenance complete, from the maintenance report
  apex.ops.apex_notify:
    template: maintenance_complete
    title: Database maintenance
    status: completed
    facts:
      change_request: CHG-1234
      duration: 14m 3s
      checks: {health: ok, error_rate: 0.1%}
    webhooks:
      - {url: "{{ slack_webhook_url }}", kind: slack}
      - {url: https://status.example.com/api/incidents, kind: json, headers: {Authorization: "Bearer {{ statuspage_token }}"}}
"""

RETURN = r"""
text:
  description: The message as posted to Slack webhooks (mrkdwn).
  returned: always
  type: str
  sample: ":white_check_mark: *MAINTENANCE COMPLETE*\n\n*Title:* Database maintenance\n\n*Outcome:* completed"
payload:
  description: The body posted to JSON webhooks (C(source), C(kind), C(heading), C(title), C(severity), C(status), C(fields), C(text)).
  returned: always
  type: dict
deliveries:
  description: Per webhook - C(target) (host and kind, never the URL), C(kind), C(delivered), C(status) (last HTTP status), C(attempts), C(error).
  returned: always
  type: list
  elements: dict
delivered:
  description: True when every webhook got the message (true when there were none).
  returned: always
  type: bool
redacted_fields:
  description: Facts left out of the message because their name says secret.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration

ARGUMENT_SPEC = dict(
    template=dict(type="str", required=True, choices=["incident_initial", "incident_update", "incident_resolved",
                                                      "maintenance_start", "maintenance_complete"]),
    title=dict(type="str"),
    severity=dict(type="str"),
    status=dict(type="str"),
    summary=dict(type="str"),
    impact=dict(type="str"),
    actions=dict(type="list", elements="str"),
    next_steps=dict(type="list", elements="str"),
    facts=dict(type="dict", default={}),
    webhooks=dict(type="list", elements="dict", default=[], options=dict(
        url=dict(type="str", required=True, no_log=True),
        kind=dict(type="str", default="json", choices=["slack", "json"]),
        headers=dict(type="dict", no_log=True),
    )),
    retries=dict(type="int", default=3),
    retry_delay=dict(type="raw", default="1s"),
    timeout=dict(type="raw", default="10s"),
    validate_certs=dict(type="bool", default=True),
    ca_file=dict(type="path"),
    fail_on_error=dict(type="bool", default=False),
)


def main():
    module = ApexModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    from ansible_collections.apex.ops.plugins.module_utils import notify_messages, webhook_delivery

    params = module.params
    webhooks = params["webhooks"] or []
    secrets = []
    for hook in webhooks:
        secrets.append(hook["url"])
        secrets.extend(str(v) for v in (hook.get("headers") or {}).values())
    facts = dict(params["facts"] or {})
    for name in ("title", "severity", "status", "summary", "impact", "actions", "next_steps"):
        if params[name] is not None:
            facts[name] = params[name]
    try:
        message = notify_messages.render(params["template"], facts, secrets)
        delay = parse_duration(params["retry_delay"], "retry_delay")
        timeout = parse_duration(params["timeout"], "timeout")
    except ValueError as exc:
        module.fail(str(exc))
    result = dict(changed=False, text=message.text, payload=message.json_payload(), deliveries=[], delivered=True,
                  redacted_fields=message.redacted)
    if module.check_mode:
        module.exit_json(**result)
    for hook in webhooks:
        kind = hook.get("kind") or "json"
        body = message.slack_payload() if kind == "slack" else message.json_payload()
        outcome = webhook_delivery.deliver(hook["url"], kind, body, attempts=params["retries"], delay=delay,
                                           timeout=timeout, validate_certs=params["validate_certs"],
                                           ca_file=params["ca_file"], headers=hook.get("headers") or {})
        result["deliveries"].append(outcome)
        result["changed"] = result["changed"] or outcome["delivered"]
    failed = [d for d in result["deliveries"] if not d["delivered"]]
    result["delivered"] = not failed
    for outcome in failed:
        module.warn("the %s message did not reach %s after %d attempt(s): %s"
                    % (params["template"], outcome["target"], outcome["attempts"], outcome["error"]))
    if failed and params["fail_on_error"]:
        module.fail("the %s message did not reach %s" % (params["template"], ", ".join(d["target"] for d in failed)),
                    **dict((k, v) for k, v in result.items() if k != "changed"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
