"""s3_store: retries, the bounded-memory multipart writer and abort-on-failure (moto in-process)."""
import hashlib
import io
import os

import pytest

from ansible_collections.apex.ops.plugins.module_utils import catalog_store, s3_store
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow

moto = pytest.importorskip("moto")
MIB = s3_store.MIB


@pytest.fixture()
def store(monkeypatch):
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto.mock_aws():
        client = s3_store.make_client({"region": "us-east-1"})
        client.create_bucket(Bucket="unit-bucket")
        yield s3_store.Store(client, "unit-bucket", s3_store.RetryPolicy(max_attempts=3, sleep=lambda s: None))


class CountingStream(io.RawIOBase):
    """A pipe-like stream: returns at most `chunk` bytes per read, tracks what was handed out."""

    def __init__(self, total, chunk=65536, fail_after=None):
        self.total = total
        self.chunk = chunk
        self.pos = 0
        self.fail_after = fail_after

    def read(self, size=-1):
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise IOError("producer died")
        n = min(self.chunk, self.total - self.pos, size if size and size > 0 else self.chunk)
        if n <= 0:
            return b""
        data = bytes((self.pos + i) % 251 for i in range(0, n, 4096)) * 4096
        data = data[:n]
        self.pos += n
        return data


def expected_sha(total, chunk=65536):
    stream = CountingStream(total, chunk)
    digest = hashlib.sha256()
    while True:
        data = stream.read(chunk)
        if not data:
            return digest.hexdigest()
        digest.update(data)


def test_retry_policy_bounded_with_backoff():
    delays = []
    policy = s3_store.RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=1.5, sleep=delays.append, rand=lambda: 1.0)
    calls = []

    def flaky():
        calls.append(1)
        raise RuntimeError("transient")

    with pytest.raises(s3_store.S3StoreError) as err:
        s3_store.retry_call("op", flaky, policy, retryable=lambda e: True)
    assert len(calls) == 4 and err.value.attempts == 4
    assert delays == [0.5, 1.0, 1.5]  # exponential, capped
    assert "after 4 attempt(s)" in str(err.value)


def test_retry_stops_on_permanent_error():
    calls = []

    def broken():
        calls.append(1)
        raise ValueError("permanent")

    with pytest.raises(s3_store.S3StoreError) as err:
        s3_store.retry_call("op", broken, s3_store.RetryPolicy(5, sleep=lambda s: None))
    assert len(calls) == 1 and "attempt" not in str(err.value)


def test_retry_then_success():
    outcomes = [RuntimeError("x"), RuntimeError("y"), "ok"]

    def sometimes():
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    assert s3_store.retry_call("op", sometimes, s3_store.RetryPolicy(3, sleep=lambda s: None),
                               retryable=lambda e: True) == "ok"


def test_is_retryable_classification():
    from botocore.exceptions import ClientError, EndpointConnectionError

    assert s3_store.is_retryable(EndpointConnectionError(endpoint_url="http://x"))
    assert s3_store.is_retryable(ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "x"))
    assert not s3_store.is_retryable(ClientError({"Error": {"Code": "AccessDenied"},
                                                  "ResponseMetadata": {"HTTPStatusCode": 403}}, "x"))
    assert not s3_store.is_retryable(ValueError())


def test_multipart_streams_in_parts_with_sha256(store):
    total = 12 * MIB + 12345
    writer = store.writer("k/obj", part_size=5 * MIB, concurrency=2)
    result = writer.upload_stream(CountingStream(total))
    assert result["size"] == total and result["parts"] == 3
    assert result["sha256"] == expected_sha(total)
    body = store.client.get_object(Bucket="unit-bucket", Key="k/obj")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result["sha256"]
    # bounded: never more than (concurrency + 1) parts buffered
    assert writer.peak_buffered <= 3 * 5 * MIB
    assert store.list_multipart_uploads("k/") == []


def test_empty_stream_makes_empty_object(store):
    result = store.writer("k/empty", part_size=5 * MIB).upload_stream(io.BytesIO(b""))
    assert result["size"] == 0 and result["sha256"] == hashlib.sha256(b"").hexdigest()


def test_producer_failure_aborts_upload(store):
    writer = store.writer("k/broken", part_size=5 * MIB)
    with pytest.raises(IOError):
        writer.upload_stream(CountingStream(20 * MIB, fail_after=11 * MIB))
    assert writer.aborted
    assert store.list_multipart_uploads("k/") == []
    assert store.list_objects("k/") == []


def test_before_complete_can_veto(store):
    writer = store.writer("k/vetoed", part_size=5 * MIB)

    def veto():
        raise RuntimeError("pg_dump exited with status 1")

    with pytest.raises(RuntimeError):
        writer.upload_stream(CountingStream(6 * MIB), before_complete=veto)
    assert store.list_multipart_uploads("k/") == [] and store.list_objects("k/") == []


def test_part_upload_failure_aborts(store, monkeypatch):
    from botocore.exceptions import ClientError

    original = store.client.upload_part
    calls = []

    def failing_upload_part(**kwargs):
        calls.append(kwargs["PartNumber"])
        if kwargs["PartNumber"] == 2:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"},
                               "ResponseMetadata": {"HTTPStatusCode": 500}}, "UploadPart")
        return original(**kwargs)

    monkeypatch.setattr(store.client, "upload_part", failing_upload_part)
    writer = store.writer("k/partfail", part_size=5 * MIB, concurrency=1)
    with pytest.raises(s3_store.S3StoreError) as err:
        writer.upload_stream(CountingStream(16 * MIB))
    assert "upload_part 2" in str(err.value) and "after 3 attempt(s)" in str(err.value)
    assert calls.count(2) == 3
    assert store.list_multipart_uploads("k/") == [] and store.list_objects("k/") == []


