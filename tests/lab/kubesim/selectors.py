"""Label and field selectors, as the API server parses them."""
import re

from .store import ApiError

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


def _split_top(text):
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def parse_label_selector(text):
    """Returns a list of (key, op, values) requirements."""
    reqs = []
    if not text:
        return reqs
    for part in _split_top(text):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)$", part)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append((m.group(1), op, [m.group(3)]))
            continue
        m = _SET_RE.match(part)
        if not m:
            raise ApiError(400, "BadRequest", "unable to parse requirement: %r" % part)
        neg, key, op, vals = m.groups()
        if op:
            reqs.append((key, op, [v.strip() for v in vals.split(",") if v.strip()]))
        else:
            reqs.append((key, "!exists" if neg else "exists", []))
    return reqs


def match_labels(reqs, labels):
    labels = labels or {}
    for key, op, vals in reqs:
        if op == "=" and labels.get(key) != vals[0]:
            return False
        if op == "!=" and labels.get(key) == vals[0]:
            return False
        if op == "in" and labels.get(key) not in vals:
            return False
        if op == "notin" and key in labels and labels[key] in vals:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!exists" and key in labels:
            return False
    return True


def selector_to_reqs(selector):
    """A metav1.LabelSelector dict -> requirements. None/{} selects everything."""
    reqs = []
    if not selector:
        return reqs
    for k, v in (selector.get("matchLabels") or {}).items():
        reqs.append((k, "=", [v]))
    for e in selector.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists",
              "DoesNotExist": "!exists"}.get(e.get("operator"))
        if op:
            reqs.append((e["key"], op, list(e.get("values") or [])))
    return reqs


def selector_string(selector):
    parts = []
    for k, v in sorted(((selector or {}).get("matchLabels") or {}).items()):
        parts.append("%s=%s" % (k, v))
    for e in (selector or {}).get("matchExpressions") or []:
        op = e.get("operator")
        if op in ("In", "NotIn"):
            parts.append("%s %s (%s)" % (e["key"], op.lower(), ",".join(e.get("values") or [])))
        elif op == "Exists":
            parts.append(e["key"])
        elif op == "DoesNotExist":
            parts.append("!" + e["key"])
    return ",".join(parts)


def parse_field_selector(text):
    reqs = []
    if not text:
        return reqs
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*)$", part)
        if not m:
            raise ApiError(400, "BadRequest", "invalid selector: %r" % part)
        reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return reqs


def field_value(obj, path):
    cur = obj
    for tok in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(tok)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def match_fields(reqs, obj):
    for path, op, value in reqs:
        cur = field_value(obj, path)
        if op == "=" and cur != value:
            return False
        if op == "!=" and cur == value:
            return False
    return True
