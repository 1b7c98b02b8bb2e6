#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_drain
short_description: Cordon and drain a Kubernetes node through the Eviction API, honouring PodDisruptionBudgets
version_added: "0.2.0"
description:
  - C(state=drain) cordons O(node), evicts its pods through the Eviction API (C(pods/<name>/eviction),
    policy/v1), so the API server applies the PodDisruptionBudgets, and waits until the controllers of the
    evicted pods have as many Ready pods off the node as they had before. The node stays cordoned.
  - An eviction a budget blocks (HTTP 429) is tried again, backing off, until O(eviction_timeout), then reported
    with the budget's numbers; the task fails and nothing is deleted. Only O(force=true) with O(confirm) equal
    to the node name deletes the pods still blocked (and lets a bare pod, which nothing re-creates, go).
  - As kubectl drain, DaemonSet pods, mirror pods and finished pods are skipped; a pod with C(emptyDir) data is
    refused unless O(delete_emptydir_data=true); a bare pod is refused unless forced. A refusal changes nothing
    (the node is not even cordoned).
  - C(state=cordon) and C(state=uncordon) mark the node unschedulable or schedulable again (idempotent).
  - C(state=facts) (default) reports the node, its pods, what a drain would evict, skip or refuse, and the
    budgets of the pods it would evict.
  - The O(namespace) option of the Kubernetes connection is not used; a drain covers every namespace of the
    node unless O(namespaces) or O(pod_selector) narrows it.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.k8s
options:
  state:
    description:
      - What to do with the node.
    type: str
    choices: [facts, drain, cordon, uncordon]
    default: facts
  node:
    description:
      - The node's name.
    type: str
    required: true
  pod_selector:
    description:
      - Only pods matching this label selector (as C(kubectl drain --pod-selector)).
    type: str
  namespaces:
    description:
      - Only pods of these namespaces. Default, every namespace.
    type: list
    elements: str
  delete_emptydir_data:
    description:
      - Evict pods with C(emptyDir) volumes (their data is lost).
    type: bool
    default: false
  force:
    description:
      - Delete pods still blocked by their budget at O(eviction_timeout), and bare pods. Needs O(confirm).
    type: bool
    default: false
  confirm:
    description:
      - Must equal O(node) for O(force=true).
    type: str
  eviction_timeout:
    description:
      - Seconds to keep trying blocked evictions.
    type: float
    default: 300
  wait:
    description:
      - Wait until the evicted pods' controllers have their Ready pods back elsewhere.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds for that wait.
    type: float
    default: 300
"""

EXAMPLES = r"""
- name: What would a drain of node-2 do
  apex.ops.apex_drain:
    node: node-2

- name: Drain node-2 for maintenance (budgets honoured, waits for the pods elsewhere)
  apex.ops.apex_drain:
    state: drain
    node: node-2

- name: Back in service
  apex.ops.apex_drain:
    state: uncordon
    node: node-2
"""

RETURN = r"""
drain:
  description: The node and what happened to its pods.
  returned: always
  type: dict
  contains:
    node:
      description: The node.
      type: str
    cordoned:
      description: Whether the node is unschedulable now.
      type: bool
    was_cordoned:
      description: Whether it already was before the drain (C(drain)).
      type: bool
    evicted:
      description: Pods evicted (C(pod), C(owner), C(attempts), C(result)).
      type: list
      elements: dict
    blocked:
      description: Pods whose eviction a budget still blocked (C(pod), C(attempts), C(message), C(budgets)).
      type: list
      elements: dict
    skipped:
      description: Pods left alone, with the reason.
      type: list
      elements: dict
    to_evict:
      description: The pods a drain evicts (names; with C(facts) also their budgets).
      type: list
    refused:
      description: Pods that make a drain refuse, with the reason (C(facts)).
      type: list
      elements: dict
    replacements:
      description: Per controller, Ready pods off the node against the count before (C(ready_before), C(ready_elsewhere), C(done)).
      type: dict
    timings:
      description: C(eviction_seconds), C(replacement_seconds), C(total_seconds).
      type: dict
  sample:
    node: node-2
    cordoned: true
    evicted: [{pod: apex/apex-api-5d9c7-abcde, attempts: 1, result: evicted}]
msg:
  description: What was done, or why not.
  returned: always
  type: str
last_state:
  description: On a blocked drain or a failed wait, the C(drain) result as far as it got.
  returned: failure
  type: dict
refused:
  description: True when the drain was refused before anything changed.
  returned: failure
  type: bool
"""

from ansible_collections.apex.ops.plugins.module_utils import k8s
from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC

ARGSPEC = dict(
    state=dict(type="str", choices=["facts", "drain", "cordon", "uncordon"], default="facts"),
    node=dict(type="str", required=True),
    pod_selector=dict(type="str"),
    namespaces=dict(type="list", elements="str"),
    delete_emptydir_data=dict(type="bool", default=False),
    force=dict(type="bool", default=False),
    confirm=dict(type="str"),
    eviction_timeout=dict(type="float", default=300),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="float", default=300),
)


def main():
    module = ApexModule(ARGSPEC, fragments=(K8S_ARGSPEC,), requirements=(k8s.REQUIREMENT,), supports_check_mode=True)
    from ansible_collections.apex.ops.plugins.module_utils import drain_plan
    from ansible_collections.apex.ops.plugins.module_utils import k8s_drain

    p = module.params
    state, node = p["state"], p["node"]
    try:
        refusal = drain_plan.force_refusal(node, p["force"], p["confirm"])
        if refusal:
            raise drain_plan.DrainRefused(refusal)
        client = k8s.connect(p)
        if state == "drain":
            result = k8s_drain.drain(client, node, p["pod_selector"], p["namespaces"], p["delete_emptydir_data"],
                                     p["force"], p["eviction_timeout"], p["wait"], p["wait_timeout"], module.check_mode)
        elif state in ("cordon", "uncordon"):
            result = getattr(k8s_drain, state)(client, node, module.check_mode)
        else:
            result = k8s_drain.facts(client, node, p["pod_selector"], p["namespaces"], p["delete_emptydir_data"])
    except drain_plan.DrainRefused as exc:
        module.fail("Refusing: %s. Nothing was changed." % exc, refused=True)
    except k8s_drain.DrainError as exc:
        module.fail(str(exc), last_state=exc.last_state)
    except k8s.KubeConfigError as exc:
        module.fail("Kubernetes connection is not configured: %s" % exc)
    except k8s.KubeApiError as exc:
        module.fail("Kubernetes API error: %s" % exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
