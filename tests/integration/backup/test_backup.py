"""apex_backup against the lab: PostgreSQL primary, Redis, moto S3.

Round trip (backup -> verify at 3 levels -> restore -> identical counts and content), the faults
of issue 5 (pg_dump killed, module interrupted, S3 unreachable, flipped byte, wrong confirmation,
unverified backup), the Redis round trip, catalog/freshness/prune, check mode, and secrets.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

LAB_PY_DIR = Path(__file__).resolve().parents[3] / "tests" / "lab"
if str(LAB_PY_DIR) not in sys.path:
    sys.path.insert(0, str(LAB_PY_DIR))

from twin.testing import free_port  # noqa: E402


def ok(result):
    assert not result.failed, "module failed: %s" % result.get("msg")
    return result


def manifest_keys(helpers, prefix):
    return [k for k in helpers.keys(prefix) if k.endswith(".manifest.json")]


def actual_counts(helpers, db):
    return dict(("public.%s" % t, v["rows"]) for t, v in helpers.fingerprint(db).items())


# ------------------------------------------------------------------ the round trip

@pytest.fixture(scope="module")
def source_backup(bk, source_db):
    result = ok(bk(state="backup", db=source_db, part_size_mb=5))
    return result["backup"]


def test_backup_writes_data_then_manifest_with_snapshot_counts(source_backup, source_db, helpers, prefix, s3):
    m = source_backup
    assert m["key"].startswith("%s/postgres/%s/" % (prefix, source_db))
    assert m["key"].endswith("%s.dump" % m["backup_id"])
    keys = helpers.keys(prefix)
    assert m["key"] in keys and m["key"].replace(".dump", ".manifest.json") in keys
    head = s3.head_object(Bucket=helpers.bucket, Key=m["key"])
    assert head["ContentLength"] == m["size"]
    body = s3.get_object(Bucket=helpers.bucket, Key=m["key"])["Body"].read()
    import hashlib
    assert hashlib.sha256(body).hexdigest() == m["sha256"]
    assert body[:5] == b"PGDMP"  # custom format
    assert m["row_counts"] == actual_counts(helpers, source_db)
    assert m["snapshot"] and m["server_version_num"] >= 150000 and "pg_dump" in m["pg_dump_version"]
    assert helpers.uploads(prefix) == []


def test_action_and_list_still_work_but_are_deprecated(bk, source_db, source_backup):
    """The old spelling: `action` is an alias of `state`, `list` a synonym of `facts`; both warn."""
    old = bk(action="list", db=source_db)
    assert not old.failed, old
    new = bk(state="facts", db=source_db)
    assert [b["backup_id"] for b in old["backups"]] == [b["backup_id"] for b in new["backups"]]
    assert source_backup["backup_id"] in [b["backup_id"] for b in new["backups"]]
    # ansible-core 2.19 nests the message under "event"
    messages = " ".join(d.get("msg") or d.get("event", {}).get("msg", "") for d in old.get("deprecations", []))
    assert "action" in messages and "state=list is deprecated" in messages
    assert not new.get("deprecations")


def test_durations_take_every_form(bk, source_db, source_backup):
    """max_age accepts what apex_db_maint accepts (30min, 2 days, 500ms, ...)."""
    for value, seconds in (("2 days", 172800), ("30min", 1800), ("1d12h", 129600), ("172800", 172800),
                           ("500ms", 0.5)):
        res = bk(state="facts", db=source_db, max_age=value, require_verified=False)
        assert not res.failed and res["freshness"]["max_age_seconds"] == seconds, (value, res)
    bad = bk(state="facts", db=source_db, max_age="ten minutes")
    assert bad.failed and "max_age" in bad["msg"]


def test_list_shows_unverified_backup_with_age_and_size(bk, source_db, source_backup):
    listing = ok(bk(state="facts", db=source_db))
    entry = [e for e in listing["backups"] if e["backup_id"] == source_backup["backup_id"]][0]
    assert entry["verification"] == "unverified" and entry["size"] == source_backup["size"]
    assert 0 <= entry["age_seconds"] < 600
    assert listing["latest"]["backup_id"] == source_backup["backup_id"]


@pytest.mark.parametrize("level,checks", [("checksum", ["checksum"]), ("toc", ["checksum", "toc"]),
                                          ("deep", ["checksum", "toc", "deep"])])
def test_verify_levels(bk, source_db, source_backup, helpers, level, checks):
    result = ok(bk(state="verify", db=source_db, backup_id=source_backup["backup_id"], verify_level=level))
    record = result["verification"]
    assert record["ok"] and record["level"] == level and sorted(record["checks"]) == sorted(checks)
    assert all(c["ok"] for c in record["checks"].values())
    if level == "toc":
        assert record["checks"]["toc"]["format"] == "CUSTOM"
        assert record["checks"]["toc"]["table_data_entries"] >= 4
    if level == "deep":
        deep = record["checks"]["deep"]
        assert deep["differences"] == [] and deep["scratch_dropped"] is True
        assert not helpers.db_exists(deep["scratch_db"])
        assert deep["scratch_db"].startswith("apex_verify_")
    listing = ok(bk(state="facts", db=source_db))
    entry = [e for e in listing["backups"] if e["backup_id"] == source_backup["backup_id"]][0]
    assert entry["verification"] == "verified"


def test_restore_into_fresh_database_is_identical(bk, source_db, source_backup, helpers, scratch_name):
    ok(bk(state="verify", db=source_db, backup_id=source_backup["backup_id"], verify_level="deep"))
    target = scratch_name()
    assert not helpers.db_exists(target)
    result = ok(bk(state="restore", db=source_db, target_db=target, confirm=target))
    restore = result["restore"]
    assert restore["backup_id"] == source_backup["backup_id"]  # latest verified by default
    assert restore["created"] and restore["streamed"] and restore["differences"] == []
    assert result["safety_backup"] is None  # nothing to protect in a fresh database
    assert helpers.fingerprint(target) == helpers.fingerprint(source_db)


def test_restore_over_existing_database_takes_safety_backup(
        bk, source_db, source_backup, helpers, scratch_name, pg_admin):
    target = scratch_name()
    helpers.create_db(target, tasks=10, events=10, agents=2)  # different content to be replaced
    with pg_admin(target) as conn:
        conn.execute("CREATE TABLE extra_local (x int)")
    before = helpers.fingerprint(target)
    result = ok(bk(state="restore", db=source_db, target_db=target, confirm=target,
                   backup_id=source_backup["backup_id"]))
    safety = result["safety_backup"]
    assert "safety" in safety["tags"] and safety["name"] == target
    assert safety["row_counts"]["public.tasks"] == before["tasks"]["rows"]
    assert helpers.fingerprint(target) == helpers.fingerprint(source_db)
    assert result["diff"]["before"]["row_counts"]["public.tasks"] == 10
    # the safety backup is itself a normal, listed backup of the target
    listing = ok(bk(state="facts", db=target))
    assert [e["backup_id"] for e in listing["backups"]] == [safety["backup_id"]]


def test_parallel_restore_uses_temp_file_and_removes_it(bk, source_db, source_backup, helpers, scratch_name):
    target = scratch_name()
    tmp = tempfile.mkdtemp(prefix="apex-bk-jobs-")
    try:
        result = ok(bk(state="restore", db=source_db, target_db=target, confirm=target, jobs=2, temp_dir=tmp,
                       backup_id=source_backup["backup_id"]))
        assert result["restore"]["temp_file"]["bytes"] == source_backup["size"]
        assert os.listdir(tmp) == []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert helpers.fingerprint(target) == helpers.fingerprint(source_db)


def test_recreate_mode(bk, source_db, source_backup, helpers, scratch_name, pg_admin):
    target = scratch_name()
    helpers.create_db(target, tasks=5, events=5, agents=1)
    with pg_admin(target) as conn:
        conn.execute("CREATE TABLE extra_local (x int)")
    ok(bk(state="restore", db=source_db, target_db=target, confirm=target, restore_mode="recreate",
          safety_backup=False, backup_id=source_backup["backup_id"], force=True))  # force: runs alone too
    assert helpers.fingerprint(target) == helpers.fingerprint(source_db)
    with pg_admin(target) as conn:
        assert conn.execute("SELECT to_regclass('public.extra_local')").fetchone()[0] is None


def test_recreate_over_the_login_db(bk, source_db, source_backup, helpers, scratch_name, pg_admin):
    """Production case: the target is also login_db. DROP DATABASE runs from maintenance_db."""
    target = scratch_name("apex_bk_login")
    helpers.create_db(target, tasks=5, events=5, agents=1)
    before = helpers.fingerprint(target)
    result = ok(bk(state="restore", db=source_db, login_db=target, target_db=target, confirm=target,
                   restore_mode="recreate", backup_id=source_backup["backup_id"], force=True))
    assert result["restore"]["target_existed"] is True and result["safety_backup"]["database"] == target
    assert helpers.fingerprint(target) == helpers.fingerprint(source_db) != before
    # and back to the safety backup, again over the login_db (what the restore role's rescue does)
    ok(bk(state="restore", db=target, login_db=target, target_db=target, confirm=target, restore_mode="recreate",
          backup_id=result["safety_backup"]["backup_id"], force=True, safety_backup=False))
    assert helpers.fingerprint(target) == before


def test_maintenance_db_equal_to_target_is_refused(bk, source_db, source_backup, helpers, scratch_name):
    target = scratch_name()
    helpers.create_db(target, tasks=3, events=3, agents=1)
    before = helpers.fingerprint(target)
    result = bk(state="restore", db=source_db, maintenance_db=target, target_db=target, confirm=target,
                restore_mode="recreate", safety_backup=False, backup_id=source_backup["backup_id"], force=True)
    assert result.failed and "maintenance_db" in result["msg"]
    assert helpers.fingerprint(target) == before


def test_failure_details_carry_the_stage(bk, source_db, source_backup, helpers, scratch_name, tmp_path, lab,
                                         pg_admin):
    target = scratch_name()
    helpers.create_db(target, tasks=4, events=4, agents=1)
    before = helpers.fingerprint(target)
    bindir = tmp_path / "pgbin"
    bindir.mkdir()
    (bindir / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 13.11'\n")
    (bindir / "pg_dump").chmod(0o755)
    os.symlink(os.path.join(lab["APEX_PG_BIN"], "pg_restore"), str(bindir / "pg_restore"))
    failed = bk(state="restore", db=source_db, target_db=target, confirm=target, force=True,
                backup_id=source_backup["backup_id"], pg_bin_dir=str(bindir))
    assert failed.failed and "safety backup" in failed["msg"] and "older than the server" in failed["msg"]
    details = failed["details"]
    assert details["stage"] == "safety_backup" and details["restore_started"] is False
    assert details["target_unchanged"] is True and details["safety_backup_id"] is None
    assert helpers.fingerprint(target) == before
    # recreate + a pg_restore failure: the single transaction does not make it "unchanged" (it was dropped)
    with pg_admin(target) as conn:
        conn.execute("CREATE TABLE blocker (x int)")
    failed = bk(state="restore", db=source_db, target_db=target, confirm=target, force=True, restore_mode="recreate",
                backup_id=source_backup["backup_id"], no_owner=True, target_owner="apex_bk_no_such_role")
    assert failed.failed and failed["details"]["stage"] == "restore"
    assert failed["details"]["restore_started"] is True and failed["details"]["target_unchanged"] is False
    assert failed["details"]["safety_backup_id"]


def test_row_counts_come_from_the_dump_snapshot_under_concurrent_inserts(bk, helpers, scratch_name, lab):
    """Rows are inserted (and committed) continuously while the backup runs: the manifest's counts must be
    those of the dump's own snapshot, so a deep verify (restore + count) finds no difference."""
    import threading

    import psycopg

    db = scratch_name("apex_bk_busy")
    helpers.create_db(db, tasks=30000, events=150000, agents=20)
    stop = threading.Event()
    inserted = {"n": 0, "error": None}

    def writer():
        try:
            with psycopg.connect(lab["APEX_PG_ADMIN_DSN"], dbname=db, autocommit=True) as conn:
                while not stop.is_set():
                    with conn.transaction():
                        task = conn.execute("INSERT INTO tasks(status) VALUES ('queued') RETURNING id").fetchone()[0]
                        conn.execute("INSERT INTO events(task_id, kind, body) SELECT %s, 'log', 'x' "
                                     "FROM generate_series(1, 5)", (task,))
                    inserted["n"] += 1
        except Exception as exc:  # noqa: BLE001
            inserted["error"] = exc

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while inserted["n"] < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        at_start = inserted["n"]
        m = ok(bk(state="backup", db=db, compress=9, part_size_mb=5))["backup"]
        during = inserted["n"] - at_start
    finally:
        stop.set()
        thread.join(timeout=30)
    assert inserted["error"] is None, inserted["error"]
    assert during > 0, "no rows were inserted while the backup ran"
    final = actual_counts(helpers, db)
    assert m["row_counts"]["public.tasks"] < final["public.tasks"]  # the snapshot predates the later inserts
    assert m["row_counts"]["public.tasks"] >= 30000 + at_start
    record = ok(bk(state="verify", db=db, backup_id=m["backup_id"], verify_level="deep"))["verification"]
    deep = record["checks"]["deep"]
    assert record["ok"] and deep["differences"] == [] and deep["scratch_dropped"] is True
    assert deep["rows"] == sum(m["row_counts"].values())


