"""Patch semantics of the Kubernetes API: JSON merge patch (RFC 7386), JSON patch (RFC 6902)
and strategic merge patch (the subset of directives kubectl and client-go emit).

All functions return NEW objects and never mutate their inputs.
"""
import copy
import json


class PatchError(ValueError):
    """The patch cannot be applied (maps to 422 Invalid / 400 BadRequest)."""


# --------------------------------------------------------------------------- merge patch
def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --------------------------------------------------------------------------- JSON patch
def _unescape(token):
    return token.replace("~1", "/").replace("~0", "~")


def _split_pointer(pointer):
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError("invalid JSON pointer %r" % pointer)
    return [_unescape(t) for t in pointer[1:].split("/")]


def _walk(doc, tokens, create=False):
    cur = doc
    for tok in tokens:
        if isinstance(cur, dict):
            if tok not in cur:
                raise PatchError("path not found: /%s" % "/".join(tokens))
            cur = cur[tok]
        elif isinstance(cur, list):
            try:
                cur = cur[int(tok)]
            except (ValueError, IndexError):
                raise PatchError("path not found: /%s" % "/".join(tokens))
        else:
            raise PatchError("path not found: /%s" % "/".join(tokens))
    return cur


def _get(doc, pointer):
    return _walk(doc, _split_pointer(pointer))


def _add(doc, pointer, value):
    tokens = _split_pointer(pointer)
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                idx = int(last)
            except ValueError:
                raise PatchError("invalid array index %r" % last)
            if idx < 0 or idx > len(parent):
                raise PatchError("array index %d out of range" % idx)
            parent.insert(idx, value)
    else:
        raise PatchError("cannot add to %s" % pointer)
    return doc


def _remove(doc, pointer):
    tokens = _split_pointer(pointer)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError("unable to remove nonexistent key: %s" % last)
        return parent.pop(last)
    if isinstance(parent, list):
        try:
            return parent.pop(int(last))
        except (ValueError, IndexError):
            raise PatchError("unable to remove index %s" % last)
    raise PatchError("cannot remove %s" % pointer)


def json_patch(target, ops):
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError("invalid JSON patch operation %r" % (op,))
        kind = op["op"]
        path = op.get("path", "")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            tokens = _split_pointer(path)
            if not tokens:
                doc = copy.deepcopy(op.get("value"))
                continue
            parent = _walk(doc, tokens[:-1])
            last = tokens[-1]
            if isinstance(parent, dict):
                if last not in parent:
                    raise PatchError("replace operation does not apply: doc is missing key: %s" % path)
                parent[last] = copy.deepcopy(op.get("value"))
            elif isinstance(parent, list):
                try:
                    parent[int(last)] = copy.deepcopy(op.get("value"))
                except (ValueError, IndexError):
                    raise PatchError("replace operation does not apply: %s" % path)
            else:
                raise PatchError("replace operation does not apply: %s" % path)
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError("testing value %s failed" % path)
        else:
            raise PatchError("unknown JSON patch operation %r" % kind)
    return doc


# --------------------------------------------------------------------------- strategic merge
# field name -> merge key for lists with patchStrategy "merge" (k8s.io/api struct tags).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "readinessGates": "conditionType",
    "resourceClaims": "name",
    "addresses": "type",
    "ports": None,  # containerPort (container) or port (service): decided by the elements
}
PRIMITIVE_MERGE = {"finalizers"}


def _merge_key(field, items):
    if field == "ports":
        for item in items:
            if isinstance(item, dict):
                if "containerPort" in item:
                    return "containerPort"
                if "port" in item:
                    return "port"
        return "containerPort"
    return MERGE_KEYS.get(field)


def strategic_merge_patch(target, patch):
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    return _smp_map(target if isinstance(target, dict) else {}, patch)


def _smp_map(original, patch):
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    result = copy.deepcopy(original)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        for key in list(result):
            if key not in retain:
                result.pop(key)
    orders = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key[len("$setElementOrder/"):]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key[len("$deleteFromPrimitiveList/"):]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        cur = result.get(key)
        if isinstance(value, dict):
            merged = _smp_map(cur if isinstance(cur, dict) else {}, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _smp_list(key, cur if isinstance(cur, list) else [], value)
        else:
            result[key] = copy.deepcopy(value)
    for field, order in orders.items():
        if isinstance(result.get(field), list) and isinstance(order, list):
            result[field] = _apply_order(field, result[field], order)
    return result


def _apply_order(field, items, order):
    key = _merge_key(field, items + [o for o in order if isinstance(o, dict)])
    if key is None:
        if field in PRIMITIVE_MERGE:
            ranked = [v for v in order if v in items]
            return ranked + [v for v in items if v not in ranked]
        return items
    pos = {}
    for i, o in enumerate(order):
        if isinstance(o, dict) and key in o:
            pos[json.dumps(o[key], sort_keys=True)] = i
    indexed = list(enumerate(items))
    indexed.sort(key=lambda p: (pos.get(json.dumps(p[1].get(key), sort_keys=True), len(order) + p[0])
                                if isinstance(p[1], dict) else len(order) + p[0]))
    return [p[1] for p in indexed]


def _smp_list(field, original, patch):
    # A list-level "$patch: replace" element replaces the whole list.
    for item in patch:
        if isinstance(item, dict) and item.get("$patch") == "replace" and len(item) == 1:
            return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    if field in PRIMITIVE_MERGE:
        result = list(original)
        for item in patch:
            if item not in result:
                result.append(copy.deepcopy(item))
        return result
    key = _merge_key(field, original + patch) if field in MERGE_KEYS else None
    if key is None:
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and i.get("$patch"))]
    result = [copy.deepcopy(i) for i in original]
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError("strategic merge list %s: elements must be objects" % field)
        if key not in item:
            if item.get("$patch") == "delete" and len(item) == 1:
                continue
            raise PatchError("map: %s does not contain declared merge key: %s" % (item, key))
        idx = next((i for i, cur in enumerate(result)
                    if isinstance(cur, dict) and cur.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                result.pop(idx)
            continue
        if idx is None:
            merged = _smp_map({}, item)
            if merged is not None:
                result.append(merged)
        else:
            merged = _smp_map(result[idx], item)
            if merged is None:
                result.pop(idx)
            else:
                result[idx] = merged
    return result
