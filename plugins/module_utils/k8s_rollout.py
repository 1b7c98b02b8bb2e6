# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollouts of Deployments and StatefulSets: restart them, judge them, wait for them.

* ``restart(client, kind, namespace, name)``: what ``kubectl rollout restart`` does, a
  ``kubectl.kubernetes.io/restartedAt`` pod-template annotation (one merge patch).
* ``rollout_state(obj, kind)``: kubectl's verdict (complete, progressing, failed, paused) and
  ``rollout_status(obj, kind)``: that verdict with what it was judged on (observedGeneration,
  updated/ready/available replicas, conditions): what a timeout reports.
* ``watch_rollout``: one target, watched (``k8s.object_stream`` + ``waiting.watch_until``: the
  watch lists again on 410 Gone and broken streams) until complete or failed, optionally until
  ready at an expected replica count, following (not fighting) an HPA that moves it meanwhile.
* ``wait_rollout(client, targets, deadline)``: several targets at once, one thread each, under
  one monotonic deadline; returns per target whether it completed and what was last seen.

Used by apex_scale (its ``restart`` option and its waits) and apex_cert (the ingress restart).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.apex.ops.plugins.module_utils.k8s import object_stream, run_parallel
from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import condition, normalize_kind, workload_path
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow
from ansible_collections.apex.ops.plugins.module_utils.waiting import watch_until

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


# --------------------------------------------------------------------------- restart


def restart_patch(now=None):
    """The merge patch of ``kubectl rollout restart``: a ``restartedAt`` pod-template annotation.

    The stamp carries microseconds. kubectl's whole-second stamp makes a second restart within the
    same second a no-op (same template, no new ReplicaSet), so a caller waiting for "the" rollout
    would see the previous one as complete and go on with pods that never restarted.
    """
    moment = now or utcnow()
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return stamp, {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}


def restart(client, kind, namespace, name, now=None):
    """Restart the pods of a Deployment or StatefulSet (rolling, by its controller); returns the stamp.

    A missing target raises the API's 404 ``KubeApiError``."""
    stamp, patch = restart_patch(now)
    client.merge_patch(workload_path(normalize_kind(kind), namespace, name), patch)
    return stamp


# --------------------------------------------------------------------------- judging (pure)


def rollout_state(obj, kind):
    """``(state, message)``: state is complete, progressing, failed or paused (kubectl's rules)."""
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    desired = spec.get("replicas", 1)
    if desired is None:
        desired = 1
    if (status.get("observedGeneration") or 0) < (meta.get("generation") or 0):
        return "progressing", "waiting for the spec update to be observed"
    updated = status.get("updatedReplicas") or 0
    current = status.get("replicas") or 0
    ready = status.get("readyReplicas") or 0
    if kind == "Deployment":
        if spec.get("paused"):
            return "paused", "the deployment is paused"
        progressing = condition(obj, "Progressing")
        if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
            return "failed", "progress deadline exceeded: %s" % (progressing.get("message") or "")
        available = status.get("availableReplicas") or 0
        if updated < desired:
            return "progressing", "%d of %d new replicas have been updated" % (updated, desired)
        if current > updated:
            return "progressing", "%d old replicas are pending termination" % (current - updated)
        if available < updated:
            return "progressing", "%d of %d updated replicas are available" % (available, updated)
        return "complete", "successfully rolled out"
    # StatefulSet
    if ready < desired:
        return "progressing", "%d of %d pods are ready" % (ready, desired)
    strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if strategy == "RollingUpdate":
        if "updatedReplicas" in status and updated < desired:
            return "progressing", "%d of %d pods have been updated" % (updated, desired)
        if status.get("updateRevision") and status.get("currentRevision") and \
                status["updateRevision"] != status["currentRevision"]:
            return "progressing", "waiting for the update to revision %s" % status["updateRevision"]
    return "complete", "rolled out"


