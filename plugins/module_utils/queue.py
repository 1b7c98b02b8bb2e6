# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Apex task queue in Redis: facts, requeue of dead letters, purge of the dead-letter list.

Conventions of the Apex API and worker (as the lab twin implements them): producers ``LPUSH``
a task id onto ``apex:tasks:queue`` and workers pop from the right into a per-worker
``apex:tasks:processing:<worker>`` list; failed tasks go to ``apex:tasks:dead-letter``. A
dead letter is either the bare task id or a JSON object carrying it (``task_id``); requeue
pushes back exactly what the worker expects to pop: the task id.

A purge saves the dead letters byte-exact (``raw_base64``, format version 2; ``items`` is a
readable preview) and ``requeue_from_file`` puts them back from such a file, skipping entries
already present (byte-equal), so running it twice adds nothing.

Changes use WATCH/MULTI/EXEC: the dead-letter list is read, the change is prepared, and the
transaction is applied only if nobody touched the list meanwhile (retried otherwise). So a
requeue is atomic (an item is either still dead-lettered or back in the queue, never both or
neither) and a purge deletes exactly the items it saved.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import collections
import json
import os
import re
import tempfile
import time

TASK_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
PURGE_CONFIRMATION = "purge-dead-letter"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2,
               "mib": 1024 ** 2, "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3,
               "t": 1024 ** 4, "tb": 1024 ** 4, "tib": 1024 ** 4}


class QueueError(Exception):
    def __init__(self, msg, last_state=None):
        super(QueueError, self).__init__(msg)
        self.last_state = last_state


def parse_size(value, name="size"):
    """``4GB``/``512mb``/``1024`` -> bytes (binary units, as Redis ``maxmemory`` uses)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("%s: %r is not a size" % (name, value))
    if isinstance(value, (int, float)):
        return int(value)
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError("%s: cannot parse %r; use e.g. 4GB, 512MB or bytes" % (name, value))
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])


def decode_item(raw):
    """A list item as something readable: the JSON value when it parses, else the text."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        return json.loads(text)
    except ValueError:
        return text


def task_payload(raw, payload_field="task_id"):
    """What to push back onto the queue for one dead letter; ``None`` when it carries no task.

    JSON objects yield their ``payload_field`` (the task id); a bare id (or a JSON string)
    is pushed as it is. With ``payload_field`` empty the dead letter is pushed unchanged.
    """
    if not payload_field:
        return raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
    value = decode_item(raw)
    if isinstance(value, dict):
        value = value.get(payload_field)
        if isinstance(value, (dict, list)):
            return json.dumps(value, sort_keys=True).encode("utf-8")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        value = str(value)
    if isinstance(value, str) and TASK_ID_RE.match(value):
        return value.encode("utf-8")
    return None


def ping_latency(client, samples=10, clock=time.perf_counter):
    """``PING`` round trips in ms: ``{samples, min_ms, avg_ms, max_ms}`` (``redis-cli --latency``)."""
    times = []
    for dummy in range(max(1, int(samples))):
        start = clock()
        client.ping()
        times.append((clock() - start) * 1000.0)
    return dict(samples=len(times), min_ms=round(min(times), 3), avg_ms=round(sum(times) / len(times), 3),
                max_ms=round(max(times), 3))


def facts(client, queue_key, dead_letter_key, processing_pattern, sample_size=10, memory_limit=None):
    """Depths, processing lists, a dead-letter sample, Redis memory and clients."""
    processing = {}
    for key in client.scan_iter(match=processing_pattern, count=500):
        processing[key.decode("utf-8", "replace") if isinstance(key, bytes) else key] = None
    pipe = client.pipeline(transaction=False)
    pipe.llen(queue_key).llen(dead_letter_key)
    pipe.lrange(dead_letter_key, 0, max(int(sample_size), 0) - 1) if sample_size > 0 else pipe.echo("")
    pipe.info("memory").info("clients")
    names = sorted(processing)
    for name in names:
        pipe.llen(name)
    out = pipe.execute()
    depth, dead, sample, mem, clients = out[:5]
    for name, length in zip(names, out[5:]):
        processing[name] = length
    used = int(mem.get("used_memory", 0))
    maxmemory = int(mem.get("maxmemory", 0) or 0)
    limit = maxmemory or memory_limit or None
    return dict(
        queue=dict(key=queue_key, depth=depth),
        dead_letter=dict(key=dead_letter_key, depth=dead,
                         sample=[decode_item(i) for i in (sample if sample_size > 0 else [])]),
        processing=dict(pattern=processing_pattern, lists=len(names), total=sum(processing.values()),
                        by_key=processing),
        memory=dict(used_bytes=used, used_human=mem.get("used_memory_human"),
                    peak_bytes=int(mem.get("used_memory_peak", 0)), maxmemory_bytes=maxmemory,
                    limit_bytes=limit, maxmemory_policy=mem.get("maxmemory_policy"),
                    percent=(round(100.0 * used / limit, 1) if limit else None)),
        clients=dict(connected=int(clients.get("connected_clients", 0)),
                     blocked=int(clients.get("blocked_clients", 0))),
    )


