#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_scale
short_description: Scale Apex Deployments and StatefulSets safely, in parallel, HPA-aware
version_added: 0.1.0
description:
  - Sets the replica count of one or several Deployments or StatefulSets, by name or label
    selector, all B(in parallel) in one call, and optionally waits (watch API, monotonic deadline)
    until every target has rolled out and its ready replicas equal the desired count.
  - Sets HorizontalPodAutoscaler (autoscaling/v2) min/max replicas and target CPU utilisation.
  - HPA-aware. When an HPA governs a target, a replica count outside its [min, max] is refused
    with an explanation (the HPA would undo it), unless O(hpa_adjust=true) moves the bound to the
    requested count too. The HPA is patched before the workload so they never disagree.
    Scaling such a target to 0 (which disables the HPA and takes the service down) is refused
    unless O(allow_zero=true).
  - Saves the current replicas and HPA bounds of the targets in the cluster (ConfigMap
    C(apex-ops-scale-state), one JSON record per O(state_name)) and restores exactly that later.
  - Refuses a replica count, or an HPA maxReplicas, raised above a replica ceiling (twice the HPA's
    maxReplicas, twice the current replicas, or the pod capacity of the ready schedulable nodes,
    whichever is largest; at least 10) unless O(allow_above_ceiling=true) confirms it, or
    O(max_replicas_ceiling) sets the ceiling. The refusal names the ceiling and how it was derived.
  - Reports what the cluster ended at (read back after the wait), and warns when that is not what
    this call set (another writer changed it afterwards).
  - When a target does not get ready in time, or a write fails, the targets changed by this call
    are put back to the state they had before it (O(rollback_on_failure)), and the error lists per
    target the last observed ready/desired counts and the pods that were not ready, with why.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.k8s
attributes:
  check_mode:
    support: full
    description: Plans and reports every change (before/after per target) without writing.
  diff_mode:
    support: full
    description: Before/after replicas and HPA bounds per target.
