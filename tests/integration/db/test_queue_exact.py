"""Issue 15, cause 4: a purge saves dead letters byte-exact and requeue_from_file puts them back exactly;
queue_deadletter writes its report when Redis is down.

Every test uses its own keys and deletes them; the Redis assertions read raw bytes
(``decode_responses=False``)."""
import base64
import json
import socket

import pytest

from dbq_helpers import unique

NOT_UTF8 = b'\xff\xfe{"id":1}\x80'
ENTRIES = [json.dumps({"task_id": "tsk_x1", "error": "boom"}).encode(), NOT_UTF8, b"tsk_x3",
           "caf\u00e9 \u2603".encode("utf-8"), b'{"task_id": "tsk_x5",  "spaces": [1,  2]}']


@pytest.fixture
def raw(lab):
    import redis

    client = redis.Redis(host=lab["APEX_REDIS_HOST"], port=int(lab["APEX_REDIS_PORT"]),
                         password=lab["APEX_REDIS_PASSWORD"], decode_responses=False)
    yield client
    client.close()


@pytest.fixture
def keys(raw):
    prefix = unique("apex-ops-exact")
    yield dict(queue_key="%s:tasks:queue" % prefix, dead_letter_key="%s:tasks:dead-letter" % prefix)
    for key in raw.scan_iter(match=prefix + ":*"):
        raw.delete(key)


def fill(raw, key, entries):
    for entry in entries:  # oldest first, as the worker LPUSHes them
        raw.lpush(key, entry)
    return raw.lrange(key, 0, -1)


def test_purge_saves_bytes_and_requeue_from_file_puts_them_back(run_module, raw, keys, tmp_path):
    original = fill(raw, keys["dead_letter_key"], ENTRIES)
    saved = tmp_path / "dl.json"
    res = run_module("apex_queue", state="purge", confirm="purge-dead-letter", save_to=str(saved), **keys)
    assert not res.failed, res
    assert raw.exists(keys["dead_letter_key"]) == 0
    document = json.loads(saved.read_text())
    assert document["format_version"] == 2
    assert [base64.b64decode(b) for b in document["raw_base64"]] == original  # exactly those bytes
    assert document["not_utf8"] == [original.index(NOT_UTF8)]
    assert document["items"][original.index(NOT_UTF8)] == NOT_UTF8.decode("utf-8", "replace")  # the preview

    check = run_module("apex_queue", check_mode=True, state="requeue_from_file", path=str(saved), **keys)
    assert not check.failed and check["changed"] is True and check["requeued_from_file"]["pushed"] == 5
    assert raw.exists(keys["dead_letter_key"]) == 0

    back = run_module("apex_queue", state="requeue_from_file", path=str(saved), **keys)
    assert not back.failed, back
    assert back["requeued_from_file"]["byte_exact"] is True and back["requeued_from_file"]["pushed"] == 5
    assert raw.lrange(keys["dead_letter_key"], 0, -1) == original  # same bytes, same order

    again = run_module("apex_queue", state="requeue_from_file", path=str(saved), **keys)
    assert not again.failed and again["changed"] is False
    assert again["requeued_from_file"]["already_present"] == 5
    assert raw.lrange(keys["dead_letter_key"], 0, -1) == original


def test_requeue_from_file_skips_entries_already_there(run_module, raw, keys, tmp_path):
    original = fill(raw, keys["dead_letter_key"], ENTRIES[:3])
    saved = tmp_path / "dl.json"
    assert not run_module("apex_queue", state="purge", confirm="purge-dead-letter", save_to=str(saved), **keys).failed
    raw.lpush(keys["dead_letter_key"], ENTRIES[0])  # one came back meanwhile (and a new one)
    raw.lpush(keys["dead_letter_key"], b"tsk_new")
    res = run_module("apex_queue", state="requeue_from_file", path=str(saved), **keys)
    assert not res.failed, res
    assert res["requeued_from_file"]["pushed"] == 2 and res["requeued_from_file"]["already_present"] == 1
    assert sorted(raw.lrange(keys["dead_letter_key"], 0, -1)) == sorted(original + [b"tsk_new"])