@pytest.fixture()
def locked_target(helpers, scratch_name, lab):
    """A target database whose tasks table another session keeps locked (ACCESS SHARE, an open transaction):
    pg_restore --clean needs ACCESS EXCLUSIVE to drop it and waits."""
    import psycopg

    target = scratch_name()
    helpers.create_db(target, tasks=8, events=8, agents=1)
    before = helpers.fingerprint(target)
    holder = psycopg.connect(lab["APEX_PG_ADMIN_DSN"], dbname=target, application_name="itest-lock-holder")
    holder.execute("LOCK TABLE tasks IN ACCESS SHARE MODE")  # psycopg opened a transaction: held until rollback
    yield target, before, holder
    holder.close()


def _no_restore_sessions(pg_admin, target):
    with pg_admin() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name LIKE "
                            "'apex.ops-restore%%'", (target,)).fetchone()[0] == 0


def _wait_no_restore_sessions(pg_admin, target, seconds=10):
    """pg_terminate_backend only signals: the session leaves pg_stat_activity a moment later."""
    deadline = time.monotonic() + seconds
    while not _no_restore_sessions(pg_admin, target):
        assert time.monotonic() < deadline, "restore sessions still connected to %s" % target
        time.sleep(0.1)


def test_restore_timeout_kills_a_pg_restore_waiting_on_a_lock(bk, source_db, source_backup, helpers, locked_target,
                                                              pg_admin):
    target, before, holder = locked_target
    started = time.monotonic()
    failed = bk(state="restore", db=source_db, target_db=target, confirm=target, force=True, safety_backup=False,
                backup_id=source_backup["backup_id"], restore_timeout=10, restore_lock_timeout=0, timeout=120)
    elapsed = time.monotonic() - started
    assert failed.failed and "did not finish within restore_timeout (10.0s)" in failed["msg"], failed["msg"]
    assert "unchanged" in failed["msg"] and elapsed < 60
    details = failed["details"]
    assert details["timed_out"] is True and details["target_unchanged"] is True and details["stage"] == "restore"
    assert details["terminated_backends"], "the waiting server session was not terminated"
    _wait_no_restore_sessions(pg_admin, target)
    holder.rollback()
    assert helpers.fingerprint(target) == before


