# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 transport for backups: a client from S3_ARGSPEC, a bounded-memory multipart writer,
streamed reads, a checked download to a file, and retries that are bounded and explain
themselves. What the objects mean (keys, manifests, retention) is ``backup_catalog`` and
``catalog_store``.

Design notes (see docs/backup.md):

* botocore's own retries are switched off (``max_attempts: 1``) and replaced by
  :func:`retry_call` so that every S3 call has the same, small, known number of attempts
  with exponential backoff and jitter, and a failure says how many attempts were made.
* :class:`MultipartWriter` reads from a file-like object (a pipe from ``pg_dump``) in
  part-size chunks, hashes them (sha256) on the way and keeps at most
  ``concurrency`` parts in flight plus the one being read: memory is bounded by
  ``(concurrency + 1) * part_size`` whatever the size of the stream. On any failure the
  multipart upload is aborted, so no partial object ever appears.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import random
import time

from ansible_collections.apex.ops.plugins.module_utils.apex_module import find_error_of

BOTO3_IMPORT_ERROR = find_error_of("boto3")  # imported where used
REQUIREMENT = ("boto3>=1.34", BOTO3_IMPORT_ERROR)

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB          # S3: every part but the last must be at least 5 MiB
MAX_PARTS = 10000                # S3: at most 10,000 parts per upload

# Error codes worth another attempt (throttling, server-side trouble, timeouts).
RETRYABLE_CODES = frozenset([
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed",
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "500", "502", "503", "504",
])


class S3StoreError(Exception):
    """An S3 operation failed for good (after its bounded retries)."""

    def __init__(self, msg, attempts=None, cause=None):
        super(S3StoreError, self).__init__(msg)
        self.attempts = attempts
        self.cause = cause


class RetryPolicy(object):
    """Bounded attempts with exponential backoff and full jitter."""

    def __init__(self, max_attempts=3, base_delay=0.25, max_delay=4.0, sleep=time.sleep, rand=random.random):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.rand = rand

    def delay(self, attempt):
        """Delay before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return cap * (0.5 + 0.5 * self.rand())


def is_retryable(exc):
    """True for transient errors: connection trouble, timeouts, throttling, 5xx."""
    try:
        from botocore.exceptions import (ClientError, ConnectionError as BotoConnectionError,
                                         HTTPClientError, ReadTimeoutError, ConnectTimeoutError)
    except ImportError:  # pragma: no cover - boto3 is a checked requirement
        return False
    if isinstance(exc, (BotoConnectionError, HTTPClientError, ReadTimeoutError, ConnectTimeoutError)):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return error.get("Code") in RETRYABLE_CODES or status.startswith("5")
    return False


def describe(exc):
    """A short, credential-free description of a botocore error."""
    try:
        from botocore.exceptions import ClientError
    except ImportError:  # pragma: no cover
        ClientError = ()
    if ClientError and isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return "%s: %s" % (error.get("Code", "?"), error.get("Message", ""))
    return "%s: %s" % (type(exc).__name__, exc)


def retry_call(what, func, policy, retryable=is_retryable, *args, **kwargs):
    """Call ``func(*args, **kwargs)``; retry transient errors within ``policy``.

    Raises :class:`S3StoreError` naming ``what`` and the number of attempts made.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - classified below
            if not retryable(exc) or attempt >= policy.max_attempts:
                if retryable(exc):
                    msg = "S3 %s failed after %d attempt(s): %s" % (what, attempt, describe(exc))
                else:
                    msg = "S3 %s failed: %s" % (what, describe(exc))
                raise S3StoreError(msg, attempts=attempt, cause=exc)
            policy.sleep(policy.delay(attempt))


def s3_params(params):
    """The S3 options of a module's params, for logging-free use."""
    keys = ("s3_bucket", "s3_prefix", "endpoint_url", "region", "access_key", "secret_key", "session_token")
    return dict((k, params.get(k)) for k in keys)


def make_client(params, connect_timeout=5.0, read_timeout=60.0, max_pool_connections=10):
    """A boto3 S3 client from S3_ARGSPEC options; botocore retries off (we retry ourselves)."""
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=params.get("region") or "us-east-1",
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": 1, "mode": "standard"},
        max_pool_connections=max_pool_connections,
        s3={"addressing_style": "path"} if params.get("endpoint_url") else None,
    )
    session = boto3.session.Session(
        aws_access_key_id=params.get("access_key") or None,
        aws_secret_access_key=params.get("secret_key") or None,
        aws_session_token=params.get("session_token") or None,
        region_name=params.get("region") or "us-east-1",
    )
    return session.client("s3", endpoint_url=params.get("endpoint_url") or None, config=config)


