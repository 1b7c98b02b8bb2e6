"""Unit tests of the cluster lock: the pure decision on an injected clock, the Lease writes against a
fake API (optimistic concurrency, the race for a free lock), and the renewer loop."""
import copy
import datetime

import pytest

from ansible_collections.apex.ops.plugins.module_utils import cluster_lock as cl
from ansible_collections.apex.ops.plugins.module_utils import lock_session
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError

T0 = datetime.datetime(2026, 12, 2, 4, 0, 0, tzinfo=datetime.timezone.utc)
ME = "oncall@bastion/pid-100"
OTHER = "ops@awx-ee/awx-job-77"
INFO = dict(purpose="scale", playbook="scale", run_id="scale-1", host="bastion", pid=100, awx_job_id=None, user="oncall")


def at(seconds):
    return T0 + datetime.timedelta(seconds=seconds)


def lease(holder, renewed=0, duration=60, purpose="restore", transitions=0):
    return {"metadata": {"name": cl.LEASE_NAME, "namespace": "apex", "resourceVersion": "1",
                         "annotations": {"apex.ops/purpose": purpose, "apex.ops/since": T0.isoformat(),
                                         "apex.ops/playbook": purpose}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "renewTime": cl.micro_time(at(renewed)), "leaseTransitions": transitions}}


@pytest.mark.parametrize("obj, now, alive, status", [
    (None, 0, None, cl.FREE),
    (lease(None), 0, None, cl.FREE),
    (lease(ME), 10, None, cl.OURS),
    (lease(ME), 1000, None, cl.OURS),            # our own lock, even expired, is ours
    (lease(OTHER), 59, None, cl.HELD),
    (lease(OTHER), 60, None, cl.EXPIRED),        # renewTime + duration reached
    (lease(OTHER), 30, False, cl.HOLDER_GONE),   # same host, process gone
    (lease(OTHER), 30, True, cl.HELD),
    (lease(OTHER), 90, False, cl.EXPIRED),
])
def test_judge(obj, now, alive, status):
    view = cl.judge(obj, ME, at(now), alive)
    assert view["status"] == status
    if status != cl.FREE:
        assert view["holder"] in (ME, OTHER) and view["purpose"] == "restore"
        assert view["seconds_left"] == pytest.approx(60 - now)


@pytest.mark.parametrize("status, mode, confirm, action", [
    (cl.FREE, "take", None, cl.ACQUIRE),
    (cl.OURS, "take", None, cl.RENEW),
    (cl.EXPIRED, "take", None, cl.TAKEOVER),
    (cl.HOLDER_GONE, "take", None, cl.TAKEOVER),
    (cl.HELD, "override", None, cl.TAKEOVER),
    (cl.HELD, "take", OTHER, cl.TAKEOVER),
])
def test_decide(status, mode, confirm, action):
    view = dict(status=status, holder=OTHER)
    assert cl.decide(view, mode, confirm) == action


def test_decide_refuses_a_live_lock_naming_holder_purpose_and_since():
    view = cl.judge(lease(OTHER, purpose="maintenance"), ME, at(5))
    with pytest.raises(cl.LockHeld) as info:
        cl.decide(view, "take", confirm="someone-else@x/pid-1")
    msg = str(info.value)
    assert OTHER in msg and "maintenance" in msg and T0.isoformat() in msg and "Nothing was changed" in msg
    assert "confirm=%s" % OTHER in msg and info.value.view["status"] == cl.HELD


def test_decide_release():
    assert cl.decide_release(dict(status=cl.FREE)) is False
    assert cl.decide_release(dict(status=cl.OURS, holder=ME)) is True
    assert cl.decide_release(dict(status=cl.EXPIRED, holder=OTHER)) is True
    assert cl.decide_release(dict(status=cl.HELD, holder=OTHER), confirm=OTHER) is True
    with pytest.raises(cl.LockHeld):
        cl.decide_release(dict(status=cl.HELD, holder=OTHER), confirm=ME)


def test_identity():
    assert cl.identity("oncall", "bastion", None, 42) == "oncall@bastion/pid-42"
    assert cl.identity("oncall", "awx-ee", "1234", 42) == "oncall@awx-ee/awx-job-1234"


class FakeLeases(object):
    """Leases in memory, with resourceVersion checks as the API server does them."""

    def __init__(self):
        self.items, self.rv, self.calls = {}, 0, []
        self.before_write = None

    def get(self, path, query=None):
        self.calls.append(("GET", path))
        if path not in self.items:
            raise KubeApiError(404, "NotFound", "not found")
        return copy.deepcopy(self.items[path])

    def _store(self, path, body, create):
        if self.before_write:
            hook, self.before_write = self.before_write, None
            hook()
        current = self.items.get(path)
        if create and current is not None:
            raise KubeApiError(409, "AlreadyExists", "leases %r already exists" % cl.LEASE_NAME)
        if not create and (current is None or body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]):
            raise KubeApiError(409, "Conflict", "the object has been modified")
        self.rv += 1
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(self.rv)
        self.items[path] = body
        return copy.deepcopy(body)

    def post(self, path, body):
        self.calls.append(("POST", path))
        return self._store("%s/%s" % (path, body["metadata"]["name"]), body, True)

    def put(self, path, body):
        self.calls.append(("PUT", path))
        return self._store(path, body, False)


