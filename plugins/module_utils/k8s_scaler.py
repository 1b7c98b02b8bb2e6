# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scaler of apex_scale (the I/O): resolve targets, plan, apply in parallel, wait, save and restore.

Targets are scaled in parallel, one thread each: HPA patch (before the workload, so the two never
disagree), scale subresource, the optional rolling restart, then a watch of that one object
(``k8s_rollout.watch_rollout``) until rolled out and ready == desired. A failure or timeout rolls
back what this call changed and reports, per target, what was last seen and the pods not ready.
``run_scale`` is the whole of one apex_scale call; the decisions are ``k8s_scale_plan``'s.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, run_parallel
from ansible_collections.apex.ops.plugins.module_utils.k8s_info import event_summary, pod_summary
from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import (
    HPA_API, hpa_bounds, hpa_target, normalize_kind, ns_path, parse_selector, selector_matches, selector_string,
    workload_path)
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow
from ansible_collections.apex.ops.plugins.module_utils.k8s_rollout import restart, rollout_state, watch_rollout
from ansible_collections.apex.ops.plugins.module_utils.k8s_scale_plan import (
    AboveCeiling, ScaleError, build_specs, hpa_patch, node_pod_capacity, observed_state, other_writer_notes,
    plan_target, public_plan, replica_ceiling, scale_diff, specs_from_record)
from ansible_collections.apex.ops.plugins.module_utils.k8s_scale_state import STATE_CONFIGMAP, StateStore, state_record
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline


