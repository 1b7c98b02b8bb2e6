"""Pure logic of apex_db_maint and apex_queue: durations, names, settings, filters, dead letters."""
import json

import pytest

from ansible_collections.apex.ops.plugins.module_utils import db_maint, queue
from ansible_collections.apex.ops.plugins.module_utils.durations import format_duration, parse_duration


@pytest.mark.parametrize("value, seconds", [
    ("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("2d", 172800), ("1w", 604800),
    (90, 90), (1.5, 1.5), ("90", 90), ("0", 0), ("250ms", 0.25), (" 10 min ", 600), ("1h 5m 3s", 3903),
    ("10minutes", 600), (None, None),
])
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "abc", "5x", "-5", "5m abc", "m5", True, "1.2.3s"])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError) as err:
        parse_duration(value, "idle_longer_than")
    assert "idle_longer_than" in str(err.value)


def test_format_duration():
    assert format_duration(75) == "1m15s"
    assert format_duration(3600) == "1h"
    assert format_duration(0.5) == "0.5s"
    assert format_duration(None) is None


@pytest.mark.parametrize("name, parts", [
    ("tasks", (None, "tasks")),
    ("public.tasks", ("public", "tasks")),
    ('"My.Schema"."T"', ("My.Schema", "T")),
    ('"a""b"', (None, 'a"b')),
    ("tasks; DROP TABLE agents", (None, "tasks; DROP TABLE agents")),
])
def test_split_table_name(name, parts):
    assert db_maint.split_table_name(name) == parts


@pytest.mark.parametrize("name", ["", "a.b.c", "a.", ".b", '"unterminated'])
def test_split_table_name_rejects(name):
    with pytest.raises(ValueError):
        db_maint.split_table_name(name)


def test_maintenance_statement_quotes_identifiers():
    stmt = db_maint.maintenance_statement("vacuum", "public", "tasks; DROP TABLE agents")
    assert stmt.as_string(None) == 'VACUUM (ANALYZE) "public"."tasks; DROP TABLE agents"'
    assert db_maint.maintenance_statement("analyze", "s", "t").as_string(None) == 'ANALYZE "s"."t"'
    assert db_maint.maintenance_statement("vacuum", "s", "t", analyze=False).as_string(None) == 'VACUUM "s"."t"'
    assert db_maint.maintenance_statement("vacuum", "s", "t", full=True).as_string(None) == 'VACUUM (FULL, ANALYZE) "s"."t"'


@pytest.mark.parametrize("value, vartype, unit, expected", [
    ("8MB", "integer", "kB", 8 * 1024 ** 2),
    ("8192", "integer", "kB", 8 * 1024 ** 2),
    ("8192kB", "integer", "kB", 8 * 1024 ** 2),
    ("128MB", "integer", "8kB", 128 * 1024 ** 2),
    ("16384", "integer", "8kB", 128 * 1024 ** 2),
    ("2s", "integer", "ms", 2000),
    ("2000", "integer", "ms", 2000),
    ("1min", "integer", "s", 60000),
    ("60", "integer", "s", 60000),
    ("200", "integer", None, 200),
    (200, "integer", None, 200),
    ("0.5", "real", None, 0.5),
    (True, "bool", None, "on"),
    ("off", "bool", None, "off"),
    ("yes", "bool", None, "on"),
    ("Replica", "enum", None, "replica"),
    ("public, apex", "string", None, "public, apex"),
])
def test_normalize_setting(value, vartype, unit, expected):
    assert db_maint.normalize_setting(value, vartype, unit) == expected


@pytest.mark.parametrize("value, vartype, unit", [
    ("abc", "integer", "kB"), ("8s", "integer", "kB"), ("8MB", "integer", "ms"), ("maybe", "bool", None),
    ("5MB", "integer", None),
])
def test_normalize_setting_rejects(value, vartype, unit):
    with pytest.raises(ValueError):
        db_maint.normalize_setting(value, vartype, unit)


def test_backend_filter_refuses_match_all():
    for flt in ({}, {"datname": ["apex"]}, {"application_name": [], "state": None}):
        with pytest.raises(db_maint.MaintError) as err:
            db_maint.build_backend_filter([], flt, "terminate")
        assert "refusing" in str(err.value)


def test_backend_filter_always_protects():
    where, params = db_maint.build_backend_filter([], {"application_name": ["x"], "idle_longer_than": 5.0}, "terminate")
    text = where.as_string(None)
    assert "a.backend_type = 'client backend'" in text
    assert "a.pid <> pg_backend_pid()" in text
    assert '"application_name" = ANY(%(application_name)s)' in text
    assert params["application_name"] == ["x"] and params["idle_secs"] == 5.0
    assert "x" not in text  # values are parameters, never SQL text


def test_backend_filter_pids_and_cancel_only_active():
    where, params = db_maint.build_backend_filter([12, "13"], {}, "cancel")
    text = where.as_string(None)
    assert params["pids"] == [12, 13]
    assert text.endswith("a.state = 'active'")


def test_backend_filter_unknown_key():
    with pytest.raises(db_maint.MaintError):
        db_maint.build_backend_filter([1], {"query": "x"}, "terminate")


@pytest.mark.parametrize("value, size", [
    ("4GB", 4 * 1024 ** 3), ("512mb", 512 * 1024 ** 2), ("1024", 1024), (2048, 2048), ("1.5k", 1536),
    ("", None), (None, None),
])
def test_parse_size(value, size):
    assert queue.parse_size(value) == size


@pytest.mark.parametrize("value", ["lots", "4XB", True])
def test_parse_size_rejects(value):
    with pytest.raises(ValueError):
        queue.parse_size(value, "memory_limit")


@pytest.mark.parametrize("raw, payload", [
    (b"tsk_abc", b"tsk_abc"),
    (json.dumps({"task_id": "tsk_1", "error": "boom"}).encode(), b"tsk_1"),
    (b'"tsk_2"', b"tsk_2"),
    (b"12345", b"12345"),
    (json.dumps({"error": "no id"}).encode(), None),
    (b"not a task id!", None),
    (b"", None),
    (json.dumps({"task_id": {"nested": 1}}).encode(), b'{"nested": 1}'),
])
def test_task_payload(raw, payload):
    assert queue.task_payload(raw) == payload


def test_task_payload_unchanged_when_no_field():
    raw = json.dumps({"whatever": 1}).encode()
    assert queue.task_payload(raw, payload_field="") == raw


def test_decode_item():
    assert queue.decode_item(b'{"a": 1}') == {"a": 1}
    assert queue.decode_item(b"plain") == "plain"
    assert queue.decode_item(b"\xff") == "\ufffd"


def test_purge_refused_without_confirmation():
    class FakeRedis:
        def llen(self, key):
            return 3

    with pytest.raises(queue.QueueError) as err:
        queue.purge(FakeRedis(), "dl", "yes", check_mode=False)
    assert "purge-dead-letter" in str(err.value)
    assert err.value.last_state == {"dead_letter_depth": 3}
