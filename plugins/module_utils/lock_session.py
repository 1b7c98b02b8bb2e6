# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's side of the cluster lock (``cluster_lock``): who this run is, whether a holder's
process is still alive, taking and releasing the lock for a run, and the renewer.

Used by the ``apex_lock`` and ``apex_preflight`` action plugins (both run in ``ansible-playbook``'s
worker processes, whose parent is the ``ansible-playbook`` process of the run).

The renewer: a Lease is only as good as its renewals. On acquire, a small detached process is
forked that pushes ``renewTime`` every third of the duration for as long as the ``ansible-playbook``
process lives and the lock is still this run's. It wakes the moment that process ends (a pidfd) and
releases the lock if it is still this run's: the run is over, however it ended (a failure that wrote
no report, Ctrl-C, an AWX cancel). When the renewer dies too (the controller or the execution
environment's pod killed), nothing renews the Lease and it expires after its duration; a run on the
same host takes it over at once because it sees the holder's process is gone.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import select
import time

from ansible_collections.apex.ops.plugins.module_utils import cluster_lock, journal
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow


def who(task_vars=None):
    """``(identity, info)`` of this run: info has user, host, pid (of ansible-playbook), awx_job_id."""
    holder = journal.holder_identity(task_vars)
    me = cluster_lock.identity(holder["user"], holder["host"], holder.get("awx_job_id"), holder["pid"])
    return me, holder


def holder_alive(lease):
    """True/False when the Lease's holder ran on this host (its pid checked), None otherwise."""
    notes = ((lease or {}).get("metadata") or {}).get("annotations") or {}
    record = dict(holder=dict(host=notes.get(cluster_lock.ANNOTATION + "host"),
                              pid=notes.get(cluster_lock.ANNOTATION + "pid")))
    return journal.holder_alive(record)


def acquire(store, task_vars, duration, purpose, playbook=None, run_id=None, mode="take", confirm=None,
            check_mode=False, renew=True, params=None):
    """Take the lock for this run. Returns a result dict (``action``, ``lock``, ``before``,
    ``overrode``, ``message``, ``renewer_pid``); raises ``cluster_lock.LockHeld`` when refused."""
    me, holder = who(task_vars)
    info = dict(purpose=purpose, playbook=playbook, run_id=run_id, host=holder["host"], pid=holder["pid"],
                awx_job_id=holder.get("awx_job_id"), user=holder["user"])
    action, before, after = store.acquire(me, utcnow(), duration, info, mode=mode, confirm=confirm,
                                          holder_alive=holder_alive, check_mode=check_mode)
    overrode = before.get("holder") if action == cluster_lock.TAKEOVER else None
    if action == cluster_lock.TAKEOVER:
        message = "took the apex.ops lock over: %s" % cluster_lock.describe(before)
    elif action == cluster_lock.RENEW:
        message = "this run already holds the apex.ops lock (renewed)"
    else:
        message = "acquired the apex.ops lock as %s for %s" % (me, purpose)
    renewer = None
    if renew and not check_mode and action != cluster_lock.RENEW and params is not None:
        renewer = start_renewer(params, me, duration, holder["pid"])
    return dict(action=action, identity=me, lock=after, before=before, overrode=overrode,
                overrode_view=before if overrode else None, message=message, renewer_pid=renewer,
                changed=action != cluster_lock.RENEW)


def release(store, task_vars, confirm=None, check_mode=False):
    """Release the lock if this run holds it (or it expired, or its holder is gone), or break another's
    live lock when ``confirm`` names its holder. Returns a result dict; raises LockHeld otherwise."""
    me = who(task_vars)[0]
    changed, before = store.release(me, utcnow(), confirm=confirm, holder_alive=holder_alive, check_mode=check_mode)
    broke = before.get("holder") if changed and before["status"] != cluster_lock.OURS else None
    return dict(changed=changed, identity=me, before=before, broke=broke,
                message=("broke the apex.ops lock: %s" % cluster_lock.describe(before)) if broke else
                ("released the apex.ops lock" if changed else "the apex.ops lock was not held"))


def wait_for_exit(pid, timeout):
    """Block up to ``timeout`` s or until process ``pid`` ends; True when it has ended."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is None:
        # no pidfd (old kernel): check once per second within the timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                return True
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0)))
        return not _alive(pid)
    try:
        ready = select.select([fd], [], [], timeout)[0]
        return bool(ready)
    finally:
        os.close(fd)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def renew_while(store, me, duration, pid, now=utcnow, wait=wait_for_exit):
    """Renew every third of ``duration`` while process ``pid`` lives and the lock is ``me``'s; when
    the process has ended, release the lock if it is still ``me``'s (the run is over however it
    ended: a failure without a report, Ctrl-C). Returns why it stopped. A failed renewal is
    retried at the next tick (the lease's duration covers it)."""
    interval = max(float(duration) / 3.0, 0.2)
    while True:
        if wait(pid, interval):
            try:
                released = store.release(me, now())[0] if cl_status(store, me, now()) == cluster_lock.OURS else False
            except (KubeApiError, OSError, cluster_lock.LockError):
                released = False
            return "holder process %s ended%s" % (pid, "; released the lock" if released else "")
        try:
            view = store.renew(me, now())
        except (KubeApiError, OSError):
            continue
        if view["status"] != cluster_lock.OURS:
            return "the lock is no longer %s's (%s)" % (me, view["status"])


def cl_status(store, me, moment):
    return cluster_lock.judge(store.read(), me, moment)["status"]


def start_renewer(params, me, duration, pid):
    """Fork a detached renewer for ``me`` (double fork, own session, no stdio). Returns its pid."""
    from ansible_collections.apex.ops.plugins.module_utils.k8s import connect

    read_end, write_end = os.pipe()
    first = os.fork()
    if first:
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            grandchild = pipe.read().strip()
        os.waitpid(first, 0)
        return int(grandchild) if grandchild.isdigit() else None
    try:  # first child: new session, fork again so that the renewer is nobody's child to reap
        os.close(read_end)
        os.setsid()
        second = os.fork()
        if second:
            os.write(write_end, str(second).encode())
            os._exit(0)
        os.close(write_end)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        client = connect(params, request_timeout=10.0)
        renew_while(cluster_lock.LeaseLock(client, params["namespace"]), me, duration, pid)
    finally:
        os._exit(0)
