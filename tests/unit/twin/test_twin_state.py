"""Pure logic of the twin: desired-state schema, sqlx details, metrics text, token bucket."""
import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))

from twin import state as st  # noqa: E402
from twin.migrate import MIGRATIONS_DIR, load_migrations, lock_id  # noqa: E402
from twin.server import Metrics  # noqa: E402
from twin.worker import TokenBucket, Worker  # noqa: E402


def test_defaults_when_file_missing(tmp_path):
    s = st.load(str(tmp_path / "absent.json"))
    assert s["version"] == "1.0.0" and s["maintenance_mode"] is False
    assert s["api_ready_replicas"] == 3 and s["worker_ready_replicas"] == 5 and s["canary"] is None


def test_canary_defaults_and_unknown_keys():
    s = st.normalize({"version": "2.0.0", "canary": {"ready_replicas": 1}, "owner": "kubesim"})
    assert s["canary"] == {"ready_replicas": 1, "version": "2.0.0", "failure_rate": 0.0, "latency_ms": 0}
    assert s["_unknown"] == ["owner"]


@pytest.mark.parametrize("bad", [
    {"failure_rate": 1.5}, {"failure_rate": "lots"}, {"api_ready_replicas": -1},
    {"worker_concurrency": True}, {"maintenance_mode": "perhaps"}, {"db_max_connections": 0},
    {"canary": {"failure_rate": 2}}, {"canary": "yes"}, {"force_provider": 3}, [],
])
def test_invalid_state_is_refused(bad):
    with pytest.raises(st.StateError):
        st.normalize(bad)


def test_write_state_is_atomic_and_validated(tmp_path):
    path = str(tmp_path / "d" / "desired.json")
    st.write_state(path, {"maintenance_mode": True})
    assert json.loads(Path(path).read_text()) == {"maintenance_mode": True}
    with pytest.raises(st.StateError):
        st.write_state(path, {"failure_rate": 7})
    assert json.loads(Path(path).read_text()) == {"maintenance_mode": True}  # untouched
    st.update_state(path, version="3.1.0")
    assert st.load(path)["version"] == "3.1.0" and st.load(path)["maintenance_mode"] is True
    assert [p.name for p in Path(path).parent.iterdir()] == ["desired.json"]  # no temp files left


def test_watcher_reloads_on_change_and_keeps_last_good(tmp_path):
    path = str(tmp_path / "desired.json")
    logs = []
    w = st.StateWatcher(path, interval=0, log=lambda ev, **kw: logs.append(ev))
    assert w.get()["version"] == "1.0.0"
    st.write_state(path, {"version": "1.2.0"})
    assert w.get()["version"] == "1.2.0"
    Path(path).write_text("{half a fi")
    assert w.get()["version"] == "1.2.0" and w.last_error and "state_invalid" in logs
    os.unlink(path)
    assert w.get()["version"] == "1.0.0"


def test_sqlx_lock_id_and_checksums():
    # sqlx: 0x3d32ad9e * crc32("apex") as i64
    import zlib
    assert lock_id("apex") == 0x3D32AD9E * zlib.crc32(b"apex")
    assert lock_id("x" * 100) < 2 ** 63
    migs = load_migrations()
    assert [m.version for m in migs] == sorted(m.version for m in migs)
    first = migs[0]
    raw = (Path(MIGRATIONS_DIR) / ("%d_%s.sql" % (first.version, first.description.replace(" ", "_")))).read_bytes()
    assert first.checksum == hashlib.sha384(raw).digest() and len(first.checksum) == 48


def test_metrics_histogram_is_cumulative():
    m = Metrics()
    for seconds in (0.001, 0.03, 0.3, 3.0, 30.0):
        m.observe("stable", 200, seconds)
    m.observe("canary", 500, 0.2)
    lines = m.render()
    assert 'apex_http_requests_total{status="200",track="stable"} 5' in lines
    assert 'apex_http_requests_total{status="500",track="canary"} 1' in lines
    assert 'apex_http_request_duration_seconds_bucket{track="stable",le="0.005"} 1' in lines
    assert 'apex_http_request_duration_seconds_bucket{track="stable",le="0.5"} 3' in lines
    assert 'apex_http_request_duration_seconds_bucket{track="stable",le="10.0"} 4' in lines
    assert 'apex_http_request_duration_seconds_bucket{track="stable",le="+Inf"} 5' in lines
    assert 'apex_http_request_duration_seconds_count{track="canary"} 1' in lines


def test_token_bucket_rate_and_zero():
    stop = threading.Event()
    bucket = TokenBucket()
    assert bucket.take(lambda: 0.0, stop, max_wait=0.2) is False
    t0 = time.monotonic()
    taken = sum(bucket.take(lambda: 50.0, stop, max_wait=0.5) for dummy in range(20))
    elapsed = time.monotonic() - t0
    assert taken == 20 and 0.25 <= elapsed <= 1.0


def test_dead_letter_entries_pushed_back_are_understood():
    assert Worker.task_id_of("tsk_1") == "tsk_1"
    assert Worker.task_id_of(json.dumps({"task_id": "tsk_2", "error": "x"})) == "tsk_2"
    assert Worker.task_id_of("{broken") == "{broken"


def test_state_cli_sets_validates_and_resets(tmp_path):
    import subprocess
    path = str(tmp_path / "desired.json")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "lab"), APEX_TWIN_STATE=path)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "twin", "state"] + list(args), env=env,
                              capture_output=True, text=True, check=False, timeout=30)

    proc = cli("set", "maintenance_mode=true", 'canary={"ready_replicas": 2}', "force_provider=anthropic")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["maintenance_mode"] is True and shown["canary"]["ready_replicas"] == 2
    assert shown["force_provider"] == "anthropic"
    proc = cli("set", "failure_rate=3")
    assert proc.returncode == 1 and "between 0 and 1" in proc.stdout
    assert json.loads(Path(path).read_text()).get("failure_rate") is None
    assert cli("reset").returncode == 0 and json.loads(Path(path).read_text()) == {}
