"""The one-of-each helpers: durations, timestamps, redaction, the backend-signalling rule, the
process deadline, and apex_backup's failure contract (pure, no services)."""
import datetime

import pytest

from ansible_collections.apex.ops.plugins.module_utils import backup_runner, pg_signal
from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import ProcessDeadline
from ansible_collections.apex.ops.plugins.module_utils.redaction import redact, redact_rows
from ansible_collections.apex.ops.plugins.module_utils.timestamps import isoformat, parse_time, utcnow

UTC = datetime.timezone.utc


# ------------------------------------------------------------------ durations (moved from the catalog tests)

@pytest.mark.parametrize("text,seconds", [
    ("24h", 86400), ("30d", 2592000), ("1d12h", 129600), ("90m", 5400), ("3600", 3600), ("45s", 45),
    ("2w", 1209600), (7200, 7200), ("1.5h", 5400), ("1D", 86400),
    # the forms apex_backup rejected before the parsers became one
    ("30min", 1800), ("2 days", 172800), ("500ms", 0.5), ("1h 30m", 5400), ("10 minutes", 600),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["abc", "24x", "h", "-5h", "1h foo", "ten minutes", -1, True])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError):
        parse_duration(bad, "max_age")


def test_parse_duration_none_and_error_names_the_option():
    assert parse_duration(None) is None
    with pytest.raises(ValueError) as err:
        parse_duration("2 fortnights", "orphan_grace")
    assert "orphan_grace" in str(err.value)


# ------------------------------------------------------------------ timestamps

def test_parse_time_forms():
    base = datetime.datetime(2026, 11, 27, 6, 45, 12, tzinfo=UTC)
    assert parse_time("2026-11-27T06:45:12Z") == base
    assert parse_time("2026-11-27T06:45:12.345Z").microsecond == 345000
    assert parse_time("2026-11-27T06:45:12.123456789Z").microsecond == 123456  # nanoseconds (Kubernetes)
    assert parse_time("2026-11-27T08:45:12+02:00") == base and parse_time("2026-11-27T08:45:12+02:00").tzinfo == UTC
    assert parse_time("2026-11-27T06:45:12") == base  # naive text is UTC
    assert parse_time(base.replace(tzinfo=None)) == base


@pytest.mark.parametrize("value", [None, "", "garbage", "2026-13-40T00:00:00Z"])
def test_parse_time_never_raises(value):
    assert parse_time(value) is None


def test_utcnow_and_isoformat_round_trip_to_the_millisecond():
    now = utcnow()
    assert now.tzinfo is not None and abs((datetime.datetime.now(UTC) - now).total_seconds()) < 5
    moment = datetime.datetime(2026, 11, 27, 6, 45, 12, 345678, tzinfo=UTC)
    assert isoformat(moment) == "2026-11-27T06:45:12.345Z"
    assert isoformat(moment.replace(microsecond=0)) == "2026-11-27T06:45:12Z"
    assert parse_time(isoformat(moment)) == moment.replace(microsecond=345000)


# ------------------------------------------------------------------ redaction

def test_redact_every_form_in_one_text():
    text = ("pg_dump: error: connection to server failed: password=hunter2x host=db; "
            "url redis://:s3cretpw@host:6379/0; ALTER ROLE x PASSWORD 'abc123'; key AKIAXYZ")
    out = redact(text, ["AKIAXYZ", None, "ab"])
    for secret in ("hunter2x", "s3cretpw", "abc123", "AKIAXYZ"):
        assert secret not in out
    assert "host=db" in out and "PASSWORD '********'" in out and "redis://***@host:6379/0" in out
    assert redact(None) is None and redact("") == ""


def test_redact_rows_in_place():
    rows = [{"query": "CREATE ROLE a PASSWORD 'pw12'"}, {"query": None}]
    assert redact_rows(rows) is rows and rows[0]["query"] == "CREATE ROLE a PASSWORD '********'"


# ------------------------------------------------------------------ the backend-signalling rule

def _text(clause):
    return clause.as_string(None)


def test_signal_rule_defaults_are_strict():
    where, params = pg_signal.selection("terminate", ["apex"], where=None)
    text = _text(where)
    assert "a.backend_type = 'client backend'" in text and "a.pid <> pg_backend_pid()" in text
    assert "a.datname = ANY(%(datname)s)" in text and params["datname"] == ["apex"]
    assert "NOT coalesce((SELECT r.rolsuper" in text  # nothing named: superusers are left alone


def test_signal_rule_named_sessions_may_be_superusers():
    where, params = pg_signal.selection("cancel", pg_signal.CURRENT_DATABASE, pids=[7], applications=["app"])
    text = _text(where)
    assert "rolsuper" not in text and "a.datname = current_database()" in text
    assert params["pids"] == [7] and params["application_name"] == ["app"]
    assert text.endswith("a.state = 'active'")


def test_signal_rule_needs_databases_and_a_known_action():
    with pytest.raises(ValueError):
        pg_signal.selection("terminate", [])
    with pytest.raises(ValueError):
        pg_signal.selection("kill", ["apex"])
    where, dummy = pg_signal.selection("terminate", pg_signal.ALL_DATABASES, users=["apex"])
    assert "datname" not in _text(where)


# ------------------------------------------------------------------ the process deadline

def test_process_deadline_uses_the_injected_clock():
    now = [100.0]
    deadline = ProcessDeadline(10, clock=lambda: now[0])
    assert deadline.remaining() == 10 and not deadline.check()
    now[0] = 110.0
    assert deadline.check() and deadline.expired and deadline.remaining() == 0
    assert ProcessDeadline(0).remaining() is None and not ProcessDeadline(None).check()


# ------------------------------------------------------------------ apex_backup's failure contract

def test_failure_returns_only_documented_detail_keys():
    from ansible_collections.apex.ops.plugins.module_utils.pg_programs import BackupError

    exc = BackupError("boom password=hunter2x", stage="restore", target_unchanged=False, internal_only=1,
                      last_state={"phase": "dump"})
    msg, extra = backup_runner.failure(exc, "restore", ["hunter2x"])
    assert "hunter2x" not in msg
    assert extra == {"last_state": {"phase": "dump"}, "details": {"stage": "restore", "target_unchanged": False}}
    msg, extra = backup_runner.failure(backup_runner.Refused("no"), "restore")
    assert extra == {"refused": True, "changed": False}


def test_failure_detail_keys_are_the_documented_ones():
    import yaml

    from ansible_collections.apex.ops.plugins.modules import apex_backup

    documented = yaml.safe_load(apex_backup.RETURN)["details"]
    assert documented["returned"] == "failure"
    assert sorted(documented["contains"]) == sorted(backup_runner.FAILURE_DETAIL_KEYS)
