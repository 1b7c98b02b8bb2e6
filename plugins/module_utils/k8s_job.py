# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes Jobs (batch/v1): judging them (pure) and running them (I/O).

* ``job_outcome(job)``: ``complete``, ``failed`` or ``running``, read from the ``Complete`` and
  ``Failed`` conditions (what ``kubectl wait --for=condition=...`` reads), and ``job_status`` with
  what it was judged on (conditions, pod counts, times): what a failure or a timeout reports.
* ``wait_job``: watched (``k8s.object_stream`` + ``waiting.watch_until``, one monotonic deadline)
  until the Job is complete or failed.
* ``job_pods`` and ``pod_log_tail``: the Job's pods (by its selector, oldest first) and the last
  lines of a pod's log, redacted (``redaction.redact``): a migration's log may print a DSN.
* ``delete_job``: with its pods (``propagationPolicy`` Background or Foreground; the API's default
  for a Job is Orphan, which would leave the pods behind).

Used by ``migration_runner`` (apex_migration).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, object_stream
from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import condition, ns_path, selector_string
from ansible_collections.apex.ops.plugins.module_utils.redaction import redact
from ansible_collections.apex.ops.plugins.module_utils.waiting import watch_until

JOBS_API = ("/apis/batch/v1", "jobs")
PODS_API = ("/api/v1", "pods")
PROPAGATION_POLICIES = ("Background", "Foreground")


def job_path(namespace, name=None):
    return ns_path(JOBS_API, namespace, name)


# --------------------------------------------------------------------------- judging (pure)


def job_outcome(job):
    """``complete``, ``failed`` or ``running`` (also for a Job not started yet)."""
    for ctype, outcome in (("Failed", "failed"), ("Complete", "complete")):
        cond = condition(job, ctype)
        if cond and str(cond.get("status")) == "True":
            return outcome
    return "running"


def job_status(job):
    """What a Job's outcome was judged on: name, outcome, reason/message of the deciding condition,
    every condition, pod counts and times."""
    meta, status = (job or {}).get("metadata") or {}, (job or {}).get("status") or {}
    outcome = job_outcome(job)
    deciding = condition(job, {"failed": "Failed", "complete": "Complete"}.get(outcome, "")) or {}
    return dict(
        name=meta.get("name"),
        namespace=meta.get("namespace"),
        outcome=outcome,
        reason=deciding.get("reason"),
        message=deciding.get("message"),
        conditions=[dict((k, c.get(k)) for k in ("type", "status", "reason", "message", "lastTransitionTime"))
                    for c in status.get("conditions") or []],
        active=status.get("active", 0),
        succeeded=status.get("succeeded", 0),
        failed=status.get("failed", 0),
        backoff_limit=((job or {}).get("spec") or {}).get("backoffLimit"),
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
    )


def tail_lines(text, lines, secrets=()):
    """The last ``lines`` non-empty lines of ``text``, each redacted."""
    kept = [line.rstrip() for line in (text or "").splitlines() if line.strip()]
    return [redact(line, secrets) for line in kept[-lines:]] if lines > 0 else []


# --------------------------------------------------------------------------- I/O


def create_job(client, namespace, manifest):
    return client.post(job_path(namespace), manifest)


def wait_job(client, namespace, name, deadline, sleep=time.sleep):
    """Watch the Job until it is complete or failed, or ``deadline`` expires; the ``WaitResult``'s
    ``last`` is the Job last seen. Its deletion meanwhile raises a 404 ``KubeApiError``."""
    relist, watch = object_stream(client, job_path(namespace), name)
    return watch_until(relist, watch, lambda job: job_outcome(job) != "running", deadline, sleep=sleep)


def job_pods(client, namespace, job):
    """The Job's pods by its selector, oldest first."""
    selector = selector_string(((job or {}).get("spec") or {}).get("selector"))
    if not selector:
        return []
    pods = client.list(ns_path(PODS_API, namespace), label_selector=selector).get("items") or []
    return sorted(pods, key=lambda p: ((p.get("metadata") or {}).get("creationTimestamp") or "",
                                       (p.get("metadata") or {}).get("name") or ""))


def pod_log_tail(client, namespace, pod_name, lines=50, container=None, secrets=()):
    """The last ``lines`` lines of the pod's log, redacted; a log that cannot be read is one line
    saying why (the failure report must not fail for want of a log)."""
    query = {"tailLines": max(1, int(lines))}
    if container:
        query["container"] = container
    try:
        text = client.get_text(ns_path(PODS_API, namespace, pod_name, "log"), query=query)
    except KubeApiError as exc:
        return ["(log of pod %s not available: %s)" % (pod_name, redact(str(exc), secrets))]
    return tail_lines(text, lines, secrets)


def delete_job(client, namespace, name, propagation="Background"):
    """Delete the Job and (through the garbage collector) its pods; False when it was already gone."""
    if propagation not in PROPAGATION_POLICIES:
        raise ValueError("propagation must be one of %s" % ", ".join(PROPAGATION_POLICIES))
    try:
        client.request("DELETE", job_path(namespace, name), query={"propagationPolicy": propagation})
    except KubeApiError as exc:
        if exc.not_found:
            return False
        raise
    return True


def list_jobs(client, namespace, label_selector):
    """Jobs matching the selector, oldest first."""
    jobs = client.list(job_path(namespace), label_selector=label_selector).get("items") or []
    return sorted(jobs, key=lambda j: ((j.get("metadata") or {}).get("creationTimestamp") or "",
                                       (j.get("metadata") or {}).get("name") or ""))