def _watch_loop(client, key, attempt, retries=20):
    """Run ``attempt(pipe)`` under WATCH ``key`` until EXEC succeeds (optimistic locking)."""
    from redis.exceptions import WatchError

    last = None
    for _attempt in range(retries):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                return attempt(pipe)
            except WatchError as exc:
                last = exc
                continue
    raise QueueError("the dead-letter list kept changing; gave up after %d attempts" % retries,
                     last_state=dict(error=str(last)))


def requeue(client, queue_key, dead_letter_key, count, check_mode, payload_field="task_id", position="back"):
    """Move up to ``count`` (0 = all) oldest dead letters back onto the queue, atomically."""

    def attempt(pipe):
        total = pipe.llen(dead_letter_key)
        take = total if not count else min(int(count), total)
        raw = pipe.lrange(dead_letter_key, total - take, total - 1) if take else []
        oldest_first = list(reversed(raw))  # dead letters are LPUSHed: the oldest is at the tail
        payloads, bad = [], []
        for index, item in enumerate(oldest_first):
            payload = task_payload(item, payload_field)
            if payload is None:
                bad.append(dict(index=total - 1 - index, item=decode_item(item)))
            payloads.append(payload)
        if bad:
            raise QueueError("%d dead letter(s) carry no task to requeue (no %r field and not a task id); "
                             "nothing was moved" % (len(bad), payload_field), last_state=dict(invalid=bad[:20]))
        items = [dict(dead_letter=decode_item(r), requeued=p.decode("utf-8", "replace"))
                 for r, p in zip(oldest_first, payloads)]
        if check_mode or not take:
            pipe.reset()
            return dict(moved=take, items=items, dead_letter_before=total, dead_letter_after=total - take,
                        queue_after=None)
        pipe.multi()
        if take == total:
            pipe.delete(dead_letter_key)
        else:
            pipe.ltrim(dead_letter_key, 0, total - take - 1)
        if position == "front":
            pipe.rpush(queue_key, *payloads)   # workers pop from the right: next in line
        else:
            pipe.lpush(queue_key, *payloads)   # like a new submission
        pipe.llen(queue_key).llen(dead_letter_key)
        res = pipe.execute()
        return dict(moved=take, items=items, dead_letter_before=total, dead_letter_after=res[-1],
                    queue_after=res[-2])

    return _watch_loop(client, dead_letter_key, attempt)


def _write_json(path, document):
    path = os.path.abspath(os.path.expanduser(path))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".apex-dead-letter.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


SAVE_FORMAT = "apex.ops/dead-letter-save"
SAVE_FORMAT_VERSION = 2


def save_document(dead_letter_key, raw_items, now=None):
    """The save file of a purge: exact bytes (``raw_base64``) and a readable preview (``items``), same order.

    The order is the list's (``LRANGE 0 -1``): newest first, as dead letters are LPUSHed.
    ``not_utf8`` lists the indexes whose preview is lossy (U+FFFD for undecodable bytes).
    """
    raw_items = [r if isinstance(r, bytes) else str(r).encode("utf-8") for r in raw_items]
    not_utf8 = []
    for index, raw in enumerate(raw_items):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            not_utf8.append(index)
    return dict(format=SAVE_FORMAT, format_version=SAVE_FORMAT_VERSION, key=dead_letter_key, saved_at=now,
                count=len(raw_items), order="as stored: newest first (LRANGE 0 -1)",
                raw_base64=[base64.b64encode(r).decode("ascii") for r in raw_items],
                items=[decode_item(r) for r in raw_items], not_utf8=not_utf8)


def load_save_file(path):
    """The entries (bytes, in file order) of a dead-letter save file, and whether they are byte-exact.

    Version 2 files carry ``raw_base64``: exact. Files written before (only ``items``, decoded) are
    read back as the text of each item (a JSON object re-serialised compactly): not byte-exact,
    and an item holding U+FFFD (bytes that were not UTF-8) is refused: its original is lost.
    """
    path = os.path.abspath(os.path.expanduser(path))
    try:
        with open(path, "rb") as handle:
            document = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise QueueError("cannot read the dead-letter save file %s: %s" % (path, exc))
    if not isinstance(document, dict) or not isinstance(document.get("items", document.get("raw_base64")), list):
        raise QueueError("%s is not a dead-letter save file (no items)" % path)
    if "raw_base64" in document:
        try:
            entries = [base64.b64decode(item.encode("ascii"), validate=True) for item in document["raw_base64"]]
        except (ValueError, TypeError, AttributeError) as exc:
            raise QueueError("%s: raw_base64 holds something that is not base64: %s" % (path, exc))
        if document.get("count") is not None and document["count"] != len(entries):
            raise QueueError("%s: count says %s entries, raw_base64 holds %d; the file is damaged"
                             % (path, document["count"], len(entries)))
        return dict(entries=entries, byte_exact=True, key=document.get("key"), path=path,
                    format_version=document.get("format_version"))
    entries, lossy = [], []
    for index, item in enumerate(document["items"]):
        text = item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))
        if u"\ufffd" in text:
            lossy.append(index)
        entries.append(text.encode("utf-8"))
    if lossy:
        raise QueueError("%s was written before saves were byte-exact and item(s) %s were not UTF-8: their "
                         "original bytes are lost; nothing was pushed" % (path, lossy), last_state=dict(lossy=lossy))
    return dict(entries=entries, byte_exact=False, key=document.get("key"), path=path, format_version=1)


