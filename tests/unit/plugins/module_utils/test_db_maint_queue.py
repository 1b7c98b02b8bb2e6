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


# ----------------------------------------------------------------- atomic requeue: the WATCH retry path

class FakeRedisLists:
    """Just enough of redis-py for queue.requeue: lists, a version per key for WATCH, and a hook
    that plays a concurrent writer between the read and EXEC."""

    def __init__(self, lists, before_exec=None):
        self.lists = dict((k, list(v)) for k, v in lists.items())
        self.version = dict((k, 0) for k in lists)
        self.before_exec = before_exec  # called with the client before each EXEC
        self.execs = self.watch_errors = 0

    def _bump(self, key):
        self.version[key] = self.version.get(key, 0) + 1

    def lpush(self, key, *values):
        self.lists.setdefault(key, [])[0:0] = list(reversed(values))
        self._bump(key)
        return len(self.lists[key])

    def pipeline(self, transaction=True):
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, client):
        self.client, self.watched, self.queued = client, {}, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.reset()

    def reset(self):
        self.watched, self.queued = {}, None

    def watch(self, *keys):
        self.watched = dict((k, self.client.version.get(k, 0)) for k in keys)

    def multi(self):
        self.queued = []

    def _do(self, name, *args):
        lists = self.client.lists
        if name == "llen":
            return len(lists.get(args[0], []))
        if name == "lrange":
            key, start, stop = args
            items = lists.get(key, [])
            return items[start:(None if stop == -1 else stop + 1)]
        if name == "delete":
            existed = args[0] in lists
            lists.pop(args[0], None)
            self.client._bump(args[0])
            return int(existed)
        if name == "ltrim":
            key, start, stop = args
            lists[key] = lists.get(key, [])[start:(None if stop == -1 else stop + 1)]
            self.client._bump(key)
            return True
        if name == "lpush":
            return self.client.lpush(args[0], *args[1:])
        if name == "rpush":
            lists.setdefault(args[0], []).extend(args[1:])
            self.client._bump(args[0])
            return len(lists[args[0]])
        raise AssertionError("unexpected command %s" % name)

    def __getattr__(self, name):
        def command(*args):
            if self.queued is None:
                return self._do(name, *args)  # immediate mode after WATCH
            self.queued.append((name, args))
            return self
        return command

    def execute(self):
        from redis.exceptions import WatchError
        if self.client.before_exec:
            self.client.before_exec(self.client)
        self.client.execs += 1
        if any(self.client.version.get(k, 0) != v for k, v in self.watched.items()):
            self.client.watch_errors += 1
            self.reset()
            raise WatchError("Watched variable changed.")
        results = [self._do(name, *args) for name, args in self.queued]
        self.reset()
        return results


def test_requeue_retries_when_the_dead_letter_list_changes():
    """A worker dead-letters a task between our read and EXEC: EXEC fails with WatchError, the
    attempt is redone on the new list, and nothing is lost or duplicated."""
    dead = [json.dumps({"task_id": t}).encode() for t in ("tsk_3", "tsk_2", "tsk_1")]  # LPUSHed: oldest last
    concurrent = {"done": False}

    def worker_dead_letters_once(client):
        if not concurrent["done"]:
            concurrent["done"] = True
            client.lpush("dl", json.dumps({"task_id": "tsk_new"}).encode())

    client = FakeRedisLists({"dl": dead, "q": [b"tsk_busy"]}, before_exec=worker_dead_letters_once)
    res = queue.requeue(client, "q", "dl", count=2, check_mode=False)
    assert client.watch_errors == 1 and client.execs == 2
    # the two oldest were moved, oldest first; the concurrent dead letter and tsk_3 stay
    assert [i["requeued"] for i in res["items"]] == ["tsk_1", "tsk_2"]
    assert res["dead_letter_before"] == 4 and res["dead_letter_after"] == 2 and res["queue_after"] == 3
    assert client.lists["dl"] == [json.dumps({"task_id": "tsk_new"}).encode(), dead[0]]
    assert client.lists["q"] == [b"tsk_2", b"tsk_1", b"tsk_busy"]


def test_requeue_all_retry_keeps_the_late_dead_letter():
    """count=0 (all): the first attempt would DELETE the list; after the retry the late entry is
    requeued too instead of being deleted unseen."""
    state = {"n": 0}

    def late(client):
        state["n"] += 1
        if state["n"] == 1:
            client.lpush("dl", b"tsk_late")

    client = FakeRedisLists({"dl": [b"tsk_b", b"tsk_a"], "q": []}, before_exec=late)
    res = queue.requeue(client, "q", "dl", count=0, check_mode=False)
    assert client.watch_errors == 1
    assert res["moved"] == 3 and "dl" not in client.lists
    assert client.lists["q"] == [b"tsk_late", b"tsk_b", b"tsk_a"]


def test_requeue_gives_up_when_the_list_never_settles():
    client = FakeRedisLists({"dl": [b"tsk_a"], "q": []}, before_exec=lambda c: c.lpush("dl", b"tsk_x"))
    with pytest.raises(queue.QueueError) as err:
        queue.requeue(client, "q", "dl", count=1, check_mode=False)
    assert "kept changing" in str(err.value) and client.watch_errors == 20
    assert client.lists["q"] == []  # nothing half-applied


# ----------------------------------------------------------------- redaction of password literals

@pytest.mark.parametrize("text, expected", [
    ("ALTER ROLE x PASSWORD 'sec''ret'", "ALTER ROLE x PASSWORD '********'"),
    ("CREATE ROLE y LOGIN ENCRYPTED PASSWORD 'abc' VALID UNTIL 'infinity'",
     "CREATE ROLE y LOGIN ENCRYPTED PASSWORD '********' VALID UNTIL 'infinity'"),
    ("alter user z password E'a\\'b' login", "alter user z password '********' login"),
    ("ALTER ROLE q PASSWORD $pw$s3cr3t$pw$ LOGIN", "ALTER ROLE q PASSWORD '********' LOGIN"),
    ("ALTER ROLE x PASSWORD 'cut off by query_max_len", "ALTER ROLE x PASSWORD '********'"),
    ("SELECT 'ALTER ROLE x PASSWORD ''s3cret'''", "SELECT 'ALTER ROLE x PASSWORD '********''"),
    ("CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'a', password 'pw')",
     "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'a', password '********')"),
    ("ALTER ROLE x PASSWORD NULL", "ALTER ROLE x PASSWORD NULL"),
    ("SELECT 'password' AS c, password_hash FROM t", "SELECT 'password' AS c, password_hash FROM t"),
    ("SELECT 1", "SELECT 1"),
    (None, None),
])
def test_redact_query(text, expected):
    from ansible_collections.apex.ops.plugins.module_utils.redaction import redact as redact_query
    assert redact_query(text) == expected
    for secret in ("sec''ret", "abc", "s3cr3t", "s3cret", "'pw'"):
        if text and secret in text and "PASSWORD" in text.upper():
            assert secret not in redact_query(text)


def test_redact_backends_in_place():
    from ansible_collections.apex.ops.plugins.module_utils.redaction import redact_rows as redact_backends
    rows = [dict(pid=1, query="ALTER ROLE a PASSWORD 'x'"), dict(pid=2, query=None), "not a row"]
    assert redact_backends(rows) is rows
    assert rows[0]["query"] == "ALTER ROLE a PASSWORD '********'" and rows[1]["query"] is None
