#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_release
short_description: Deploy, roll back and inspect the Apex Helm release (Helm v4 as a library)
version_added: 0.2.0
description:
  - Installs or upgrades a Helm release from a chart directory, a packaged chart (C(.tgz)) or an
    C(oci://) reference, with values files, a values dict and C(--set) expressions (O(state=present));
    rolls it back to the previous or a given revision (O(state=rolledback)); reports its revisions,
    the deployed revision's values and a digest of its manifest (O(state=facts)).
  - Helm runs in-process as a library (the PyPI package C(helm-python-sdk), Helm v4's Go SDK); no
    C(helm) binary is needed. Each run starts one Helm worker process, because Helm reads its
    storage settings from the environment it starts with.
  - Idempotent. An upgrade whose chart, user values and rendered manifest equal the deployed
    revision's changes nothing and makes no new revision. Drift of live objects alone does not
    trigger an upgrade; it shows in the plan and the diff.
  - Check mode is a real plan. The manifests Helm would apply are rendered (a server-side dry run)
    and compared, object by object, with the live objects, on the fields the manifest sets (what
    C(helm diff upgrade) shows); objects of the deployed release that the new one drops are
    deletions. The values of Secrets are never shown (C(<masked>), or C(<masked, changed>) for a
    value that changes).
  - Atomic by default. When an install or upgrade fails (a workload does not get ready within
    O(timeout), Helm refuses the manifest), the module first reads which workloads were not ready and
    why (their pods), then rolls the release back to the revision deployed before (an install is
    uninstalled), and fails with Helm's error, the revision it returned to and the objects that were
    not ready.
  - After a successful upgrade or rollback with O(wait), every Deployment and StatefulSet of the
    release is read back, checked rolled out with the manifest's images, and reported.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.k8s
attributes:
  check_mode:
    support: full
    description: Renders the release (server-side dry run) and reports the per-object plan; changes nothing.
  diff_mode:
    support: full
    description: One diff entry per object that would be created, updated or deleted, Secret values masked.
options:
  name:
    description: Release name.
    type: str
    default: apex
  state:
    description:
      - V(present) installs or upgrades; V(rolledback) rolls back; V(facts) only reads.
    type: str
    choices: [present, rolledback, facts]
    default: present
  chart:
    description:
      - Chart directory, packaged chart (C(.tgz)) or C(oci://registry/repository/chart) reference.
        Required with O(state=present).
      - OCI registries are used anonymously, or with the credentials in Helm's registry
        configuration; there is no login option.
    type: str
  chart_version:
    description: Chart version to pull (OCI references).
    type: str
  values_files:
    description: Values files, merged in order (Helm's C(-f)).
    type: list
    elements: path
    default: []
  values:
    description: Values merged after O(values_files).
    type: dict
    default: {}
  set_values:
    description:
      - Helm C(--set) expressions (for example C(api.image.tag=1.1.0)), applied last, in order, with
        Helm's own parser (numbers and booleans are typed as C(--set) types them).
    type: list
    elements: str
    default: []
  revision:
    description:
      - With O(state=rolledback), the revision to return to. Default is the one before the deployed
        revision (as C(helm rollback NAME)); give it to make the task idempotent.
    type: int
  atomic:
    description:
      - Roll a failed upgrade back to the revision deployed before it (uninstall a failed install).
    type: bool
    default: true
  wait:
    description:
      - Wait until the release's resources are ready (Helm's watcher) and verify the rollouts.
        Without it, O(atomic) only covers what Helm refuses outright.
    type: bool
    default: true
  timeout:
    description:
      - Seconds Helm may take to apply and wait; a failed upgrade's rollback gets as long again.
    type: int
    default: 300
  create_namespace:
    description: Create the release namespace on install when it does not exist.
    type: bool
    default: false
  storage_driver:
    description:
      - Where Helm keeps the release history. V(secret) (Helm's default) stores one Secret per revision
        in the release namespace; V(sql) stores it in PostgreSQL (O(sql_connection_string)).
        Falls back to E(HELM_DRIVER).
    type: str
    choices: [secret, configmap, sql]
    default: secret
  sql_connection_string:
    description:
      - Connection string of the PostgreSQL database of the V(sql) storage driver (libpq C(key=value)
        or C(postgres://)). Falls back to E(HELM_DRIVER_SQL_CONNECTION_STRING). Never logged or returned;
        it reaches Helm through the worker's environment, not its command line.
    type: str
requirements:
  - helm-python-sdk >= 0.2.2 (Helm v4 as a library)
notes:
  - The facts return the deployed revision's user values with the values of credential-like keys
    (password, token, secret, key...) masked; the manifest itself is never returned, only its digest.
"""

EXAMPLES = r"""
- name: Plan an upgrade to 1.1.0 (check mode, diff per object)
  apex.ops.apex_release:
    chart: /srv/charts/apex
    values_files: [/srv/apex/values-production.yaml]
    set_values: [api.image.tag=1.1.0]
  check_mode: true
  diff: true

- name: Upgrade; a failure rolls back and reports what was not ready
  apex.ops.apex_release:
    chart: oci://registry.example.com/charts/apex
    chart_version: 1.4.2
    set_values: [api.image.tag=1.1.0, worker.image.tag=1.1.0]
    timeout: 600
  register: upgrade

- name: Roll back to revision 7
  apex.ops.apex_release:
    state: rolledback
    revision: 7

- name: Release history, with the sql storage driver
  apex.ops.apex_release:
    state: facts
    storage_driver: sql
  register: release
"""

RETURN = r"""
release:
  description: The deployed release after the call (name, namespace, revision, status, chart, app_version).
  returned: success, except state=facts of a release that does not exist
  type: dict
  sample: {name: apex, namespace: apex, revision: 4, status: deployed, chart: apex-0.1.0, app_version: 1.0.0}
action:
  description: What O(state=present) did or would do - V(install), V(upgrade) or V(none).
  returned: state=present, success
  type: str
revision_before:
  description: The deployed revision before the call (null before an install).
  returned: state=present or rolledback
  type: int
revision_after:
  description: The deployed revision after the call (null in check mode when something would change).
  returned: success, state=present or rolledback
  type: int
target_revision:
  description: The revision O(state=rolledback) returns to.
  returned: state=rolledback, success
  type: int
plan:
  description: Object keys (C(Kind/namespace/name)) by action - create, update, delete, unchanged.
  returned: state=present or rolledback, success
  type: dict
  sample: {create: [], update: [Deployment/apex/apex-api, ConfigMap/apex/apex-config], delete: [],
           unchanged: [Service/apex/apex-api]}
manifest_digest:
  description: sha256 of the manifest applied (or planned, or deployed in RV(deployed)).
  returned: state=present or rolledback, success
  type: str
chart_source:
  description: V(directory), V(package) or V(oci).
  returned: state=present, success
  type: str
workloads:
  description:
    - Each Deployment and StatefulSet of the release as read after the call - C(kind), C(name),
      C(rollout) (complete, progressing, failed), C(ready), C(desired), C(ready_replicas), C(images),
      C(images_expected), C(pods_not_ready).
  returned: when something was applied with O(wait)
  type: list
  elements: dict
timings:
  description: C(helm_seconds) (the install, upgrade or rollback, with its wait), and on failure C(rollback_seconds).
  returned: when Helm applied something (success or failure)
  type: dict
exists:
  description: Whether the release exists.
  returned: state=facts
  type: bool
revisions:
  description:
    - Every revision Helm keeps, oldest first - C(revision), C(status), C(chart), C(chart_name),
      C(chart_version), C(app_version), C(description), C(first_deployed), C(last_deployed), C(deployed_at).
  returned: state=facts
  type: list
  elements: dict
deployed:
  description:
    - The deployed revision as in RV(revisions), plus its user C(values) (credential-like keys masked),
      C(manifest_digest) and C(objects) (keys of the objects in its manifest).
  returned: state=facts
  type: dict
helm_error:
  description: Helm's error for the failed install, upgrade or rollback.
  returned: failure
  type: str
  sample: "helm upgrade: HelmReleaseError: resource Deployment/apex/apex-api not ready. status: Failed..."
failed_revision:
  description: The revision the failed install or upgrade created (status failed).
  returned: failure of an install or upgrade
  type: int
returned_to_revision:
  description: The revision deployed after the failure - the rollback's new revision (null when nothing is deployed).
  returned: failure
  type: int
restored_revision:
  description: The revision whose content the rollback restored (the one deployed before the upgrade).
  returned: failure of an upgrade with O(atomic)
  type: int
rolled_back:
  description: Whether the failure was undone (rolled back, or the failed install uninstalled).
  returned: failure of an install or upgrade
  type: bool
rollback_error:
  description: Helm's error when undoing the failure failed too.
  returned: failure, when the rollback failed
  type: str
not_ready:
  description:
    - The workloads of the failed revision that were not ready, read from the cluster when Helm gave up
      (before the rollback) - as RV(workloads), with C(pods_not_ready) (C(name), C(reason), C(images)).
  returned: failure
  type: list
  elements: dict
  sample:
    - kind: Deployment
      name: apex-api
      rollout: failed
      message: "progress deadline exceeded: ReplicaSet apex-api-7d9 has timed out progressing."
      pods_not_ready: [{name: apex-api-7d9-x2x, reason: "ContainersNotReady containers with unready status: [api]"}]
"""

from ansible.module_utils.basic import env_fallback

from ansible_collections.apex.ops.plugins.module_utils import helm_client, k8s
from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC

ARGUMENT_SPEC = dict(
    name=dict(type="str", default="apex"),
    state=dict(type="str", choices=["present", "rolledback", "facts"], default="present"),
    chart=dict(type="str"),
    chart_version=dict(type="str"),
    values_files=dict(type="list", elements="path", default=[]),
    values=dict(type="dict", default={}),
    set_values=dict(type="list", elements="str", default=[]),
    revision=dict(type="int"),
    atomic=dict(type="bool", default=True),
    wait=dict(type="bool", default=True),
    timeout=dict(type="int", default=300),
    create_namespace=dict(type="bool", default=False),
    storage_driver=dict(type="str", choices=list(helm_client.STORAGE_DRIVERS), default="secret",
                        fallback=(env_fallback, ["HELM_DRIVER"])),
    sql_connection_string=dict(type="str", no_log=True,
                               fallback=(env_fallback, [helm_client.SQL_CONNECTION_ENV])),
)


def main():
    module = ApexModule(
        argument_spec=ARGUMENT_SPEC,
        fragments=(K8S_ARGSPEC,),
        requirements=(k8s.REQUIREMENT, helm_client.REQUIREMENT),
        required_if=[("state", "present", ("chart",))],
        supports_check_mode=True,
    )
    from ansible_collections.apex.ops.plugins.module_utils import helm_release as hr

    params = module.params
    if params["timeout"] < 1:
        module.fail("timeout must be at least 1 second")
    session = None
    try:
        cluster = hr.Cluster(k8s.connect(params))
        session = helm_client.HelmSession(params)
        engine = hr.ReleaseEngine(session, cluster, params, check_mode=module.check_mode)
        if params["state"] == "present":
            values = hr.merge_values(params["values_files"], params["values"], params["set_values"],
                                     parse_set=lambda expression: session.call("parse_set", expression=expression))
            result = engine.present(params["chart"], values)
        elif params["state"] == "rolledback":
            result = engine.rolledback(params["revision"])
        else:
            result = engine.facts()
    except hr.ReleaseError as exc:
        module.fail(str(exc), **exc.details)
    except helm_client.HelmCallError as exc:
        module.fail("Helm failed: %s" % exc, helm_error=str(exc))
    except ValueError as exc:
        module.fail(str(exc))
    except k8s.KubeConfigError as exc:
        module.fail("Kubernetes connection is not configured: %s" % exc)
    except k8s.KubeApiError as exc:
        module.fail("Kubernetes API error: %s" % exc)
    finally:
        if session is not None:
            session.close()
    diff = result.pop("diff", None)
    if module._diff and diff is not None:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