options:
  names:
    description:
      - Targets by name. C(apex-api) is a O(kind) object; C(statefulset/postgresql) or
        C(deployment/apex-worker) names the kind explicitly.
    type: list
    elements: str
    default: []
  label_selectors:
    description:
      - Targets by label selector (for example C(app.kubernetes.io/part-of=apex)); every O(kind)
        object matching a selector is a target.
    type: list
    elements: str
    default: []
  kind:
    description:
      - Kind of targets given without an explicit kind.
    type: str
    choices: [Deployment, StatefulSet]
    default: Deployment
  targets:
    description:
      - Targets with their own settings, for changes that differ per target in one call. Each
        entry overrides the top-level options of the same name.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Target name (C(apex-api) or C(statefulset/postgresql)). Exclusive with O(targets[].label_selector).
        type: str
      label_selector:
        description: Label selector; every matching object of the kind is a target.
        type: str
      kind:
        description: Kind of the target.
        type: str
        choices: [Deployment, StatefulSet]
      replicas:
        description: Absolute replica count.
        type: int
      replicas_delta:
        description: Relative change, as for the top-level O(replicas_delta).
        type: raw
      current_replicas:
        description: Precondition, as for the top-level O(current_replicas).
        type: int
      hpa_min_replicas:
        description: HPA minReplicas.
        type: int
      hpa_max_replicas:
        description: HPA maxReplicas.
        type: int
      hpa_target_cpu:
        description: HPA target average CPU utilisation, percent.
        type: int
      restart:
        description: Rolling restart of this target, as for the top-level O(restart).
        type: bool
  replicas:
    description:
      - Absolute replica count for every target. Exclusive with O(replicas_delta).
      - Leave both unset to change only HPA settings, or only to wait.
    type: int
  replicas_delta:
    description:
      - Relative change of the current replica count, a signed whole number such as C(+2),
        C("+2"), C(2) or C(-1). The result may not go below zero. Exclusive with O(replicas).
    type: raw
  current_replicas:
    description:
      - Precondition. Each target must have exactly this many replicas (spec) now, or the call fails
        and changes nothing. The write is a PUT with the read resourceVersion, so it also fails
        when someone scaled in between.
    type: int
  hpa_min_replicas:
    description: Set the governing HPA's minReplicas.
    type: int
  hpa_max_replicas:
    description: Set the governing HPA's maxReplicas.
    type: int
  hpa_target_cpu:
    description: Set the governing HPA's target average CPU utilisation (percent, autoscaling/v2 Resource metric).
    type: int
  restart:
    description:
      - Rolling restart of every target (what C(kubectl rollout restart) does - a new
        C(kubectl.kubernetes.io/restartedAt) pod template annotation). Always a change; with O(wait)
        it waits for the new pods to be rolled out and ready.
    type: bool
    default: false
  hpa_adjust:
    description:
      - When the requested replica count is outside the governing HPA's bounds, move the bound to
        it (minReplicas down or maxReplicas up) instead of refusing.
    type: bool
    default: false
  allow_zero:
    description:
      - Allow scaling a target governed by an HPA from a running count to V(0) (by O(replicas) or
        O(replicas_delta)). Without it such a request is refused and nothing changes, because at
        zero the HPA stops autoscaling (C(ScalingDisabled)) and the service has no pods until someone scales
        it up again.
      - A target already at 0, a target without an HPA, and O(restore_state) (which puts back what
        was recorded) do not need it.
    type: bool
    default: false
  max_replicas_ceiling:
    description:
      - The replica ceiling for every target, instead of the derived one. A replica count or HPA
        maxReplicas raised above it is refused unless O(allow_above_ceiling=true).
      - Unset, the ceiling is the largest of 2 x the governing HPA's maxReplicas (before this call),
        2 x the current replicas, the sum of C(status.allocatable.pods) of the Ready, schedulable nodes
        without a C(NoSchedule)/C(NoExecute) taint (read only when needed; skipped when the nodes cannot
        be listed), and 10.
    type: int
  allow_above_ceiling:
    description:
      - Confirm a replica count or HPA maxReplicas above the replica ceiling (see O(max_replicas_ceiling)).
        Without it such a request is refused in check mode and for real, and nothing changes.
      - Lowering a count, and O(restore_state) (which puts back recorded counts), are never checked.
    type: bool
    default: false
  wait:
    description:
      - Wait until every target has rolled out and its ready replicas equal its desired count.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait, for all targets together (one monotonic deadline).
    type: int
    default: 300
  rollback_on_failure:
    description:
      - When a target fails to scale or does not get ready in time, put every target changed by
        this call back to its previous replicas and HPA settings (without waiting for that).
    type: bool
    default: true
  save_state:
    description:
      - Before changing anything, record the targets' current replicas and HPA bounds under
        O(state_name) in the ConfigMap O(state_configmap). A record that has not been restored yet
        is kept (not overwritten) unless O(overwrite_saved=true), so a repeated run keeps the
        pre-event state.
    type: bool
    default: false
  restore_state:
    description:
      - Restore the replicas and HPA bounds recorded under O(state_name); the targets are the ones
        recorded. Fails when no such record exists. The record is kept, marked C(restored_at).
      - Exclusive with the target and scaling options.
    type: bool
    default: false
  state_name:
    description: Name of the saved-state record (for example the event's name).
    type: str
    default: default
  overwrite_saved:
    description: With O(save_state), replace an existing record that has not been restored yet.
    type: bool
    default: false
  state_configmap:
    description: ConfigMap (in O(namespace)) holding saved states.
    type: str
    default: apex-ops-scale-state
notes:
  - Targets are scaled concurrently (one thread each) and watched individually
    (C(fieldSelector=metadata.name=...)); a rollout of several targets takes as long as the slowest.
  - Within the HPA's bounds a manual scale is a starting point, not a pin; the HPA keeps adjusting
    from metrics. To pin a count, move the bounds (O(hpa_min_replicas)/O(hpa_max_replicas)).
  - Replicas 0 under an HPA needs O(allow_zero=true); Kubernetes does not autoscale a workload at zero replicas.
"""

EXAMPLES = r"""
- name: Scale API and workers together, wait for both
  apex.ops.apex_scale:
    names: [apex-api, apex-worker]
    replicas: 8

- name: Two more workers, only if there are 5 now
  apex.ops.apex_scale:
    names: [apex-worker]
    replicas_delta: "+2"
    current_replicas: 5

- name: Pre-scale for an event, saving the current state first
  apex.ops.apex_scale:
    save_state: true
    state_name: launch-2026
    targets:
      - name: apex-worker
        replicas: 20
        hpa_max_replicas: 100
      - name: apex-api
        hpa_max_replicas: 50

- name: Back to exactly what was saved
  apex.ops.apex_scale:
    restore_state: true
    state_name: launch-2026

- name: Take API and workers down for a database restore (their HPAs stop autoscaling at 0)
  apex.ops.apex_scale:
    names: [apex-api, apex-worker]
    replicas: 0
    allow_zero: true
    save_state: true
    state_name: restore

- name: HPA target CPU on the secondary region
  apex.ops.apex_scale:
    context: apex-secondary
    names: [apex-api]
    hpa_target_cpu: 60
    wait: false
"""

RETURN = r"""
targets:
  description: One entry per target, in order.
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: C(Kind/name).
      type: str
    hpa:
      description: Name of the governing HPA, or null.
      type: str
    before:
      description: Replicas and HPA bounds (min_replicas, max_replicas, target_cpu) before the call.
      type: dict
    after:
      description: Replicas and HPA bounds after the call (planned, in check mode).
      type: dict
    changed:
      description: Whether this target was (or would be) changed.
      type: bool
    notes:
      description: What the HPA awareness decided (bounds moved, HPA will adjust).
      type: list
      elements: str
    timings:
      description: >-
        C(start_offset_seconds) (when this target's thread started, from the start of the apply phase),
        C(apply_seconds), C(wait_seconds), C(total_seconds) for this target.
      type: dict
    observed:
      description:
        - What the cluster ended at, read back after the wait (or after the write without O(wait)), as
          C(replicas) (spec, C(desired) is the same), C(ready), C(rollout) and C(hpa) bounds. Not in check mode.
        - This, not RV(targets[].after), is what the cluster runs when another writer changed it after this call.
      type: dict
  sample:
    - key: Deployment/apex-api
      hpa: apex-api
      before: {replicas: 3, hpa: {min_replicas: 3, max_replicas: 10, target_cpu: 70}}
      after: {replicas: 5, hpa: {min_replicas: 3, max_replicas: 10, target_cpu: 70}}
      changed: true
      timings: {apply_seconds: 0.01, wait_seconds: 0.42, total_seconds: 0.43}
concurrent_changes:
  description:
    - Values this call wrote that the cluster no longer had at the end (another writer, a concurrent run,
      the HPA, won), each with C(target), C(field), C(set), C(observed) and C(message). Each is also a warning.
  returned: when not in check mode
  type: list
  elements: dict
  sample: [{target: Deployment/apex-api, field: replicas, set: 8, observed: 6,
            message: "Deployment/apex-api: this run set 8 replicas but the cluster ended at 6: ..."}]
state:
  description: What happened to the saved state (action saved, kept, restored or would restore) and the record.
  returned: when save_state or restore_state
  type: dict
elapsed_seconds:
  description: Wall time of the call.
  returned: always
  type: float
last_state:
  description:
    - When a write failed or a target did not roll out and get ready within O(wait_timeout) (the other failures,
      refusals included, change nothing and return only C(msg)), the targets as this call left them and what
      was rolled back.
  returned: failure
  type: dict
  contains:
    targets:
      description:
        - One entry per target, as in RV(targets), plus C(error) (the write that failed), C(observed) (what the
          cluster showed last) and C(wait_failure) (C(target), C(desired), C(ready), C(updated), C(current),
          C(rollout), C(message), C(pods_not_ready) with why each pod is not ready, and the C(line) of the message).
      type: list
      elements: dict
    rolled_back:
      description:
        - What O(rollback_on_failure) put back, one line per changed target (C(Deployment/apex-api -> 3 replicas));
          a rolling restart cannot be undone and says so. Empty with O(rollback_on_failure=false).
      type: list
      elements: str
  sample:
    targets:
      - key: Deployment/apex-worker
        wait_failure: {target: Deployment/apex-worker, desired: 8, ready: 5, rollout: progressing,
                       pods_not_ready: ["apex-worker-7c9-x2: ContainersNotReady; last event Unhealthy: ..."]}
    rolled_back: ["Deployment/apex-worker -> 5 replicas"]
"""

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC
from ansible_collections.apex.ops.plugins.module_utils import k8s

TARGET_OPTIONS = dict(
    name=dict(type="str"),
    label_selector=dict(type="str"),
    kind=dict(type="str", choices=["Deployment", "StatefulSet"]),
    replicas=dict(type="int"),
    replicas_delta=dict(type="raw"),
    current_replicas=dict(type="int"),
    hpa_min_replicas=dict(type="int"),
    hpa_max_replicas=dict(type="int"),
    hpa_target_cpu=dict(type="int"),
    restart=dict(type="bool"),
)

ARGUMENT_SPEC = dict(
    names=dict(type="list", elements="str", default=[]),
    label_selectors=dict(type="list", elements="str", default=[]),
    kind=dict(type="str", choices=["Deployment", "StatefulSet"], default="Deployment"),
    targets=dict(type="list", elements="dict", default=[], options=TARGET_OPTIONS),
    replicas=dict(type="int"),
    replicas_delta=dict(type="raw"),
    current_replicas=dict(type="int"),
    hpa_min_replicas=dict(type="int"),
    hpa_max_replicas=dict(type="int"),
    hpa_target_cpu=dict(type="int"),
    restart=dict(type="bool", default=False),
    hpa_adjust=dict(type="bool", default=False),
    allow_zero=dict(type="bool", default=False),
    max_replicas_ceiling=dict(type="int"),
    allow_above_ceiling=dict(type="bool", default=False),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=300),
    rollback_on_failure=dict(type="bool", default=True),
    save_state=dict(type="bool", default=False),
    restore_state=dict(type="bool", default=False),
    state_name=dict(type="str", default="default"),
    overwrite_saved=dict(type="bool", default=False),
    state_configmap=dict(type="str", default="apex-ops-scale-state"),
)


def main():
    module = ApexModule(
        argument_spec=ARGUMENT_SPEC,
        fragments=(K8S_ARGSPEC,),
        requirements=(k8s.REQUIREMENT,),
        mutually_exclusive=[("replicas", "replicas_delta")],
        supports_check_mode=True,
    )
    from ansible_collections.apex.ops.plugins.module_utils import k8s_scaler
    from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import WorkloadError

    params = module.params
    try:
        k8s_scaler.check_options(params)
        client = k8s.connect(params)
        result = k8s_scaler.run_scale(client, params["namespace"], params, check_mode=module.check_mode,
                                      context=client.connection.get("context"), diff=module._diff)
    except WorkloadError as exc:
        module.fail(str(exc), last_state=exc.last_state)
    except k8s.KubeConfigError as exc:
        module.fail("Kubernetes connection is not configured: %s" % exc)
    except k8s.KubeApiError as exc:
        module.fail("Kubernetes API error: %s" % exc)
    for change in result.get("concurrent_changes") or []:
        module.warn(change["message"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
