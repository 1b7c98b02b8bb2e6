#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_alert_plan
short_description: Judge an Apex alert's diagnosis (the runbook's root-cause tables) and plan the safe responses
version_added: 0.4.0
description:
  - Pure; reads nothing and changes nothing. Takes what the read-only modules returned for an alert and the actions the
    operator enabled, and returns the causes the evidence points at (the root-cause tables of the runbook's
    "Monitoring Alerts and Responses"), and a plan the alert roles hand to the changing modules as is - RV(rollout_targets)
    to M(apex.ops.apex_rollout), RV(scale) to M(apex.ops.apex_scale), RV(server_settings) to M(apex.ops.apex_db_maint).
  - "Each requested action is guarded as when run by hand, and an unsafe one is not planned but listed in RV(refused)
    with why - worker concurrency and pool sizes only go down (and not below 1), the circuit-breaker threshold and
    max_connections only up to a ceiling, the API only scales up, traffic is only forced onto a provider whose status
    page says it is healthy and that is not the failing one, and the API pool is only raised when the pools of every
    replica still fit in the server's max_connections."
  - Used by the roles alert_task_failure, alert_high_latency, alert_db_connections and alert_circuit_breaker.
author:
  - Apex platform team (@apex-platform)
attributes:
  check_mode:
    support: full
    description: Pure; the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing.
options:
  alert:
    description: Which alert's response.
    type: str
    required: true
    choices: [task_failure, high_latency, db_connections, circuit_breaker]
  diagnosis:
    description:
      - What was read, by key - C(api), C(worker) (M(apex.ops.apex_info) results of the Deployments, with C(settings),
        C(pods), C(metrics)), C(logs) (apex_info C(logs)), C(database) (M(apex.ops.apex_db_maint) facts),
        C(failed_tasks) (apex_db_maint C(task_stats.failed)), C(providers) and C(breaker)
        (M(apex.ops.apex_circuit_breaker) results), C(redis_latency) (M(apex.ops.apex_queue) C(latency)).
    type: dict
    required: true
  requested:
    description:
      - The actions the operator enabled (unset or empty ones are not planned) - C(worker_concurrency),
        C(fallback_provider) (task_failure); C(api_replicas), C(api_max_connections) (high_latency); C(pool_sizes)
        (component to size), C(max_connections) (db_connections); C(switch_provider), C(failure_threshold)
        (circuit_breaker).
    type: dict
    default: {}
  limits:
    description:
      - Thresholds and ceilings, each defaulting as listed - C(cpu_percent) 85, C(slow_statement_ms) 500,
        C(redis_latency_ms) 10, C(connections_percent) 80, C(app_share_percent) 50, C(max_connections_ceiling) 1000,
        C(failure_threshold_ceiling) 50.
    type: dict
    default: {}
  deployments:
    description: Deployment name per component.
    type: dict
    default: {api: apex-api, worker: apex-worker}
"""

EXAMPLES = r"""
- name: Judge and plan the ApexHighTaskFailureRate response
  apex.ops.apex_alert_plan:
    alert: task_failure
    diagnosis:
      worker: "{{ worker_info }}"
      logs: "{{ logs.logs }}"
      failed_tasks: "{{ stats.task_stats.failed }}"
      providers: "{{ breaker.providers }}"
    requested:
      worker_concurrency: 1
      fallback_provider: anthropic
  register: plan

- name: Apply the planned settings
  apex.ops.apex_rollout:
    targets: "{{ plan.rollout_targets }}"
  when: plan.rollout_targets | length > 0
"""

RETURN = r"""
causes:
  description: The root causes the evidence points at - cause, evidence (up to 10 lines), action (the runbook's).
  returned: always
  type: list
  elements: dict
  sample: [{cause: LLM provider outage, evidence: ["openai status page: major (Partial System Outage)"],
            action: "Enable the fallback provider, notify stakeholders"}]
findings:
  description: The numbers the judgement used (per alert).
  returned: always
  type: dict
changes:
  description: Each planned change - setting, deployment (null for a server setting), before, after.
  returned: always
  type: list
  elements: dict
rollout_targets:
  description: Planned env changes as M(apex.ops.apex_rollout) C(targets) (name, env).
  returned: always
  type: list
  elements: dict
scale:
  description: Planned scale as M(apex.ops.apex_scale) options (name, replicas, current_replicas), or null.
  returned: always
  type: dict
server_settings:
  description: Planned PostgreSQL settings for M(apex.ops.apex_db_maint) C(state=settings).
  returned: always
  type: dict
notes:
  description: Requested actions that are no change (already set), and hints such as how to enable pg_stat_statements.
  returned: always
  type: list
  elements: str
refused:
  description: Requested actions that were not planned, with why.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule

ARGUMENT_SPEC = dict(
    alert=dict(type="str", required=True, choices=["task_failure", "high_latency", "db_connections", "circuit_breaker"]),
    diagnosis=dict(type="dict", required=True),
    requested=dict(type="dict", default={}),
    limits=dict(type="dict", default={}),
    deployments=dict(type="dict", default={"api": "apex-api", "worker": "apex-worker"}),
)


def main():
    module = ApexModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    from ansible_collections.apex.ops.plugins.module_utils import alert_plan

    p = module.params
    try:
        plan = alert_plan.plan_response(p["alert"], p["diagnosis"], p["requested"], p["limits"], p["deployments"])
    except (ValueError, TypeError) as exc:
        module.fail("cannot plan the %s response: %s" % (p["alert"], exc))
    module.exit_json(changed=False, **plan)


if __name__ == "__main__":
    main()
