"""Decoding of Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``).

client-go >= 1.31 sends built-in objects as protobuf from its typed clientset, so
``kubectl create namespace|deployment|job|secret|configmap ...`` do. No .proto file ships
with the lab: the message schemas are read at first use from the compressed
``FileDescriptorProto``s that every client-go binary embeds (the ``kubectl`` on PATH, or
``$KUBESIM_PROTO_SOURCE``), and the wire format is decoded generically into the JSON
representation (Time -> RFC 3339, Quantity -> string, IntOrString -> int|string,
RawExtension -> JSON, bytes -> base64, map entries -> objects, Go ``omitempty`` emulated).
"""
import base64
import datetime
import json
import os
import shutil
import threading
import zlib

MAGIC = b"k8s\x00"
_lock = threading.Lock()
_schema = None

# ints whose zero value is meaningful in requests (pointer fields in the Go types)
KEEP_ZERO = {"replicas", "minReplicas", "backoffLimit", "completions", "parallelism",
             "terminationGracePeriodSeconds", "activeDeadlineSeconds", "revisionHistoryLimit",
             "partition", "successfulJobsHistoryLimit", "failedJobsHistoryLimit",
             "progressDeadlineSeconds", "ttlSecondsAfterFinished",
             "startingDeadlineSeconds", "defaultMode", "runAsUser", "runAsGroup", "fsGroup",
             "exitCode", "restartCount"}


# proto fields that are embedded (``json:",inline"``) structs in the Go types
INLINE = {"localObjectReference", "volumeSource", "handler", "persistentVolumeSource",
          "typeMeta"}


class ProtobufError(ValueError):
    pass


# ------------------------------------------------------------------------------ wire format
def _varint(buf, i):
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf):
    """Yield (number, wire_type, value) of a serialized message."""
    i = 0
    n = len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _varint(buf, i)
        elif wt == 1:
            val, i = buf[i:i + 8], i + 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            val, i = buf[i:i + ln], i + ln
        elif wt == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ProtobufError("unsupported wire type %d" % wt)
        yield num, wt, val


# ------------------------------------------------------------------------------ descriptors
class Field:
    __slots__ = ("name", "number", "repeated", "type", "type_name")


class Message:
    def __init__(self, name):
        self.name = name
        self.fields = {}
        self.map_entry = False


def _parse_descriptor(buf, prefix, out):
    name = ""
    msg_fields, nested, map_entry = [], [], False
    for num, wt, val in fields(buf):
        if num == 1:
            name = val.decode()
        elif num == 2:
            msg_fields.append(val)
        elif num == 3:
            nested.append(val)
        elif num == 7:
            for n2, _, v2 in fields(val):
                if n2 == 7:
                    map_entry = bool(v2)
    full = prefix + "." + name
    msg = Message(full)
    msg.map_entry = map_entry
    for fb in msg_fields:
        f = Field()
        f.name, f.number, f.repeated, f.type, f.type_name = "", 0, False, 0, ""
        json_name = None
        for num, wt, val in fields(fb):
            if num == 1:
                f.name = val.decode()
            elif num == 3:
                f.number = val
            elif num == 4:
                f.repeated = val == 3
            elif num == 5:
                f.type = val
            elif num == 6:
                f.type_name = val.decode()
            elif num == 10:
                json_name = val.decode()
        if json_name and json_name != f.name and "_" in f.name:
            f.name = json_name
        msg.fields[f.number] = f
    out[full] = msg
    for nb in nested:
        _parse_descriptor(nb, full, out)


def _parse_file(buf, out):
    package = ""
    messages = []
    for num, wt, val in fields(buf):
        if num == 2:
            package = val.decode()
        elif num == 4:
            messages.append(val)
    for mb in messages:
        _parse_descriptor(mb, "." + package, out)


def _candidates():
    src = os.environ.get("KUBESIM_PROTO_SOURCE")
    if src:
        yield src
    exe = shutil.which("kubectl")
    if exe:
        yield os.path.realpath(exe)
    for extra in ("/usr/local/bin/kubectl", "/usr/bin/kubectl"):
        if os.path.exists(extra):
            yield os.path.realpath(extra)


def load_schema():
    global _schema
    with _lock:
        if _schema is not None:
            return _schema
        out = {}
        for path in _candidates():
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            pos = 0
            while True:
                i = data.find(b"\x1f\x8b\x08\x00", pos)
                if i < 0:
                    break
                pos = i + 1
                try:
                    raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[i:i + 600000])
                except zlib.error:
                    continue
                if b"generated.proto" not in raw[:200] or b"k8s.io" not in raw[:200]:
                    continue
                try:
                    _parse_file(raw, out)
                except (ProtobufError, IndexError, UnicodeDecodeError):
                    continue
            if ".k8s.io.api.core.v1.Pod" in out:
                break
        _schema = out
        return out