class Scaler(object):
    """Resolve targets, plan, apply in parallel, wait, save and restore."""

    def __init__(self, client, namespace, context=None, clock=time.monotonic):
        self.client = client
        self.namespace = namespace
        self.context = context
        self.clock = clock

    # -- reading
    def snapshot(self, kinds):
        calls = dict((k, (lambda k=k: self.client.list(workload_path(k, self.namespace)))) for k in kinds)
        calls["hpas"] = lambda: self.client.list(ns_path(HPA_API, self.namespace))
        raw = run_parallel(calls)
        for key, (dummy, exc) in raw.items():
            if exc is not None:
                if isinstance(exc, KubeApiError) and exc.not_found and key == "hpas":
                    continue
                raise exc
        objects = {}
        for kind in kinds:
            for obj in (raw[kind][0] or {}).get("items") or []:
                objects[(kind, obj["metadata"]["name"])] = obj
        hpas = {}
        for hpa in ((raw.get("hpas") or (None, None))[0] or {}).get("items") or []:
            hpas[hpa_target(hpa)] = hpa
        return objects, hpas

    def resolve(self, specs):
        """``specs``: dicts with kind and name or label_selector, plus the request keys.

        Returns ``[(kind, obj, hpa, request)]``; raises ScaleError for targets that do not exist.
        """
        kinds = sorted(set(normalize_kind(s.get("kind") or "Deployment") for s in specs))
        objects, hpas = self.snapshot(kinds)
        resolved, seen, errors = [], set(), []
        for spec in specs:
            kind = normalize_kind(spec.get("kind") or "Deployment")
            matches = []
            if spec.get("name"):
                obj = objects.get((kind, spec["name"]))
                if obj is None:
                    present = sorted(n for (k, n) in objects if k == kind)
                    errors.append("%s %s not found in namespace %s (%s there: %s)" % (
                        kind, spec["name"], self.namespace, kind, ", ".join(present) or "none"))
                    continue
                matches = [obj]
            elif spec.get("label_selector"):
                selector = parse_selector(spec["label_selector"])
                matches = [o for (k, dummy), o in sorted(objects.items())
                           if k == kind and selector_matches(selector, (o.get("metadata") or {}).get("labels"))]
                if not matches:
                    errors.append("no %s in namespace %s matches label selector %r" % (
                        kind, self.namespace, spec["label_selector"]))
                    continue
            for obj in matches:
                ident = (kind, obj["metadata"]["name"])
                if ident in seen:
                    errors.append("%s/%s is targeted twice" % ident)
                    continue
                seen.add(ident)
                resolved.append((kind, obj, hpas.get(ident), spec))
        if errors:
            raise ScaleError("; ".join(errors) + ". Nothing was changed.")
        return resolved

    def node_capacity(self):
        """``node_pod_capacity`` of the cluster, or None when the nodes cannot be read (e.g. RBAC)."""
        try:
            nodes = self.client.list("/api/v1/nodes")
        except KubeApiError as exc:
            if exc.unauthorized or exc.not_found:
                return None
            raise
        return node_pod_capacity((nodes or {}).get("items"))

    def plan(self, resolved, hpa_adjust=False, allow_zero=False, check_ceiling=True, ceiling_override=None,
             allow_above_ceiling=False):
        """Plan every target. The nodes are read only when a request is above the ceiling derived
        without them (the node capacity can only raise it)."""
        capacity = None
        for attempt in (0, 1):
            plans, errors, above = [], [], False
            for kind, obj, hpa, request in resolved:
                ceiling = None
                if check_ceiling:
                    ceiling = replica_ceiling((obj.get("spec") or {}).get("replicas", 1),
                                              hpa_bounds(hpa)["max_replicas"] if hpa else None,
                                              capacity, ceiling_override)
                try:
                    plan = plan_target(kind, obj, hpa, request, hpa_adjust=hpa_adjust, allow_zero=allow_zero,
                                       ceiling=ceiling, allow_above_ceiling=allow_above_ceiling)
                except AboveCeiling as exc:
                    above = True
                    errors.append(str(exc))
                    continue
                except ScaleError as exc:
                    errors.append(str(exc))
                    continue
                plan["_obj"], plan["_hpa"] = obj, hpa
                plans.append(plan)
            if above and attempt == 0 and ceiling_override is None and not allow_above_ceiling:
                capacity = self.node_capacity()
                if capacity is not None:
                    continue
            break
        if errors:
            raise ScaleError(" | ".join(errors))
        return plans

    # -- writing
    def _apply_one(self, plan, request, wait, deadline):
        timings = {}
        started = self.clock()
        timings["start_offset_seconds"] = round(started - deadline.started, 3)
        path = workload_path(plan["kind"], self.namespace, plan["name"])
        if plan["hpa_changed"]:
            patch = hpa_patch(plan["_hpa"], plan["after"]["hpa"])
            if patch:
                self.client.merge_patch(ns_path(HPA_API, self.namespace, plan["hpa"]), patch)
        if plan["set_replicas"] is not None:
            self._scale(plan, request, path)
        if plan.get("restart"):
            restart(self.client, plan["kind"], self.namespace, plan["name"])
        timings["apply_seconds"] = round(self.clock() - started, 3)
        outcome = dict(ok=True)
        if wait:
            wait_started = self.clock()
            result = self.wait_settled(plan["kind"], plan["name"], plan["after"]["replicas"], deadline,
                                       written=plan["set_replicas"] is not None)
            timings["wait_seconds"] = round(self.clock() - wait_started, 3)
            outcome = dict(ok=result.ok, last=result.last, observations=result.observations,
                           moved_to=result.moved_to)
        if plan["changed"]:
            # what the cluster ended at, read after the wait: another writer may have won
            outcome["final"], outcome["final_hpa"], outcome["final_error"] = self.read_back(plan)
        timings["total_seconds"] = round(self.clock() - started, 3)
        outcome["timings"] = timings
        return outcome

    def read_back(self, plan):
        """``(workload, hpa, error)`` as they are now (one GET each); never raises."""
        try:
            obj = self.client.get(workload_path(plan["kind"], self.namespace, plan["name"]))
            hpa = self.client.get(ns_path(HPA_API, self.namespace, plan["hpa"])) if plan["hpa"] else None
            return obj, hpa, None
        except Exception as exc:  # noqa: BLE001 - reported; the write itself succeeded
            return None, None, str(exc)

    def _scale(self, plan, request, path, retries=5):
        """Scale subresource: merge patch; a PUT with resourceVersion when a precondition is set."""
        if request.get("current_replicas") is None:
            self.client.merge_patch(path + "/scale", {"spec": {"replicas": plan["set_replicas"]}})
            return
        obj = plan["_obj"]
        for dummy in range(retries):
            body = dict(apiVersion="autoscaling/v1", kind="Scale",
                        metadata=dict(name=plan["name"], namespace=self.namespace,
                                      resourceVersion=obj["metadata"]["resourceVersion"]),
                        spec=dict(replicas=plan["set_replicas"]))
            try:
                self.client.put(path + "/scale", body)
                return
            except KubeApiError as exc:
                if not exc.conflict:
                    raise
            obj = self.client.get(path)
            now = (obj.get("spec") or {}).get("replicas", 1)
            if now != request["current_replicas"]:
                raise ScaleError("%s: precondition failed while scaling: it now has %d replicas, current_replicas "
                                 "expected %d" % (plan["key"], now, request["current_replicas"]))
        raise ScaleError("%s: the object kept changing under us (conflicts); try again" % plan["key"])

    def wait_settled(self, kind, name, expect, deadline, written=False):
        """Until the target is rolled out and ready at ``expect`` replicas, following (and reporting
        as ``moved_to``) a later change of the count by the HPA or someone else: never fight.

        ``written``: this run set spec.replicas to ``expect`` itself (the API accepted it), so a
        different count seen by the first read already means someone moved it afterwards."""
        return watch_rollout(
            self.client, kind, self.namespace, name, deadline, replicas=expect, written=written,
            deleted_error=lambda: ScaleError("%s/%s was deleted while waiting for it" % (kind, name)))

    def not_ready_pods(self, kind, obj, limit=20):
        """Each pod of the target that is not ready, with why: its state, and its latest Warning event
        (e.g. ``Unhealthy: Readiness probe failed: ...``). Two list calls, made only on failure."""
        selector = selector_string((obj.get("spec") or {}).get("selector"))
        calls = dict(
            pods=lambda: self.client.list("/api/v1/namespaces/%s/pods" % self.namespace, label_selector=selector),
            events=lambda: self.client.list("/api/v1/namespaces/%s/events" % self.namespace,
                                            field_selector="type=Warning,involvedObject.kind=Pod"))
        raw = run_parallel(calls)
        pods, exc = raw["pods"]
        if exc is not None:
            return ["(could not list pods: %s)" % exc]
        latest = {}
        for event in ((raw["events"][0] or {}).get("items") or []):
            summary = event_summary(event)
            name = summary["object"].split("/", 1)[-1]
            if name not in latest or (summary["last_seen"] or "") >= (latest[name]["last_seen"] or ""):
                latest[name] = summary
        now = utcnow()
        out = []
        for pod in pods.get("items") or []:
            summary = pod_summary(pod, now)
            if not summary["ready"]:
                why = summary["not_ready_reason"]
                event = latest.get(summary["name"])
                if event:
                    why = "%s; last event %s: %s" % (why, event["reason"], event["message"])
                out.append("%s: %s" % (summary["name"], why))
        return out[:limit]

    def apply(self, plans, requests, wait=True, timeout=300):
        """Apply every plan in parallel (one thread each); returns per-target outcomes."""
        deadline = Deadline(timeout, clock=self.clock)
        calls = {}
        for plan in plans:
            if plan["changed"] or wait:
                calls[plan["key"]] = (lambda p=plan: self._apply_one(p, requests[p["key"]], wait, deadline))
        return run_parallel(calls, max_workers=16)

    def describe_timeout(self, plan, outcome):
        obj = outcome.get("last") or {}
        status = obj.get("status") or {}
        desired = (obj.get("spec") or {}).get("replicas")
        state, message = rollout_state(obj, plan["kind"]) if obj else ("unknown", "never observed")
        pods = self.not_ready_pods(plan["kind"], obj) if obj else []
        return dict(
            target=plan["key"], desired=desired, ready=status.get("readyReplicas") or 0,
            updated=status.get("updatedReplicas") or 0, current=status.get("replicas") or 0,
            rollout=state, message=message, pods_not_ready=pods,
            line="%s: ready %d/%s, rollout %s (%s)%s" % (
                plan["key"], status.get("readyReplicas") or 0, desired, state, message,
                ("; not ready: " + ", ".join(pods)) if pods else ""),
        )


