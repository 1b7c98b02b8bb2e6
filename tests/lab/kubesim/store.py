"""The object store of one cluster: objects in their storage version, a global
resourceVersion counter, per-resource event history for watches, and a condition variable
that wakes watchers and controllers on every change.

Stored objects are treated as immutable: every write stores a fresh dict, so a reader may
hold a reference without copying (but must copy before changing it).
"""
import bisect
import copy
import datetime
import threading
import uuid

HISTORY = 5000


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        Exception.__init__(self, message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self):
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def not_found(res, name):
    group = res.group
    label = res.plural if not group else "%s.%s" % (res.plural, group)
    return ApiError(404, "NotFound", '%s "%s" not found' % (label, name),
                    {"name": name, "group": group, "kind": res.plural})


def already_exists(res, name):
    label = res.plural if not res.group else "%s.%s" % (res.plural, res.group)
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (label, name),
                    {"name": name, "group": res.group, "kind": res.plural})


def conflict(res, name):
    label = res.plural if not res.group else "%s.%s" % (res.plural, res.group)
    return ApiError(409, "Conflict",
                    'Operation cannot be fulfilled on %s "%s": the object has been modified; '
                    "please apply your changes to the latest version and try again" % (label, name),
                    {"name": name, "group": res.group, "kind": res.plural})


def invalid(res, name, causes):
    msg = '%s "%s" is invalid: %s' % (res.kind, name, ", ".join(
        "%s: %s" % (c.get("field", ""), c.get("message", "")) for c in causes))
    return ApiError(422, "Invalid", msg, {"name": name, "group": res.group, "kind": res.kind,
                                          "causes": [dict(reason="FieldValueInvalid", **c)
                                                     for c in causes]})


class Gone(Exception):
    pass


class Store:
    def __init__(self, name):
        self.name = name
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 1
        self.objs = {}        # skey -> {ns: {name: obj}}
        self.history = {}     # skey -> list of (rv, type, obj, old)
        self.hist_rvs = {}    # skey -> list of rv (parallel, for bisect)
        self.hist_start = {}  # skey -> rv before which history is incomplete
        self.uids = {}        # uid -> (skey, ns, name)
        self.closed = False

    # ------------------------------------------------------------------ reads
    def get(self, skey, ns, name):
        return self.objs.get(skey, {}).get(ns or "", {}).get(name)

    def list(self, skey, ns=None):
        bucket = self.objs.get(skey, {})
        if ns is None:
            out = []
            for names in bucket.values():
                out.extend(names.values())
            return out
        return list(bucket.get(ns, {}).values())

    def all_objects(self):
        for skey, bucket in list(self.objs.items()):
            for names in list(bucket.values()):
                for obj in list(names.values()):
                    yield skey, obj

    def by_uid(self, uid):
        ref = self.uids.get(uid)
        if ref is None:
            return None
        return self.get(*ref)

    # ------------------------------------------------------------------ writes
    def _next_rv(self):
        self.rv += 1
        return self.rv

    def _record(self, skey, etype, obj, old):
        rv = int(obj["metadata"]["resourceVersion"])
        hist = self.history.setdefault(skey, [])
        rvs = self.hist_rvs.setdefault(skey, [])
        hist.append((rv, etype, obj, old))
        rvs.append(rv)
        if len(hist) > HISTORY:
            cut = len(hist) - HISTORY // 2
            self.hist_start[skey] = rvs[cut - 1]
            del hist[:cut]
            del rvs[:cut]
        self.cond.notify_all()

    def create(self, skey, obj):
        with self.lock:
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            bucket = self.objs.setdefault(skey, {}).setdefault(key[0], {})
            if key[1] in bucket:
                return None
            meta["uid"] = meta.get("uid") or str(uuid.uuid4())
            meta["resourceVersion"] = str(self._next_rv())
            meta["creationTimestamp"] = meta.get("creationTimestamp") or now_iso()
            meta.setdefault("generation", 1)
            bucket[key[1]] = obj
            self.uids[meta["uid"]] = (skey, key[0], key[1])
            self._record(skey, "ADDED", obj, None)
            return obj

    def replace(self, skey, obj, expect_rv=None):
        """Store ``obj`` in place of the current object. Returns the stored object, or None
        when it does not exist; raises ValueError on a resourceVersion mismatch."""
        with self.lock:
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            bucket = self.objs.setdefault(skey, {}).setdefault(key[0], {})
            old = bucket.get(key[1])
            if old is None:
                return None
            if expect_rv and expect_rv != old["metadata"]["resourceVersion"]:
                raise ValueError("conflict")
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            meta["resourceVersion"] = str(self._next_rv())
            bucket[key[1]] = obj
            self._record(skey, "MODIFIED", obj, old)
            return obj

    def remove(self, skey, ns, name):
        with self.lock:
            bucket = self.objs.get(skey, {}).get(ns or "", {})
            old = bucket.pop(name, None)
            if old is None:
                return None
            self.uids.pop(old["metadata"]["uid"], None)
            gone = copy.copy(old)
            gone["metadata"] = dict(old["metadata"], resourceVersion=str(self._next_rv()))
            self._record(skey, "DELETED", gone, old)
            return gone

    # ------------------------------------------------------------------ watch
    def events_since(self, skey, rv):
        """Events of ``skey`` with resourceVersion > rv. Raises Gone when rv is too old."""
        if rv < self.hist_start.get(skey, 0):
            raise Gone()
        rvs = self.hist_rvs.get(skey, [])
        i = bisect.bisect_right(rvs, rv)
        return self.history.get(skey, [])[i:]