class Store(object):
    """Small facade over one bucket: every call bounded-retried, errors explained."""

    def __init__(self, client, bucket, policy=None):
        if not bucket:
            raise S3StoreError("no S3 bucket given (option s3_bucket or APEX_S3_BUCKET)")
        self.client = client
        self.bucket = bucket
        self.policy = policy or RetryPolicy()

    def _call(self, what, func, **kwargs):
        return retry_call(what, func, self.policy, is_retryable, **kwargs)

    def check_bucket(self):
        self._call("head_bucket %s" % self.bucket, self.client.head_bucket, Bucket=self.bucket)

    def put_json(self, key, document):
        body = json.dumps(document, indent=2, sort_keys=True).encode("utf-8")
        self._call("put_object %s" % key, self.client.put_object, Bucket=self.bucket, Key=key, Body=body,
                   ContentType="application/json")
        return len(body)

    def get_json(self, key):
        response = self._call("get_object %s" % key, self.client.get_object, Bucket=self.bucket, Key=key)
        return json.loads(response["Body"].read().decode("utf-8"))

    def head(self, key):
        """Object metadata, or None when the key does not exist."""
        try:
            from botocore.exceptions import ClientError
        except ImportError:  # pragma: no cover
            ClientError = Exception
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            return self._call("head_object %s" % key, self.client.head_object, Bucket=self.bucket, Key=key)

    def list_objects(self, prefix):
        """Every object under ``prefix``: dicts with Key, Size, LastModified."""
        objects = []
        token = None
        while True:
            kwargs = dict(Bucket=self.bucket, Prefix=prefix)
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list_objects_v2 %s" % prefix, self.client.list_objects_v2, **kwargs)
            objects.extend(page.get("Contents", []))
            if not page.get("IsTruncated"):
                return objects
            token = page.get("NextContinuationToken")

    def list_multipart_uploads(self, prefix):
        uploads = []
        kwargs = dict(Bucket=self.bucket, Prefix=prefix)
        while True:
            page = self._call("list_multipart_uploads %s" % prefix, self.client.list_multipart_uploads, **kwargs)
            uploads.extend(page.get("Uploads", []))
            if not page.get("IsTruncated"):
                return uploads
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker")

    def abort_upload(self, key, upload_id):
        self._call("abort_multipart_upload %s" % key, self.client.abort_multipart_upload,
                   Bucket=self.bucket, Key=key, UploadId=upload_id)

    def delete(self, keys):
        """Delete keys (in batches of 1000); returns the keys deleted."""
        keys = list(keys)
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            response = self._call("delete_objects", self.client.delete_objects, Bucket=self.bucket,
                                  Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errors = response.get("Errors") or []
            if errors:
                raise S3StoreError("S3 delete_objects failed for %d key(s): %s" % (
                    len(errors), ", ".join("%s (%s)" % (e.get("Key"), e.get("Code")) for e in errors[:5])))
        return keys

    def iter_object(self, key, chunk_size=MIB):
        """Yield the bytes of an object in chunks (streamed, never held whole)."""
        response = self._call("get_object %s" % key, self.client.get_object, Bucket=self.bucket, Key=key)
        body = response["Body"]
        try:
            for chunk in body.iter_chunks(chunk_size):
                if chunk:
                    yield chunk
        except Exception as exc:  # noqa: BLE001
            raise S3StoreError("S3 read of %s failed mid-stream: %s" % (key, describe(exc)), cause=exc)
        finally:
            body.close()

    def writer(self, key, part_size=16 * MIB, concurrency=2, metadata=None, content_type="application/octet-stream"):
        return MultipartWriter(self, key, part_size=part_size, concurrency=concurrency, metadata=metadata,
                               content_type=content_type)


def read_full(stream, size):
    """Read up to ``size`` bytes; short only at EOF (pipes may return less per read)."""
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


class MultipartWriter(object):
    """Stream a file-like object into one S3 multipart upload, bounded memory, sha256 on the way.

    ``upload_stream(stream)`` returns ``{"size", "sha256", "parts", "etag"}``; any failure aborts the
    upload (no partial object) and raises. ``abort()`` may be called from a signal path.
    """

    def __init__(self, store, key, part_size=16 * MIB, concurrency=2, metadata=None,
                 content_type="application/octet-stream"):
        if part_size < MIN_PART_SIZE:
            raise ValueError("part size must be at least 5 MiB (S3 rule), got %d bytes" % part_size)
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.store = store
        self.key = key
        self.part_size = part_size
        self.concurrency = concurrency
        self.metadata = metadata or {}
        self.content_type = content_type
        self.upload_id = None
        self.completed = False
        self.aborted = False
        self.peak_buffered = 0
        self.abort_error = None

    def start(self):
        store = self.store
        response = store._call("create_multipart_upload %s" % self.key, store.client.create_multipart_upload,
                               Bucket=store.bucket, Key=self.key, ContentType=self.content_type,
                               Metadata=dict((k, str(v)) for k, v in self.metadata.items()))
        self.upload_id = response["UploadId"]
        return self.upload_id

    def _upload_part(self, number, data):
        store = self.store
        response = store._call("upload_part %d of %s" % (number, self.key), store.client.upload_part,
                               Bucket=store.bucket, Key=self.key, UploadId=self.upload_id,
                               PartNumber=number, Body=data)
        return {"PartNumber": number, "ETag": response["ETag"]}

    def upload_stream(self, stream, on_part=None, before_complete=None):
        """Read ``stream`` to EOF in part-size chunks and upload them; complete the upload.

        ``before_complete()`` runs after EOF and after every part is stored, before the upload is
        completed: raising there (the producer failed) aborts the upload instead.
        """
        from concurrent.futures import ThreadPoolExecutor

        if self.upload_id is None:
            self.start()
        digest = hashlib.sha256()
        size = 0
        parts = []
        in_flight = []
        number = 0
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="s3-part")
        try:
            while True:
                data = read_full(stream, self.part_size)
                if not data and number > 0:
                    break
                number += 1
                if number > MAX_PARTS:
                    raise S3StoreError("stream exceeds %d parts of %d bytes: raise part_size" % (MAX_PARTS, self.part_size))
                digest.update(data)
                size += len(data)
                # bounded memory: wait for the oldest part before queueing beyond `concurrency`
                while len(in_flight) >= self.concurrency:
                    parts.append(in_flight.pop(0).result())
                in_flight.append(pool.submit(self._upload_part, number, data))
                self.peak_buffered = max(self.peak_buffered, (len(in_flight) + 1) * self.part_size)
                data = None
                if on_part is not None:
                    on_part(number, size)
                if size == 0:
                    break  # empty stream: one empty part completes a zero-byte object
            while in_flight:
                parts.append(in_flight.pop(0).result())
            if before_complete is not None:
                before_complete()
            store = self.store
            response = store._call("complete_multipart_upload %s" % self.key, store.client.complete_multipart_upload,
                                   Bucket=store.bucket, Key=self.key, UploadId=self.upload_id,
                                   MultipartUpload={"Parts": sorted(parts, key=lambda p: p["PartNumber"])})
            self.completed = True
            return {"size": size, "sha256": digest.hexdigest(), "parts": len(parts),
                    "etag": response.get("ETag", "").strip('"')}
        except BaseException:
            from concurrent.futures import wait as wait_futures

            for future in in_flight:
                future.cancel()
            # let parts already on the wire finish first, or they could outlive the abort
            if in_flight:
                wait_futures(in_flight, timeout=30)
            try:
                self.abort()
            except S3StoreError as abort_exc:
                self.abort_error = str(abort_exc)
            raise
        finally:
            pool.shutdown(wait=False)

    def abort(self):
        """Abort the upload (idempotent); returns True when an abort was sent."""
        if self.upload_id is None or self.completed or self.aborted:
            return False
        self.aborted = True
        try:
            self.store.abort_upload(self.key, self.upload_id)
        except S3StoreError:
            # reported by the caller through `aborted`; a lifecycle rule / prune cleans it later
            self.aborted = False
            raise
        return True


# ---------------------------------------------------------------------------- files

def download_to_file(store, key, dest, expected_size=None, expected_sha256=None, mode=0o600):
    """Download an object to ``dest`` through a temp file in the same directory; check size and
    sha256 before the atomic rename, so ``dest`` is never a partial or corrupt file."""
    import os
    import tempfile

    directory = os.path.dirname(os.path.abspath(dest)) or "."
    handle, tmp = tempfile.mkstemp(prefix=".apex-fetch-", dir=directory)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(handle, "wb") as out:
            for chunk in store.iter_object(key):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if expected_size is not None and size != expected_size:
            raise S3StoreError("downloaded %s: %d bytes, manifest says %d; %s left untouched"
                               % (key, size, expected_size, dest))
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
            raise S3StoreError("downloaded %s: sha256 differs from the manifest; %s left untouched" % (key, dest))
        os.chmod(tmp, mode)
        os.rename(tmp, dest)
        tmp = None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    return {"dest": dest, "size": size, "sha256": digest.hexdigest()}
