#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: apex_queue
short_description: Inspect the Apex task queue and manage its dead letters in Redis
version_added: "0.1.0"
description:
  - V(facts) reports the depth of the task queue and the dead-letter list, the in-flight
    C(processing) lists, a sample of dead letters (decoded from JSON when possible), Redis memory
    and connected clients.
  - V(requeue) moves dead letters back onto the task queue in one Redis transaction
    (C(WATCH)/C(MULTI)/C(EXEC)), pushing the task id the worker expects.
  - V(purge) deletes the dead-letter list, only with O(confirm=purge-dead-letter), optionally
    saving every item to a JSON file first. The file holds the exact bytes of every dead letter
    (base64, C(raw_base64)) and a readable preview (C(items)).
  - V(requeue_from_file) puts the dead letters of such a save file (O(path)) back, byte-exact, into the
    dead-letter list (O(into=dead_letter)) or, as task ids, onto the task queue (O(into=queue)). Entries
    already present in the target list are skipped, so running it twice pushes nothing twice.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.redis
options:
  state:
    description:
      - What to do. V(facts) changes nothing.
    type: str
    choices: [facts, requeue, purge, requeue_from_file]
    default: facts
  queue_key:
    description: The task queue list.
    type: str
    default: "apex:tasks:queue"
  dead_letter_key:
    description: The dead-letter list.
    type: str
    default: "apex:tasks:dead-letter"
  processing_pattern:
    description: C(SCAN) pattern of the per-worker in-flight lists.
    type: str
    default: "apex:tasks:processing:*"
  sample_size:
    description: How many dead letters to return in the facts (from the newest). V(0) returns none.
    type: int
    default: 10
  latency_samples:
    description:
      - For O(state=facts), time this many C(PING) round trips to Redis (the runbook's C(redis-cli --latency)) and
        return RV(latency). V(0) measures nothing.
    type: int
    default: 0
  memory_limit:
    description:
      - Memory available to Redis (e.g. V(4GB), the pod limit), used for the memory percent when
        Redis has no C(maxmemory). Ignored when C(maxmemory) is set.
    type: str
  count:
    description:
      - With O(state=requeue), how many dead letters to requeue, oldest first. V(0) requeues all.
    type: int
    default: 0
  payload_field:
    description:
      - Field of a JSON dead letter that holds what the worker pops (the task id). A dead letter that is
        a bare task id is requeued as it is. An empty value requeues dead letters unchanged.
      - If any selected dead letter carries no task, the module fails and moves nothing.
    type: str
    default: task_id
  position:
    description:
      - Where requeued tasks go. V(back) queues them like new submissions (C(LPUSH));
        V(front) makes them the next tasks a worker takes (C(RPUSH)).
    type: str
    choices: [back, front]
    default: back
  confirm:
    description:
      - Must be exactly V(purge-dead-letter) for O(state=purge); anything else is refused and nothing changes.
    type: str
  save_to:
    description:
      - With O(state=purge), write every dead letter to this JSON file (mode 0600) before deleting them.
      - The file must not exist yet (it may hold dead letters saved earlier); an existing file is refused
        and nothing is purged.
      - "Format (version 2): a JSON document with C(raw_base64) (the exact bytes of every dead letter, base64,
        in list order: newest first), C(items) (the same entries decoded for reading: JSON when they parse, else
        UTF-8 text with U+FFFD for bytes that are not UTF-8), C(not_utf8) (indexes whose preview is lossy),
        C(key), C(count), C(saved_at)."
    type: path
  path:
    description:
      - With O(state=requeue_from_file), the save file written by a purge (O(save_to)).
      - Files written before saves were byte-exact (no C(raw_base64)) are read from C(items) (JSON objects
        re-serialised, not byte-exact); an item that held bytes that were not UTF-8 is refused.
    type: path
  into:
    description:
      - With O(state=requeue_from_file), where the saved entries go.
      - V(dead_letter) puts them back into O(dead_letter_key) exactly as they were (their bytes), on the oldest
        side of the list, so it reads as before the purge. Requeue them afterwards with O(state=requeue).
      - V(queue) pushes the task id each one carries (see O(payload_field)) onto O(queue_key), oldest first,
        at O(position); an entry without a task fails the call and nothing is pushed.
      - Either way an entry whose bytes are already in the target list is skipped (counted in C(already_present)).
    type: str
    choices: [dead_letter, queue]
    default: dead_letter