def is_settled(obj, kind, expect_replicas=None):
    """Rolled out, ready == desired, no surplus pods, and (if given) desired == expect_replicas."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    desired = spec.get("replicas", 1)
    if expect_replicas is not None and desired != expect_replicas:
        return False
    state = rollout_state(obj, kind)[0]
    if state != "complete":
        return False
    return (status.get("readyReplicas") or 0) == desired and (status.get("replicas") or 0) == desired


def rollout_status(obj, kind):
    """What a rollout looks like: the counts and conditions, and the verdict judged on them. Pure."""
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    want = spec.get("replicas")
    state, message = rollout_state(obj, kind)
    return dict(
        generation=meta.get("generation"), observed_generation=status.get("observedGeneration"),
        replicas=status.get("replicas") or 0, updated_replicas=status.get("updatedReplicas") or 0,
        ready_replicas=status.get("readyReplicas") or 0, available_replicas=status.get("availableReplicas") or 0,
        desired_replicas=1 if want is None else want,
        conditions=[dict((k, c.get(k)) for k in ("type", "status", "reason", "message"))
                    for c in status.get("conditions") or []],
        state=state, message=message, complete=state == "complete",
    )


# --------------------------------------------------------------------------- waiting


def watch_rollout(client, kind, namespace, name, deadline, replicas=None, written=False, deleted_error=None,
                  sleep=time.sleep):
    """Watch one target until its rollout is complete (or failed), or ``deadline`` expires.

    ``replicas``: also wait until ready == desired == ``replicas`` with no surplus pods. Once that
    count was in place, a later change of spec.replicas (the HPA acting within its bounds, or
    someone else) is followed, and reported as ``moved_to``, not undone. ``written``: the caller
    set spec.replicas to ``replicas`` itself, so a different count at the first read already
    means someone moved it afterwards.

    Returns the ``waiting.WaitResult`` (``ok`` false on a failed rollout too; ``last`` the object
    last seen) with ``moved_to`` (None when the target is at ``replicas``). A missing target
    raises the API's 404; its deletion during the wait raises ``deleted_error()`` (by default a
    404 ``KubeApiError``).
    """
    kind = normalize_kind(kind)
    relist, watch = object_stream(client, workload_path(kind, namespace), name, deleted_error=deleted_error)
    state = dict(seen=written, moved_to=None)

    def done(obj):
        if replicas is None:
            return rollout_state(obj, kind)[0] in ("complete", "failed")
        desired = (obj.get("spec") or {}).get("replicas", 1)
        if desired == replicas:
            state["seen"], state["moved_to"] = True, None
        elif state["seen"]:
            state["moved_to"] = desired
        want = replicas if state["moved_to"] is None else None
        return is_settled(obj, kind, want) or rollout_state(obj, kind)[0] == "failed"

    result = watch_until(relist, watch, done, deadline, sleep=sleep)
    if result.ok and rollout_state(result.last, kind)[0] == "failed":
        result.ok = False
    result.moved_to = state["moved_to"]
    return result


def rollout_target(kind, namespace, name, replicas=None):
    """One entry of ``wait_rollout``'s ``targets`` (``replicas``: as for ``watch_rollout``)."""
    return dict(kind=normalize_kind(kind), namespace=namespace, name=name, replicas=replicas)


def wait_rollout(client, targets, deadline, raise_errors=False, sleep=time.sleep, max_workers=16):
    """Wait for every target's rollout at once (one thread each) under one ``deadline``.

    ``targets``: ``rollout_target()`` dicts. Returns one dict per target, in order: ``key``
    (Kind/namespace/name), ``kind``, ``namespace``, ``name``, ``ok``, ``outcome`` (complete, failed,
    timeout or error), ``error`` (the message when watching it failed), ``moved_to``,
    ``observations`` and ``last``: the ``rollout_status`` last seen (None if never read).
    One target's error (a 404, a refused watch) does not stop the others: each reports its own
    outcome; with ``raise_errors`` the first error is raised once every wait has ended.
    """
    keyed = []
    for target in targets:
        target = rollout_target(target["kind"], target["namespace"], target["name"], target.get("replicas"))
        keyed.append(("%s/%s/%s" % (target["kind"], target["namespace"], target["name"]), target))

    def one(target):
        return watch_rollout(client, target["kind"], target["namespace"], target["name"], deadline,
                             replicas=target["replicas"], sleep=sleep)

    raw = run_parallel(dict((key, (lambda t=target: one(t))) for key, target in keyed), max_workers=max_workers)
    out = []
    for key, target in keyed:
        result, exc = raw[key]
        if exc is not None and raise_errors:
            raise exc
        entry = dict(key=key, kind=target["kind"], namespace=target["namespace"], name=target["name"],
                     ok=False, outcome="error", error=None, moved_to=None, observations=0, last=None)
        if exc is not None:
            entry["error"] = str(exc)
        else:
            last = rollout_status(result.last, target["kind"]) if result.last else None
            failed = bool(last) and last["state"] == "failed"
            entry.update(ok=bool(result.ok), moved_to=result.moved_to, observations=result.observations, last=last,
                         outcome="complete" if result.ok else ("failed" if failed else "timeout"))
        out.append(entry)
    return out


def failure_message(entry, timeout):
    """What went wrong with one ``wait_rollout`` entry, for the on-call engineer; None when complete."""
    what = "%s %s/%s" % (entry["kind"], entry["namespace"], entry["name"])
    last = entry.get("last") or {}
    if entry["outcome"] == "complete":
        return None
    if entry["outcome"] == "failed":
        return "the rollout of %s failed: %s" % (what, last.get("message"))
    if entry["outcome"] == "timeout":
        return "timed out after %ss waiting for the rollout of %s (%s)" % (
            timeout, what, last.get("message") or "never observed")
    return "waiting for the rollout of %s failed: %s" % (what, entry.get("error"))