def test_restore_lock_timeout_fails_cleanly(bk, source_db, source_backup, helpers, locked_target, pg_admin):
    target, before, holder = locked_target
    failed = bk(state="restore", db=source_db, target_db=target, confirm=target, force=True, safety_backup=False,
                backup_id=source_backup["backup_id"], restore_lock_timeout=1, timeout=120)
    assert failed.failed and "waited more than restore_lock_timeout (1.0s)" in failed["msg"], failed["msg"]
    assert "itest-lock-holder/%d" % holder.info.backend_pid in failed["msg"] and "unchanged" in failed["msg"]
    details = failed["details"]
    assert details["target_unchanged"] is True and details["single_transaction"] is True
    assert details["lock_waits"][0]["blocking_pids"] == [holder.info.backend_pid]
    _wait_no_restore_sessions(pg_admin, target)
    holder.rollback()
    assert helpers.fingerprint(target) == before


def _owner(pg_admin, db):
    with pg_admin() as conn:
        return conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (db,)).fetchone()[0]


def test_recreate_keeps_the_database_owner(bk, source_db, source_backup, helpers, scratch_name, pg_admin, lab):
    app_role = lab["APEX_PG_APP_USER"]
    target = scratch_name()
    helpers.create_db(target, tasks=3, events=3, agents=1)
    with pg_admin() as conn:
        conn.execute('ALTER DATABASE "%s" OWNER TO "%s"' % (target, app_role))
    result = ok(bk(state="restore", db=source_db, target_db=target, confirm=target, restore_mode="recreate",
                   safety_backup=False, force=True, backup_id=source_backup["backup_id"]))
    assert result["restore"]["owner"] == app_role
    assert _owner(pg_admin, target) == app_role  # not the admin user the module connects as
    assert helpers.fingerprint(target) == helpers.fingerprint(source_db)
    # an explicit target_owner still wins
    ok(bk(state="restore", db=source_db, target_db=target, confirm=target, restore_mode="recreate",
          safety_backup=False, force=True, backup_id=source_backup["backup_id"], target_owner="postgres"))
    assert _owner(pg_admin, target) == "postgres"


