#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_canary
short_description: Create the canary Deployment from the live stable one, or remove it
version_added: 0.3.0
description:
  - V(present) creates (or updates) O(name) (default C(apex-api-canary)) as a copy of the live stable Deployment's spec
    (O(stable)) with only two changes - the API container's image tag (O(version)) and the C(track=canary) label
    (selector, pod template and object) - and waits until its pods are ready.
  - Sized for a share of the traffic - the Service spreads requests over the ready pods of both tracks, so the canary
    gets C(replicas) so that C(canary / (stable + canary)) is at least O(weight) percent (at least one pod); or
    O(replicas) exactly.
  - Helm's ownership annotations and labels are not copied (Helm must not adopt the canary); the canary carries
    C(apex.ops/canary-of) and C(apex.ops/stable-image) annotations, and a Deployment of that name without them is
    never touched.
  - When the canary does not get ready within O(wait_timeout) the module fails naming the pods and why; the canary is
    left for the caller to remove (the canary role's C(always) does).
  - V(absent) deletes the canary (foreground propagation, so its pods go first) and waits until it is gone.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.k8s
attributes:
  check_mode:
    support: full
    description: Returns the planned manifest and action; writes nothing.
  diff_mode:
    support: none
    description: No diff; the manifest is returned.
options:
  state:
    description: V(present) creates or updates and waits; V(absent) deletes and waits.
    type: str
    choices: [present, absent]
    default: present
  name:
    description: The canary Deployment.
    type: str
    default: apex-api-canary
  stable:
    description: The stable Deployment whose live spec is copied.
    type: str
    default: apex-api
  version:
    description: The image tag the canary runs. Required with V(present).
    type: str
  container:
    description: The container whose image changes (default the only container, else the one named C(api)).
    type: str
  weight:
    description: Percent of the traffic the canary should take (sizes the replicas).
    type: float
    default: 10
  replicas:
    description: Exact canary replicas (overrides O(weight)).
    type: int
  track:
    description: Value of the C(track) label of the canary.
    type: str
    default: canary
  wait:
    description: Wait until the canary is ready (V(present)) or gone (V(absent)).
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait.
    type: int
    default: 300
"""

EXAMPLES = r"""
- name: Canary of 1.4.2 with about 10 % of the traffic
  apex.ops.apex_canary:
    version: 1.4.2
    weight: 10

- name: Remove the canary
  apex.ops.apex_canary:
    state: absent
"""

RETURN = r"""
action:
  description: What was done - V(create), V(update), V(delete) or V(none).
  returned: always
  type: str
plan:
  description:
    - With V(present), C(stable), C(canary), C(container), C(stable_image), C(image), C(stable_version), C(version),
      C(replicas), C(stable_replicas), C(weight), C(traffic_share) (the percent those replicas give),
      C(helm_release) (the release managing stable, or null).
  returned: state=present
  type: dict
manifest:
  description: With V(present), the canary Deployment written (or planned).
  returned: state=present
  type: dict
rollout:
  description: With V(present), the canary's rollout status last seen.
  returned: state=present and wait
  type: dict
last:
  description: With V(absent), the canary's rollout status before deletion.
  returned: state=absent and the canary existed
  type: dict
last_state:
  description:
    - On failure, what was last seen - C(rollout), C(pods_not_ready) (C(name), C(phase), C(reasons)), C(plan).
  returned: failure
  type: dict
"""

from ansible_collections.apex.ops.plugins.module_utils import k8s
from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC

ARGUMENT_SPEC = dict(
    state=dict(type="str", choices=["present", "absent"], default="present"),
    name=dict(type="str", default="apex-api-canary"),
    stable=dict(type="str", default="apex-api"),
    version=dict(type="str"),
    container=dict(type="str"),
    weight=dict(type="float", default=10),
    replicas=dict(type="int"),
    track=dict(type="str", default="canary"),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=300),
)


def main():
    module = ApexModule(
        argument_spec=ARGUMENT_SPEC,
        fragments=(K8S_ARGSPEC,),
        requirements=(k8s.REQUIREMENT,),
        required_if=[("state", "present", ("version",))],
        supports_check_mode=True,
    )
    from ansible_collections.apex.ops.plugins.module_utils import canary_runner
    from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import WorkloadError

    params = module.params
    try:
        client = k8s.connect(params)
        run = canary_runner.present if params["state"] == "present" else canary_runner.absent
        result = run(client, params, check_mode=module.check_mode)
    except WorkloadError as exc:
        module.fail(str(exc), last_state=exc.last_state)
    except k8s.KubeConfigError as exc:
        module.fail("Kubernetes connection is not configured: %s" % exc)
    except k8s.KubeApiError as exc:
        module.fail("Kubernetes API error: %s" % exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