# ------------------------------------------------------------------------------ decoding
def _time(msg_bytes):
    secs = nanos = 0
    for num, wt, val in fields(msg_bytes):
        if num == 1:
            secs = val if val < (1 << 63) else val - (1 << 64)
        elif num == 2:
            nanos = val
    if secs == 0 and nanos == 0:
        return None
    dt = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _scalar(f, wt, val):
    t = f.type
    if t == 9:
        return val.decode("utf-8")
    if t == 12:
        return base64.b64encode(val).decode()
    if t == 8:
        return bool(val)
    if t in (3, 5):  # int64, int32 (two's complement varints)
        return val - (1 << 64) if val >= (1 << 63) else val
    if t in (4, 13, 14):
        return val
    if t in (17, 18):
        return (val >> 1) ^ -(val & 1)
    if t == 1:
        import struct
        return struct.unpack("<d", val)[0]
    if t == 2:
        import struct
        return struct.unpack("<f", val)[0]
    if t in (6, 16):
        return int.from_bytes(val, "little", signed=t == 16)
    if t in (7, 15):
        return int.from_bytes(val, "little", signed=t == 15)
    return val


def _special(type_name, val, schema):
    short = type_name.rsplit(".", 1)[-1]
    pkg = type_name
    if pkg.endswith("meta.v1.Time") or pkg.endswith("meta.v1.MicroTime"):
        return True, _time(val)
    if pkg.endswith("resource.Quantity"):
        for num, wt, v in fields(val):
            if num == 1:
                return True, v.decode()
        return True, None
    if pkg.endswith("intstr.IntOrString"):
        kind, iv, sv = 0, 0, ""
        for num, wt, v in fields(val):
            if num == 1:
                kind = v
            elif num == 2:
                iv = v - (1 << 64) if v >= (1 << 63) else v
            elif num == 3:
                sv = v.decode()
        return True, (sv if kind == 1 else iv)
    if pkg.endswith("runtime.RawExtension"):
        for num, wt, v in fields(val):
            if num == 1 and v:
                try:
                    return True, json.loads(v)
                except ValueError:
                    return True, None
        return True, None
    if pkg.endswith("meta.v1.Duration"):
        for num, wt, v in fields(val):
            if num == 1:
                return True, "%ds" % (v // 10 ** 9)
        return True, None
    if short == "FieldsV1":
        return True, None
    return False, None


def decode_message(type_name, buf, schema):
    msg = schema.get(type_name)
    if msg is None:
        raise ProtobufError("unknown protobuf message %s" % type_name)
    out = {}
    for num, wt, val in fields(buf):
        f = msg.fields.get(num)
        if f is None:
            continue
        if f.type == 11:
            sub = schema.get(f.type_name)
            if sub is not None and sub.map_entry:
                key = value = None
                for n2, w2, v2 in fields(val):
                    kf = sub.fields.get(n2)
                    if kf is None:
                        continue
                    if kf.type == 11:
                        ok, sv = _special(kf.type_name, v2, schema)
                        dv = sv if ok else decode_message(kf.type_name, v2, schema)
                    else:
                        dv = _scalar(kf, w2, v2)
                    if n2 == 1:
                        key = dv
                    else:
                        value = dv
                if key is not None:
                    out.setdefault(f.name, {})[key] = value if value is not None else ""
                continue
            ok, sv = _special(f.type_name, val, schema)
            dv = sv if ok else decode_message(f.type_name, val, schema)
        elif f.repeated and wt == 2 and f.type not in (9, 12):
            # packed repeated scalars
            items, i = [], 0
            while i < len(val):
                v, i = _varint(val, i)
                items.append(_scalar(f, 0, v))
            out.setdefault(f.name, []).extend(items)
            continue
        else:
            dv = _scalar(f, wt, val)
        if f.repeated:
            out.setdefault(f.name, []).append(dv)
        else:
            out[f.name] = dv
    for name in INLINE & set(out):
        if isinstance(out[name], dict):
            inner = out.pop(name)
            for k, v in inner.items():
                out.setdefault(k, v)
    return out


def omit_empty(value, key=None):
    """Go ``omitempty`` for a decoded request: drop zero values gogo encodes explicitly."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v2 = omit_empty(v, k)
            if v2 is None:
                continue
            out[k] = v2
        return out if out or key in ("resources", "securityContext", "emptyDir") else None
    if isinstance(value, list):
        items = [omit_empty(v) for v in value]
        items = [v if v is not None else {} for v in items]
        return items or None
    if value == "" or value is False:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value == 0 and \
            key not in KEEP_ZERO:
        return None
    return value


def package_for(api_version):
    group, _, version = api_version.rpartition("/")
    if not group:
        return ".k8s.io.api.core." + version
    return ".k8s.io.api.%s.%s" % (group.split(".")[0], version)


def decode_object(body):
    """A ``k8s\\0``-prefixed runtime.Unknown envelope -> the object as JSON dict."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic number")
    schema = load_schema()
    if not schema:
        raise ProtobufError("no protobuf schema available (kubectl binary not found)")
    api_version = kind = ""
    raw = b""
    for num, wt, val in fields(body[len(MAGIC):]):
        if num == 1:
            for n2, w2, v2 in fields(val):
                if n2 == 1:
                    api_version = v2.decode()
                elif n2 == 2:
                    kind = v2.decode()
        elif num == 2:
            raw = val
    if api_version.startswith("meta.k8s.io") or kind in ("DeleteOptions",):
        type_name = ".k8s.io.apimachinery.pkg.apis.meta.v1." + kind
    else:
        type_name = package_for(api_version) + "." + kind
    obj = omit_empty(decode_message(type_name, raw, schema)) or {}
    obj["apiVersion"] = api_version
    obj["kind"] = kind
    return obj