# ------------------------------------------------------------------ refusals

def test_wrong_confirmation_is_refused_and_nothing_changes(bk, source_db, source_backup, helpers, scratch_name):
    target = scratch_name()
    helpers.create_db(target, tasks=7, events=7, agents=1)
    before = helpers.fingerprint(target)
    keys_before = set(helpers.keys(""))
    for confirm in (None, "apex", target.upper(), target + " "):
        args = dict(state="restore", db=source_db, target_db=target, backup_id=source_backup["backup_id"])
        if confirm is not None:
            args["confirm"] = confirm
        result = bk(**args)
        assert result.failed and result.get("refused") and "confirm must equal" in result["msg"]
    assert helpers.fingerprint(target) == before
    assert set(helpers.keys("")) == keys_before  # not even a safety backup was taken
    fresh = scratch_name()
    assert bk(state="restore", db=source_db, target_db=fresh, confirm="nope").failed
    assert not helpers.db_exists(fresh)


def test_unverified_backup_is_refused(bk, source_db, helpers, scratch_name):
    unverified = ok(bk(state="backup", db=source_db))["backup"]
    target = scratch_name()
    result = bk(state="restore", db=source_db, target_db=target, confirm=target, backup_id=unverified["backup_id"])
    assert result.failed and result.get("refused")
    assert "unverified" in result["msg"] and unverified["backup_id"] in result["msg"]
    assert not helpers.db_exists(target)
    # forced, it goes through (and says so)
    forced = ok(bk(state="restore", db=source_db, target_db=target, confirm=target,
                   backup_id=unverified["backup_id"], force=True))
    assert forced["restore"]["forced"] is True


def test_restore_without_any_verified_backup_is_refused(bk, helpers, scratch_name, session_token, pg_admin):
    lonely = scratch_name("apex_bk_lonely")
    helpers.create_db(lonely, tasks=3, events=3, agents=1)
    ok(bk(state="backup", db=lonely))
    target = scratch_name()
    result = bk(state="restore", db=lonely, target_db=target, confirm=target)
    assert result.failed and "no backup of %s verified" % lonely in result["msg"]
    assert not helpers.db_exists(target)


# ------------------------------------------------------------------ faults