def test_part_size_rules(store):
    with pytest.raises(ValueError):
        store.writer("k/x", part_size=MIB)
    with pytest.raises(ValueError):
        store.writer("k/x", part_size=5 * MIB, concurrency=0)


def test_json_list_delete_roundtrip(store):
    store.put_json("p/a.json", {"x": 1})
    store.put_json("p/b.json", {"y": 2})
    assert store.get_json("p/a.json") == {"x": 1}
    assert sorted(o["Key"] for o in store.list_objects("p/")) == ["p/a.json", "p/b.json"]
    assert store.head("p/missing") is None
    store.delete(["p/a.json", "p/b.json"])
    assert store.list_objects("p/") == []


def test_iter_object_and_download(store, tmp_path):
    payload = os.urandom(3 * MIB + 7)
    store.client.put_object(Bucket="unit-bucket", Key="d/x", Body=payload)
    assert b"".join(store.iter_object("d/x", chunk_size=MIB)) == payload
    dest = tmp_path / "out.bin"
    info = s3_store.download_to_file(store, "d/x", str(dest), len(payload), hashlib.sha256(payload).hexdigest())
    assert dest.read_bytes() == payload and info["size"] == len(payload)
    assert oct(dest.stat().st_mode & 0o777) == "0o600"


def test_download_checksum_mismatch_leaves_dest_alone(store, tmp_path):
    store.client.put_object(Bucket="unit-bucket", Key="d/y", Body=b"corrupt")
    dest = tmp_path / "dump.rdb"
    dest.write_bytes(b"original")
    with pytest.raises(s3_store.S3StoreError):
        s3_store.download_to_file(store, "d/y", str(dest), 7, "0" * 64)
    assert dest.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["dump.rdb"]


def test_store_needs_bucket():
    with pytest.raises(s3_store.S3StoreError):
        s3_store.Store(object(), None)


# ------------------------------------------------------------------ catalog I/O and prune (moto)

def _put_backup(store, hours_ago, token, verified=False, now=None):
    import datetime

    from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as cat

    now = now or utcnow()
    moment = now - datetime.timedelta(hours=hours_ago)
    backup_id = cat.new_backup_id(moment, token)
    keys = cat.backup_keys("apex", "postgres", "apex", backup_id)
    body = b"PGDMP-" + token.encode()
    store.client.put_object(Bucket="unit-bucket", Key=keys["data"], Body=body)
    manifest = cat.build_manifest("postgres", "apex", backup_id, keys,
                                  {"size": len(body), "sha256": hashlib.sha256(body).hexdigest(), "parts": 1},
                                  moment, moment, row_counts={})
    store.put_json(keys["manifest"], manifest)
    if verified:
        store.put_json(keys["verify"], cat.build_verify_record(backup_id, "checksum", {"checksum": {"ok": True}}, now))
    return backup_id, keys


def test_load_catalog_and_prune(store):
    from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as cat

    now = utcnow()
    ids = [_put_backup(store, h, "%08x" % h, verified=(h == 30), now=now)[0] for h in (1, 10, 20, 30, 40)]
    orphan_key = cat.backup_keys("apex", "postgres", "apex", cat.new_backup_id(now, "0000beef"))["data"]
    store.client.put_object(Bucket="unit-bucket", Key=orphan_key, Body=b"partial")
    entries, orphans, manifests, records = catalog_store.load_catalog(store, "apex", "postgres", "apex", now)
    assert [e["backup_id"] for e in entries] == ids
    assert [o["key"] for o in orphans] == [orphan_key] and list(records) == [ids[3]]

    plan = catalog_store.prune(store, "apex", "postgres", "apex", keep_last=2, grace_seconds=3600, check_mode=True,
                               now=now)
    assert sorted(d["backup_id"] for d in plan["deleted"]) == sorted([ids[2], ids[4]])  # ids[3]: newest verified
    assert plan["orphans_removed"] == [] and plan["changed"]
    assert len(store.list_objects("apex/")) == 5 * 2 + 1 + 1  # check mode deleted nothing

    upload_id = store.client.create_multipart_upload(Bucket="unit-bucket", Key=orphan_key + ".x")["UploadId"]
    done = catalog_store.prune(store, "apex", "postgres", "apex", keep_last=2, grace_seconds=-1, now=now)
    assert sorted(d["backup_id"] for d in done["deleted"]) == sorted([ids[2], ids[4]])
    assert done["orphans_removed"] == [orphan_key] and upload_id in done["uploads_aborted"][0]
    left, orphans, _m, _r = catalog_store.load_catalog(store, "apex", "postgres", "apex", now)
    assert [e["backup_id"] for e in left] == [ids[0], ids[1], ids[3]] and orphans == []
    assert store.list_multipart_uploads("apex/") == []
    assert catalog_store.prune(store, "apex", "postgres", "apex", keep_last=2, now=now)["changed"] is False
