#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_rollout
short_description: Change what the pods of Apex Deployments and StatefulSets run, wait for the rollout, undo on failure
version_added: 0.2.0
description:
  - Changes that roll pods, on one or several Deployments or StatefulSets B(in parallel), each waited for
    under one deadline - what the runbook does with C(kubectl set env), C(kubectl set image),
    C(kubectl patch ... resources), C(kubectl rollout undo [--to-revision]), C(kubectl rollout restart)
    and C(kubectl rollout pause/resume).
  - O(env) sets C(APEX__SECTION__KEY) settings (typed values are rendered as the strings the container sees,
    booleans as C(true)/C(false)); O(env_absent) unsets them. Other names are refused unless O(allow_any_env=true),
    so a typo is not set silently.
  - O(image) sets container images; O(resources) merges requests/limits into containers (the runbook's
    ResourceExhaustion patch).
  - O(undo) copies the pod template of an earlier revision back (the previous one, or O(to_revision)), as
    C(kubectl rollout undo) does. Without O(to_revision) each call goes one revision further back.
  - O(restart) rolls every pod (the C(restartedAt) stamp, to the microsecond); O(paused) pauses or resumes a Deployment's rollout.
  - Idempotent. A value that is already set is no change; no patch is sent and C(changed) is false.
    O(restart) always changes.
  - Each write is one JSON patch of the pod template with the resourceVersion read (a concurrent writer makes it
    read and plan again) and records a C(kubernetes.io/change-cause) annotation describing the change (what
    C(kubectl rollout history) shows).
  - When a rollout fails (ProgressDeadlineExceeded) or does not complete within O(wait_timeout), or a write fails,
    the targets this call changed get back the pod template they had before it (O(rollback_on_failure)), and the
    failure says per target what was last seen and which pods were not ready, with why.
  - O(state=facts) returns the revision history of each target, with what changed between consecutive revisions.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.k8s
attributes:
  check_mode:
    support: full
    description: Plans every change (before/after per target) and writes nothing.
  diff_mode:
    support: full
    description: Before/after of the changed fields (per container image, env, resources; paused; the restart stamp) per target.
