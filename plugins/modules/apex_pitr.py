#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_pitr
short_description: Point-in-time recovery of PostgreSQL into a new data directory on a spare port, verified
version_added: "0.2.0"
description:
  - C(state=present) restores a base backup of the catalog (M(apex.ops.apex_backup) C(state=base_backup)) into
    O(data_dir), a new directory, and recovers it to O(target_time) the PostgreSQL 12+ way, an empty
    C(recovery.signal) plus C(restore_command), C(recovery_target_time), C(recovery_target_action) and
    C(recovery_target_timeline) in C(postgresql.auto.conf). There is no C(recovery.conf); PostgreSQL 12 and
    later refuse to start with one.
  - The copy starts on a spare port (O(port), or a free one) with C(archive_mode=off), so it never writes into
    the live server's archive, then replays the WAL archive up to the target and promotes (or pauses).
  - Before the restore, the live server (the connection options) switches to a new WAL segment and the module
    waits until the archiver has the one just closed, so the last commits before the target are in the archive.
    An unreachable live server is reported, not fatal.
  - Verification, the target reached (the server log's C(recovery stopping before ... time) line, no transaction
    replayed after the target, promoted or paused), the row counts of O(db) (beside the live ones) and the
    C(_sqlx_migrations) state. A failed verification fails the task; the copy keeps running for inspection.
  - A second run with the same target finds the copy by its marker file and only verifies it (not changed).
  - C(state=absent) stops the copy and removes O(data_dir), only when it holds the marker this module wrote.
  - The live database is never changed here. Swapping the recovered database in is the C(pitr) role's
    confirmed step (docs/pitr.md).
  - Runs on the host where the copy is to run, as root (PostgreSQL's programs then run as O(os_user)) or as
    O(os_user) itself.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.postgres
  - apex.ops.s3
options:
  state:
    description:
      - V(present) recovers (or finds) the copy and verifies it; V(absent) stops and removes it.
    type: str
    choices: [present, absent]
    default: present
  data_dir:
    description:
      - The new data directory of the recovered copy. It must not exist, be empty, or be a copy this module made.
      - Its parent must be reachable by O(os_user).
    type: path
    required: true
  target_time:
    description:
      - The time to recover to (ISO 8601 with a zone, for example V(2026-12-02T14:30:00Z)). Transactions that
        committed at or before it are kept, later ones are not. Must not be in the future.
      - Required for O(state=present).
    type: str
  target_action:
    description:
      - C(recovery_target_action). V(promote) makes the copy a writable server on a new timeline; V(pause) keeps
        it read-only, paused at the target.
    type: str
    choices: [promote, pause]
    default: promote
  target_timeline:
    description:
      - C(recovery_target_timeline) (V(latest), V(current) or a number).
    type: str
    default: latest
  cluster:
    description:
      - The cluster name of the base backups in the catalog (C(<prefix>/postgres_base/<cluster>/)).
    type: str
    default: apex
  backup_id:
    description:
      - The base backup to start from. Default, the newest usable one that finished before O(target_time).
    type: str
  wal_archive:
    description:
      - The WAL archive directory (the live server's C(archive_command) copies into it). The copy reads it with
        C(cp), through PostgreSQL's shell, the path quoted.
      - Falls back to E(APEX_PG_WAL_ARCHIVE). One of O(wal_archive) and O(restore_command) is needed.
    type: path
  restore_command:
    description:
      - A C(restore_command) of your own (an archive in S3, for example V(aws s3 cp s3://bucket/wal/%f %p));
        it must contain C(%f) and C(%p). Wins over O(wal_archive).
      - It is written to the copy's C(postgresql.auto.conf) and returned in the result, so it must not hold
        credentials (give the tool its credentials through the OS user's environment or an instance role).
    type: str
  port:
    description:
      - The port of the copy (on 127.0.0.1). V(0) picks a free one.
    type: int
    default: 0
  os_user:
    description:
      - The OS user the copy runs as, when the module runs as root.
    type: str
    default: postgres
  pg_bin_dir:
    description:
      - Directory holding C(pg_ctl) (searched before E(PATH)). Falls back to E(APEX_PG_BIN).
    type: path
  db:
    description:
      - The database whose row counts and C(_sqlx_migrations) are verified. Defaults to O(login_db).
    type: str
  tables:
    description:
      - Tables to count. Default, every user table of O(db).
    type: list
    elements: str
  switch_wal:
    description:
      - Switch the live server's WAL segment and wait until it is archived before the restore.
    type: bool
    default: true
  archive_timeout:
    description:
      - Seconds to wait for the archiver after the switch; the recovery goes on (and says so) when it passes.
    type: float
    default: 60
  recovery_timeout:
    description:
      - Seconds the copy may take to replay up to the target and promote or pause.
    type: float
    default: 600
"""

EXAMPLES = r"""
- name: Recover the cluster to just before the bad deploy, on a spare port, and verify it
  apex.ops.apex_pitr:
    data_dir: /var/lib/postgresql/pitr-20261202
    target_time: "2026-12-02T14:29:59Z"
    wal_archive: /var/lib/postgresql/wal_archive
  register: pitr

- name: WAL archive in S3 (the AWS CLI on the database host)
  apex.ops.apex_pitr:
    data_dir: /var/lib/postgresql/pitr-20261202
    target_time: "2026-12-02T14:29:59Z"
    restore_command: aws s3 cp s3://apex-wal/main/%f %p

- name: Stop and remove the recovered copy
  apex.ops.apex_pitr:
    state: absent
    data_dir: /var/lib/postgresql/pitr-20261202
"""

RETURN = r"""
pitr:
  description: The recovery, its copy and its verification.
  returned: always
  type: dict
  contains:
    backup_id:
      description: The base backup restored.
      type: str
    target_time:
      description: The recovery target as written to C(recovery_target_time) (microseconds, UTC).
      type: str
    data_dir:
      description: The copy's data directory.
      type: str
    host:
      description: Where the copy listens.
      type: str
    port:
      description: The copy's port.
      type: int
    restore_command:
      description: The C(restore_command) written.
      type: str
    wal_switch:
      description: The live server's WAL switch (C(segment), C(archived), C(waited_seconds), C(error)).
      type: dict
    server:
      description: The copy's state (C(in_recovery), C(pause_state), C(last_replay_time), C(timeline)).
      type: dict
    verification:
      description:
        - C(ok), C(target_reached), C(problems), C(recovery) (the log's stop line and new timeline),
          C(row_counts) and C(migrations) of the copy, C(live) (the same of the live server, or its C(error)),
          C(rows) (per table recovered, live and the difference).
      type: dict
    timings:
      description: C(extract_seconds), C(recovery_seconds), C(total_seconds).
      type: dict
  sample:
    backup_id: 20261202T154428Z-8274bd94
    target_time: "2026-12-02 15:50:01.123456+00"
    port: 24113
    verification:
      ok: true
      target_reached: true
      row_counts: {public.tasks: 41}
msg:
  description: What was done, or why it failed.
  returned: always
  type: str
details:
  description: On failure, where the recovery got to (C(recovery) facts from the log, the C(server) last seen).
  returned: failure
  type: dict
"""

from ansible.module_utils.basic import env_fallback
from ansible_collections.apex.ops.plugins.module_utils import postgres as pg
from ansible_collections.apex.ops.plugins.module_utils import s3_store
from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import POSTGRES_ARGSPEC, S3_ARGSPEC

ARGSPEC = dict(
    state=dict(type="str", choices=["present", "absent"], default="present"),
    data_dir=dict(type="path", required=True),
    target_time=dict(type="str"),
    target_action=dict(type="str", choices=["promote", "pause"], default="promote"),
    target_timeline=dict(type="str", default="latest"),
    cluster=dict(type="str", default="apex"),
    backup_id=dict(type="str"),
    wal_archive=dict(type="path", fallback=(env_fallback, ["APEX_PG_WAL_ARCHIVE"])),
    restore_command=dict(type="str"),
    port=dict(type="int", default=0),
    os_user=dict(type="str", default="postgres"),
    pg_bin_dir=dict(type="path", fallback=(env_fallback, ["APEX_PG_BIN"])),
    db=dict(type="str"),
    tables=dict(type="list", elements="str"),
    switch_wal=dict(type="bool", default=True),
    archive_timeout=dict(type="float", default=60),
    recovery_timeout=dict(type="float", default=600),
)


def main():
    module = ApexModule(ARGSPEC, fragments=(POSTGRES_ARGSPEC, S3_ARGSPEC), supports_check_mode=True,
                        required_if=[("state", "present", ["target_time"])],
                        requirements=(pg.REQUIREMENT, s3_store.REQUIREMENT))
    p = module.params
    from ansible_collections.apex.ops.plugins.module_utils import backup_runner
    from ansible_collections.apex.ops.plugins.module_utils import pitr
    from ansible_collections.apex.ops.plugins.module_utils.pitr_plan import PitrRefused

    try:
        if p["state"] == "absent":
            result = pitr.remove(p["data_dir"], p["os_user"], p["pg_bin_dir"], check_mode=module.check_mode)
        else:
            store = backup_runner.store_factory(p)()
            result = pitr.recover(
                p, store, p["s3_prefix"], p["cluster"], p["data_dir"], p["target_time"], action=p["target_action"],
                timeline=p["target_timeline"], wal_archive=p["wal_archive"], command=p["restore_command"],
                port=p["port"], os_user=p["os_user"], pg_bin_dir=p["pg_bin_dir"], backup_id=p["backup_id"],
                switch=p["switch_wal"], archive_timeout=p["archive_timeout"], recovery_timeout=p["recovery_timeout"],
                db=p["db"] or p["login_db"], tables=p["tables"], check_mode=module.check_mode)
    except PitrRefused as exc:
        module.fail("Refusing: %s. Nothing was changed." % exc, refused=True)
    except pitr.PitrError as exc:
        module.fail(str(exc), details=exc.details)
    except Exception as exc:  # noqa: BLE001 - the module base reports type, text and traceback
        module.fail("point-in-time recovery failed", exception=exc)
    if result.pop("failed", False):
        module.fail(result.pop("msg"), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
