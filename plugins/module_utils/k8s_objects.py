# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes objects as the API serves them (plain JSON dicts): reading them, never I/O.

API paths of workloads and HPAs, target names (``statefulset/postgresql``), quantities
(``250m``, ``128Mi``), timestamps, label selectors (one matcher, for the LabelSelector dicts of
objects and the selector strings users write), status conditions, and HPA bounds. Everything here
is pure and unit-tested; ``k8s_info``, ``k8s_rollout``, the scale modules and ``cert_manager``
build on it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.apex.ops.plugins.module_utils.timestamps import parse_time

WORKLOAD_KINDS = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
}
KIND_ALIASES = {
    "deployment": "Deployment", "deployments": "Deployment", "deploy": "Deployment",
    "statefulset": "StatefulSet", "statefulsets": "StatefulSet", "sts": "StatefulSet",
}
HPA_API = ("/apis/autoscaling/v2", "horizontalpodautoscalers")


class WorkloadError(Exception):
    """A refusal or failure about workloads, with a message meant for the on-call engineer and,
    when there is one, what was last observed (``last_state``, for ``ApexModule.fail``)."""

    def __init__(self, message, last_state=None):
        super(WorkloadError, self).__init__(message)
        self.last_state = last_state


# --------------------------------------------------------------------------- paths and names


def ns_path(api, namespace, name=None, sub=None):
    group_version, plural = api
    path = "%s/namespaces/%s/%s" % (group_version, namespace, plural)
    if name:
        path += "/" + name
    if sub:
        path += "/" + sub
    return path


def workload_path(kind, namespace, name=None, sub=None):
    return ns_path(WORKLOAD_KINDS[kind], namespace, name, sub)


def normalize_kind(kind):
    if kind in WORKLOAD_KINDS:
        return kind
    found = KIND_ALIASES.get(str(kind).lower())
    if not found:
        raise WorkloadError("unsupported kind %r: use Deployment or StatefulSet" % (kind,))
    return found


def parse_target_name(value, default_kind="Deployment"):
    """``apex-api`` -> (Deployment, apex-api); ``statefulset/postgresql`` -> (StatefulSet, postgresql)."""
    if "/" in value:
        kind, name = value.split("/", 1)
        return normalize_kind(kind), name
    return normalize_kind(default_kind), value


# --------------------------------------------------------------------------- quantities and times


_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 1024.0, "Mi": 1024.0 ** 2, "Gi": 1024.0 ** 3, "Ti": 1024.0 ** 4, "Pi": 1024.0 ** 5, "Ei": 1024.0 ** 6,
}


def parse_quantity(value):
    """A Kubernetes quantity (``250m``, ``1.5``, ``128Mi``, ``12345n``) as a float; None if absent."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError("not a Kubernetes quantity: %r" % (value,))
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def millicores(value):
    q = parse_quantity(value)
    return None if q is None else int(round(q * 1000))


def mebibytes(value):
    q = parse_quantity(value)
    return None if q is None else round(q / 1024.0 / 1024.0, 1)


def age_seconds(stamp, now):
    moment = parse_time(stamp)
    if moment is None or now is None:
        return None
    return max(0, int((now - moment).total_seconds()))


# --------------------------------------------------------------------------- label selectors


def selector_string(selector):
    """A LabelSelector (matchLabels + matchExpressions) as the query-string form."""
    if not selector:
        return ""
    parts = ["%s=%s" % (k, v) for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "In":
            parts.append("%s in (%s)" % (key, ",".join(values)))
        elif op == "NotIn":
            parts.append("%s notin (%s)" % (key, ",".join(values)))
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append("!" + key)
    return ",".join(parts)


_SET_TERM = re.compile(r"^([^\s!=]+)\s+(in|notin)\s+\((.*)\)$")
_EQUALITY_TERM = re.compile(r"^([^\s!=]+)\s*(==|=|!=)\s*(.*)$")


def parse_selector(text):
    """A selector string (``a=b,c!=d,e in (x,y),f,!g``) as a LabelSelector dict, for ``selector_matches``.

    ``c!=d`` becomes ``NotIn [d]``, as the API server reads it (an object without the label matches)."""
    expressions = []
    for term in _split_selector(text):
        term = term.strip()
        if not term:
            continue
        match = _SET_TERM.match(term)
        if match:
            expressions.append(dict(key=match.group(1), operator="In" if match.group(2) == "in" else "NotIn",
                                    values=[v.strip() for v in match.group(3).split(",")]))
        elif term.startswith("!"):
            expressions.append(dict(key=term[1:].strip(), operator="DoesNotExist"))
        else:
            match = _EQUALITY_TERM.match(term)
            if not match:
                expressions.append(dict(key=term, operator="Exists"))
            elif match.group(2) == "!=":
                expressions.append(dict(key=match.group(1), operator="NotIn", values=[match.group(3).strip()]))
            else:
                # In, not matchLabels: a key given twice with two values then matches nothing
                expressions.append(dict(key=match.group(1), operator="In", values=[match.group(3).strip()]))
    # never empty (an empty selector selects nothing): a string without terms selects everything
    return dict(matchExpressions=expressions)


def _split_selector(selector):
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector or "":
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def selector_matches(selector, labels):
    """Whether a LabelSelector dict (from an object, or ``parse_selector``) selects these labels.

    A null or empty selector (a workload without one) selects nothing."""
    if not selector:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# --------------------------------------------------------------------------- conditions


def condition(obj, ctype):
    """The ``status.conditions`` entry of type ``ctype`` (Ready, Progressing, Issuing...), or None."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def condition_true(obj, ctype):
    cond = condition(obj, ctype)
    return bool(cond) and str(cond.get("status")) == "True"


def condition_statuses(obj):
    """``{type: status}`` of every condition (``{"Ready": "True", "MemoryPressure": "False"}``)."""
    return dict((c.get("type"), c.get("status")) for c in ((obj or {}).get("status") or {}).get("conditions") or [])


# --------------------------------------------------------------------------- HPAs


def _cpu_metric(metrics):
    for metric in metrics or []:
        if metric.get("type") == "Resource" and (metric.get("resource") or {}).get("name") == "cpu":
            return metric["resource"]
    return None


def hpa_cpu_target(hpa):
    resource = _cpu_metric((hpa.get("spec") or {}).get("metrics"))
    if resource is not None:
        return (resource.get("target") or {}).get("averageUtilization")
    return (hpa.get("spec") or {}).get("targetCPUUtilizationPercentage")


def hpa_cpu_current(hpa):
    resource = _cpu_metric((hpa.get("status") or {}).get("currentMetrics"))
    if resource is not None:
        return (resource.get("current") or {}).get("averageUtilization")
    return (hpa.get("status") or {}).get("currentCPUUtilizationPercentage")


def hpa_bounds(hpa):
    spec = hpa.get("spec") or {}
    return dict(min_replicas=spec.get("minReplicas", 1), max_replicas=spec.get("maxReplicas"),
                target_cpu=hpa_cpu_target(hpa))


def hpa_target(hpa):
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    return ref.get("kind"), ref.get("name")