notes:
  - Check mode is supported; it reports what would be requeued or purged.
"""

EXAMPLES = r"""
- name: Queue facts
  apex.ops.apex_queue:
    sample_size: 5
    memory_limit: 4GB
  register: queue

- name: Requeue the 50 oldest dead letters
  apex.ops.apex_queue:
    state: requeue
    count: 50

- name: Put the dead letters of a purge back into the dead-letter list, byte-exact (skips those already there)
  apex.ops.apex_queue:
    state: requeue_from_file
    path: /var/tmp/apex-dead-letter-20261127T060000123456Z.json

- name: Save, then purge the dead-letter list (after investigation)
  apex.ops.apex_queue:
    state: purge
    confirm: purge-dead-letter
    save_to: /var/tmp/apex-dead-letter-{{ now(utc=true, fmt='%Y%m%dT%H%M%S%fZ') }}.json
"""

RETURN = r"""
queue:
  description: Key and depth (C(LLEN)) of the task queue.
  returned: always
  type: dict
  sample: {key: "apex:tasks:queue", depth: 12}
dead_letter:
  description: Key, depth and (facts) a sample of decoded dead letters.
  returned: always
  type: dict
  sample: {key: "apex:tasks:dead-letter", depth: 2, sample: [{task_id: tsk_1, error: timeout}]}
processing:
  description: In-flight lists found by C(SCAN) (count, total items, length by key).
  returned: state is facts
  type: dict
memory:
  description: Redis C(used_memory), C(maxmemory), the limit used and the percent of it.
  returned: state is facts
  type: dict
clients:
  description: Connected and blocked clients.
  returned: state is facts
  type: dict
latency:
  description: With O(latency_samples), the C(PING) round trip in milliseconds (samples, min_ms, avg_ms, max_ms).
  returned: state is facts and latency_samples > 0
  type: dict
  sample: {samples: 10, min_ms: 0.08, avg_ms: 0.11, max_ms: 0.2}
requeued:
  description: Count moved, and per item the dead letter and the payload pushed back.
  returned: state is requeue
  type: dict
purged:
  description: Count deleted, the file they were saved to, and the depth after.
  returned: state is purge
  type: dict
requeued_from_file:
  description:
    - C(path), C(entries) in the file, C(pushed), C(already_present) (skipped), C(byte_exact) (false for a
      file of the old format), C(source_key), C(target_key), C(target_after) (its length; null in check mode)
      and C(items) (the first 50 pushed, decoded).
  returned: state is requeue_from_file
  type: dict
last_state:
  description:
    - On failure, what was observed - C(error) (Redis kept changing under a transaction), C(invalid) (up to 20
      entries whose payload field is missing), C(lossy) (a save file of the old format that cannot be pushed back
      byte-exact) or C(dead_letter_depth) (a purge refused).
  returned: failure
  type: dict
