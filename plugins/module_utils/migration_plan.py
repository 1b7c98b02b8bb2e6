# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The database migration Job of the runbook ("Running Migrations"), planned from the running API (pure).

The runbook applies a Job running ``./apex-migrate up`` in ``apex/api:latest`` with
``DATABASE_URL`` from Secret ``apex-secrets`` key ``database-url``. Planned here instead:

* the **image the API runs** (read from the apex-api Deployment), not ``latest``: the migrations
  are the ones the running code expects; or the image given (a release about to be deployed);
* the **API container's env** (plain values and ``valueFrom`` references, ``envFrom``) and its pod's
  ``serviceAccountName``/``imagePullSecrets``, so the Job reaches the database the way the API does;
* ``DATABASE_URL``: from the Secret given, else the API container's own ``DATABASE_URL``, else its
  ``APEX__DATABASE__URL`` (the same reference under the name the migrator reads), else the runbook's
  ``apex-secrets``/``database-url``. Secret contents are never read: the Job gets the reference;
* a unique name per run (``apex-migration-<UTC time to the microsecond>``), ``restartPolicy: Never``,
  ``backoffLimit`` (the runbook's 1) and labels that find the collection's migration Jobs again.

Unit-tested; ``migration_runner`` does the I/O, ``db_facts.migration_problems`` judges ``_sqlx_migrations``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import WorkloadError
from ansible_collections.apex.ops.plugins.module_utils.rollout_plan import env_display

NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
RUN_ID_LABEL = "apex.ops/run-id"
MIGRATION_LABELS = {NAME_LABEL: "apex-migration", MANAGED_BY_LABEL: "apex.ops"}
MIGRATION_SELECTOR = ",".join("%s=%s" % item for item in sorted(MIGRATION_LABELS.items()))
CONTAINER_NAME = "migration"
DEFAULT_COMMAND = ("./apex-migrate", "up")
DATABASE_URL = "DATABASE_URL"
APP_DATABASE_URL = "APEX__DATABASE__URL"
RUNBOOK_SECRET = dict(name="apex-secrets", key="database-url")
NAME_PREFIX = "apex-migration-"


class MigrationError(WorkloadError):
    """A refusal or failure of apex_migration (message for the on-call engineer, optional last_state)."""


def job_name(now):
    """``apex-migration-20261202133617-123456``: unique per run (microseconds), a valid DNS label."""
    return NAME_PREFIX + now.strftime("%Y%m%d%H%M%S-%f")


def api_container(deployment, container=None):
    """The API container of the Deployment: the one named, else the only one, else the one named ``api``."""
    name = (deployment.get("metadata") or {}).get("name")
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    names = [c.get("name") for c in containers]
    if container:
        for candidate in containers:
            if candidate.get("name") == container:
                return candidate
        raise MigrationError("Deployment %s has no container %r (it has %s)" % (name, container, ", ".join(names) or "none"))
    if len(containers) == 1:
        return containers[0]
    for candidate in containers:
        if candidate.get("name") == "api":
            return candidate
    raise MigrationError("Deployment %s has %d containers (%s): name the API container (container option)"
                         % (name, len(containers), ", ".join(names)))


def _secret_ref(secret):
    if not isinstance(secret, dict) or not secret.get("name") or not secret.get("key"):
        raise MigrationError("database_url_secret needs name and key (the Secret holding the database URL)")
    return {"secretKeyRef": {"name": secret["name"], "key": secret["key"]}}


def database_url_entry(container, secret=None):
    """``(env entry, where it came from)`` of ``DATABASE_URL`` for the Job (see the module docstring)."""
    if secret:
        return ({"name": DATABASE_URL, "valueFrom": _secret_ref(secret)},
                "Secret %s key %s (database_url_secret)" % (secret["name"], secret["key"]))
    env = dict((e.get("name"), e) for e in container.get("env") or [])
    for name in (DATABASE_URL, APP_DATABASE_URL):
        if name in env:
            entry = copy.deepcopy(env[name])
            entry["name"] = DATABASE_URL
            return entry, "the API container's %s (%s)" % (name, env_display(env[name]))
    return ({"name": DATABASE_URL, "valueFrom": _secret_ref(RUNBOOK_SECRET)},
            "Secret %s key %s (the runbook's; the API container has no database URL)" % (
                RUNBOOK_SECRET["name"], RUNBOOK_SECRET["key"]))


def job_manifest(deployment, namespace, name, image=None, container=None, command=None, args=None,
                 database_url_secret=None, backoff_limit=1, active_deadline_seconds=None, run_id=None):
    """``(manifest, plan)``: the Job, and what was decided (image and where it came from, the
    DATABASE_URL source). Refuses (``MigrationError``) what cannot run."""
    source = api_container(deployment, container)
    deployment_name = (deployment.get("metadata") or {}).get("name")
    image_source = "given"
    if not image:
        image = source.get("image")
        image_source = "Deployment %s container %s" % (deployment_name, source.get("name"))
    if not image:
        raise MigrationError("no image: the API container has none and no image was given")
    command = list(command if command is not None else DEFAULT_COMMAND)
    if not command:
        raise MigrationError("command is empty: the Job would run the image's entrypoint, not the migrator")
    if backoff_limit is None or int(backoff_limit) < 0:
        raise MigrationError("backoff_limit must be 0 or more")
    url_entry, url_source = database_url_entry(source, database_url_secret)
    env = [copy.deepcopy(e) for e in source.get("env") or [] if e.get("name") != DATABASE_URL]
    env.append(url_entry)
    job_container = {"name": CONTAINER_NAME, "image": image, "command": command, "env": env}
    if args:
        job_container["args"] = [str(a) for a in args]
    if source.get("envFrom"):
        job_container["envFrom"] = copy.deepcopy(source["envFrom"])
    if source.get("imagePullPolicy"):
        job_container["imagePullPolicy"] = source["imagePullPolicy"]
    pod_spec_source = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    pod_spec = {"containers": [job_container], "restartPolicy": "Never"}
    for key in ("serviceAccountName", "imagePullSecrets"):
        if pod_spec_source.get(key):
            pod_spec[key] = copy.deepcopy(pod_spec_source[key])
    labels = dict(MIGRATION_LABELS)
    if run_id:
        labels[RUN_ID_LABEL] = run_id[:63].rstrip("-_.")
    spec = {"backoffLimit": int(backoff_limit),
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec}}
    if active_deadline_seconds:
        spec["activeDeadlineSeconds"] = int(active_deadline_seconds)
    manifest = {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": name, "namespace": namespace, "labels": labels,
                             "annotations": {"apex.ops/source": "Deployment %s/%s" % (namespace, deployment_name)}},
                "spec": spec}
    plan = dict(name=name, namespace=namespace, image=image, image_source=image_source, command=command,
                args=job_container.get("args", []), database_url_source=url_source,
                backoff_limit=int(backoff_limit), env=env_view(env))
    return manifest, plan


def env_view(env):
    """The Job's env for people: values from secrets as their reference, credential-like names masked."""
    return dict((e.get("name"), env_display(e)) for e in env)
