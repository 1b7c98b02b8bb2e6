# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scale plan of apex_scale: what to change for each target, decided before anything changes. Pure.

``plan_target`` refuses by raising ``ScaleError`` (``AboveCeiling`` for the replica ceiling) and
otherwise returns the plan of one target: replicas and HPA bounds before and after, and notes.
The HPA awareness (see docs/scaling.md): a replica count outside the governing HPA's
[min, max] is refused unless ``hpa_adjust`` moves the bound to it; scaling an HPA-governed target
to 0 is refused unless ``allow_zero`` (at zero the HPA stops autoscaling, ScalingDisabled); a count
or HPA maxReplicas raised above the replica ceiling is refused unless confirmed. Also here: the
module options turned into target specs (``build_specs``), a saved record turned back into specs
(``specs_from_record``), and the comparison of what a call set with what the cluster ended at.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import re

from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import (
    WorkloadError, condition_true, hpa_bounds, normalize_kind, parse_target_name)
from ansible_collections.apex.ops.plugins.module_utils.k8s_rollout import rollout_state


class ScaleError(WorkloadError):
    """A refusal or failure of a scale, with a message meant for the on-call engineer."""


_DELTA = re.compile(r"^\s*([+-])\s*(\d+)\s*$")


def parse_delta(value):
    """A relative replica change: ``2``, ``-1``, ``"+2"``, ``"-3"`` -> int. Anything else raises."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ScaleError("replicas_delta must be a signed whole number such as +2 or -1, not %r" % (value,))
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value)
    match = _DELTA.match(text)
    if match:
        number = int(match.group(2))
        return -number if match.group(1) == "-" else number
    if text.strip().isdigit():
        return int(text.strip())
    raise ScaleError("replicas_delta must be a signed whole number such as +2 or -1, not %r" % (value,))


def target_key(kind, name):
    return "%s/%s" % (kind, name)


class AboveCeiling(ScaleError):
    """A replica count (or HPA maxReplicas) above the replica ceiling, without the confirmation."""


# The replica ceiling: the largest of CEILING_FACTOR x the HPA's maxReplicas (before the call),
# CEILING_FACTOR x the current replicas, the pod capacity of the ready schedulable nodes, and
# MIN_CEILING. A count above it is refused unless confirmed (allow_above_ceiling) or the ceiling
# is set explicitly (max_replicas_ceiling). See docs/scaling.md.
CEILING_FACTOR = 2
MIN_CEILING = 10
_BLOCKING_TAINTS = ("NoSchedule", "NoExecute")


def node_pod_capacity(nodes):
    """``dict(pods, nodes, excluded)`` over Ready, schedulable nodes without a NoSchedule/NoExecute
    taint: the sum of their ``status.allocatable.pods``. Pure."""
    pods, counted, excluded = 0, 0, 0
    for node in nodes or []:
        spec, status = node.get("spec") or {}, node.get("status") or {}
        ready = condition_true(node, "Ready")
        tainted = any(t.get("effect") in _BLOCKING_TAINTS for t in spec.get("taints") or [])
        try:
            allocatable = int(str((status.get("allocatable") or {}).get("pods") or 0))
        except ValueError:
            allocatable = 0
        if not ready or spec.get("unschedulable") or tainted or allocatable <= 0:
            excluded += 1
            continue
        pods += allocatable
        counted += 1
    return dict(pods=pods, nodes=counted, excluded=excluded)


def replica_ceiling(current, hpa_max=None, capacity=None, override=None, factor=CEILING_FACTOR):
    """The replica ceiling of one target and how it was derived: ``dict(value, derivation)``. Pure.

    ``capacity`` is ``node_pod_capacity()`` (or None when the nodes were not read). ``override``
    (max_replicas_ceiling) replaces the derived value.
    """
    if override is not None:
        return dict(value=int(override), derivation="max_replicas_ceiling %d, set explicitly" % int(override))
    terms = []
    if hpa_max:
        terms.append((factor * hpa_max, "%d x HPA maxReplicas %d = %d" % (factor, hpa_max, factor * hpa_max)))
    if capacity and capacity.get("pods"):
        terms.append((capacity["pods"], "pod capacity %d of %d ready schedulable node(s)" % (
            capacity["pods"], capacity["nodes"])))
    terms.append((factor * (current or 0), "%d x current replicas %d = %d" % (factor, current or 0, factor * (current or 0))))
    terms.append((MIN_CEILING, "the minimum ceiling %d" % MIN_CEILING))
    value = max(t[0] for t in terms)
    return dict(value=value, derivation="the largest of " + ", ".join(t[1] for t in terms))


def check_ceiling(key, current, replicas, hpa_before, hpa_after, ceiling, allow_above_ceiling=False):
    """Refuse (AboveCeiling) a replica count or HPA maxReplicas raised above ``ceiling``; returns notes. Pure.

    Lowering, or keeping, a count is never refused: only what this call would raise.
    """
    if ceiling is None:
        return []
    asks = []
    if replicas is not None and replicas > current and replicas > ceiling["value"]:
        asks.append("%d replicas (now %d)" % (replicas, current))
    before_max = (hpa_before or {}).get("max_replicas")
    after_max = (hpa_after or {}).get("max_replicas")
    if after_max is not None and after_max != before_max and after_max > (before_max or 0) \
            and after_max > ceiling["value"]:
        asks.append("HPA maxReplicas %d (now %s)" % (after_max, before_max))
    if not asks:
        return []
    what = " and ".join(asks)
    if allow_above_ceiling:
        return ["%s: above the replica ceiling of %d (%s), confirmed by allow_above_ceiling" % (
            what, ceiling["value"], ceiling["derivation"])]
    raise AboveCeiling(
        "%s: refusing %s: above the replica ceiling of %d (%s). A count that high is more likely a typo than a "
        "plan, and it can overwhelm the cluster. If it is intended, confirm it (allow_above_ceiling: true; in the "
        "roles -e scale_confirm_above_ceiling=scale-above-ceiling, or hpa_confirm_above_ceiling / "
        "scale_event_confirm_above_ceiling) or set max_replicas_ceiling. Nothing was changed." % (
            key, what, ceiling["value"], ceiling["derivation"]))


def plan_target(kind, obj, hpa, request, hpa_adjust=False, allow_zero=False, ceiling=None,
                allow_above_ceiling=False):
    """What to do for one target. Pure: raises ScaleError on refusal, returns a plan dict.

    ``allow_zero``: scaling an HPA-governed target from running to 0 is refused unless set.
    ``ceiling``: ``replica_ceiling()`` of this target (None: no check); a replica count or HPA
    maxReplicas raised above it is refused (AboveCeiling) unless ``allow_above_ceiling``.

    ``request`` keys (all optional): replicas, replicas_delta, current_replicas,
    hpa_min_replicas, hpa_max_replicas, hpa_target_cpu.
    """
    name = (obj.get("metadata") or {}).get("name")
    key = target_key(kind, name)
    current = (obj.get("spec") or {}).get("replicas", 1)
    expected = request.get("current_replicas")
    if expected is not None and expected != current:
        raise ScaleError(
            "%s: precondition failed: it has %d replicas, current_replicas expected %d. Nothing was changed; "
            "re-read the cluster state before scaling." % (key, current, expected))
    replicas = request.get("replicas")
    delta = request.get("replicas_delta")
    if replicas is not None and delta is not None:
        raise ScaleError("%s: give replicas or replicas_delta, not both" % key)
    if delta is not None:
        replicas = current + delta
        if replicas < 0:
            raise ScaleError("%s: replicas_delta %+d would take %d replicas below zero" % (key, delta, current))
    if replicas is not None and replicas < 0:
        raise ScaleError("%s: replicas must be 0 or more, not %d" % (key, replicas))

    hpa_before = hpa_bounds(hpa) if hpa else None
    hpa_after = dict(hpa_before) if hpa else None
    wants_hpa = any(request.get(k) is not None for k in ("hpa_min_replicas", "hpa_max_replicas", "hpa_target_cpu"))
    if wants_hpa and not hpa:
        raise ScaleError("%s: HPA settings were given but no HorizontalPodAutoscaler targets it" % key)
    notes = []
    if hpa:
        hpa_name = (hpa.get("metadata") or {}).get("name")
        for opt, field in (("hpa_min_replicas", "min_replicas"), ("hpa_max_replicas", "max_replicas"),
                           ("hpa_target_cpu", "target_cpu")):
            if request.get(opt) is not None:
                hpa_after[field] = request[opt]
        if replicas is not None and replicas > 0:
            low, high = hpa_after["min_replicas"], hpa_after["max_replicas"]
            if replicas < low or (high is not None and replicas > high):
                if not hpa_adjust:
                    bound = "hpa_min_replicas" if replicas < low else "hpa_max_replicas"
                    raise ScaleError(
                        "%s: refusing to scale to %d replicas: HorizontalPodAutoscaler %s keeps it within [%s, %s] "
                        "and would scale it back to %d. Change the HPA bounds (%s), or set hpa_adjust: true to "
                        "move the bound to %d along with the scale. Nothing was changed."
                        % (key, replicas, hpa_name, low, high, low if replicas < low else high, bound, replicas))
                if replicas < low:
                    hpa_after["min_replicas"] = replicas
                    notes.append("HPA %s minReplicas %d -> %d (hpa_adjust)" % (hpa_name, low, replicas))
                else:
                    hpa_after["max_replicas"] = replicas
                    notes.append("HPA %s maxReplicas %s -> %d (hpa_adjust)" % (hpa_name, high, replicas))
        elif replicas == 0:
            # at 0 the HPA stops autoscaling (ScalingDisabled) and the service is down until someone
            # scales it up again: too much for a typo or a delta, so it takes an explicit opt-in
            if current > 0 and not allow_zero:
                raise ScaleError(
                    "%s: refusing to scale to 0 replicas: HorizontalPodAutoscaler %s governs it, and at 0 the HPA "
                    "stops autoscaling (ScalingDisabled) and the service has no pods until it is scaled up by hand. "
                    "Set allow_zero: true if taking it down is intended. Nothing was changed." % (key, hpa_name))
            notes.append("replicas 0: HPA %s does not autoscale a workload at zero until it is scaled up" % hpa_name)
        if hpa_after["min_replicas"] is not None and hpa_after["max_replicas"] is not None and \
                hpa_after["min_replicas"] > hpa_after["max_replicas"]:
            raise ScaleError("%s: HPA minReplicas %d would exceed maxReplicas %d" % (
                key, hpa_after["min_replicas"], hpa_after["max_replicas"]))
        if hpa_after["min_replicas"] is not None and hpa_after["min_replicas"] < 1:
            raise ScaleError("%s: HPA minReplicas must be at least 1" % key)
        if hpa_after["target_cpu"] is not None and hpa_after["target_cpu"] < 1:
            raise ScaleError("%s: HPA target CPU utilisation must be a positive percentage" % key)
    notes.extend(check_ceiling(key, current, replicas, hpa_before, hpa_after, ceiling, allow_above_ceiling))
    after_replicas = current if replicas is None else replicas
    expect = after_replicas
    if hpa and replicas is None and after_replicas > 0:
        # only the bounds move: the HPA itself will bring the workload inside them
        low, high = hpa_after["min_replicas"], hpa_after["max_replicas"]
        expect = max(low, after_replicas) if high is None else min(high, max(low, after_replicas))
        if expect != after_replicas:
            notes.append("the HPA will move it from %d to %d replicas" % (after_replicas, expect))
    hpa_changed = bool(hpa) and hpa_after != hpa_before
    restart = bool(request.get("restart"))
    if restart:
        notes.append("rolling restart of the pods (pod template annotation kubectl.kubernetes.io/restartedAt)")
    return dict(
        key=key, kind=kind, name=name,
        hpa=(hpa.get("metadata") or {}).get("name") if hpa else None,
        before=dict(replicas=current, hpa=hpa_before),
        after=dict(replicas=expect, hpa=hpa_after),
        set_replicas=replicas if (replicas is not None and replicas != current) else None,
        hpa_changed=hpa_changed,
        changed=hpa_changed or restart or (replicas is not None and replicas != current),
        restart=restart,
        notes=notes,
    )


def hpa_patch(hpa, bounds):
    """A JSON merge patch that sets min/max/target CPU (autoscaling/v2), keeping other metrics."""
    spec = {}
    before = hpa_bounds(hpa)
    if bounds["min_replicas"] != before["min_replicas"]:
        spec["minReplicas"] = bounds["min_replicas"]
    if bounds["max_replicas"] != before["max_replicas"]:
        spec["maxReplicas"] = bounds["max_replicas"]
    if bounds["target_cpu"] != before["target_cpu"] and bounds["target_cpu"] is not None:
        metrics = copy.deepcopy((hpa.get("spec") or {}).get("metrics") or [])
        cpu = dict(type="Resource", resource=dict(name="cpu", target=dict(
            type="Utilization", averageUtilization=bounds["target_cpu"])))
        for index, metric in enumerate(metrics):
            if metric.get("type") == "Resource" and (metric.get("resource") or {}).get("name") == "cpu":
                metrics[index] = cpu
                break
        else:
            metrics.append(cpu)
        spec["metrics"] = metrics
    return {"spec": spec} if spec else None


# --------------------------------------------------------------------------- specs from options and records

REQUEST_KEYS = ("replicas", "replicas_delta", "current_replicas", "hpa_min_replicas", "hpa_max_replicas",
                "hpa_target_cpu", "restart")


def build_specs(opts):
    """Target specs from module options: ``targets`` entries, ``names``, ``label_selectors``.

    Top-level request options are defaults that each ``targets`` entry may override.
    """
    defaults = dict((k, opts.get(k)) for k in REQUEST_KEYS)
    defaults["replicas_delta"] = parse_delta(defaults["replicas_delta"])
    kind = opts.get("kind") or "Deployment"
    specs = []
    for entry in opts.get("targets") or []:
        spec = dict(defaults)
        for key in REQUEST_KEYS:
            if entry.get(key) is not None:
                spec[key] = parse_delta(entry[key]) if key == "replicas_delta" else entry[key]
        if entry.get("replicas") is not None and entry.get("replicas_delta") is None:
            spec["replicas_delta"] = None
        if entry.get("replicas_delta") is not None and entry.get("replicas") is None:
            spec["replicas"] = None
        if bool(entry.get("name")) == bool(entry.get("label_selector")):
            raise ScaleError("each targets entry needs exactly one of name or label_selector: %r" % (entry,))
        if entry.get("name"):
            spec["kind"], spec["name"] = parse_target_name(entry["name"], entry.get("kind") or kind)
        else:
            spec["kind"], spec["label_selector"] = normalize_kind(entry.get("kind") or kind), entry["label_selector"]
        specs.append(spec)
    for name in opts.get("names") or []:
        spec = dict(defaults)
        spec["kind"], spec["name"] = parse_target_name(name, kind)
        specs.append(spec)
    for selector in opts.get("label_selectors") or []:
        spec = dict(defaults)
        spec["kind"], spec["label_selector"] = normalize_kind(kind), selector
        specs.append(spec)
    return specs


def specs_from_record(record):
    specs = []
    for target in record.get("targets") or []:
        spec = dict((k, None) for k in REQUEST_KEYS)
        spec.update(kind=target["kind"], name=target["name"], replicas=target["replicas"])
        bounds = target.get("hpa_bounds")
        if bounds:
            spec.update(hpa_min_replicas=bounds.get("min_replicas"), hpa_max_replicas=bounds.get("max_replicas"),
                        hpa_target_cpu=bounds.get("target_cpu"))
        specs.append(spec)
    return specs


def public_plan(plan):
    return dict((k, v) for k, v in plan.items() if not k.startswith("_"))


# --------------------------------------------------------------------------- what the cluster ended at


def observed_state(obj, kind, hpa=None):
    """What a target looks like in the cluster: replicas (spec), ready, rollout, HPA bounds. Pure."""
    status = obj.get("status") or {}
    desired = (obj.get("spec") or {}).get("replicas", 1)
    return dict(replicas=desired, desired=desired, ready=status.get("readyReplicas") or 0,
                rollout=rollout_state(obj, kind)[0], hpa=hpa_bounds(hpa) if hpa else None)


def other_writer_notes(plan, observed):
    """Differences between what this call set and what the cluster ended at (another writer won). Pure.

    Returns ``[dict(target, field, set, observed, message)]``. Only what this call wrote is compared:
    replicas it set, HPA bounds it changed.
    """
    out = []
    if observed.get("read_error"):
        return out
    if plan["set_replicas"] is not None and observed["replicas"] != plan["set_replicas"]:
        out.append(dict(target=plan["key"], field="replicas", set=plan["set_replicas"], observed=observed["replicas"],
                        message="%s: this run set %d replicas but the cluster ended at %d: another writer (a concurrent "
                                "run, the HPA or a person) changed it after this run's write; the cluster's value "
                                "is reported" % (plan["key"], plan["set_replicas"], observed["replicas"])))
    if plan["hpa_changed"] and observed.get("hpa"):
        wanted, seen = plan["after"]["hpa"], observed["hpa"]
        for field in ("min_replicas", "max_replicas", "target_cpu"):
            if wanted.get(field) != plan["before"]["hpa"].get(field) and seen.get(field) != wanted.get(field):
                out.append(dict(target=plan["key"], field="hpa." + field, set=wanted.get(field), observed=seen.get(field),
                                message="%s: this run set HPA %s %s %s but the cluster ended at %s: another writer "
                                        "changed it after this run's write" % (
                                            plan["key"], plan["hpa"], field, wanted.get(field), seen.get(field))))
    return out


def scale_diff(result):
    before, after = {}, {}
    for target in result.get("targets") or []:
        before[target["key"]] = target["before"]
        after[target["key"]] = target["after"]
    return dict(before=before, after=after)
