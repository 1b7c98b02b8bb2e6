"""Point-in-time recovery planning (pure): target, base backup choice, settings, the log, the verdict."""
import datetime

import pytest

from ansible_collections.apex.ops.plugins.module_utils import pitr_plan as plan

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 2, 16, 0, 0, tzinfo=UTC)


def entry(backup_id, finished, **extra):
    return dict({"backup_id": backup_id, "finished_at": finished, "verification": "unverified"}, **extra)


ENTRIES = [  # newest first, as the catalog lists them
    entry("20261202T150000Z-00000003", "2026-12-02T15:00:30Z"),
    entry("20261202T120000Z-00000002", "2026-12-02T12:00:30Z", problem="data object missing"),
    entry("20261202T090000Z-00000001", "2026-12-02T09:00:30Z"),
]


def test_target_parsed_to_the_microsecond_and_never_in_the_future():
    target = plan.parse_target("2026-12-02T15:30:00.123456Z", NOW)
    assert plan.target_text(target) == "2026-12-02 15:30:00.123456+00"
    with pytest.raises(plan.PitrRefused, match="future"):
        plan.parse_target("2026-12-02T16:00:01Z", NOW)
    with pytest.raises(plan.PitrRefused, match="not a timestamp"):
        plan.parse_target("yesterday", NOW)


def test_base_backup_is_the_newest_usable_one_finished_before_the_target():
    at = plan.parse_target
    assert plan.choose_base_backup(ENTRIES, at("2026-12-02T15:30:00Z", NOW))["backup_id"].endswith("03")
    # the 12:00 one has no data: the 09:00 one is used for a target before 15:00
    assert plan.choose_base_backup(ENTRIES, at("2026-12-02T14:00:00Z", NOW))["backup_id"].endswith("01")
    # a backup still running at the target cannot be used
    assert plan.choose_base_backup(ENTRIES, at("2026-12-02T15:00:10Z", NOW))["backup_id"].endswith("01")
    with pytest.raises(plan.PitrRefused, match="oldest finished at 2026-12-02T09:00:30Z"):
        plan.choose_base_backup(ENTRIES, at("2026-12-02T08:00:00Z", NOW))
    with pytest.raises(plan.PitrRefused, match="no usable base backup"):
        plan.choose_base_backup([], at("2026-12-02T08:00:00Z", NOW))


def test_named_base_backup_is_checked():
    target = plan.parse_target("2026-12-02T14:00:00Z", NOW)
    assert plan.choose_base_backup(ENTRIES, target, "20261202T090000Z-00000001")["backup_id"].endswith("01")
    with pytest.raises(plan.PitrRefused, match="after the target"):
        plan.choose_base_backup(ENTRIES, target, "20261202T150000Z-00000003")
    with pytest.raises(plan.PitrRefused, match="not usable: data object missing"):
        plan.choose_base_backup(ENTRIES, target, "20261202T120000Z-00000002")
    with pytest.raises(plan.PitrRefused, match="not in the catalog"):
        plan.choose_base_backup(ENTRIES, target, "20261202T000000Z-deadbeef")


def test_restore_command_quotes_the_directory_and_checks_a_custom_one():
    assert plan.restore_command("/var/lib/wal archive/") == "cp '/var/lib/wal archive'/%f %p"
    assert plan.restore_command(None, "aws s3 cp s3://b/wal/%f %p") == "aws s3 cp s3://b/wal/%f %p"
    with pytest.raises(plan.PitrRefused, match="%f"):
        plan.restore_command(None, "aws s3 cp s3://b/wal/ .")
    with pytest.raises(plan.PitrRefused, match="WAL archive is needed"):
        plan.restore_command(None, None)


def test_settings_are_the_postgresql_12_ones_and_never_archive_into_the_live_archive():
    target = plan.parse_target("2026-12-02T15:30:00Z", NOW)
    settings = dict(plan.recovery_settings(target, "promote", "cp /a/%f %p", 24001, "/d"))
    assert settings["recovery_target_time"] == "2026-12-02 15:30:00.000000+00"
    assert settings["recovery_target_action"] == "promote"
    assert settings["restore_command"] == "cp /a/%f %p"
    assert settings["archive_mode"] == "off" and settings["port"] == 24001
    assert settings["primary_conninfo"] == "" and settings["lc_messages"] == "C"
    with pytest.raises(plan.PitrRefused, match="target_action"):
        plan.recovery_settings(target, "shutdown", "cp", 1, "/d")


def test_auto_conf_replaces_earlier_lines_and_quotes():
    existing = "# Do not edit\nport = 5432\nwork_mem = '8MB'\n"
    text = plan.merge_auto_conf(existing, [("port", 24001), ("restore_command", "cp '/a b'/%f %p")])
    assert "port = 5432" not in text and "port = 24001" in text and "work_mem = '8MB'" in text
    assert "restore_command = 'cp ''/a b''/%f %p'" in text


LOG = """2026-12-02 15:49:03.1 UTC [1] LOG:  starting point-in-time recovery to 2026-12-02 15:49:01.315384+00
2026-12-02 15:49:03.2 UTC [1] LOG:  restored log file "000000010000000000000008" from archive
2026-12-02 15:49:03.3 UTC [1] LOG:  recovery stopping before commit of transaction 760, time 2026-12-02 15:49:01.4+00
2026-12-02 15:49:03.3 UTC [1] LOG:  selected new timeline ID: 2
"""


def test_recovery_log_and_verdict():
    facts = plan.read_recovery_log(LOG)
    assert facts["stopped"] == {"position": "before", "record": "commit", "xid": 760, "time": "2026-12-02 15:49:01.4+00"}
    assert facts["new_timeline"] == 2 and not facts["target_not_reached"]
    target = plan.parse_target("2026-12-02T15:49:01.315384Z", NOW)
    server = {"action": "promote", "in_recovery": False, "last_replay_time": "2026-12-02T15:49:01.2Z"}
    assert plan.judge(target, facts, server, []) == (True, [])
    reached, problems = plan.judge(target, facts, dict(server, last_replay_time="2026-12-02T15:49:02Z"), [])
    assert not reached and "after the target" in problems[0]
    reached, problems = plan.judge(target, plan.read_recovery_log(
        "FATAL:  recovery ended before configured recovery target was reached"), server, [])
    assert not reached and len(problems) == 2
    # migrations do not change "target reached", but fail the verification
    reached, problems = plan.judge(target, facts, server, ["_sqlx_migrations is empty"])
    assert reached and problems == ["_sqlx_migrations is empty"]
    paused = dict(server, action="pause", in_recovery=True, pause_state="paused")
    assert plan.judge(target, facts, paused, []) == (True, [])


def test_marker_mismatch_and_counts():
    target = plan.parse_target("2026-12-02T15:30:00Z", NOW)
    wanted = plan.marker("b1", target, "promote", 0, "/d")
    assert plan.marker_mismatch(dict(wanted, port=24001), wanted) is None
    assert "target_time" in plan.marker_mismatch(dict(wanted, target_time="x"), wanted)
    rows = plan.compare_counts({"t": 1}, {"t": 2, "u": 0})
    assert rows == {"t": {"recovered": 1, "live": 2, "difference": 1},
                    "u": {"recovered": None, "live": 0, "difference": None}}
