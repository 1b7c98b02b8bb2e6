# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The changer of apex_rollout (the I/O): read the targets and their revisions, write each planned pod
template in parallel, wait for every rollout under one deadline, and on failure put back what this call
changed; the revision history as facts.

One JSON patch per target carries the new pod template, the ``kubernetes.io/change-cause`` annotation,
``spec.paused`` and the resourceVersion read (a concurrent writer gives 409: read again, plan again).
Waiting is ``k8s_rollout.wait_rollout`` (several targets, one deadline, per-target last-seen status);
the decisions are ``rollout_plan``'s. ``run_rollout`` is the whole of one apex_rollout call.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, run_parallel
from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import normalize_kind, parse_target_name, workload_path
from ansible_collections.apex.ops.plugins.module_utils.k8s_rollout import (
    failure_message, rollout_status, rollout_target, wait_rollout)
from ansible_collections.apex.ops.plugins.module_utils.rollout_plan import (
    CHANGE_CAUSE, CHANGE_KEYS, RolloutError, check_request, history, plan_target, public_plan, revision_number,
    revisions_of, rollout_diff)
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline

REQUEST_KEYS = CHANGE_KEYS + ("container",)
REVISION_SOURCES = {
    "Deployment": ("/apis/apps/v1", "replicasets"),
    "StatefulSet": ("/apis/apps/v1", "controllerrevisions"),
}
WRITE_ATTEMPTS = 4


def build_specs(opts):
    """One request per target from ``names`` (with the call's change options) and ``targets`` (each
    with its own options; those it leaves unset come from the call). Raises RolloutError."""
    shared = dict((k, opts.get(k)) for k in REQUEST_KEYS)
    specs = []
    for value in opts.get("names") or []:
        kind, name = parse_target_name(value, opts.get("kind") or "Deployment")
        specs.append(dict(shared, kind=kind, name=name))
    for target in opts.get("targets") or []:
        if not target.get("name"):
            raise RolloutError("every entry of targets needs a name")
        kind, name = parse_target_name(target["name"], target.get("kind") or opts.get("kind") or "Deployment")
        spec = dict(shared, kind=kind, name=name)
        spec.update((k, v) for k, v in target.items() if k in REQUEST_KEYS and v is not None)
        specs.append(spec)
    seen = set()
    for spec in specs:
        ident = (spec["kind"], spec["name"])
        if ident in seen:
            raise RolloutError("%s/%s is targeted twice" % ident)
        seen.add(ident)
    return specs


def json_patch(client, path, ops):
    return client.request("PATCH", path, body=ops, content_type="application/json-patch+json")