def test_flipped_byte_fails_verification_naming_the_check(bk, source_db, helpers, s3, scratch_name):
    m = ok(bk(state="backup", db=source_db))["backup"]
    body = bytearray(s3.get_object(Bucket=helpers.bucket, Key=m["key"])["Body"].read())
    body[len(body) // 2] ^= 0x01
    s3.put_object(Bucket=helpers.bucket, Key=m["key"], Body=bytes(body))
    for level in ("checksum", "toc", "deep"):
        result = bk(state="verify", db=source_db, backup_id=m["backup_id"], verify_level=level)
        assert result.failed
        assert "FAILED at check 'checksum'" in result["msg"]
        assert result["verification"]["failed_check"] == "checksum"
        assert result["verification"]["checks"]["checksum"]["error"] == "sha256 differs from the manifest"
        if level == "deep":
            assert not helpers.db_exists(result["verification"]["checks"]["deep"]["scratch_db"])
    entry = [e for e in ok(bk(state="facts", db=source_db))["backups"] if e["backup_id"] == m["backup_id"]][0]
    assert entry["verification"] == "failed" and entry["failed_check"] == "checksum"
    # a forced restore of the corrupt object never commits: the stream gate stops pg_restore
    target = scratch_name()
    helpers.create_db(target, tasks=9, events=9, agents=1)
    before = helpers.fingerprint(target)
    result = bk(state="restore", db=source_db, target_db=target, confirm=target, backup_id=m["backup_id"],
                force=True, safety_backup=False)
    assert result.failed and "does not match its manifest" in result["msg"]
    assert helpers.fingerprint(target) == before


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s" % what)


def _start_big_backup(start_module, big_db, helpers, prefix):
    proc, cleanup = start_module(state="backup", db=big_db, part_size_mb=5, upload_concurrency=1, compress=9)
    big_prefix = "%s/postgres/%s/" % (prefix, big_db)

    def dumping():
        # the module first runs `pg_dump --version` (a short-lived child of the same name): skip it, or the
        # test may pick that pid and find it gone when it kills it (seen under load)
        found = []
        for pid in helpers.children_of(proc.pid, "pg_dump"):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as handle:
                    if b"--version" not in handle.read():
                        found.append(pid)
            except OSError:
                continue
        return found

    try:
        _wait_for(lambda: helpers.uploads(big_prefix), 60, "the multipart upload to start")
        pg_dump = _wait_for(dumping, 30, "the dumping pg_dump")[0]
    except AssertionError:
        proc.kill()
        cleanup()
        raise
    return proc, cleanup, pg_dump, big_prefix


def test_pg_dump_killed_mid_stream(start_module, big_db, helpers, prefix):
    proc, cleanup, pg_dump, big_prefix = _start_big_backup(start_module, big_db, helpers, prefix)
    try:
        assert proc.poll() is None, "pg_dump finished before it could be killed"
        os.kill(pg_dump, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a failed test must not leave its upload running into the next one
            proc.kill()
            proc.communicate(timeout=60)
        cleanup()
    result = json.loads(out)
    assert result["failed"]
    assert "pg_dump was killed by signal SIGKILL" in result["msg"]
    assert "upload aborted, no manifest written" in result["msg"]
    assert result["last_state"]["upload_aborted"] is True
    assert [k for k in helpers.keys(big_prefix) if k.endswith(".manifest.json")] == []
    assert [k for k in helpers.keys(big_prefix) if k.endswith(".dump")] == []
    assert helpers.uploads(big_prefix) == []


def test_module_interrupted_by_sigterm(start_module, big_db, helpers, prefix):
    """An Ansible task timeout (SIGTERM) aborts the upload and stops pg_dump."""
    proc, cleanup, pg_dump, big_prefix = _start_big_backup(start_module, big_db, helpers, prefix)
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        cleanup()
    result = json.loads(out)
    assert result["failed"] and "interrupted (interrupted by signal SIGTERM)" in result["msg"]
    assert not os.path.exists("/proc/%d" % pg_dump) or "zombie" in open("/proc/%d/status" % pg_dump).read().lower()
    assert manifest_keys(helpers, big_prefix) == [] and helpers.uploads(big_prefix) == []


def _free_port():
    # lab.py's range is below the ephemeral range: no client socket takes the port before use;
    # never one a lab has persisted (a service of it that is down comes back on it)
    return free_port()


def test_pg_dump_exit_0_with_error_lines_fails(bk, source_db, helpers, prefix, lab, tmp_path):
    """A pg_dump that exits 0 but printed 'pg_dump: error:' (e.g. a wrapper swallowing the status) is no backup."""
    bindir = tmp_path / "pgbin"
    bindir.mkdir()
    wrapper = bindir / "pg_dump"
    wrapper.write_text('#!/bin/sh\n"%s/pg_dump" "$@"\necho "pg_dump: error: query failed: ERROR:  simulated" >&2\n'
                       'exit 0\n' % lab["APEX_PG_BIN"])
    wrapper.chmod(0o755)
    before = set(manifest_keys(helpers, "%s/postgres/%s/" % (prefix, source_db)))
    result = bk(state="backup", db=source_db, pg_bin_dir=str(bindir))
    assert result.failed and "exited 0 but reported 1 error" in result["msg"] and "simulated" in result["msg"]
    assert result["last_state"]["upload_aborted"] is True
    assert set(manifest_keys(helpers, "%s/postgres/%s/" % (prefix, source_db))) == before
    assert not [u for u in helpers.uploads(prefix) if result["last_state"]["backup_id"] in u["Key"]]
    assert result["last_state"]["key"] not in helpers.keys(prefix)


def test_s3_unreachable_fails_fast_with_bounded_retries(bk, source_db, helpers, prefix):
    started = time.monotonic()
    result = bk(state="backup", db=source_db, endpoint_url="http://127.0.0.1:%d" % _free_port(), s3_max_attempts=3)
    elapsed = time.monotonic() - started
    assert result.failed
    assert "failed after 3 attempt(s)" in result["msg"] and "Could not connect" in result["msg"]
    assert elapsed < 30
    assert "pg_dump" not in result["msg"]  # it never started: S3 is checked first


def test_bad_input_is_rejected_cleanly(bk, source_db):
    assert "part_size_mb" in bk(state="backup", db=source_db, part_size_mb=1)["msg"]
    assert "not a plain identifier" in bk(state="restore", target_db="x;drop", confirm="x;drop")["msg"]
    assert "not found" in bk(state="verify", db=source_db, backup_id="20200101T000000Z-00000000")["msg"]
    result = bk(state="backup", db="apex_bk_does_not_exist")
    assert result.failed and "does not exist" in result["msg"]


# ------------------------------------------------------------------ catalog, freshness, prune

def test_freshness_gate(bk, source_db, source_backup, prefix):
    ok(bk(state="verify", db=source_db, backup_id=source_backup["backup_id"], verify_level="checksum"))
    gate = ok(bk(state="facts", db=source_db, max_age="24h", require_fresh=True))
    assert gate["freshness"]["fresh"] is True
    stale = bk(state="facts", db=source_db, max_age="1s", require_fresh=True)
    assert stale.failed and "freshness gate failed" in stale["msg"]
    empty = bk(state="facts", db=source_db, max_age="24h", require_fresh=True, s3_prefix=prefix + "-empty")
    assert empty.failed and "no verified backup" in empty["msg"]


def test_prune_check_mode_then_real(bk, helpers, scratch_name, prefix):
    db = scratch_name("apex_bk_prune")
    helpers.create_db(db, tasks=3, events=3, agents=1)
    ids = [ok(bk(state="backup", db=db))["backup"]["backup_id"] for dummy in range(4)]
    ok(bk(state="verify", db=db, backup_id=ids[1], verify_level="checksum"))  # newest verified: #2
    before = sorted(helpers.keys("%s/postgres/%s/" % (prefix, db)))
    plan = ok(bk(check_mode=True, state="prune", db=db, keep_last=1))
    assert plan["changed"] is True
    assert sorted(d["backup_id"] for d in plan["deleted"]) == sorted([ids[0], ids[2]])
    kept = dict((k["backup_id"], k["reason"]) for k in plan["kept"])
    assert "newest verified" in kept[ids[1]] and "among the 1 newest" in kept[ids[3]]
    assert sorted(helpers.keys("%s/postgres/%s/" % (prefix, db))) == before  # check mode touched nothing
    done = ok(bk(state="prune", db=db, keep_last=1))
    assert sorted(d["backup_id"] for d in done["deleted"]) == sorted([ids[0], ids[2]])
    remaining = ok(bk(state="facts", db=db))["backups"]
    assert sorted(e["backup_id"] for e in remaining) == sorted([ids[1], ids[3]])
    assert not [k for k in helpers.keys("%s/postgres/%s/" % (prefix, db)) if ids[0] in k or ids[2] in k]
    again = ok(bk(state="prune", db=db, keep_last=1))
    assert again["changed"] is False


def test_check_mode_backup_and_restore_change_nothing(bk, source_db, source_backup, helpers, prefix, scratch_name):
    ok(bk(state="verify", db=source_db, backup_id=source_backup["backup_id"], verify_level="checksum"))
    keys_before = set(helpers.keys(prefix))
    plan = ok(bk(check_mode=True, state="backup", db=source_db))
    assert plan["changed"] and plan["backup"]["tables"] and "would back up" in plan["msg"]
    target = scratch_name()
    rplan = ok(bk(check_mode=True, state="restore", db=source_db, target_db=target, confirm=target))
    assert rplan["restore"]["target_exists"] is False and rplan["restore"]["mode"] == "create"
    vplan = ok(bk(check_mode=True, state="verify", db=source_db, verify_level="deep"))
    assert vplan["verification"]["checks"] == ["checksum", "toc", "deep"]
    assert set(helpers.keys(prefix)) == keys_before
    assert not helpers.db_exists(target)
    assert helpers.uploads(prefix) == []


def test_backup_of_the_lab_apex_database(bk, lab, helpers, prefix):
    """The real schema (migrations applied by the twin): backup and deep verify."""
    m = ok(bk(state="backup", db="apex"))["backup"]
    assert "public._sqlx_migrations" in m["row_counts"]
    record = ok(bk(state="verify", db="apex", backup_id=m["backup_id"], verify_level="deep"))["verification"]
    assert record["ok"] and record["checks"]["deep"]["differences"] == []


# ------------------------------------------------------------------ drain

def test_drain_terminates_only_with_confirmation(bk, helpers, scratch_name, lab):
    import psycopg

    target = scratch_name()
    helpers.create_db(target, tasks=2, events=2, agents=1)
    app = psycopg.connect(lab["APEX_PG_ADMIN_DSN"], dbname=target, application_name="itest-drain-app", autocommit=True)
    try:
        for confirm in (None, "apex"):
            refused = bk(state="drain", target_db=target, drain_applications=["itest-drain-app"], drain_grace=0,
                         drain_timeout=5, **({"confirm": confirm} if confirm else {}))
            assert refused.failed and refused.get("refused") is True and "confirm must equal" in refused["msg"]
            assert app.execute("SELECT 1").fetchone() == (1,)  # still connected: nothing was terminated
        waited = bk(state="drain", target_db=target, drain_applications=["itest-drain-app"], drain_terminate=False,
                    drain_timeout=1)
        assert waited.failed and "still connected" in waited["msg"]  # waits only, no confirmation needed
        assert app.execute("SELECT 1").fetchone() == (1,)
        done = ok(bk(state="drain", target_db=target, confirm=target, drain_applications=["itest-drain-app"],
                     drain_grace=0, drain_timeout=20))
        assert done["changed"] is True
        assert [s["application_name"] for s in done["drain"]["terminated"]] == ["itest-drain-app"]
        with pytest.raises(psycopg.OperationalError):
            app.execute("SELECT 1")
    finally:
        app.close()


def test_drain_ends_when_the_sessions_leave_not_at_the_grace(bk, helpers, scratch_name, lab):
    """Sessions that end by themselves (pods gone) end the drain at once: it observes them leave
    instead of sitting out drain_grace, and terminates nothing."""
    import threading

    import psycopg

    target = scratch_name()
    helpers.create_db(target, tasks=2, events=2, agents=1)
    admin = lab["APEX_PG_ADMIN_DSN"]
    apps = [psycopg.connect(admin, dbname=target, application_name="itest-drain-leaving", autocommit=True)
            for dummy in range(2)]
    outcome = {}
    drain = threading.Thread(target=lambda: outcome.update(result=bk(
        state="drain", target_db=target, confirm=target, drain_applications=["itest-drain-leaving"],
        drain_grace=30, drain_timeout=60)))
    try:
        drain.start()
        # the sessions leave once the drain is watching them (its pg_stat_activity query seen)
        deadline = time.monotonic() + 60
        with psycopg.connect(admin, dbname="postgres", autocommit=True) as watcher:
            while not watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'apex.ops' "
                                      "AND query LIKE %s", ("%FROM pg_stat_activity%",)).fetchone()[0]:
                assert time.monotonic() < deadline and drain.is_alive(), "the drain never queried pg_stat_activity"
                time.sleep(0.05)
        left_at = time.monotonic()
        for app in apps:
            app.close()
        drain.join(60)
        after_leaving = time.monotonic() - left_at
    finally:
        for app in apps:
            app.close()
        drain.join(60)
    done = ok(outcome["result"])
    assert len(done["drain"]["initial"]) == 2, done["drain"]  # they were there when it started
    assert done["drain"]["terminated"] == [] and done["changed"] is False
    # grace 30 s: ending within 5 s of the sessions leaving is "at once" with a wide margin
    assert after_leaving < 5 and done["drain"]["waited_seconds"] < 10, (after_leaving, done["drain"])
    with psycopg.connect(admin, dbname="postgres", autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (target,)).fetchone()[0]
    assert left == 0


def test_drain_loads_neither_boto3_nor_redis(bk, helpers, scratch_name):
    """A drain only reads pg_stat_activity: it does not pay for boto3 (an S3 client) or redis."""
    target = scratch_name()
    helpers.create_db(target, tasks=2, events=2, agents=1)
    done = ok(bk(state="drain", target_db=target, drain_terminate=False, drain_timeout=10,
                 env={"PYTHONPROFILEIMPORTTIME": "1"}))
    assert done["drain"]["initial"] == []
    imported = {line.rsplit("|", 1)[-1].strip() for line in done["_stderr"].splitlines() if line.startswith("import time:")}
    assert "psycopg" in imported  # the import log is there
    assert not {"boto3", "botocore", "redis"} & imported, sorted(imported & {"boto3", "botocore", "redis"})


# ------------------------------------------------------------------ redis

def test_redis_backup_round_trip(bk, lab, helpers, session_token, prefix):
    import redis

    shared = redis.Redis.from_url(lab["APEX_REDIS_URL"])
    marker = "apexbk:itest:%s" % session_token
    values = dict(("%s:%d" % (marker, i), "value-%d-%s" % (i, session_token)) for i in range(50))
    shared.mset(values)
    shared.rpush(marker + ":list", *range(10))
    server = None
    workdir = tempfile.mkdtemp(prefix="apex-bk-redis-")
    try:
        result = ok(bk(state="redis_backup", redis_instance="itest"))
        m = result["backup"]
        assert m["kind"] == "redis" and m["rdb_saves"] is not None and m["size"] > 0
        assert m["key"].startswith("%s/redis/itest/" % prefix) and m["key"].endswith(".rdb")
        record = ok(bk(state="verify", kind="redis", redis_instance="itest"))["verification"]
        assert record["ok"] and record["checks"]["checksum"]["header"].startswith("REDIS")
        fetched = ok(bk(state="fetch", kind="redis", redis_instance="itest", dest=os.path.join(workdir, "dump.rdb")))
        assert fetched["fetched"]["sha256"] == m["sha256"]
        # the documented restore: a stopped Redis gets the file, then starts on it
        server, restored = _start_restore_redis(redis, workdir)
        got = restored.mget(list(values))
        assert [v.decode() for v in got] == list(values.values())
        assert restored.lrange(marker + ":list", 0, -1) == [str(i).encode() for i in range(10)]
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)
        shared.delete(*(list(values) + [marker + ":list"]))


