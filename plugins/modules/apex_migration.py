#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_migration
short_description: Run the Apex database migration Job to its end, list or delete migration Jobs
version_added: 0.2.0
description:
  - The runbook's migration Job (C(./apex-migrate up) with C(DATABASE_URL) from a Secret, C(restartPolicy Never),
    C(backoffLimit 1)), run to its end - what C(kubectl apply) of the Job, C(kubectl logs -f job/...) and a look at
    its status do.
  - The Job runs the image of the API container of O(deployment) (not C(latest)), or O(image), with the API
    container's env (plain values and secret references) and C(envFrom), its pod's service account and image pull
    secrets. C(DATABASE_URL) comes from O(database_url_secret), else the API container's C(DATABASE_URL), else its
    C(APEX__DATABASE__URL) reference, else the runbook's Secret C(apex-secrets) key C(database-url). Secret contents
    are never read.
  - The Job is watched until its C(Complete) or C(Failed) condition, under one monotonic deadline (O(wait_timeout)).
    A complete Job is deleted with its pods (O(delete_on_success), O(propagation)). A failed Job
    (C(BackoffLimitExceeded)) or one still running at the deadline is kept for inspection; the failure names it
    and carries its conditions, its pods (exit codes) and the last lines of the newest pod's log, redacted
    (DSN passwords and URL credentials masked).
  - Refuses to start while another migration Job made by this module is still running.
  - O(state=facts) lists the migration Jobs (labelled C(app.kubernetes.io/name=apex-migration),
    C(app.kubernetes.io/managed-by=apex.ops)) with their status; O(state=absent) deletes the named one, or every
    finished one. A running Job is never deleted.
  - Whether the migrations are recorded as applied is for C(apex.ops.apex_db_maint) O(apex.ops.apex_db_maint#module:state=migrations).
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.k8s
attributes:
  check_mode:
    support: full
    description: O(state=run) returns the Job it would create (env shown as references, credentials masked) and creates nothing.
  diff_mode:
    support: none
    description: Nothing is changed in place; the Job planned is in RV(job).
options:
  state:
    description:
      - C(run) creates the migration Job and waits for its end; C(facts) lists migration Jobs; C(absent) deletes them.
    type: str
    choices: [run, facts, absent]
    default: facts
  deployment:
    description: The API Deployment whose container image and env the Job takes.
    type: str
    default: apex-api
  container:
    description: The API container in O(deployment); default the only one, or the one named C(api).
    type: str
  image:
    description: Image of the Job instead of the API's (a release's image, migrated before it is deployed).
    type: str
  command:
    description: The migrator's command.
    type: list
    elements: str
    default: [./apex-migrate, up]
  args:
    description: Arguments after O(command).
    type: list
    elements: str
  database_url_secret:
    description: The Secret key holding the database URL (C(DATABASE_URL)), instead of the API container's.
    type: dict
    suboptions:
      name:
        description: Secret name.
        type: str
        required: true
      key:
        description: Key in the Secret.
        type: str
        required: true
  name:
    description:
      - O(state=run) - the Job's name (default C(apex-migration-<UTC time to the microsecond>)).
      - O(state=absent) - the Job to delete (default every finished migration Job).
    type: str
  run_id:
    description: A label C(apex.ops/run-id) on the Job (the procedure's run id).
    type: str
  backoff_limit:
    description: Retries of a failed migration pod before the Job fails (the runbook's 1).
    type: int
    default: 1
  active_deadline_seconds:
    description: The Job's own C(activeDeadlineSeconds) (Kubernetes stops it after that long); unset has none.
    type: int
  wait_timeout:
    description: Seconds to wait for the Job's end (one monotonic deadline). Past it the Job is kept, still running.
    type: int
    default: 600
  log_lines:
    description: How many last lines of the newest pod's log to return.
    type: int
    default: 50
  delete_on_success:
    description: Delete a complete Job (and its pods).
    type: bool
    default: true
  propagation:
    description: C(propagationPolicy) of the deletions, so the Job's pods go too (the API's default for Jobs orphans them).
    type: str
    choices: [Background, Foreground]
    default: Background
notes:
  - Needs permission to create, watch and delete Jobs, list pods and read their logs in O(namespace).
seealso:
  - module: apex.ops.apex_db_maint
  - module: apex.ops.apex_release
"""

EXAMPLES = r"""
- name: Migrate with the image the API runs (the runbook's Job)
  apex.ops.apex_migration:
    state: run
    wait_timeout: 600
  register: migration

- name: Migrate with the next release's image before deploying it
  apex.ops.apex_migration:
    state: run
    image: apex/api:1.1.0

- name: Then check the migrator's record
  apex.ops.apex_db_maint:
    state: migrations
    expected_version: "20240101000003"
  register: migrations
  failed_when: migrations.problems | length > 0

- name: The migration Jobs kept (failed ones)
  apex.ops.apex_migration:
    state: facts
  register: migration_jobs

- name: Delete a failed Job once it was looked at
  apex.ops.apex_migration:
    state: absent
    name: apex-migration-20261202133617-123456
"""

RETURN = r"""
changed:
  description: Whether a Job was (or in check mode would be) created or deleted.
  returned: always
  type: bool
job:
  description:
    - O(state=run) - the Job planned - C(name), C(namespace), C(image), C(image_source), C(command), C(args),
      C(database_url_source), C(backoff_limit), C(env) (name to value; secret references shown as such,
      credential-like names masked).
  returned: state is run
  type: dict
  sample:
    name: apex-migration-20261202133617-123456
    namespace: apex
    image: apex/api:1.0.0
    image_source: Deployment apex-api container api
    command: [./apex-migrate, up]
    database_url_source: "the API container's APEX__DATABASE__URL (<secretKeyRef apex-secrets/database-url>)"
    env: {DATABASE_URL: "<secretKeyRef apex-secrets/database-url>", APEX__MAINTENANCE_MODE: "false"}
outcome:
  description: O(state=run) - C(complete), or C(planned) in check mode.
  returned: state is run
  type: str
status:
  description:
    - The Job as last seen - C(outcome), C(reason), C(message), C(conditions), C(active), C(succeeded), C(failed),
      C(backoff_limit), C(start_time), C(completion_time).
  returned: state is run and not check mode
  type: dict
pods:
  description: The Job's pods, oldest first - C(name), C(phase), C(exit_code), C(reason).
  returned: state is run and not check mode
  type: list
  elements: dict
log_tail:
  description: The last O(log_lines) lines of the newest pod's log, redacted.
  returned: state is run and not check mode
  type: list
  elements: str
deleted:
  description:
    - O(state=run) - whether the complete Job was deleted (bool).
    - O(state=absent) - the names of the Jobs deleted (in check mode, that would be).
  returned: state is run and not check mode, or state is absent
  type: raw
still_running:
  description: O(state=absent) - migration Jobs left alone because they are running.
  returned: state is absent
  type: list
  elements: str
jobs:
  description: O(state=facts) - the migration Jobs, oldest first, each as RV(status).
  returned: state is facts
  type: list
  elements: dict
elapsed_seconds:
  description: O(state=run) - seconds from the Job's creation to its end.
  returned: state is run and not check mode
  type: float
last_state:
  description:
    - When the Job failed or did not finish in time - C(job) (its name), C(kept) (true, it was not deleted),
      C(status) (as RV(status), with the conditions), C(pods), C(log_tail) (redacted), C(elapsed_seconds).
  returned: failure
  type: dict
  sample:
    job: apex-migration-20261202133617-123456
    kept: true
    status: {outcome: failed, reason: BackoffLimitExceeded, message: Job has reached the specified backoff limit}
    log_tail: ['... FATAL:  password authentication failed for user "apex"']
"""

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC
from ansible_collections.apex.ops.plugins.module_utils import k8s

ARGUMENT_SPEC = dict(
    state=dict(type="str", choices=["run", "facts", "absent"], default="facts"),
    deployment=dict(type="str", default="apex-api"),
    container=dict(type="str"),
    image=dict(type="str"),
    command=dict(type="list", elements="str", default=["./apex-migrate", "up"]),
    args=dict(type="list", elements="str"),
    # the name of a Secret and one of its keys, not a credential
    database_url_secret=dict(type="dict", no_log=False,
                             options=dict(name=dict(type="str", required=True),
                                          key=dict(type="str", required=True, no_log=False))),
    name=dict(type="str"),
    run_id=dict(type="str"),
    backoff_limit=dict(type="int", default=1),
    active_deadline_seconds=dict(type="int"),
    wait_timeout=dict(type="int", default=600),
    log_lines=dict(type="int", default=50),
    delete_on_success=dict(type="bool", default=True),
    propagation=dict(type="str", choices=["Background", "Foreground"], default="Background"),
)


def main():
    module = ApexModule(
        argument_spec=ARGUMENT_SPEC,
        fragments=(K8S_ARGSPEC,),
        requirements=(k8s.REQUIREMENT,),
        supports_check_mode=True,
    )
    from ansible_collections.apex.ops.plugins.module_utils import migration_runner
    from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import WorkloadError

    params = module.params
    try:
        client = k8s.connect(params)
        if params["state"] == "run":
            result = migration_runner.run(client, params["namespace"], params, module.check_mode)
        elif params["state"] == "absent":
            result = migration_runner.absent(client, params["namespace"], params, module.check_mode)
        else:
            result = migration_runner.facts(client, params["namespace"])
    except WorkloadError as exc:
        module.fail(str(exc), last_state=exc.last_state)
    except k8s.KubeConfigError as exc:
        module.fail("Kubernetes connection is not configured: %s" % exc)
    except k8s.KubeApiError as exc:
        module.fail("Kubernetes API error: %s" % exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
