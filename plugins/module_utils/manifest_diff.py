# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a Helm release change would do to the cluster, object by object (pure, unit-tested).

``plan_objects`` compares the manifest Helm would apply with the live objects (what
``helm diff upgrade`` shows): each object is created, updated, unchanged, or deleted (in the
deployed release, gone from the new one). A live object is compared on the fields the manifest
sets (``project``): the fields the API server and the controllers add (status, defaults, uid...)
are not a difference. ``diff_entries`` turns the plan into Ansible's ``diff`` (YAML per object).

No secret reaches a plan or a diff: the values of a Secret's ``data`` and ``stringData`` are
replaced by markers that say only whether the value changes (``mask_secret_pair``), and
``mask_sensitive_values`` does the same for Helm values whose key names a credential.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import re

MASKED = "<masked>"
MASKED_CHANGED = "<masked, changed>"
SENSITIVE_KEY = re.compile(r"(password|passwd|secret|token|credential|private[-_]?key|api[-_]?key|"
                           r"access[-_]?key|(^|[-_.])key$|dsn|connection[-_]?string)", re.IGNORECASE)
# Kinds without a namespace (the manifest's namespace does not apply to them).
CLUSTER_SCOPED = frozenset(["Namespace", "Node", "PersistentVolume", "StorageClass", "ClusterRole",
                            "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass",
                            "IngressClass", "ClusterIssuer", "MutatingWebhookConfiguration",
                            "ValidatingWebhookConfiguration", "APIService"])


def parse_manifest(text):
    """The objects of a multi-document manifest, in order (empty documents dropped)."""
    import yaml  # PyYAML comes with ansible-core; imported here as the sanity import test requires

    return [doc for doc in yaml.safe_load_all(text or "") if isinstance(doc, dict) and doc.get("kind")]


def manifest_digest(text):
    """sha256 of a release manifest, to compare revisions without showing them."""
    return "sha256:" + hashlib.sha256((text or "").encode("utf-8")).hexdigest()


def object_key(obj, namespace):
    """``Kind/namespace/name`` (``Kind/name`` when cluster-scoped); the namespace defaults to the release's."""
    meta = obj.get("metadata") or {}
    if obj.get("kind") in CLUSTER_SCOPED:
        return "%s/%s" % (obj["kind"], meta.get("name"))
    return "%s/%s/%s" % (obj["kind"], meta.get("namespace") or namespace, meta.get("name"))


def _same_scalar(live, desired):
    # the API server may echo "2" for 2 (quantities, ports); the text decides
    return live == desired or (not isinstance(live, (dict, list)) and not isinstance(desired, (dict, list))
                               and live is not None and desired is not None and str(live) == str(desired))


def _named(items):
    return bool(items) and all(isinstance(item, dict) and "name" in item for item in items)


def project(live, desired):
    """``live`` cut down to the shape of ``desired``: the keys the manifest sets, list entries
    matched by ``name`` where they have one (containers, env, ports), by position otherwise.
    Named entries the manifest does not have are left out: applying merges such lists by name
    and keeps them (another writer's env var stays). Extra entries of a positional list stay in:
    applying replaces that list whole."""
    if isinstance(desired, dict) and isinstance(live, dict):
        # an empty value the manifest sets and the server omits is the same thing
        return dict((key, project(live[key], value) if key in live else value) for key, value in desired.items()
                    if key in live or value in (None, {}, [], ""))
    if isinstance(desired, list) and isinstance(live, list):
        if _named(desired) and all(isinstance(item, dict) for item in live):
            by_name = dict((item.get("name"), item) for item in live)
            return [project(by_name[item["name"]], item) for item in desired if item["name"] in by_name]
        return [project(item, want) for item, want in zip(live, desired)] + live[len(desired):]
    if _same_scalar(live, desired):
        return desired
    return live


def _secret_data(obj):
    """A Secret's values as the API server stores them (``data``, base64), ``stringData`` folded in."""
    data = dict((obj or {}).get("data") or {})
    for key, value in ((obj or {}).get("stringData") or {}).items():
        data[key] = base64.b64encode(str(value).encode("utf-8")).decode("ascii")
    return data


