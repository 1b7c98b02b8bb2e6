#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_info
short_description: What is running in the Apex namespace, in one call
version_added: 0.1.0
description:
  - Gathers, in one task, what an on-call procedure needs to know about a namespace
    Deployments and StatefulSets (desired, ready, updated, available, image, revision, rollout
    state), pods (phase, ready, restarts, node, age, last termination reason, why not ready),
    HorizontalPodAutoscalers (min, max, current, desired, CPU target and current, at max), nodes
    (conditions, cordoned), recent Warning events, and C(metrics.k8s.io) usage where served.
  - With C(logs) in O(gather), the log lines of the selected pods of the last O(logs_since) that match O(logs_pattern)
    (the runbook's C(kubectl logs deployment/apex-api --since=10m | grep -i error | tail -50)), one request per pod,
    concurrently, redacted.
  - Issues a handful of list calls concurrently (one per resource kind), never one call per object.
  - Works against any context of the kubeconfig (O(context)), for example the secondary region.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.k8s
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing.
options:
  names:
    description:
      - Only these workloads (C(apex-api), or C(statefulset/postgresql)), the pods they select,
        the HPAs targeting them and the events about any of those.
    type: list
    elements: str
    default: []
  label_selectors:
    description:
      - Label selectors applied server-side to workloads and pods; several are ANDed.
        HPAs and events are then limited to the selected objects.
    type: list
    elements: str
    default: []
  gather:
    description: Which sections to gather.
    type: list
    elements: str
    choices: [workloads, pods, hpas, nodes, events, metrics, logs]
    default: [workloads, pods, hpas, nodes, events, metrics]
  logs_since:
    description: With C(logs) gathered, log lines of the last this long (C(10m), C(1h), seconds); 0 for the whole log.
    type: raw
    default: 10m
  logs_pattern:
    description: With C(logs) gathered, a Python regular expression a line must match (search, not full match).
    type: str
    default: "(?i)error"
  logs_limit:
    description: With C(logs) gathered, at most this many matching lines per pod (the newest).
    type: int
    default: 50
  events_since_minutes:
    description: Warning events seen in the last this many minutes (0 for all).
    type: int
    default: 60
  events_limit:
    description: At most this many events, newest first (0 for all).
    type: int
    default: 50
  fail_on_missing:
    description: Fail when a workload named in O(names) does not exist (otherwise it is listed in RV(missing)).
    type: bool
    default: false
notes:
  - A cluster that does not serve C(metrics.k8s.io) gives RV(metrics) with C(available=false), not an error.
"""

EXAMPLES = r"""
- name: Everything about the namespace
  apex.ops.apex_info:
  register: cluster

- name: Only the API, on the secondary region
  apex.ops.apex_info:
    context: apex-secondary
    names: [apex-api]
    gather: [workloads, pods, hpas]

- name: Recent error lines of the API and the worker pods (kubectl logs --since=10m | grep -i error)
  apex.ops.apex_info:
    names: [apex-api, apex-worker]
    gather: [pods, logs]
    logs_since: 10m
    logs_pattern: "(?i)error"
  register: recent_errors

- name: Pods not running
  ansible.builtin.debug:
    var: cluster.summary.pods_not_running
"""

RETURN = r"""
deployments:
  description: >-
    Deployments (name, desired, current, ready, updated, available, image, images, resources, revision, rollout, ready_ok,
    selector, settings - the C(APEX__*) env vars of the pod template, values from secrets shown as C((valueFrom))).
  returned: when workloads gathered
  type: list
  elements: dict
  sample:
    - name: apex-api
      desired: 3
      ready: 3
      updated: 3
      available: 3
      image: apex/api:1.4.2
      revision: "2"
      rollout: {state: complete, message: successfully rolled out}
statefulsets:
  description: StatefulSets, same fields as RV(deployments).
  returned: when workloads gathered
  type: list
  elements: dict
pods:
  description: Pods (name, phase, ready, restarts, node, age_seconds, last_termination_reason, not_ready_reason, owner, images).
  returned: when pods gathered
  type: list
  elements: dict
hpas:
  description: HPAs (name, target, min_replicas, max_replicas, current_replicas, desired_replicas, cpu_target, cpu_current, at_max, conditions).
  returned: when hpas gathered
  type: list
  elements: dict
nodes:
  description: Nodes (name, ready, cordoned, conditions, problems, roles, allocatable CPU/memory).
  returned: when nodes gathered
  type: list
  elements: dict
events:
  description: Recent Warning events (type, reason, object, message, count, last_seen, age_seconds), newest first.
  returned: when events gathered
  type: list
  elements: dict
metrics:
  description: >-
    C(metrics.k8s.io) usage; C(available) false when not served. Pods sorted by CPU, with percent of their limits
    (cpu_percent_of_limit, memory_percent_of_limit) where limits are set; nodes with percent of allocatable.
  returned: when metrics gathered
  type: dict
summary:
  description: >-
    Counts for health checks - pods_total, pods_not_running (pods of Jobs excluded), pods_with_restarts, max_restarts,
    job_pods_failed, oom_killed,
    hpas_at_max, nodes_not_ready, nodes_cordoned, workloads_not_ready, warning_events.
  returned: always
  type: dict
logs:
  description: >-
    Per pod (pod, lines, matched, error when the log could not be read) the newest O(logs_limit) lines matching
    O(logs_pattern) in the last O(logs_since); C(matched) counts all matching lines.
  returned: when logs gathered
  type: list
  elements: dict
  sample:
    - pod: apex-worker-5d8f7-abcde
      matched: 2
      lines: ['{"msg": "task failed", "error": "provider openai returned an error"}']
missing:
  description: Names in O(names) that do not exist.
  returned: always
  type: list
  elements: str
elapsed_seconds:
  description: Time spent gathering.
  returned: always
  type: float
api_calls:
  description: Number of API list calls issued (concurrently).
  returned: always
  type: int
last_state:
  description:
    - With O(fail_on_missing=true) and names that do not exist, everything gathered (the keys above, and C(context)),
      so the failure shows what the namespace holds. The other failures (connection, API errors, an unsupported
      kind in O(names)) return only C(msg).
  returned: failure
  type: dict
"""

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC
from ansible_collections.apex.ops.plugins.module_utils import k8s

SECTIONS = ["workloads", "pods", "hpas", "nodes", "events", "metrics"]
# Logs cost one request per pod: only when asked for.
ALL_SECTIONS = SECTIONS + ["logs"]

ARGUMENT_SPEC = dict(
    names=dict(type="list", elements="str", default=[]),
    label_selectors=dict(type="list", elements="str", default=[]),
    gather=dict(type="list", elements="str", choices=ALL_SECTIONS, default=SECTIONS),
    logs_since=dict(type="raw", default="10m"),
    logs_pattern=dict(type="str", default="(?i)error"),
    logs_limit=dict(type="int", default=50),
    events_since_minutes=dict(type="int", default=60),
    events_limit=dict(type="int", default=50),
    fail_on_missing=dict(type="bool", default=False),
)


def main():
    module = ApexModule(
        argument_spec=ARGUMENT_SPEC,
        fragments=(K8S_ARGSPEC,),
        requirements=(k8s.REQUIREMENT,),
        supports_check_mode=True,
    )
    from ansible_collections.apex.ops.plugins.module_utils import k8s_info, k8s_logs
    from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration
    from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import WorkloadError

    params = module.params
    sections = params["gather"]
    want_logs = "logs" in sections
    try:
        since = parse_duration(params["logs_since"], "logs_since") if want_logs else 0
        if want_logs:
            k8s_logs.compile_pattern(params["logs_pattern"])
            sections = [s for s in sections if s != "logs"]
            if "pods" not in sections:
                sections.append("pods")
        client = k8s.connect(params)
        info = k8s_info.gather(
            client, params["namespace"], names=params["names"],
            label_selector=",".join(params["label_selectors"]) or None,
            sections=sections, events_since_minutes=params["events_since_minutes"],
            events_limit=params["events_limit"])
        if want_logs:
            info["logs"] = k8s_logs.grep_pods(client, params["namespace"], info["pods"], params["logs_pattern"],
                                              since, limit=params["logs_limit"])
            if "pods" not in params["gather"]:
                del info["pods"]
    except (WorkloadError, ValueError) as exc:
        module.fail(str(exc))
    except k8s.KubeConfigError as exc:
        module.fail("Kubernetes connection is not configured: %s" % exc)
    except k8s.KubeApiError as exc:
        module.fail("Kubernetes API error: %s" % exc)
    info["context"] = client.connection.get("context")
    if params["fail_on_missing"] and info["missing"]:
        module.fail("not found in namespace %s: %s" % (params["namespace"], ", ".join(info["missing"])),
                    last_state=info)
    module.exit_json(changed=False, **info)


if __name__ == "__main__":
    main()