@pytest.fixture
def stale_rdb(tmp_path):
    """A readable dump.rdb that this Redis did not just write (another Redis' directory, same path)."""
    path = tmp_path / "dump.rdb"
    path.write_bytes(b"REDIS0011" + b"\0" * 64)
    os.utime(str(path), (time.time() - 3600, time.time() - 3600))
    return str(path)


@pytest.mark.parametrize("how", [dict(rdb_source="network"), dict(rdb_path="/nonexistent/dump.rdb"), "stale"],
                         ids=["network", "auto-without-readable-file", "auto-with-a-stale-local-file"])
def test_redis_network_snapshot_round_trip(bk, lab, helpers, session_token, prefix, how, stale_rdb):
    """SYNC over the network (no access to Redis' files) -> S3 -> download -> a fresh redis-server -> same keys."""
    import redis

    shared = redis.Redis.from_url(lab["APEX_REDIS_URL"])
    marker = "apexbk:itest:net:%s:%s" % (session_token, helpers.token())
    values = dict(("%s:%d" % (marker, i), "net-%d-%s" % (i, os.urandom(8).hex())) for i in range(200))
    shared.mset(values)
    shared.hset(marker + ":hash", mapping={"a": "1", "b": "2"})
    server = None
    workdir = tempfile.mkdtemp(prefix="apex-bk-redis-net-")
    instance = "itest-net"
    try:
        how = dict(rdb_path=stale_rdb) if how == "stale" else how
        m = ok(bk(state="redis_backup", redis_instance=instance, **how))["backup"]
        assert m["source"] == "network" and m["rdb_path"] is None
        assert m["size"] == m["sync_length"] and m["rdb_version"]
        data = helpers.keys("%s/redis/%s/" % (prefix, instance))
        assert m["key"] in data and m["key"].replace(".rdb", ".manifest.json") in data
        fetched = ok(bk(state="fetch", kind="redis", redis_instance=instance, backup_id=m["backup_id"],
                        dest=os.path.join(workdir, "dump.rdb")))
        assert fetched["fetched"]["sha256"] == m["sha256"]
        server, restored = _start_restore_redis(redis, workdir)
        assert restored.mget(list(values)) == [v.encode() for v in values.values()]
        assert restored.hgetall(marker + ":hash") == {b"a": b"1", b"b": b"2"}
        # everything the shared Redis held at the snapshot (our keys were written before it)
        ours = sorted(k for k in restored.scan_iter(match=marker + "*"))
        assert ours == sorted([k.encode() for k in values] + [(marker + ":hash").encode()])
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)
        shared.delete(*(list(values) + [marker + ":hash"]))