# what restore_state cannot be combined with: it restores the recorded targets exactly
RESTORE_EXCLUSIVE = ("names", "label_selectors", "targets", "replicas", "replicas_delta", "current_replicas",
                     "hpa_min_replicas", "hpa_max_replicas", "hpa_target_cpu", "save_state", "restart")


def check_options(opts):
    """Refuse option combinations the argument spec cannot express (raises ScaleError), before any API call."""
    if opts.get("restore_state"):
        given = [k for k in RESTORE_EXCLUSIVE if opts.get(k) not in (None, [], False)]
        if given:
            raise ScaleError("restore_state restores the recorded targets exactly; it cannot be combined with %s"
                             % ", ".join(given))
    if opts.get("max_replicas_ceiling") is not None and opts["max_replicas_ceiling"] < 1:
        raise ScaleError("max_replicas_ceiling must be at least 1")
    if opts.get("wait") and (opts.get("wait_timeout") or 0) < 1:
        raise ScaleError("wait_timeout must be at least 1 second (or set wait: false)")


def run_scale(client, namespace, opts, check_mode=False, context=None, now=None, diff=False):
    """The whole of one apex_scale call. Returns the result dict (with ``diff`` when asked); raises
    ScaleError with last_state.

    ``opts``: the module options (targets/names/label_selectors/kind, request keys, hpa_adjust, allow_zero,
    wait, wait_timeout, save_state, restore_state, state_name, overwrite_saved,
    rollback_on_failure, state_configmap).
    """
    started = time.monotonic()
    scaler = Scaler(client, namespace, context=context)
    store = StateStore(client, namespace, opts.get("state_configmap") or STATE_CONFIGMAP)
    state_name = opts.get("state_name") or "default"
    result = dict(changed=False, targets=[], state=None)
    record = None
    if opts.get("restore_state"):
        record = store.read(state_name)
        if record is None:
            raise ScaleError("no saved scale state %r in ConfigMap %s/%s: nothing to restore (save one first "
                             "with save_state: true). Nothing was changed." % (state_name, namespace, store.name))
        specs = specs_from_record(record)
    else:
        specs = build_specs(opts)
    if not specs:
        raise ScaleError("no targets: give names, label_selectors or targets")
    resolved = scaler.resolve(specs)
    # a restore puts back what was recorded, 0 included (e.g. the secondary region's warm standby)
    # ... and is not checked against the ceiling: those counts were in the cluster before
    plans = scaler.plan(resolved, hpa_adjust=bool(opts.get("hpa_adjust")),
                        allow_zero=bool(opts.get("allow_zero") or opts.get("restore_state")),
                        check_ceiling=not opts.get("restore_state"),
                        ceiling_override=opts.get("max_replicas_ceiling"),
                        allow_above_ceiling=bool(opts.get("allow_above_ceiling")))
    requests = dict((p["key"], item[3]) for p, item in zip(plans, resolved))

    # save before anything changes
    if opts.get("save_state"):
        existing = store.read(state_name)
        if existing and not existing.get("restored_at") and not opts.get("overwrite_saved"):
            result["state"] = dict(name=state_name, action="kept", record=existing,
                                   message="a saved state %r from %s has not been restored yet: kept it "
                                           "(overwrite_saved: true replaces it)" % (state_name, existing.get("saved_at")))
        else:
            new = state_record(plans, namespace, context, state_name, now=now)
            if not check_mode:
                store.write(state_name, new)
            result["state"] = dict(name=state_name, action="saved", record=new)
            result["changed"] = True

    result["targets"] = [public_plan(p) for p in plans]
    result["changed"] = result["changed"] or any(p["changed"] for p in plans)
    if check_mode:
        if record is not None:
            result["state"] = dict(name=state_name, action="would restore", record=record)
        result["elapsed_seconds"] = round(time.monotonic() - started, 3)
        if diff:
            result["diff"] = scale_diff(result)
        return result

    wait = bool(opts.get("wait"))
    outcomes = scaler.apply(plans, requests, wait=wait, timeout=opts.get("wait_timeout") or 300)
    failures, timeouts, concurrent = [], [], []
    for plan, entry in zip(plans, result["targets"]):
        value, exc = outcomes.get(plan["key"], (dict(ok=True, timings={}), None))
        if exc is not None:
            entry["error"] = str(exc)
            failures.append("%s: %s" % (plan["key"], exc))
            continue
        entry["timings"] = value.get("timings", {})
        last = value.get("final") or value.get("last") or plan["_obj"]
        hpa_now = value.get("final_hpa") if value.get("final") else plan["_hpa"]
        entry["observed"] = observed_state(last, plan["kind"], hpa_now)
        if value.get("final_error"):
            entry["observed"]["read_error"] = value["final_error"]
        concurrent.extend(other_writer_notes(plan, entry["observed"]))
        if value.get("moved_to") is not None:
            entry["notes"].append("replicas were changed to %d during the wait (by the HPA or another actor); "
                                  "waited for that count instead of undoing it" % value["moved_to"])
        if not value.get("ok"):
            detail = scaler.describe_timeout(plan, value)
            entry["wait_failure"] = detail
            timeouts.append(detail["line"])
    if failures or timeouts:
        msg = []
        if failures:
            msg.append("scaling failed: " + " | ".join(failures))
        if timeouts:
            msg.append("not rolled out and ready within %ss: %s" % (opts.get("wait_timeout") or 300, " | ".join(timeouts)))
        rolled_back = []
        if opts.get("rollback_on_failure", True):
            rolled_back = rollback(scaler, plans)
            msg.append("Rolled back to the state before this call: %s" % (", ".join(rolled_back) or "nothing to undo"))
        raise ScaleError(". ".join(msg), last_state=dict(targets=result["targets"], rolled_back=rolled_back))

    for change in concurrent:
        for entry in result["targets"]:
            if entry["key"] == change["target"]:
                entry["notes"].append(change["message"])
    result["concurrent_changes"] = concurrent
    if record is not None:
        if result["changed"] or not record.get("restored_at"):
            record["restored_at"] = (now or utcnow()).strftime("%Y-%m-%dT%H:%M:%SZ")
            store.write(state_name, record)
            result["changed"] = True
        result["state"] = dict(name=state_name, action="restored", record=record)
    result["elapsed_seconds"] = round(time.monotonic() - started, 3)
    if diff:
        result["diff"] = scale_diff(result)
    return result


