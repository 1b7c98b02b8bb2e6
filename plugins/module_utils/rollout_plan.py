# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan of apex_rollout (pure): what a change does to a pod template, and the revision history.

* ``check_request`` refuses a request that cannot be planned (names, exclusive options) by raising.
* ``plan_target(kind, obj, request, revisions)``: the pod template after ``env`` / ``env_absent`` /
  ``image`` / ``resources`` / ``restart``, or the template of the revision ``undo`` goes back to,
  and ``paused``; ``changed`` is true only when the object would differ (no patch otherwise), with
  the before/after of the changed fields and a ``change-cause`` line.
* ``revisions_of`` / ``undo_source`` / ``history``: the revisions kept by a Deployment's
  ReplicaSets (or a StatefulSet's ControllerRevisions), the one ``kubectl rollout undo
  [--to-revision]`` would choose, and what changed between consecutive revisions.

Nothing here does I/O; ``rollout_change`` reads and writes, and waits through ``k8s_rollout``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import re

from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import WorkloadError, parse_quantity
from ansible_collections.apex.ops.plugins.module_utils.k8s_rollout import RESTARTED_AT, restart_patch
from ansible_collections.apex.ops.plugins.module_utils.manifest_diff import MASKED, MASKED_CHANGED, SENSITIVE_KEY

APEX_ENV = re.compile(r"^APEX__[A-Z0-9_]+$")
# what the API server accepts as an env var name (C identifiers, dots and dashes)
ANY_ENV = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
CHANGE_CAUSE = "kubernetes.io/change-cause"
CHANGE_CAUSE_MAX = 512
RESOURCE_KINDS = ("requests", "limits")
CHANGE_KEYS = ("env", "env_absent", "image", "resources", "undo", "to_revision", "restart", "paused")


class RolloutError(WorkloadError):
    """A refusal or failure of apex_rollout (message for the on-call engineer, optional last_state)."""


# --------------------------------------------------------------------------- the request


def render_env_value(name, value):
    """An env value as the string the container sees: booleans ``true``/``false`` (what Apex's
    settings parser reads), numbers as written, lists and dicts as JSON. None is refused."""
    if value is None:
        raise RolloutError("env %s has no value: to unset it, list it in env_absent" % name)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def check_env_names(names, allow_any=False):
    """Raise RolloutError naming every variable that is not ``APEX__SECTION__KEY`` (or, with
    ``allow_any``, not a valid Kubernetes env var name)."""
    pattern = ANY_ENV if allow_any else APEX_ENV
    bad = sorted(set(str(n) for n in names if not pattern.match(str(n))))
    if bad:
        if allow_any:
            raise RolloutError("invalid env var names: %s (letters, digits, '_', '-', '.'; not starting with a digit)"
                               % ", ".join(bad))
        raise RolloutError("refusing env var names that are not Apex settings (APEX__SECTION__KEY, upper case): %s. "
                           "A typo here would be set silently and ignored by Apex; allow_any_env: true sets other "
                           "variables. Nothing was changed." % ", ".join(bad))


def check_request(kind, request, allow_any_env=False):
    """Refuse what cannot be planned, before any API call. ``request``: one target's change keys."""
    if not any(request.get(k) not in (None, {}, [], False) for k in CHANGE_KEYS) and request.get("paused") is None:
        raise RolloutError("%s: nothing to change: give env, env_absent, image, resources, undo, restart or paused"
                           % request.get("name"))
    undo = bool(request.get("undo")) or request.get("to_revision") is not None
    if undo:
        other = [k for k in ("env", "env_absent", "image", "resources", "restart") if request.get(k)]
        if other:
            raise RolloutError("undo puts back a whole earlier pod template; it cannot be combined with %s"
                               % ", ".join(other))
        if request.get("to_revision") is not None and int(request["to_revision"]) < 1:
            raise RolloutError("to_revision must be a revision number (1 or more); leave it unset for the previous one")
    if kind == "StatefulSet" and request.get("paused") is not None:
        raise RolloutError("%s: a StatefulSet cannot be paused (only Deployments)" % request.get("name"))
    names = list((request.get("env") or {}).keys()) + list(request.get("env_absent") or [])
    check_env_names(names, allow_any_env)
    both = sorted(set(request.get("env") or {}) & set(request.get("env_absent") or []))
    if both:
        raise RolloutError("env var both set and unset: %s" % ", ".join(both))
    for kind_name, values in (request.get("resources") or {}).items():
        if kind_name not in RESOURCE_KINDS:
            raise RolloutError("resources takes requests and limits, not %r" % kind_name)
        for resource, quantity in (values or {}).items():
            if quantity is not None:
                try:
                    parse_quantity(quantity)
                except ValueError:
                    raise RolloutError("resources.%s.%s: %r is not a Kubernetes quantity (250m, 2, 512Mi, 4Gi)"
                                       % (kind_name, resource, quantity))


# --------------------------------------------------------------------------- templates


def strip_hash(template):
    """A pod template without the controller's ``pod-template-hash`` label (what undo copies back)."""
    template = copy.deepcopy(template or {})
    metadata = template.get("metadata")
    if metadata is not None:
        labels = metadata.get("labels")
        if labels is not None:
            labels.pop(HASH_LABEL, None)
            if not labels:
                metadata.pop("labels")
        if not metadata:
            template.pop("metadata")
    template.pop("$patch", None)  # ControllerRevision data
    return template


def env_display(entry, mask=True):
    """An env entry's value for people: the value (masked when the name reads as a credential, unless
    ``mask`` is false: comparisons), or where it comes from (``<secretKeyRef apex-secrets/database-url>``),
    never a secret's content."""
    if "value" in entry or not entry.get("valueFrom"):
        value = entry.get("value", "")
        return MASKED if mask and SENSITIVE_KEY.search(entry.get("name") or "") and value else value
    source = entry["valueFrom"]
    for ref, fields in (("secretKeyRef", ("name", "key")), ("configMapKeyRef", ("name", "key")),
                        ("fieldRef", ("fieldPath",)), ("resourceFieldRef", ("resource",))):
        if ref in source:
            return "<%s %s>" % (ref, "/".join(str(source[ref].get(f)) for f in fields))
    return "<valueFrom>"


def template_fields(template, mask=True):
    """What a change can touch, per container: image, env (display values), resources; and the
    restart stamp. The input of diffs and of the history."""
    spec = (template or {}).get("spec") or {}
    containers = {}
    for container in spec.get("containers") or []:
        containers[container.get("name")] = dict(
            image=container.get("image"),
            env=dict((e.get("name"), env_display(e, mask)) for e in container.get("env") or []),
            resources=copy.deepcopy(container.get("resources") or {}))
    annotations = ((template or {}).get("metadata") or {}).get("annotations") or {}
    return dict(containers=containers, restarted_at=annotations.get(RESTARTED_AT))


def changed_fields(before, after):
    """``(before, after)`` keeping only the keys whose values differ (recursively, dicts only)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out_b, out_a = {}, {}
        for key in sorted(set(before) | set(after), key=str):
            if before.get(key) == after.get(key):
                continue
            b, a = changed_fields(before.get(key), after.get(key))
            if key in before:
                out_b[key] = b
            if key in after:
                out_a[key] = a
        return out_b, out_a
    return before, after


def _mask_changed(fields, marker):
    """Credential-like env values of a diff side replaced by ``marker`` (the diff was taken unmasked,
    so a changed secret still shows as changed)."""
    for container in (fields.get("containers") or {}).values():
        env = container.get("env") or {}
        for name, value in env.items():
            if SENSITIVE_KEY.search(name) and value and not str(value).startswith("<"):
                env[name] = marker
    return fields


def _containers(template, container):
    containers = ((template.get("spec") or {}).get("containers")) or []
    if container:
        chosen = [c for c in containers if c.get("name") == container]
        if not chosen:
            raise RolloutError("container %r not found (containers: %s)" % (
                container, ", ".join(c.get("name") for c in containers) or "none"))
        return chosen
    return containers


def _same_quantity(left, right):
    if left is None or right is None:
        return left is right
    try:
        return parse_quantity(left) == parse_quantity(right)
    except ValueError:
        return str(left) == str(right)


def apply_env(container, env, env_absent):
    """Set/unset env vars of one container in place (``kubectl set env`` semantics: a name that
    came from a secret becomes a plain value). Returns the change lines."""
    lines = []
    entries = container.setdefault("env", [])
    for name, raw in sorted((env or {}).items()):
        value = render_env_value(name, raw)
        found = [e for e in entries if e.get("name") == name]
        if found and found[0].get("value") == value and not found[0].get("valueFrom"):
            continue
        old = env_display(found[0]) if found else None
        new = dict(name=name, value=value)
        if found:
            entries[entries.index(found[0])] = new
        else:
            entries.append(new)
        shown = MASKED if SENSITIVE_KEY.search(name) else value
        lines.append("env %s on %s: %s -> %s" % (name, container.get("name"), "(unset)" if old is None else old, shown))
    for name in sorted(set(env_absent or [])):
        found = [e for e in entries if e.get("name") == name]
        if not found:
            continue
        entries[:] = [e for e in entries if e.get("name") != name]
        lines.append("env %s on %s: %s -> (unset)" % (name, container.get("name"), env_display(found[0])))
    if not entries:
        container.pop("env")
    return lines


def apply_resources(container, resources):
    """Merge requests/limits into one container in place (None removes a resource); a quantity equal
    to the current one in another notation (4096Mi vs 4Gi) is no change. Returns the change lines."""
    lines = []
    current = container.setdefault("resources", {})
    for kind_name in RESOURCE_KINDS:
        for resource, quantity in sorted(((resources or {}).get(kind_name) or {}).items()):
            have = (current.get(kind_name) or {}).get(resource)
            if quantity is None:
                if have is None:
                    continue
                current[kind_name].pop(resource)
                if not current[kind_name]:
                    current.pop(kind_name)
            else:
                quantity = str(quantity)
                if _same_quantity(have, quantity):
                    continue
                current.setdefault(kind_name, {})[resource] = quantity
            lines.append("%s.%s of %s: %s -> %s" % (kind_name, resource, container.get("name"),
                                                    have if have is not None else "(unset)",
                                                    quantity if quantity is not None else "(unset)"))
    if not current:
        container.pop("resources")
    return lines


def apply_image(template, image, container):
    """Set the image of one container (``image`` a string: ``container`` or the only container) or of
    several (``image`` a dict container -> image). Returns the change lines."""
    containers = ((template.get("spec") or {}).get("containers")) or []
    if isinstance(image, dict):
        wanted = image
    else:
        if not container and len(containers) != 1:
            raise RolloutError("image %r: the pod has %d containers (%s): name one with container, or give "
                               "image as a dict container: image" % (
                                   image, len(containers), ", ".join(c.get("name") for c in containers)))
        wanted = {container or containers[0].get("name"): image}
    lines = []
    for name, ref in sorted(wanted.items()):
        target = _containers(template, name)[0]
        if target.get("image") == ref:
            continue
        lines.append("image of %s: %s -> %s" % (name, target.get("image"), ref))
        target["image"] = ref
    return lines


# --------------------------------------------------------------------------- revisions


def revision_number(obj):
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION) or 0)
    except (TypeError, ValueError):
        return 0


def owned_by(obj, owner):
    uid = (owner.get("metadata") or {}).get("uid")
    return any(ref.get("uid") == uid and ref.get("controller", True)
               for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def revisions_of(kind, owner, objects):
    """The revisions kept for a workload, oldest first: ``revision``, ``earlier`` (the numbers it had
    before a rollback renumbered it), ``name``, ``template``
    (hash label stripped), ``change_cause``, ``created``, ``replicas``, ``ready``.

    ``objects``: the namespace's ReplicaSets (Deployment) or ControllerRevisions (StatefulSet);
    those not controlled by ``owner`` are ignored."""
    out = []
    for obj in objects or []:
        if not owned_by(obj, owner):
            continue
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        if kind == "Deployment":
            number = revision_number(obj)
            template = (obj.get("spec") or {}).get("template")
            status = obj.get("status") or {}
            replicas, ready = (obj.get("spec") or {}).get("replicas", 0), status.get("readyReplicas") or 0
        else:
            number = obj.get("revision") or 0
            template = ((obj.get("data") or {}).get("spec") or {}).get("template")
            replicas = ready = None
        earlier = [int(n) for n in str(annotations.get(REVISION_HISTORY) or "").split(",") if n.strip().isdigit()]
        out.append(dict(revision=int(number), earlier=earlier, name=meta.get("name"), template=strip_hash(template),
                        change_cause=annotations.get(CHANGE_CAUSE), created=meta.get("creationTimestamp"),
                        replicas=replicas, ready=ready))
    out.sort(key=lambda r: r["revision"])
    return out


def current_revision(kind, obj, revisions):
    """The revision the workload's template is at: the Deployment's annotation; for a StatefulSet the
    ControllerRevision named by ``status.updateRevision``; else the revision whose template matches."""
    if kind == "Deployment" and revision_number(obj):
        return revision_number(obj)
    update = (obj.get("status") or {}).get("updateRevision")
    for rev in revisions:
        if update and rev["name"] == update:
            return rev["revision"]
    template = strip_hash((obj.get("spec") or {}).get("template"))
    matching = [r["revision"] for r in revisions if r["template"] == template]
    return max(matching) if matching else None


def undo_source(kind, obj, revisions, to_revision=None):
    """The revision ``kubectl rollout undo`` goes back to: ``to_revision``, or the newest one below the
    current revision. Raises RolloutError naming the revisions kept when there is none."""
    name = "%s/%s" % (kind, (obj.get("metadata") or {}).get("name"))
    kept = [r["revision"] for r in revisions]
    if to_revision:
        for rev in revisions:
            if rev["revision"] == int(to_revision):
                return rev
        # a revision gone back to before is renumbered; the controller keeps its old numbers
        # (revision-history), so the same to_revision finds it again (idempotent)
        for rev in revisions:
            if int(to_revision) in (rev.get("earlier") or []):
                return rev
        raise RolloutError("%s: revision %s is not in its history (revisions kept: %s). Nothing was changed."
                           % (name, to_revision, ", ".join(str(k) for k in kept) or "none"))
    current = current_revision(kind, obj, revisions)
    older = [r for r in revisions if current is None or r["revision"] < current]
    if not older:
        raise RolloutError("%s: no revision before the current one (%s) to go back to (revisions kept: %s). "
                           "Nothing was changed." % (name, current, ", ".join(str(k) for k in kept) or "none"))
    return older[-1]


def _env_changes(before, after):
    out = []
    for container in sorted(set(before) | set(after), key=str):
        b_env = (before.get(container) or {}).get("env") or {}
        a_env = (after.get(container) or {}).get("env") or {}
        for name in sorted(set(b_env) | set(a_env)):
            if b_env.get(name) != a_env.get(name):
                out.append(dict(container=container, name=name, before=b_env.get(name), after=a_env.get(name)))
    return out


def history(kind, obj, revisions):
    """What ``kubectl rollout history`` shows, and what changed between consecutive revisions:
    per revision ``revision``, ``current``, ``change_cause``, ``images`` (container -> image), ``env``
    (container -> {name: value}), ``env_changes`` and ``image_changes`` against the revision before it."""
    current = current_revision(kind, obj, revisions)
    out, previous = [], None
    for rev in revisions:
        fields = template_fields(rev["template"])["containers"]
        entry = dict(revision=rev["revision"], name=rev["name"], current=rev["revision"] == current,
                     change_cause=rev["change_cause"], created=rev["created"],
                     images=dict((c, f["image"]) for c, f in fields.items()),
                     env=dict((c, f["env"]) for c, f in fields.items()),
                     replicas=rev["replicas"], ready_replicas=rev["ready"], env_changes=[], image_changes=[])
        if previous is not None:
            entry["env_changes"] = _env_changes(previous, fields)
            entry["image_changes"] = [dict(container=c, before=(previous.get(c) or {}).get("image"),
                                           after=(fields.get(c) or {}).get("image"))
                                      for c in sorted(set(previous) | set(fields), key=str)
                                      if (previous.get(c) or {}).get("image") != (fields.get(c) or {}).get("image")]
        out.append(entry)
        previous = fields
    return out


# --------------------------------------------------------------------------- the plan


def change_cause(lines, given=None):
    """The ``kubernetes.io/change-cause`` annotation: the caller's, or what changed (bounded)."""
    text = given or ("apex.ops apex_rollout: " + "; ".join(lines))
    return text if len(text) <= CHANGE_CAUSE_MAX else text[:CHANGE_CAUSE_MAX - 3] + "..."


def plan_target(kind, obj, request, revisions=None, now=None, cause=None):
    """What one target's change does. Raises RolloutError on a refusal.

    ``request``: env, env_absent, image, resources, container, undo, to_revision, restart, paused.
    ``revisions``: ``revisions_of(...)`` (needed for an undo). Returns ``key``, ``kind``, ``name``,
    ``changed``, ``changes`` (lines), ``before``/``after`` (the changed fields only), ``env_changes``
    (``container``, ``name``, ``before``, ``after`` per env var that changes; None when unset), ``revision``
    (current), ``undo_to``, ``paused``, and for the writer ``template`` (the new pod template),
    ``annotations`` (the object's, with the change-cause) and ``paused_after``.
    """
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    name = meta.get("name")
    key = "%s/%s/%s" % (kind, meta.get("namespace"), name)
    template_before = spec.get("template") or {}
    template = copy.deepcopy(template_before)
    lines, undo_to = [], None
    if request.get("undo") or request.get("to_revision") is not None:
        source = undo_source(kind, obj, revisions or [], request.get("to_revision"))
        undo_to = source["revision"]
        if strip_hash(template_before) != source["template"]:
            template = copy.deepcopy(source["template"])
            # what that revision runs, not its change-cause: an undo of an undo would nest them
            images = template_fields(source["template"])["containers"]
            lines.append("undo to revision %d (%s)" % (undo_to, ", ".join(
                "%s %s" % (name, fields["image"]) for name, fields in sorted(images.items(), key=lambda i: str(i[0])))))
    else:
        if request.get("env") or request.get("env_absent"):
            for container in _containers(template, request.get("container")):
                lines.extend(apply_env(container, request.get("env"), request.get("env_absent")))
        if request.get("image"):
            lines.extend(apply_image(template, request["image"], request.get("container")))
        if request.get("resources"):
            for container in _containers(template, request.get("container")):
                lines.extend(apply_resources(container, request["resources"]))
        if request.get("restart"):
            stamp = restart_patch(now)[0]
            template.setdefault("metadata", {}).setdefault("annotations", {})[RESTARTED_AT] = stamp
            lines.append("restart (%s %s)" % (RESTARTED_AT, stamp))
    paused_before = bool(spec.get("paused"))
    paused_after = paused_before if request.get("paused") is None else bool(request["paused"])
    if paused_after != paused_before:
        lines.append("pause the rollout" if paused_after else "resume the rollout")
    before_fields, after_fields = changed_fields(template_fields(template_before, mask=False),
                                                 template_fields(template, mask=False))
    before_fields, after_fields = _mask_changed(before_fields, MASKED), _mask_changed(after_fields, MASKED_CHANGED)
    if paused_after != paused_before:
        before_fields["paused"], after_fields["paused"] = paused_before, paused_after
    annotations = dict(meta.get("annotations") or {})
    if lines:
        annotations[CHANGE_CAUSE] = change_cause(lines, cause)
    env_changes = _env_changes(template_fields(template_before)["containers"], template_fields(template)["containers"])
    return dict(key=key, kind=kind, name=name, namespace=meta.get("namespace"), changed=bool(lines), changes=lines,
                before=before_fields, after=after_fields, env_changes=env_changes, revision=current_revision(kind, obj, revisions or []),
                undo_to=undo_to, paused=paused_after, template=template, annotations=annotations,
                paused_after=paused_after if kind == "Deployment" else None)


def public_plan(plan):
    """A plan as returned to the user (without the template and annotations it writes)."""
    return dict((k, v) for k, v in plan.items() if k not in ("template", "annotations", "paused_after", "_obj"))


def rollout_diff(plans):
    """Ansible's ``diff`` of a call: before/after of the changed fields, per target key."""
    before = dict((p["key"], p["before"]) for p in plans if p["changed"])
    after = dict((p["key"], p["after"]) for p in plans if p["changed"])
    return dict(before=before, after=after)
