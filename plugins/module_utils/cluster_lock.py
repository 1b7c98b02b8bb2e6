# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster lock: one changing apex.ops operation at a time per namespace.

A Kubernetes Lease (coordination.k8s.io/v1) named ``apex-ops-lock`` in the namespace of the
workloads. ``spec.holderIdentity`` says who holds it (``user@host/awx-job-<id>`` or
``user@host/pid-<pid>``), ``renewTime`` + ``leaseDurationSeconds`` until when; the purpose, the
playbook, the run and since when are annotations ``apex.ops/*``. Released = no holder.

``judge`` and ``decide`` are pure (the clock and "is the holder's process alive" are passed in) and
unit-tested; ``LeaseLock`` does the API calls, every write under the resourceVersion it read, so
two runs racing for a free lock cannot both win: the loser gets a 409, reads again and refuses.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, get_or_none
from ansible_collections.apex.ops.plugins.module_utils.timestamps import parse_time

LEASE_NAME = "apex-ops-lock"
ANNOTATION = "apex.ops/"
ANNOTATED = ("purpose", "playbook", "run-id", "since", "host", "pid", "awx-job-id", "overrode")
DEFAULT_DURATION = 300
# states of a lock as seen by a would-be holder
FREE, OURS, HELD, EXPIRED, HOLDER_GONE = "free", "ours", "held", "expired", "holder_gone"
# what acquiring does in each case
ACQUIRE, RENEW, TAKEOVER, REFUSE = "acquire", "renew", "takeover", "refuse"
MODES = ("take", "override")


class LockError(Exception):
    """The lock cannot be read or written as asked."""


class LockHeld(LockError):
    """Someone else holds the lock and it is live; ``view`` says who, why and since when."""

    def __init__(self, msg, view):
        super(LockHeld, self).__init__(msg)
        self.view = view


def identity(user, host, awx_job_id=None, pid=None):
    """The holder identity: user@host/awx-job-<id> (AWX) or user@host/pid-<pid>."""
    job = "awx-job-%s" % awx_job_id if awx_job_id else "pid-%s" % pid
    return "%s@%s/%s" % (user, host, job)


def micro_time(moment):
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC, ``Z``."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def judge(lease, me, now, holder_alive=None):
    """What the Lease means for ``me`` at ``now``: a dict with ``status`` (free/ours/held/expired/
    holder_gone), ``holder``, the annotations, ``since``, ``renewed``, ``expires``, ``seconds_left``.

    ``holder_alive`` is True/False when the holder's process could be checked (same host), None
    when not: a dead holder's lease is taken over at once instead of waiting for it to expire."""
    spec = (lease or {}).get("spec") or {}
    notes = ((lease or {}).get("metadata") or {}).get("annotations") or {}
    holder = spec.get("holderIdentity") or None
    view = dict(holder=holder, duration=spec.get("leaseDurationSeconds"), transitions=spec.get("leaseTransitions") or 0)
    for key in ANNOTATED:
        view[key.replace("-", "_")] = notes.get(ANNOTATION + key) if holder else None
    if not holder:
        view.update(status=FREE, renewed=None, expires=None, seconds_left=None)
        return view
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds") or 0
    expires = renewed + datetime.timedelta(seconds=duration) if renewed else None
    left = (expires - now).total_seconds() if expires else 0.0
    view.update(renewed=renewed.isoformat() if renewed else None, expires=expires.isoformat() if expires else None,
                seconds_left=round(left, 3))
    if holder == me:
        view["status"] = OURS
    elif left <= 0:
        view["status"] = EXPIRED
    elif holder_alive is False:
        view["status"] = HOLDER_GONE
    else:
        view["status"] = HELD
    return view


def describe(view):
    """The holder in one line an on-call engineer can act on."""
    if view.get("status") == FREE:
        return "nobody holds the apex.ops lock"
    what = view.get("purpose") or "?"
    if view.get("playbook"):
        what += " (playbook %s)" % view["playbook"]
    text = "%s holds the apex.ops lock for %s since %s" % (view.get("holder"), what, view.get("since") or view.get("renewed"))
    if view.get("status") == EXPIRED:
        return text + "; it expired at %s (not renewed)" % view.get("expires")
    if view.get("status") == HOLDER_GONE:
        return text + "; its process %s on %s is gone" % (view.get("pid"), view.get("host"))
    return text + "; it expires at %s unless renewed (%ss left)" % (view.get("expires"), view.get("seconds_left"))


def decide(view, mode="take", confirm=None):
    """What acquiring does: ``acquire`` (free), ``renew`` (ours), ``takeover`` (expired, holder gone,
    ``override`` mode, or a live lock whose holder ``confirm`` names). Refuses by raising LockHeld."""
    if mode not in MODES:
        raise LockError("mode must be one of %s" % ", ".join(MODES))
    status = view["status"]
    if status == FREE:
        return ACQUIRE
    if status == OURS:
        return RENEW
    if status in (EXPIRED, HOLDER_GONE) or mode == "override":
        return TAKEOVER
    if confirm and confirm == view.get("holder"):
        return TAKEOVER
    raise LockHeld("%s. Nothing was changed. Wait for it to finish; if that run is dead, the lock "
                   "expires by itself, or break it with confirm=%s (apex_lock state=released, or "
                   "-e apex_lock_break=%s)." % (describe(view), view.get("holder"), view.get("holder")), view)


def decide_release(view, confirm=None):
    """Whether releasing may clear the lock: ours, expired or free (nothing to do) yes; another's
    live lock only with ``confirm`` naming its holder."""
    if view["status"] == FREE:
        return False
    if view["status"] in (OURS, EXPIRED, HOLDER_GONE) or (confirm and confirm == view.get("holder")):
        return True
    raise LockHeld("not breaking the lock: %s. To break it anyway, confirm=%s." % (describe(view), view.get("holder")),
                   view)


class LeaseLock(object):
    """The Lease of one namespace, read and written with the lean client (``k8s.KubeClient``)."""

    def __init__(self, client, namespace, name=LEASE_NAME):
        self.client = client
        self.namespace = namespace
        self.name = name
        self.path = "/apis/coordination.k8s.io/v1/namespaces/%s/leases" % namespace

    @property
    def item_path(self):
        return "%s/%s" % (self.path, self.name)

    def read(self):
        return get_or_none(self.client, self.item_path)

    def _body(self, lease, spec, notes=None):
        """The Lease to write: ``lease``'s metadata (resourceVersion included), ``spec``, and the
        ``apex.ops/*`` annotations replaced by ``notes`` (kept as they are when ``notes`` is None)."""
        meta = dict((lease or {}).get("metadata") or {})
        meta.update(name=self.name, namespace=self.namespace)
        meta["labels"] = dict(meta.get("labels") or {}, **{"app.kubernetes.io/managed-by": "apex.ops"})
        if notes is not None:
            kept = dict((k, v) for k, v in (meta.get("annotations") or {}).items() if not k.startswith(ANNOTATION))
            kept.update((ANNOTATION + k.replace("_", "-"), str(v)) for k, v in notes.items() if v is not None)
            meta["annotations"] = kept
        return dict(apiVersion="coordination.k8s.io/v1", kind="Lease", metadata=meta, spec=spec)

    def acquire(self, me, now, duration, info, mode="take", confirm=None, holder_alive=None, check_mode=False):
        """Take (or renew) the lock. ``info``: purpose, playbook, run_id, host, pid, awx_job_id.

        Returns ``(action, before_view, after_view)``; raises LockHeld when refused. A concurrent
        writer (409 on the PUT, or the create of a Lease that now exists) is read again and decided
        again, so the loser of a race refuses, naming the winner."""
        for attempt in (1, 2):
            lease = self.read()
            before = judge(lease, me, now, holder_alive(lease) if holder_alive and lease else None)
            action = decide(before, mode, confirm)
            if check_mode:
                return action, before, before
            spec = dict((lease or {}).get("spec") or {})
            notes = None
            if action != RENEW:
                spec["acquireTime"] = micro_time(now)
                spec["leaseTransitions"] = before["transitions"] + (1 if action == TAKEOVER else 0)
                notes = dict(info, since=now.isoformat(), overrode=before.get("holder") if action == TAKEOVER else None)
            spec.update(holderIdentity=me, leaseDurationSeconds=int(duration), renewTime=micro_time(now))
            body = self._body(lease, spec, notes)
            try:
                written = self.client.post(self.path, body) if lease is None else self.client.put(self.item_path, body)
            except KubeApiError as exc:
                if attempt == 1 and exc.status == 409:
                    continue
                raise
            return action, before, judge(written, me, now)
        raise LockError("the lock changed twice while it was being acquired")

    def renew(self, me, now, duration=None):
        """Push ``renewTime`` to now if we still hold the lock. Returns the view; status != ours means
        the lock was released or broken meanwhile (the renewer then stops)."""
        lease = self.read()
        view = judge(lease, me, now)
        if view["status"] != OURS:
            return view
        spec = dict(lease["spec"], renewTime=micro_time(now))
        if duration:
            spec["leaseDurationSeconds"] = int(duration)
        body = dict(lease, spec=spec)
        return judge(self.client.put(self.item_path, body), me, now)

    def release(self, me, now, confirm=None, holder_alive=None, check_mode=False):
        """Clear the holder (client-go's release: empty holder). Returns ``(changed, before_view)``."""
        lease = self.read()
        before = judge(lease, me, now, holder_alive(lease) if holder_alive else None)
        if not decide_release(before, confirm):
            return False, before
        if check_mode:
            return True, before
        spec = dict(lease["spec"], holderIdentity=None, leaseDurationSeconds=1, renewTime=micro_time(now))
        meta = dict(lease["metadata"])
        meta["annotations"] = dict((k, v) for k, v in (meta.get("annotations") or {}).items() if not k.startswith(ANNOTATION))
        if before["status"] != OURS:
            meta["annotations"][ANNOTATION + "broken-holder"] = str(before.get("holder"))
        self.client.put(self.item_path, dict(lease, metadata=meta, spec=spec))
        return True, before