def store():
    return cl.LeaseLock(FakeLeases(), "apex")


def test_acquire_free_then_renew_then_release():
    lock = store()
    action, before, after = lock.acquire(ME, at(0), 60, INFO)
    assert (action, before["status"], after["status"]) == (cl.ACQUIRE, cl.FREE, cl.OURS)
    raw = lock.read()
    assert raw["spec"]["holderIdentity"] == ME and raw["spec"]["leaseDurationSeconds"] == 60
    assert raw["metadata"]["annotations"]["apex.ops/purpose"] == "scale"
    assert raw["metadata"]["annotations"]["apex.ops/pid"] == "100"
    assert "apex.ops/awx-job-id" not in raw["metadata"]["annotations"]
    action, before, after = lock.acquire(ME, at(20), 60, dict(INFO, purpose="nested"))
    assert before["status"] == cl.OURS
    assert action == cl.RENEW and after["purpose"] == "scale" and after["renewed"] == at(20).isoformat()
    view = lock.renew(ME, at(40))
    assert view["status"] == cl.OURS and view["seconds_left"] == 60
    changed, before = lock.release(ME, at(41))
    assert changed is True and before["status"] == cl.OURS
    assert cl.judge(lock.read(), ME, at(42))["status"] == cl.FREE


def test_release_when_free_changes_nothing():
    lock = store()
    changed, before = lock.release(ME, at(0))
    assert changed is False and before["status"] == cl.FREE
    assert not [c for c in lock.client.calls if c[0] != "GET"]


def test_a_live_lock_refuses_and_writes_nothing():
    lock = store()
    lock.acquire(OTHER, at(0), 60, dict(INFO, purpose="maintenance", pid=7))
    writes = len([c for c in lock.client.calls if c[0] != "GET"])
    with pytest.raises(cl.LockHeld) as info:
        lock.acquire(ME, at(10), 60, INFO)
    assert OTHER in str(info.value) and "maintenance" in str(info.value)
    with pytest.raises(cl.LockHeld):
        lock.release(ME, at(10))
    assert len([c for c in lock.client.calls if c[0] != "GET"]) == writes
    assert lock.renew(ME, at(11))["status"] == cl.HELD   # the renewer of a lock that is not ours stops


def test_expired_lock_is_taken_over_and_says_whom():
    lock = store()
    lock.acquire(OTHER, at(0), 60, dict(INFO, purpose="maintenance"))
    action, before, after = lock.acquire(ME, at(61), 60, INFO)
    assert action == cl.TAKEOVER and before["status"] == cl.EXPIRED and before["holder"] == OTHER
    assert after["overrode"] == OTHER and after["transitions"] == 1 and after["holder"] == ME


def test_holder_gone_is_taken_over_before_expiry():
    lock = store()
    lock.acquire(OTHER, at(0), 600, INFO)
    action, before, after = lock.acquire(ME, at(5), 60, INFO, holder_alive=lambda lease: False)
    assert after["status"] == cl.OURS
    assert action == cl.TAKEOVER and before["status"] == cl.HOLDER_GONE


def test_override_and_confirmed_break():
    lock = store()
    lock.acquire(OTHER, at(0), 600, INFO)
    assert lock.acquire(ME, at(1), 60, INFO, mode="override")[0] == cl.TAKEOVER
    assert lock.release(OTHER, at(2), confirm=ME)[0] is True
    assert lock.read()["metadata"]["annotations"]["apex.ops/broken-holder"] == ME


def test_race_for_a_free_lock_the_loser_refuses_naming_the_winner():
    lock = store()
    # between our read (free) and our create, another run creates the Lease
    lock.client.before_write = lambda: cl.LeaseLock(lock.client, "apex").acquire(OTHER, at(0), 60, dict(INFO, purpose="restore"))
    with pytest.raises(cl.LockHeld) as info:
        lock.acquire(ME, at(0), 60, INFO)
    assert OTHER in str(info.value) and lock.read()["spec"]["holderIdentity"] == OTHER


def test_check_mode_writes_nothing():
    lock = store()
    action, before, after = lock.acquire(ME, at(0), 60, INFO, check_mode=True)
    assert after == before
    assert action == cl.ACQUIRE and lock.read() is None


def test_renew_while_stops_when_the_process_ends_or_the_lock_is_gone():
    lock = store()
    lock.acquire(ME, at(0), 30, INFO)
    ticks = iter([False, False, True])
    clock = iter([at(10), at(20), at(20), at(20)])
    why = lock_session.renew_while(lock, ME, 30, 100, now=lambda: next(clock), wait=lambda pid, timeout: next(ticks))
    assert "ended" in why and "released" in why
    assert lock.read()["spec"]["renewTime"] == cl.micro_time(at(20)) and not lock.read()["spec"]["holderIdentity"]
    lock.acquire(ME, at(21), 30, INFO)
    lock.release(ME, at(21))
    why = lock_session.renew_while(lock, ME, 30, 100, now=lambda: at(30), wait=lambda pid, timeout: False)
    assert "no longer" in why


def test_wait_for_exit_on_a_live_and_an_ended_process():
    import os
    import subprocess
    import sys

    assert lock_session.wait_for_exit(os.getpid(), 0.05) is False
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    assert lock_session.wait_for_exit(child.pid, 10) is True
    child.wait()