def mask_secret_pair(before, after):
    """``(before, after)`` of a Secret with every value masked: equal values show ``<masked>`` on
    both sides, a changed one ``<masked, changed>`` on the new side; the keys stay visible."""
    before_data, after_data = _secret_data(before), _secret_data(after)

    def masked(obj, data, other):
        if obj is None:
            return None
        out = dict((k, v) for k, v in obj.items() if k not in ("data", "stringData"))
        annotations = (out.get("metadata") or {}).get("annotations")
        if annotations and "kubectl.kubernetes.io/last-applied-configuration" in annotations:
            out["metadata"] = dict(out["metadata"], annotations=dict(
                (k, v) for k, v in annotations.items() if k != "kubectl.kubernetes.io/last-applied-configuration"))
        if data:
            # a key on one side only shows as added/removed by itself; a changed value is marked
            out["data"] = dict((key, MASKED if obj is before or other is None or other.get(key, value) == value
                                else MASKED_CHANGED) for key, value in sorted(data.items()))
        return out
    return masked(before, before_data, after_data if after is not None else None), \
        masked(after, after_data, before_data if before is not None else None)


def mask_sensitive_values(values):
    """Helm values with every value under a credential-like key replaced by ``<masked>``."""
    if isinstance(values, dict):
        return dict((key, MASKED if SENSITIVE_KEY.search(str(key)) and value not in (None, "", {}, [])
                     else mask_sensitive_values(value)) for key, value in values.items())
    if isinstance(values, list):
        return [mask_sensitive_values(item) for item in values]
    return values


def plan_objects(desired, previous, live_of, namespace):
    """One entry per object: ``key``, ``action`` (create/update/unchanged/delete), ``before``
    (the live object, projected) and ``after`` (the manifest's). ``live_of(obj)`` reads the live
    object or returns None. ``previous`` is the deployed release's objects (for deletions)."""
    plan = []
    keys = set()
    for obj in desired:
        key = object_key(obj, namespace)
        keys.add(key)
        live = live_of(obj)
        before = None if live is None else project(live, obj)
        after = obj
        if obj.get("kind") == "Secret":
            before, after = mask_secret_pair(before if live is None else _secret_view(live, obj), obj)
        if live is None:
            action = "create"
        else:
            action = "unchanged" if before == after else "update"
        plan.append(dict(key=key, action=action, before=before, after=after))
    for obj in previous:
        key = object_key(obj, namespace)
        if key in keys:
            continue
        live = live_of(obj)
        if live is None:
            continue
        before = project(live, obj)
        if obj.get("kind") == "Secret":
            before = mask_secret_pair(_secret_view(live, obj), None)[0]
        plan.append(dict(key=key, action="delete", before=before, after=None))
    return plan


def _secret_view(live, desired):
    """A live Secret projected on the manifest's fields, its data compared whole (a key the
    manifest drops is a change)."""
    shape = dict((k, v) for k, v in desired.items() if k not in ("data", "stringData"))
    view = project(live, shape)
    view["data"] = dict(live.get("data") or {})
    return view


def _yaml(obj):
    import yaml

    if obj is None:
        return ""
    return yaml.safe_dump(obj, default_flow_style=False, sort_keys=True)


def diff_entries(plan):
    """Ansible ``diff`` entries (a list): one per object that would change."""
    entries = []
    for item in plan:
        if item["action"] == "unchanged":
            continue
        entries.append(dict(before_header="%s (live)" % item["key"] if item["before"] is not None
                            else "%s (absent)" % item["key"],
                            after_header="%s (%s)" % (item["key"], "deleted" if item["action"] == "delete"
                                                      else "release"),
                            before=_yaml(item["before"]), after=_yaml(item["after"])))
    return entries


def plan_summary(plan):
    """``{action: [keys]}`` of a plan, for the module's result."""
    summary = dict(create=[], update=[], delete=[], unchanged=[])
    for item in plan:
        summary[item["action"]].append(item["key"])
    return summary