def test_requeue_from_file_onto_the_queue(run_module, raw, keys, tmp_path):
    fill(raw, keys["dead_letter_key"], [ENTRIES[0], ENTRIES[2]])
    saved = tmp_path / "dl.json"
    assert not run_module("apex_queue", state="purge", confirm="purge-dead-letter", save_to=str(saved), **keys).failed
    res = run_module("apex_queue", state="requeue_from_file", path=str(saved), into="queue", **keys)
    assert not res.failed, res
    assert raw.rpop(keys["queue_key"]) == b"tsk_x1" and raw.rpop(keys["queue_key"]) == b"tsk_x3"  # oldest first
    # an entry without a task: nothing is pushed
    fill(raw, keys["dead_letter_key"], [NOT_UTF8, ENTRIES[2]])
    bad = tmp_path / "bad.json"
    assert not run_module("apex_queue", state="purge", confirm="purge-dead-letter", save_to=str(bad), **keys).failed
    res = run_module("apex_queue", state="requeue_from_file", path=str(bad), into="queue", **keys)
    assert res.failed and "nothing was pushed" in res["msg"]
    assert raw.llen(keys["queue_key"]) == 0


def test_requeue_from_an_old_format_file(run_module, raw, keys, tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"key": keys["dead_letter_key"], "count": 2, "items": [{"task_id": "tsk_1"}, "tsk_2"]}))
    res = run_module("apex_queue", state="requeue_from_file", path=str(old), **keys)
    assert not res.failed and res["requeued_from_file"]["byte_exact"] is False
    assert raw.lrange(keys["dead_letter_key"], 0, -1) == [b'{"task_id":"tsk_1"}', b"tsk_2"]
    lossy = tmp_path / "lossy.json"
    lossy.write_text(json.dumps({"items": ["\ufffd\ufffd{}"]}))
    res = run_module("apex_queue", state="requeue_from_file", path=str(lossy), **keys)
    assert res.failed and "original bytes are lost" in res["msg"]
    assert raw.llen(keys["dead_letter_key"]) == 2


def test_queue_deadletter_playbook_purge_is_byte_exact_and_requeue_from_file(run_playbook, raw, keys, tmp_path):
    original = fill(raw, keys["dead_letter_key"], [NOT_UTF8, ENTRIES[0]])
    base = {"apex_report_dir": str(tmp_path), "queue_deadletter_queue_key": keys["queue_key"],
            "queue_deadletter_dead_letter_key": keys["dead_letter_key"]}
    proc = run_playbook("playbooks/queue_deadletter.yml", extra_vars=dict(
        base, queue_deadletter_action="purge", queue_deadletter_confirm="purge-dead-letter"))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert raw.exists(keys["dead_letter_key"]) == 0
    saved = sorted(tmp_path.glob("dead-letter-*.json"))
    assert len(saved) == 1
    assert [base64.b64decode(b) for b in json.loads(saved[0].read_text())["raw_base64"]] == original
    assert NOT_UTF8 in [base64.b64decode(b) for b in json.loads(saved[0].read_text())["raw_base64"]]

    proc = run_playbook("playbooks/queue_deadletter.yml", extra_vars=dict(
        base, queue_deadletter_action="requeue_from_file", queue_deadletter_file=str(saved[0])))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert raw.lrange(keys["dead_letter_key"], 0, -1) == original
    report = json.loads(sorted(tmp_path.glob("queue_deadletter-*.json"))[-1].read_text())
    assert report["status"] == "ok" and report["requeued_from_file"]["pushed"] == 2
    assert report["after"]["dead_letter"] == 2


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the socket closes: nothing listens there


@pytest.mark.parametrize("action", ["inspect", "purge"])
def test_queue_deadletter_writes_a_failure_report_when_redis_is_down(run_playbook, tmp_path, action):
    proc = run_playbook("playbooks/queue_deadletter.yml", extra_vars={
        "apex_report_dir": str(tmp_path), "apex_redis_port": closed_port(), "queue_deadletter_action": action,
        "queue_deadletter_confirm": "purge-dead-letter"})
    assert proc.returncode != 0
    assert "cannot connect to Redis" in proc.stdout
    files = sorted(tmp_path.glob("queue_deadletter-*.json"))
    assert len(files) == 1, proc.stdout[-3000:]
    report = json.loads(files[0].read_text())
    assert report["status"] == "failed" and report["action"] == action
    assert "cannot connect to Redis" in report["error"] and report["failed_task"].startswith("Dead letters |")
    assert not list(tmp_path.glob("dead-letter-*.json"))  # nothing saved, nothing purged
