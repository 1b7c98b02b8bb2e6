"""seed and loadgen, end to end against the scratch database and a test twin."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _run(env, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "twin"] + list(args), env=env, cwd=str(ROOT),
                          capture_output=True, text=True, check=False, timeout=timeout)


def test_seed_grows_the_database_to_the_target(twin_base_env, scratch_db):
    size = scratch_db.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 1048576.0
    tasks_before = scratch_db.execute("SELECT count(*) FROM tasks").fetchone()[0]
    target = round(size + 2, 1)
    proc = _run(twin_base_env["env"], "seed", "--size-mb", str(target), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["changed"] is True and summary["final_mb"] >= target
    after = scratch_db.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 1048576.0
    assert target <= after <= target + 12
    tasks = scratch_db.execute("SELECT count(*) FROM tasks").fetchone()[0] - tasks_before
    assert tasks == summary["tasks"] > 0
    assert scratch_db.execute("SELECT count(*) FROM events WHERE task_id LIKE 'seed-%'").fetchone()[0] >= 3 * tasks
    statuses = dict(scratch_db.execute("SELECT status, count(*) FROM tasks WHERE task_id LIKE 'seed-%' "
                                       "GROUP BY status").fetchall())
    assert set(statuses) == {"completed", "failed"}
    again = json.loads(_run(twin_base_env["env"], "seed", "--size-mb", str(target), "--quiet").stdout)
    assert again["changed"] is False


def test_seed_rejects_bad_input(twin_base_env):
    proc = _run(twin_base_env["env"], "seed", "--size-mb", "-5")
    assert proc.returncode == 2 and "--size-mb must be > 0" in proc.stderr


def test_loadgen_submits_at_the_requested_rate(fresh_twin, twin_redis, twin_base_env):
    env = dict(twin_base_env["env"], APEX_API_URL="https://localhost:%d" % fresh_twin.port)
    proc = _run(env, "loadgen", "--rate", "40", "--duration", "0.75", timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    # Open loop: a request that cannot start within 1 s of its due time is skipped, not queued up
    # (on a loaded machine some are); every one of the 30 is either sent and accepted or skipped.
    sent = summary["sent"]
    assert summary["requested"] == 30 and sent + summary["skipped"] == 30 and sent > 0
    assert summary["by_status"] == {"202": sent}
    assert summary["errors"] == 0 and summary["latency_ms"]["p95"] is not None
    assert twin_redis.llen("apex:tasks:queue") == sent  # no worker in this test: all still queued
