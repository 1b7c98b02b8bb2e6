# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""apex_migration's states: run the migration Job to its end, list the migration Jobs, delete them.

``run``: read the API Deployment, plan the Job (``migration_plan``), refuse while another migration
Job of the collection is still running, create it, watch it until Complete or Failed under one
monotonic deadline (``k8s_job.wait_job``), then read its pods and the last lines of the newest
pod's log (redacted). A complete Job is deleted with its pods (``delete_on_success``); a failed or
timed-out one is kept for inspection and raised as ``MigrationError`` whose ``last_state`` names it
and carries its conditions, pods and log tail. Check mode plans and creates nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.apex.ops.plugins.module_utils import k8s_job
from ansible_collections.apex.ops.plugins.module_utils.k8s import get_or_none
from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import workload_path
from ansible_collections.apex.ops.plugins.module_utils.migration_plan import (
    MIGRATION_SELECTOR, NAME_PREFIX, MigrationError, job_manifest, job_name)
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline

MESSAGE_LOG_LINES = 5


def pod_outcome(pod):
    """A Job pod in one dict: name, phase, and how its container ended (exit code, reason)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    entry = dict(name=meta.get("name"), phase=status.get("phase"), exit_code=None, reason=None)
    for cs in status.get("containerStatuses") or []:
        terminated = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        waiting = (cs.get("state") or {}).get("waiting")
        if terminated:
            entry.update(exit_code=terminated.get("exitCode"), reason=terminated.get("reason"))
        elif waiting:
            entry["reason"] = waiting.get("reason")
    return entry


def observe(client, namespace, job, log_lines):
    """The Job's status, its pods, and the log tail of its newest pod (the last attempt)."""
    status = k8s_job.job_status(job)
    pods = k8s_job.job_pods(client, namespace, job)
    log_tail = []
    if pods:
        newest = pods[-1]["metadata"]["name"]
        log_tail = k8s_job.pod_log_tail(client, namespace, newest, lines=log_lines, container="migration")
    return status, [pod_outcome(p) for p in pods], log_tail


def failure_message(status, log_tail, timeout, kept):
    name = "%s/%s" % (status["namespace"], status["name"])
    if status["outcome"] == "failed":
        head = "the migration Job %s failed (%s: %s; %s failed pod(s), backoffLimit %s)" % (
            name, status["reason"] or "Failed", status["message"] or "", status["failed"], status["backoff_limit"])
    else:
        head = "the migration Job %s did not finish within %ss (%s active, %s failed pod(s))" % (
            name, timeout, status["active"], status["failed"])
    where = ("; the Job is kept for inspection: kubectl logs job/%s -n %s" % (status["name"], status["namespace"])
             if kept else "")
    # the lines that say something (a traceback's ^^^^ markers do not)
    lines = [line for line in log_tail if line.strip(" ^~")][-MESSAGE_LOG_LINES:]
    return head + where + ("; last log lines: " + " | ".join(lines) if lines else "; no log lines")


def run(client, namespace, params, check_mode, now=None, sleep=time.sleep, clock=time.monotonic):
    """State ``run``. Returns the result dict; raises ``MigrationError`` (refusals, failure, timeout)."""
    deployment = get_or_none(client, workload_path("Deployment", namespace, params["deployment"]))
    if deployment is None:
        raise MigrationError("Deployment %s/%s not found: the migration Job takes the API's image and env from it"
                             % (namespace, params["deployment"]))
    name = params.get("name") or job_name(now or utcnow())
    manifest, plan = job_manifest(
        deployment, namespace, name, image=params.get("image"), container=params.get("container"),
        command=params.get("command"), args=params.get("args"), database_url_secret=params.get("database_url_secret"),
        backoff_limit=params.get("backoff_limit", 1), active_deadline_seconds=params.get("active_deadline_seconds"),
        run_id=params.get("run_id"))
    running = [j["metadata"]["name"] for j in k8s_job.list_jobs(client, namespace, MIGRATION_SELECTOR)
               if k8s_job.job_outcome(j) == "running"]
    if running:
        raise MigrationError("another migration Job is still running in %s: %s; wait for it (apex_migration "
                             "state=facts) or delete it (state=absent name=...) first" % (namespace, ", ".join(running)))
    result = dict(changed=True, job=plan)
    if check_mode:
        result["outcome"] = "planned"
        return result
    deadline = Deadline(params.get("wait_timeout"), clock=clock)
    k8s_job.create_job(client, namespace, manifest)
    waited = k8s_job.wait_job(client, namespace, name, deadline, sleep=sleep)
    status, pods, log_tail = observe(client, namespace, waited.last, params.get("log_lines", 50))
    result.update(outcome=status["outcome"], status=status, pods=pods, log_tail=log_tail,
                  elapsed_seconds=round(deadline.elapsed(), 3))
    if status["outcome"] != "complete":
        last_state = dict(job=name, kept=True, status=status, pods=pods, log_tail=log_tail,
                          elapsed_seconds=result["elapsed_seconds"])
        raise MigrationError(failure_message(status, log_tail, params.get("wait_timeout"), kept=True),
                             last_state=last_state)
    result["deleted"] = False
    if params.get("delete_on_success", True):
        result["deleted"] = k8s_job.delete_job(client, namespace, name, params.get("propagation", "Background"))
    return result


def facts(client, namespace):
    """State ``facts``: the collection's migration Jobs, oldest first, each with its status."""
    return dict(changed=False, jobs=[k8s_job.job_status(j) for j in
                                     k8s_job.list_jobs(client, namespace, MIGRATION_SELECTOR)])


def absent(client, namespace, params, check_mode):
    """State ``absent``: delete the named migration Job, or every finished one. A running Job is refused:
    deleting it would stop a migration halfway."""
    jobs = k8s_job.list_jobs(client, namespace, MIGRATION_SELECTOR)
    if params.get("name"):
        if not params["name"].startswith(NAME_PREFIX):
            raise MigrationError("%s is not a migration Job name (%s...)" % (params["name"], NAME_PREFIX))
        job = get_or_none(client, k8s_job.job_path(namespace, params["name"]))
        jobs = [job] if job is not None else []
    running = [j["metadata"]["name"] for j in jobs if k8s_job.job_outcome(j) == "running"]
    if running and params.get("name"):
        raise MigrationError("the migration Job %s is still running: deleting it would stop the migration halfway"
                             % ", ".join(running))
    names = [j["metadata"]["name"] for j in jobs if k8s_job.job_outcome(j) != "running"]
    deleted = []
    if not check_mode:
        for name in names:
            if k8s_job.delete_job(client, namespace, name, params.get("propagation", "Background")):
                deleted.append(name)
    else:
        deleted = names
    return dict(changed=bool(deleted), deleted=deleted, still_running=running)