class RolloutChanger(object):
    """Read, write in parallel, wait, put back."""

    def __init__(self, client, namespace, clock=time.monotonic):
        self.client = client
        self.namespace = namespace
        self.clock = clock

    # -- reading
    def read(self, specs, with_revisions):
        """``[(kind, obj, revisions)]`` per spec, read in parallel; a missing target raises RolloutError
        naming every missing one (nothing changed)."""
        calls = dict(("t%d" % i, (lambda s=s: self.client.get(workload_path(s["kind"], self.namespace, s["name"]))))
                     for i, s in enumerate(specs))
        kinds = sorted(set(s["kind"] for s in specs)) if with_revisions else []
        for kind in kinds:
            group, plural = REVISION_SOURCES[kind]
            calls["rev-" + kind] = (lambda p="%s/namespaces/%s/%s" % (group, self.namespace, plural): self.client.list(p))
        raw = run_parallel(calls, max_workers=16)
        missing, out = [], []
        for i, spec in enumerate(specs):
            obj, exc = raw["t%d" % i]
            if exc is not None:
                if isinstance(exc, KubeApiError) and exc.not_found:
                    missing.append("%s %s" % (spec["kind"], spec["name"]))
                    continue
                raise exc
            revisions = None
            if with_revisions:
                listed, exc = raw["rev-" + spec["kind"]]
                if exc is not None:
                    raise exc
                revisions = revisions_of(spec["kind"], obj, (listed or {}).get("items"))
            out.append((spec["kind"], obj, revisions))
        if missing:
            raise RolloutError("not found in namespace %s: %s. Nothing was changed." % (self.namespace, ", ".join(missing)))
        return out

    # -- writing
    def write(self, plan, obj, replan):
        """Patch one target with its plan (template, change-cause, paused) under the resourceVersion read.
        On 409 (someone wrote in between) read again and ``replan(obj)``; returns the plan written."""
        path = workload_path(plan["kind"], self.namespace, plan["name"])
        for attempt in range(WRITE_ATTEMPTS):
            if not plan["changed"]:
                return plan
            ops = [dict(op="replace", path="/metadata/resourceVersion", value=obj["metadata"]["resourceVersion"]),
                   dict(op="replace", path="/spec/template", value=plan["template"]),
                   dict(op="add", path="/metadata/annotations", value=plan["annotations"])]
            if plan["paused_after"] is not None:
                ops.append(dict(op="add", path="/spec/paused", value=plan["paused_after"]))
            try:
                json_patch(self.client, path, ops)
                return plan
            except KubeApiError as exc:
                if not exc.conflict or attempt == WRITE_ATTEMPTS - 1:
                    raise
            obj = self.client.get(path)
            plan = replan(obj)
        return plan

    def restore(self, plan, before):
        """Put back the pod template, change-cause and paused of ``before`` (the object as read before this
        call). Other annotations stay as they are now (the controller's revision)."""
        path = workload_path(plan["kind"], self.namespace, plan["name"])
        for attempt in range(WRITE_ATTEMPTS):
            now = self.client.get(path)
            annotations = dict((now.get("metadata") or {}).get("annotations") or {})
            cause = ((before.get("metadata") or {}).get("annotations") or {}).get(CHANGE_CAUSE)
            annotations.pop(CHANGE_CAUSE, None)
            if cause is not None:
                annotations[CHANGE_CAUSE] = cause
            ops = [dict(op="replace", path="/metadata/resourceVersion", value=now["metadata"]["resourceVersion"]),
                   dict(op="replace", path="/spec/template", value=before["spec"]["template"]),
                   dict(op="add", path="/metadata/annotations", value=annotations)]
            if plan["kind"] == "Deployment":
                ops.append(dict(op="add", path="/spec/paused", value=bool(before["spec"].get("paused"))))
            try:
                json_patch(self.client, path, ops)
                return
            except KubeApiError as exc:
                if not exc.conflict or attempt == WRITE_ATTEMPTS - 1:
                    raise

    def wait(self, plans, timeout):
        """``wait_rollout`` entries (one deadline) for the plans whose rollout runs (changed, not paused)."""
        targets = [rollout_target(p["kind"], self.namespace, p["name"]) for p in plans
                   if p["changed"] and not p["paused"]]
        if not targets:
            return {}
        entries = wait_rollout(self.client, targets, Deadline(timeout, clock=self.clock))
        return dict(("%s/%s/%s" % (e["kind"], e["namespace"], e["name"]), e) for e in entries)

    def not_ready_pods(self, kind, obj):
        from ansible_collections.apex.ops.plugins.module_utils.k8s_scaler import Scaler

        return Scaler(self.client, self.namespace).not_ready_pods(kind, obj)

    def read_back(self, plans):
        """``{key: object}`` as it is now (one GET each, in parallel; None when the read failed)."""
        calls = dict((p["key"], (lambda p=p: self.client.get(workload_path(p["kind"], self.namespace, p["name"]))))
                     for p in plans)
        return dict((key, value) for key, (value, dummy) in run_parallel(calls, max_workers=16).items())


def check_options(opts):
    """Refuse what the argument spec cannot express, before any API call."""
    if opts.get("wait") and (opts.get("wait_timeout") or 0) < 1:
        raise RolloutError("wait_timeout must be at least 1 second (or set wait: false)")
    if not (opts.get("names") or opts.get("targets")):
        raise RolloutError("no targets: give names or targets")


def _facts(changer, specs):
    out = []
    for kind, obj, revisions in changer.read(specs, with_revisions=True):
        meta = obj.get("metadata") or {}
        entries = history(kind, obj, revisions)
        current = [e["revision"] for e in entries if e["current"]]
        out.append(dict(key="%s/%s/%s" % (kind, meta.get("namespace"), meta.get("name")), kind=kind,
                        name=meta.get("name"), revision=current[0] if current else None,
                        paused=bool((obj.get("spec") or {}).get("paused")),
                        change_cause=(meta.get("annotations") or {}).get(CHANGE_CAUSE),
                        rollout=rollout_status(obj, kind), history=entries))
    return out