options:
  state:
    description:
      - C(present) makes the changes; C(facts) only reads the revision history.
    type: str
    choices: [present, facts]
    default: present
  names:
    description:
      - Targets by name, each changed with the options of the call. C(apex-api) is a O(kind) object;
        C(statefulset/postgresql) names the kind explicitly.
    type: list
    elements: str
    default: []
  kind:
    description: Kind of the targets named without one.
    type: str
    choices: [Deployment, StatefulSet]
    default: Deployment
  targets:
    description:
      - Targets with their own changes (the options the entry leaves unset come from the call).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name (or C(kind/name)) of the target.
        type: str
        required: true
      kind:
        description: Kind of the target.
        type: str
        choices: [Deployment, StatefulSet]
      env:
        description: As O(env).
        type: dict
      env_absent:
        description: As O(env_absent).
        type: list
        elements: str
      image:
        description: As O(image).
        type: raw
      resources:
        description: As O(resources).
        type: dict
      container:
        description: As O(container).
        type: str
      undo:
        description: As O(undo).
        type: bool
      to_revision:
        description: As O(to_revision).
        type: int
      restart:
        description: As O(restart).
        type: bool
      paused:
        description: As O(paused).
        type: bool
  env:
    description:
      - Environment variables to set, name to value, in O(container) (default every container), as
        C(kubectl set env) does. Names must be Apex settings C(APEX__SECTION__KEY) (upper case) unless O(allow_any_env=true).
      - A variable that came from a secret or ConfigMap (C(valueFrom)) becomes a plain value.
    type: dict
  env_absent:
    description: Environment variables to remove (a name that is not set is no change).
    type: list
    elements: str
  allow_any_env:
    description: Accept env var names that are not C(APEX__SECTION__KEY) (any valid Kubernetes name).
    type: bool
    default: false
  image:
    description:
      - The image of O(container), or of the only container; or a dict container name to image.
    type: raw
  resources:
    description:
      - C(requests) and C(limits) to merge into O(container) (default every container), such as
        a limits memory of C(4Gi) (see EXAMPLES). A null value removes the resource. Quantities are compared by
        value (C(4096Mi) equals C(4Gi)).
    type: dict
  container:
    description: The container O(env), O(resources) and a string O(image) apply to; default every container.
    type: str
  undo:
    description:
      - Copy the pod template of the previous revision (or O(to_revision)) back, as C(kubectl rollout undo).
      - Exclusive with O(env), O(env_absent), O(image), O(resources) and O(restart).
    type: bool
    default: false
  to_revision:
    description:
      - The revision O(undo) goes back to (implies O(undo)). Going back renumbers that revision as the newest, as
        C(kubectl rollout undo) does; its earlier number still finds it (the ReplicaSet's C(revision-history)), so
        the same O(to_revision) again is no change. Without it each call goes one revision further back.
    type: int
  restart:
    description: Roll every pod (a C(kubectl.kubernetes.io/restartedAt) pod-template annotation).
    type: bool
    default: false
  paused:
    description:
      - Pause (C(true)) or resume (C(false)) a Deployment's rollout; unset leaves it. Changes made while paused
        are recorded but do not roll until it is resumed, so they are not waited for.
    type: bool
  change_cause:
    description: The C(kubernetes.io/change-cause) text to record instead of the generated description.
    type: str
  wait:
    description: Wait until every changed target has rolled out (watch API, one deadline).
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for all rollouts (one monotonic deadline); the put-back on failure gets as long again.
    type: int
    default: 300
  rollback_on_failure:
    description:
      - On a failed or timed-out rollout, or a failed write, give the targets this call changed their previous pod
        template back (and wait for that).
    type: bool
    default: true
notes:
  - O(undo) of a Deployment selects among its ReplicaSets (C(revisionHistoryLimit) bounds how many are kept); of a
    StatefulSet among its ControllerRevisions.
  - A restart cannot be undone (its pods were replaced); putting the template back after a failure rolls the pods again.
seealso:
  - module: apex.ops.apex_scale
  - module: apex.ops.apex_release
"""

EXAMPLES = r"""
- name: The runbook's queue backlog response - more worker concurrency
  apex.ops.apex_rollout:
    names: [apex-worker]
    env:
      APEX__WORKER__CONCURRENCY: 5

- name: Route around a failing provider on both components at once
  apex.ops.apex_rollout:
    names: [apex-api, apex-worker]
    env:
      APEX__ROUTING__FORCE_PROVIDER: anthropic
    wait_timeout: 300

- name: Emergency rollback of both components to the previous revision, in parallel
  apex.ops.apex_rollout:
    names: [apex-api, apex-worker]
    undo: true

- name: Back to a given revision (idempotent)
  apex.ops.apex_rollout:
    names: [apex-api]
    to_revision: 2

- name: ResourceExhaustion - raise the API's memory limit
  apex.ops.apex_rollout:
    names: [apex-api]
    container: api
    resources:
      limits: {memory: 4Gi, cpu: "4"}
      requests: {memory: 2Gi, cpu: "1"}

- name: A new image for the API and another for the workers
  apex.ops.apex_rollout:
    targets:
      - {name: apex-api, image: "apex/api:1.1.0"}
      - {name: apex-worker, image: "apex/worker:1.1.0"}

- name: What changed between the revisions
  apex.ops.apex_rollout:
    names: [apex-api, apex-worker]
    state: facts
  register: history
"""

RETURN = r"""
changed:
  description: Whether any target was (or in check mode would be) patched.
  returned: always
  type: bool
targets:
  description:
    - One entry per target. With O(state=facts) the history instead (see below).
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: C(Kind/namespace/name).
      type: str
    changed:
      description: Whether this target was patched.
      type: bool
    changes:
      description: What changed, one line each (C(env APEX__WORKER__CONCURRENCY on worker 2 -> 5)); also the change-cause.
      type: list
      elements: str
    before:
      description: The changed fields before (C(containers) name to C(image), C(env), C(resources); C(paused); C(restarted_at)).
      type: dict
    after:
      description: The same fields after.
      type: dict
    env_changes:
      description:
        - Each env var this change sets, changes or unsets - C(container), C(name), C(before), C(after) (null when
          unset; values from secrets shown as their reference, credential-like names masked). Also for O(undo).
      type: list
      elements: dict
    revision:
      description: The revision the target was at before the call.
      type: int
    undo_to:
      description: The revision O(undo) went back to.
      type: int
    revision_after:
      description: The revision after the rollout (a Deployment's number; a StatefulSet's updateRevision).
      type: raw
    outcome:
      description: The rollout's outcome (C(complete)), for the targets waited for.
      type: str
    rollout:
      description: The rollout status last seen (state, message, replica counts, conditions).
      type: dict
    history:
      description:
        - O(state=facts) only. Per revision, oldest first - C(revision), C(current), C(change_cause), C(created),
          C(images) (container to image), C(env) (container to name to value; values from secrets shown as their
          reference, credential-like names masked), C(replicas), C(ready_replicas), and C(env_changes) and
          C(image_changes) against the revision before (C(container), C(name), C(before), C(after)).
      type: list
      elements: dict
  sample:
    - key: Deployment/apex/apex-worker
      changed: true
      changes: ["env APEX__WORKER__CONCURRENCY on worker: 2 -> 5"]
      before: {containers: {worker: {env: {APEX__WORKER__CONCURRENCY: "2"}}}}
      after: {containers: {worker: {env: {APEX__WORKER__CONCURRENCY: "5"}}}}
      revision: 1
      revision_after: 2
      outcome: complete
diff:
  description: Before/after of the changed fields per target key (with C(--diff)).
  returned: when diff mode is on
  type: dict
elapsed_seconds:
  description: Wall time of the call.
  returned: always
  type: float
last_state:
  description:
    - When a write failed or a rollout failed or timed out (refusals change nothing and return only C(msg)), the
      targets as this call left them and what was put back.
  returned: failure
  type: dict
  contains:
    targets:
      description:
        - One entry per target as in RV(targets), plus C(error) (the write that failed) and C(wait_failure)
          (C(outcome) failed, timeout or error; C(message) with the status last seen; C(pods_not_ready), each with why).
      type: list
      elements: dict
    rolled_back:
      description:
        - What O(rollback_on_failure) put back, one line per changed target, with whether that rollout completed.
          Empty when nothing was put back.
      type: list
      elements: str
  sample:
    targets:
      - key: Deployment/apex/apex-api
        wait_failure:
          outcome: timeout
          message: "timed out after 60s waiting for the rollout of Deployment apex/apex-api (1 of 3 updated replicas are available)"
          pods_not_ready: ["apex-api-5d8c9-x2: ContainersNotReady; last event Unhealthy: Readiness probe failed"]
    rolled_back: ["Deployment/apex/apex-api -> pod template as before this call, rolled out"]
"""

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC
from ansible_collections.apex.ops.plugins.module_utils import k8s

TARGET_OPTIONS = dict(
    name=dict(type="str", required=True),
    kind=dict(type="str", choices=["Deployment", "StatefulSet"]),
    env=dict(type="dict"),
    env_absent=dict(type="list", elements="str"),
    image=dict(type="raw"),
    resources=dict(type="dict"),
    container=dict(type="str"),
    undo=dict(type="bool"),
    to_revision=dict(type="int"),
    restart=dict(type="bool"),
    paused=dict(type="bool"),
)

ARGUMENT_SPEC = dict(
    state=dict(type="str", choices=["present", "facts"], default="present"),
    names=dict(type="list", elements="str", default=[]),
    kind=dict(type="str", choices=["Deployment", "StatefulSet"], default="Deployment"),
    targets=dict(type="list", elements="dict", default=[], options=TARGET_OPTIONS),
    env=dict(type="dict"),
    env_absent=dict(type="list", elements="str"),
    allow_any_env=dict(type="bool", default=False),
    image=dict(type="raw"),
    resources=dict(type="dict"),
    container=dict(type="str"),
    undo=dict(type="bool", default=False),
    to_revision=dict(type="int"),
    restart=dict(type="bool", default=False),
    paused=dict(type="bool"),
    change_cause=dict(type="str"),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=300),
    rollback_on_failure=dict(type="bool", default=True),
)


def main():
    module = ApexModule(
        argument_spec=ARGUMENT_SPEC,
        fragments=(K8S_ARGSPEC,),
        requirements=(k8s.REQUIREMENT,),
        supports_check_mode=True,
    )
    from ansible_collections.apex.ops.plugins.module_utils import rollout_change
    from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import WorkloadError

    params = module.params
    try:
        client = k8s.connect(params)
        result = rollout_change.run_rollout(client, params["namespace"], params, check_mode=module.check_mode,
                                            diff=module._diff)
    except WorkloadError as exc:
        module.fail(str(exc), last_state=exc.last_state)
    except k8s.KubeConfigError as exc:
        module.fail("Kubernetes connection is not configured: %s" % exc)
    except k8s.KubeApiError as exc:
        module.fail("Kubernetes API error: %s" % exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