"""

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.apex.ops.plugins.module_utils import redis_client
from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import REDIS_ARGSPEC
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow

ARGUMENT_SPEC = dict(
    state=dict(type="str", default="facts", choices=["facts", "requeue", "purge", "requeue_from_file"]),
    queue_key=dict(type="str", default="apex:tasks:queue", no_log=False),
    dead_letter_key=dict(type="str", default="apex:tasks:dead-letter", no_log=False),
    processing_pattern=dict(type="str", default="apex:tasks:processing:*"),
    sample_size=dict(type="int", default=10),
    latency_samples=dict(type="int", default=0),
    memory_limit=dict(type="str"),
    count=dict(type="int", default=0),
    payload_field=dict(type="str", default="task_id"),
    position=dict(type="str", default="back", choices=["back", "front"]),
    confirm=dict(type="str"),
    save_to=dict(type="path"),
    path=dict(type="path"),
    into=dict(type="str", default="dead_letter", choices=["dead_letter", "queue"]),
)


def main():
    module = ApexModule(ARGUMENT_SPEC, fragments=(REDIS_ARGSPEC,), requirements=(redis_client.REQUIREMENT,),
                        supports_check_mode=True)
    from ansible_collections.apex.ops.plugins.module_utils import queue as q

    p = module.params
    if p["count"] < 0 or p["sample_size"] < 0:
        module.fail("count and sample_size must be >= 0")
    if p["queue_key"] == p["dead_letter_key"]:
        module.fail("queue_key and dead_letter_key must differ")
    try:
        memory_limit = q.parse_size(p["memory_limit"], "memory_limit")
    except ValueError as exc:
        module.fail(str(exc))
    if p["state"] == "purge" and p["confirm"] != q.PURGE_CONFIRMATION:
        module.fail("refusing to purge %s: set confirm=%s to delete every dead letter"
                    % (p["dead_letter_key"], q.PURGE_CONFIRMATION))
    if p["state"] == "requeue_from_file" and not p["path"]:
        module.fail("state=requeue_from_file needs path (the save file of a purge)")
    try:
        client = redis_client.connect(p)
    except Exception as exc:
        module.fail("cannot connect to Redis at %s:%s" % (p["redis_host"], p["redis_port"]), exception=exc)

    result = dict(changed=False, state=p["state"])
    try:
        if p["state"] == "facts":
            result.update(q.facts(client, p["queue_key"], p["dead_letter_key"], p["processing_pattern"],
                                  p["sample_size"], memory_limit))
            if p["latency_samples"] > 0:
                result["latency"] = q.ping_latency(client, p["latency_samples"])
        elif p["state"] == "requeue":
            moved = q.requeue(client, p["queue_key"], p["dead_letter_key"], p["count"], module.check_mode,
                              p["payload_field"], p["position"])
            result.update(changed=moved["moved"] > 0, requeued=moved,
                          dead_letter=dict(key=p["dead_letter_key"], depth=moved["dead_letter_after"]),
                          queue=dict(key=p["queue_key"], depth=moved["queue_after"]))
            if module._diff:
                result["diff"] = dict(before=dict(dead_letter=moved["dead_letter_before"]),
                                      after=dict(dead_letter=moved["dead_letter_after"]))
        elif p["state"] == "requeue_from_file":
            target = p["queue_key"] if p["into"] == "queue" else p["dead_letter_key"]
            back = q.requeue_from_file(client, p["path"], target, module.check_mode, as_tasks=p["into"] == "queue",
                                       payload_field=p["payload_field"], position=p["position"])
            result.update(changed=back["pushed"] > 0, requeued_from_file=back,
                          dead_letter=dict(key=p["dead_letter_key"], depth=client.llen(p["dead_letter_key"])),
                          queue=dict(key=p["queue_key"], depth=client.llen(p["queue_key"])))
        else:
            now = utcnow().isoformat()
            purged = q.purge(client, p["dead_letter_key"], p["confirm"], module.check_mode, p["save_to"], now)
            result.update(changed=purged["purged"] > 0, purged=purged,
                          dead_letter=dict(key=p["dead_letter_key"], depth=purged["dead_letter_after"]),
                          queue=dict(key=p["queue_key"], depth=client.llen(p["queue_key"])))
            if module._diff:
                result["diff"] = dict(before=dict(dead_letter=purged["dead_letter_before"]),
                                      after=dict(dead_letter=purged["dead_letter_after"]))
    except q.QueueError as exc:
        module.fail(to_native(exc), last_state=exc.last_state)
    except Exception as exc:
        module.fail("%s failed" % p["state"], exception=exc)
    finally:
        client.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
