# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Apex task queue in Redis: facts, requeue of dead letters, purge of the dead-letter list.

Conventions of the Apex API and worker (as the lab twin implements them): producers ``LPUSH``
a task id onto ``apex:tasks:queue`` and workers pop from the right into a per-worker
``apex:tasks:processing:<worker>`` list; failed tasks go to ``apex:tasks:dead-letter``. A
dead letter is either the bare task id or a JSON object carrying it (``task_id``); requeue
pushes back exactly what the worker expects to pop: the task id.

Changes use WATCH/MULTI/EXEC: the dead-letter list is read, the change is prepared, and the
transaction is applied only if nobody touched the list meanwhile (retried otherwise). So a
requeue is atomic (an item is either still dead-lettered or back in the queue, never both or
neither) and a purge deletes exactly the items it saved.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import tempfile

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
            result["saved_to"] = _write_json(save_to, dict(
                key=dead_letter_key, saved_at=now, count=len(raw),
                items=[decode_item(r) for r in raw]))
            written.append(result["saved_to"])
        pipe.multi()
        pipe.delete(dead_letter_key)
        pipe.llen(dead_letter_key)
        result["dead_letter_after"] = pipe.execute()[-1]
        return result

    return _watch_loop(client, dead_letter_key, attempt)