def requeue_from_file(client, path, target_key, check_mode, as_tasks=False, payload_field="task_id",
                      position="back"):
    """Push the entries of a dead-letter save file back onto ``target_key``; entries already there are skipped.

    Into the dead-letter list (``as_tasks`` false) each entry goes back exactly as saved (its bytes),
    appended on the oldest side (``RPUSH`` in file order), so the list reads as it did before the
    purge. Onto the task queue (``as_tasks``) each entry becomes the task id it carries, as
    ``requeue`` does (oldest first; ``position`` as there); an entry without a task fails the whole
    call and nothing is pushed. Idempotent: an entry whose bytes are already in ``target_key`` (as many
    times as the file holds it) is skipped and reported, so a second run pushes nothing.
    """
    loaded = load_save_file(path)
    entries = loaded["entries"]
    if as_tasks:
        payloads, bad = [], []
        for index, raw in enumerate(entries):
            payload = task_payload(raw, payload_field)
            if payload is None:
                bad.append(dict(index=index, item=decode_item(raw)))
            payloads.append(payload)
        if bad:
            raise QueueError("%d saved dead letter(s) carry no task to requeue (no %r field and not a task id); "
                             "nothing was pushed" % (len(bad), payload_field), last_state=dict(invalid=bad[:20]))
        values = list(reversed(payloads))  # the file is newest first: queue the oldest first
    else:
        values = list(reversed(entries))   # RPUSH the oldest last: the list reads as it did

    def attempt(pipe):
        present = collections.Counter(pipe.lrange(target_key, 0, -1))
        push, skipped = [], 0
        for value in values:
            if present[value] > 0:
                present[value] -= 1
                skipped += 1
            else:
                push.append(value)
        result = dict(path=loaded["path"], byte_exact=loaded["byte_exact"], source_key=loaded["key"],
                      target_key=target_key, entries=len(entries), pushed=len(push), already_present=skipped,
                      items=[decode_item(v) for v in push][:50])
        if check_mode or not push:
            pipe.reset()
            result["target_after"] = None if check_mode else client.llen(target_key)
            return result
        pipe.multi()
        if not as_tasks:
            pipe.rpush(target_key, *reversed(push))
        elif position == "front":
            pipe.rpush(target_key, *push)
        else:
            pipe.lpush(target_key, *push)
        pipe.llen(target_key)
        result["target_after"] = pipe.execute()[-1]
        return result

    return _watch_loop(client, target_key, attempt)


def purge(client, dead_letter_key, confirm, check_mode, save_to=None, now=None):
    """Delete the dead-letter list after saving it (optional). Needs ``confirm == 'purge-dead-letter'``."""
    if confirm != PURGE_CONFIRMATION:
        raise QueueError("refusing to purge %s: set confirm=%s to delete every dead letter"
                         % (dead_letter_key, PURGE_CONFIRMATION),
                         last_state=dict(dead_letter_depth=client.llen(dead_letter_key)))

    written = []  # a retried attempt (the list changed under WATCH) may overwrite its own save file

    def attempt(pipe):
        raw = pipe.lrange(dead_letter_key, 0, -1)
        result = dict(purged=len(raw), saved_to=None, dead_letter_before=len(raw))
        if save_to and raw and not written and os.path.exists(os.path.expanduser(save_to)):
            pipe.reset()
            raise QueueError("refusing to purge %s: save_to %s already exists (it may hold dead letters saved "
                             "earlier); choose a new file; nothing was purged" % (dead_letter_key, save_to),
                             last_state=dict(dead_letter_depth=len(raw)))
        if check_mode or not raw:
            pipe.reset()
            result["dead_letter_after"] = 0 if check_mode else len(raw)
            if check_mode:
                result["would_save_to"] = save_to
            return result
        if save_to:
            result["saved_to"] = _write_json(save_to, save_document(dead_letter_key, raw, now))
            written.append(result["saved_to"])
        pipe.multi()
        pipe.delete(dead_letter_key)
        pipe.llen(dead_letter_key)
        result["dead_letter_after"] = pipe.execute()[-1]
        return result

    return _watch_loop(client, dead_letter_key, attempt)
