"""Server-side field validation (``fieldValidation=Strict|Warn|Ignore``) for the built-in kinds.

The allowed fields come from the models of the installed ``kubernetes`` Python client (each
model class has ``openapi_types`` — attribute -> type string — and ``attribute_map`` —
attribute -> JSON name). A kind maps to its model class by apiVersion (``apps/v1 Deployment``
-> ``V1Deployment``, ``autoscaling/v2`` -> ``V2HorizontalPodAutoscaler``, core ``Event`` ->
``CoreV1Event``, ``events.k8s.io/v1 Event`` -> ``EventsV1Event``). ``dict[str, ...]`` and
``object`` (IntOrString, RawExtension, ...) are open; CRDs (cert-manager) and unknown kinds are
not validated. The client package is imported on first use (~0.4 s, once per process) and
each model's field table is cached.

What a real kube-apiserver answers, reproduced by ``server.py``:

* create / update with Strict: 400 BadRequest
  ``Deployment in version "v1" cannot be handled as a Deployment: strict decoding error:
  unknown field "spec.replcas"``;
* JSON / merge / strategic-merge patch with Strict: 422 Invalid
  ``patch: Invalid value: "...": strict decoding error: unknown field "spec.replcas"``;
* Warn (also the default when the parameter is absent) and Ignore: the unknown fields are
  dropped; Warn adds a ``Warning: 299 - "unknown field \\"spec.replcas\\""`` header.
* server-side apply (``application/apply-patch+yaml``): unknown fields are refused whatever
  the directive, as the real field manager does (``failed to create typed patch object
  (...): .spec.replcas: field not declared in schema``)."""
import importlib
import re
import threading

_LOCK = threading.Lock()
_FIELDS = {}          # model class name -> {json name: type string} (None: no such class)
_MODELS = None
_SKIP_GROUPS = {"cert-manager.io", "metrics.k8s.io"}
_PRIMITIVES = {"str", "int", "float", "bool", "datetime", "date", "object", "bytearray"}
# per-group prefix of model class names that would otherwise clash (CoreV1Event ...)
_GROUP_PREFIX = {"": "Core", "events.k8s.io": "Events", "discovery.k8s.io": "Discovery",
                 "rbac.authorization.k8s.io": "Rbac", "storage.k8s.io": "Storage",
                 "flowcontrol.apiserver.k8s.io": "Flowcontrol", "resource.k8s.io": "Resource"}


def _models():
    global _MODELS
    if _MODELS is None:
        _MODELS = importlib.import_module("kubernetes.client.models")
    return _MODELS


def _fields(name):
    with _LOCK:
        if name in _FIELDS:
            return _FIELDS[name]
    cls = getattr(_models(), name, None)
    table = None
    if cls is not None and hasattr(cls, "openapi_types"):
        table = {cls.attribute_map[attr]: typ for attr, typ in cls.openapi_types.items()}
    with _LOCK:
        _FIELDS[name] = table
    return table


def model_for(api_version, kind):
    """Model class name for an apiVersion/kind, or None (CRDs, unknown kinds)."""
    if not api_version or not kind:
        return None
    group, _, version = api_version.rpartition("/")
    if group in _SKIP_GROUPS:
        return None
    ver = version[:1].upper() + version[1:]
    candidates = []
    if group in _GROUP_PREFIX:
        candidates.append(_GROUP_PREFIX[group] + ver + kind)
    candidates.append(ver + kind)
    for name in candidates:
        table = _fields(name)
        if table and "kind" in table and "apiVersion" in table:
            return name
    return None


_LIST = re.compile(r"^list\[(.*)\]$")
_DICT = re.compile(r"^dict\[str, (.*)\]$")


def unknown_fields(obj, model, path=""):
    """Dotted paths of the fields of ``obj`` the model does not declare
    (``spec.template.spec.containers[0].imagee``)."""
    out = []
    _walk(obj, model, path, out)
    return out


def _walk(value, typ, path, out):
    if value is None or typ in _PRIMITIVES:
        return
    m = _LIST.match(typ)
    if m:
        if isinstance(value, list):
            for i, item in enumerate(value):
                _walk(item, m.group(1), "%s[%d]" % (path, i), out)
        return
    m = _DICT.match(typ)
    if m:
        if isinstance(value, dict) and m.group(1) not in _PRIMITIVES:
            for k, item in value.items():
                _walk(item, m.group(1), "%s[%s]" % (path, k), out)
        return
    table = _fields(typ)
    if table is None or not isinstance(value, dict):
        return
    for key, item in value.items():
        sub = key if not path else "%s.%s" % (path, key)
        if key not in table:
            out.append(sub)
        else:
            _walk(item, table[key], sub, out)


def prune(obj, paths):
    """Remove the fields named by ``unknown_fields`` paths from ``obj`` (in place)."""
    for p in paths:
        parts = re.findall(r"[^.\[\]]+|\[[^\]]*\]", p)
        cur = obj
        for part in parts[:-1]:
            if cur is None:
                break
            if part.startswith("["):
                key = part[1:-1]
                cur = cur[int(key)] if isinstance(cur, list) else cur.get(key)
            else:
                cur = cur.get(part) if isinstance(cur, dict) else None
        last = parts[-1] if parts else None
        if isinstance(cur, dict) and last is not None:
            cur.pop(last[1:-1] if last.startswith("[") else last, None)


def check(obj):
    """(model name, unknown field paths) for a request object; (None, []) if not validated."""
    if not isinstance(obj, dict):
        return None, []
    model = model_for(obj.get("apiVersion"), obj.get("kind"))
    if model is None:
        return None, []
    return model, unknown_fields(obj, model)


def strict_message(paths):
    return "strict decoding error: " + ", ".join('unknown field "%s"' % p for p in paths)


def go_format(value):
    """``fmt.Sprintf("%+v", map)`` of a decoded JSON value, as the apiserver quotes a patch."""
    if isinstance(value, dict):
        return "map[" + " ".join("%s:%s" % (k, go_format(value[k])) for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