def rollback(scaler, plans):
    """Put changed targets back to their ``before`` state (HPA first, then replicas); no wait."""
    done = []
    for plan in plans:
        if not plan["changed"]:
            continue
        try:
            if plan["hpa_changed"]:
                current = scaler.client.get(ns_path(HPA_API, scaler.namespace, plan["hpa"]))
                patch = hpa_patch(current, plan["before"]["hpa"])
                if patch:
                    scaler.client.merge_patch(ns_path(HPA_API, scaler.namespace, plan["hpa"]), patch)
            undone = []
            if plan["hpa_changed"]:
                undone.append("HPA bounds as before")
            if plan["set_replicas"] is not None:
                scaler.client.merge_patch(workload_path(plan["kind"], scaler.namespace, plan["name"], "scale"),
                                          {"spec": {"replicas": plan["before"]["replicas"]}})
                undone.append("%d replicas" % plan["before"]["replicas"])
            line = "%s -> %s" % (plan["key"], ", ".join(undone)) if undone else plan["key"]
            if plan["restart"]:
                # the old pods are gone once restartedAt changed: say so rather than claim a rollback
                line += "%sthe rolling restart cannot be undone (its pods were already replaced)" % (
                    "; " if undone else ": ")
            done.append(line)
        except Exception as exc:  # report, keep undoing the others
            done.append("%s: rollback failed (%s)" % (plan["key"], exc))
    return done