def run_rollout(client, namespace, opts, check_mode=False, diff=False, now=None, clock=time.monotonic):
    """The whole of one apex_rollout call: returns the result dict; raises RolloutError (with
    ``last_state`` when something was written) on a refusal or a failed rollout."""
    started = clock()
    check_options(opts)
    specs = build_specs(opts)
    changer = RolloutChanger(client, namespace, clock=clock)
    if opts.get("state") == "facts":
        return dict(changed=False, targets=_facts(changer, specs), elapsed_seconds=round(clock() - started, 3))
    allow_any = bool(opts.get("allow_any_env"))
    for spec in specs:
        check_request(normalize_kind(spec["kind"]), spec, allow_any)
    needs_revisions = any(s.get("undo") or s.get("to_revision") is not None for s in specs)
    read = changer.read(specs, with_revisions=needs_revisions)
    cause = opts.get("change_cause")

    def planner(spec, kind, revisions):
        return lambda obj: plan_target(kind, obj, spec, revisions, now=now, cause=cause)

    plans, befores, replans = [], {}, {}
    for spec, (kind, obj, revisions) in zip(specs, read):
        replan = planner(spec, kind, revisions)
        plan = replan(obj)
        plans.append(plan)
        befores[plan["key"]], replans[plan["key"]] = obj, replan
    result = dict(changed=any(p["changed"] for p in plans), targets=[public_plan(p) for p in plans])
    if check_mode or not result["changed"]:
        for entry in result["targets"]:
            entry["rollout"] = rollout_status(befores[entry["key"]], entry["kind"])
        if diff:
            result["diff"] = rollout_diff(plans)
        result["elapsed_seconds"] = round(clock() - started, 3)
        return result

    # write every changed target at once (one thread each)
    calls = dict((p["key"], (lambda p=p: changer.write(p, befores[p["key"]], replans[p["key"]])))
                 for p in plans if p["changed"])
    written = run_parallel(calls, max_workers=16)
    errors, done = [], []
    for index, plan in enumerate(plans):
        if plan["key"] not in written:
            continue
        value, exc = written[plan["key"]]
        if exc is not None:
            errors.append("%s: %s" % (plan["key"], exc))
            result["targets"][index]["error"] = str(exc)
        else:
            plans[index] = value
            result["targets"][index] = public_plan(value)
            done.append(value)
    result["changed"] = bool(done)
    timeout = opts.get("wait_timeout") or 300
    waited = changer.wait(done, timeout) if opts.get("wait", True) and not errors else {}
    failures = []
    for entry in result["targets"]:
        waited_entry = waited.get(entry["key"])
        if waited_entry is None:
            continue
        entry["rollout"] = waited_entry["last"]
        entry["outcome"] = waited_entry["outcome"]
        message = failure_message(waited_entry, timeout)
        if message:
            entry["wait_failure"] = dict(outcome=waited_entry["outcome"], message=message, error=waited_entry["error"],
                                         pods_not_ready=changer.not_ready_pods(entry["kind"], befores[entry["key"]]))
            failures.append(message + (("; not ready: " + ", ".join(entry["wait_failure"]["pods_not_ready"]))
                                       if entry["wait_failure"]["pods_not_ready"] else ""))
    if errors or failures:
        msg = []
        if errors:
            msg.append("writing failed: " + " | ".join(errors))
        msg.extend(failures)
        rolled_back = []
        if opts.get("rollback_on_failure", True) and done:
            rolled_back = put_back(changer, done, befores, timeout)
            msg.append("Put back what this call changed: " + "; ".join(rolled_back))
        elif done:
            msg.append("Nothing was put back (rollback_on_failure is false): the targets keep this call's change")
        raise RolloutError(". ".join(msg), last_state=dict(targets=result["targets"], rolled_back=rolled_back))

    after = changer.read_back(done)
    for entry in result["targets"]:
        obj = after.get(entry["key"])
        if obj is not None:
            entry["revision_after"] = revision_number(obj) if entry["kind"] == "Deployment" else \
                (obj.get("status") or {}).get("updateRevision")
    if diff:
        result["diff"] = rollout_diff(plans)
    result["elapsed_seconds"] = round(clock() - started, 3)
    return result


def put_back(changer, plans, befores, timeout):
    """Restore each changed target's pod template as read before the call (in parallel), wait for those
    rollouts (a deadline of their own) and say per target what happened."""
    calls = dict((p["key"], (lambda p=p: changer.restore(p, befores[p["key"]]))) for p in plans)
    restored = run_parallel(calls, max_workers=16)
    ok = [p for p in plans if restored[p["key"]][1] is None]
    waited = changer.wait([dict(p, changed=True, paused=bool(befores[p["key"]]["spec"].get("paused"))) for p in ok],
                          timeout)
    lines = []
    for plan in plans:
        exc = restored[plan["key"]][1]
        if exc is not None:
            lines.append("%s: putting it back failed (%s)" % (plan["key"], exc))
            continue
        line = "%s -> pod template as before this call" % plan["key"]
        if any(c.startswith("restart") for c in plan["changes"]):
            line += " (the restarted pods were already replaced; that cannot be undone)"
        entry = waited.get(plan["key"])
        if entry is not None:
            message = failure_message(entry, timeout)
            line += ", rolled out" if message is None else ", but %s" % message
        lines.append(line)
    return lines