def test_redis_check_mode_reports_the_source(bk):
    assert ok(bk(check_mode=True, state="redis_backup", rdb_source="network"))["backup"]["source"] == "network"
    assert ok(bk(check_mode=True, state="redis_backup"))["backup"]["source"] == "file"  # the lab's RDB is readable
    plan = ok(bk(check_mode=True, state="redis_backup", rdb_path="/nonexistent/dump.rdb"))["backup"]
    assert plan["source"] == "network"


def _serves(client, pid):
    """The Redis at client answers and is process pid (not another one holding the port)."""
    try:
        return client.info("server")["process_id"] == pid
    except Exception:
        return False


def _start_restore_redis(redis, workdir, attempts=5):
    """redis-server on the fetched dump.rdb; on a new port if the picked one was taken meanwhile."""
    for dummy in range(attempts):
        port = _free_port()
        server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
                                   "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # short timeouts, no retries: whoever else holds the port may accept and never answer
        probe = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=2, socket_timeout=2, retry=None)
        _wait_for(lambda: server.poll() is not None or _serves(probe, server.pid), 20, "the restored redis-server")
        probe.close()
        if server.poll() is None:
            return server, redis.Redis(host="127.0.0.1", port=port)
        # exited (it cannot bind a port another process took after the pick): try another port
    raise AssertionError("redis-server exited %d times (exit status %s)" % (attempts, server.returncode))


# ------------------------------------------------------------------ secrets

def test_no_secret_in_module_output(bk, lab, source_db, helpers, scratch_name):
    secrets = [lab[k] for k in ("PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "APEX_REDIS_PASSWORD")]
    outputs = [bk(state="backup", db=source_db), bk(state="facts", db=source_db),
               bk(state="backup", db=source_db, endpoint_url="http://127.0.0.1:%d" % _free_port()),
               bk(state="redis_backup", redis_instance="itest-secret"),
               bk(state="backup", db="apex_bk_nope")]
    for result in outputs:
        for secret in secrets:
            assert secret not in result["_stdout"] and secret not in result["_stderr"]
