#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_backup
short_description: Streamed, verified PostgreSQL and Redis backups in S3, and a safe restore
version_added: "0.1.0"
description:
  - C(state=backup) streams C(pg_dump -Fc) straight into an S3 multipart upload (no local temp file,
    memory bounded by a few parts, sha256 computed on the way). Per-table row counts come from the
    same exported snapshot the dump uses. A manifest is written last; a failed or interrupted backup
    aborts its upload and leaves no manifest.
  - C(state=redis_backup) streams a fresh snapshot over the replication protocol (C(SYNC)) into S3, or
    (O(rdb_source=file)) runs BGSAVE, waits for that save to finish (watching C(INFO persistence)) and uploads
    the RDB file; either way with its checksum and a manifest.
  - C(state=base_backup) streams C(pg_basebackup) (the whole cluster as one tar, with the WAL that makes it
    consistent) into S3 the same way, manifest last, with the WAL start and end points, timeline and system
    identifier. It is the starting point of a point-in-time recovery (M(apex.ops.apex_pitr)); its catalog
    kind is C(postgres_base), named by O(cluster).
  - C(state=facts) reads the catalog (manifests and verification records) with age, size and
    verification state, the latest verified backup, and a freshness gate (O(max_age)).
  - C(state=verify) re-reads a backup once and checks it up to O(verify_level) (C(checksum), C(toc) with
    C(pg_restore --list), C(deep) with a test restore into a scratch database and row counts); the result
    is recorded beside the manifest.
  - C(state=prune) applies retention (O(keep_last) and/or O(max_age)); never deletes the newest verified
    backup; also removes orphaned data objects and stale multipart uploads older than O(orphan_grace).
  - C(state=restore) restores a backup into O(target_db). It refuses unless O(confirm) equals O(target_db),
    refuses an unverified backup unless O(force=true), takes a safety backup of an existing target first,
    and fails when the restored row counts differ from the manifest.
  - A restore keeps the target's owner, database ACL, schema C(public) owner and ACL and default privileges
    (read before anything changes; for a target that no longer exists, from the backup's manifest when it is a
    backup of a database of that name), re-applies them after C(pg_restore), reads them back and fails when
    they do not match.
  - C(state=drain) waits until no (matching) session is connected to O(target_db), observed in
    C(pg_stat_activity); stragglers are terminated after O(drain_grace) (only with O(confirm) equal to
    O(target_db)); fails at O(drain_timeout). The restore
    playbook runs it after scaling the application to zero.
  - C(state=fetch) downloads a backup (for example a Redis RDB for an offline restore) to O(dest),
    checked against its manifest before it is moved into place.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.postgres
  - apex.ops.redis
  - apex.ops.s3
options:
  state:
    description:
      - What to do. See the description for each state. V(facts) (the default) only reads the catalog.
      - V(list) is still accepted as a deprecated synonym of V(facts).
      - The option name O(action) is a deprecated alias of O(state) (the collection's convention is O(state), see
        docs/architecture.md "Module vocabulary").
    type: str
    default: facts
    aliases: [action]
    choices: [facts, backup, redis_backup, base_backup, verify, prune, restore, fetch, drain]
  db:
    description:
      - Database to back up (C(backup)) and whose backups to list, verify, prune, fetch or restore from.
      - Defaults to O(login_db).
    type: str
  maintenance_db:
    description:
      - Database the module connects to for administrative statements (C(CREATE DATABASE), C(DROP DATABASE),
        sessions in C(pg_stat_activity)) of C(restore), C(drain) and C(verify_level=deep).
      - Never O(login_db) for this, because PostgreSQL refuses to drop the database a session is connected to,
        and O(login_db) is usually the production database a restore replaces.
      - Must exist and differ from O(target_db) and O(scratch_db); C(template1) is an alternative where C(postgres)
        was removed. Falls back to E(APEX_PG_MAINTENANCE_DB).
    type: str
    default: postgres
  kind:
    description:
      - Which backups C(list), C(verify), C(prune) and C(fetch) work on.
      - V(postgres_base) are the base backups of C(state=base_backup) (verified at the C(checksum) level only).
    type: str
    choices: [postgres, redis, postgres_base]
    default: postgres
  cluster:
    description:
      - Name of the PostgreSQL cluster in the key layout of base backups (C(<prefix>/postgres_base/<cluster>/...)).
    type: str
    default: apex
  redis_instance:
    description:
      - Name of the Redis instance in the backup key layout (C(<prefix>/redis/<redis_instance>/...)).
    type: str
    default: apex
  backup_id:
    description:
      - The backup to verify, restore or fetch (C(YYYYMMDDTHHMMSSZ-xxxxxxxx)).
      - Default for C(verify) and C(fetch) is the newest backup; for C(restore) the newest backup verified
        at O(min_verify_level) or deeper.
    type: str
  tables:
    description:
      - Tables (C(schema.table) or C(table) for C(public)) whose exact row counts are recorded in the manifest.
      - Default is every user table (ordinary and partitioned, not extension-owned).
    type: list
    elements: str
  tags:
    description:
      - Tags recorded in the manifest (a restore's safety backup is tagged C(safety)).
    type: list
    elements: str
    default: []
  part_size_mb:
    description:
      - Size of one multipart part in MiB (S3 needs at least 5). Memory use is about
        O(part_size_mb) times (O(upload_concurrency) + 1).
    type: int
    default: 16
  upload_concurrency:
    description:
      - Parts uploaded in parallel.
    type: int
    default: 2
  compress:
    description:
      - C(pg_dump --compress) level (0-9). Default is pg_dump's own default.
      - For C(base_backup), C(pg_basebackup --compress) (gzip of the tar); default uncompressed.
    type: int
  pg_bin_dir:
    description:
      - Directory holding C(pg_dump) and C(pg_restore) (searched before E(PATH)). Falls back to E(APEX_PG_BIN).
      - Their major version must be at least the server's.
    type: path
  s3_max_attempts:
    description:
      - Attempts per S3 call (exponential backoff with jitter between them) before the action fails.
    type: int
    default: 3
  s3_connect_timeout:
    description:
      - Seconds to wait for an S3 connection.
    type: float
    default: 5
  s3_read_timeout:
    description:
      - Seconds to wait for an S3 response.
    type: float
    default: 60
  verify_level:
    description:
      - Depth of C(verify). Levels are cumulative.
      - C(checksum) re-reads the object and compares size and sha256 with the manifest.
      - C(toc) also reads the archive's table of contents with C(pg_restore --list) (same single read).
      - C(deep) also restores into a scratch database (O(scratch_db)), compares row counts with the manifest,
        and always drops the scratch database.
      - Redis backups have only C(checksum) (plus the RDB header).
    type: str
    choices: [checksum, toc, deep]
    default: toc
  scratch_db:
    description:
      - Scratch database of a C(deep) verification, created and dropped by the module. Default C(apex_verify_<backup_id>).
    type: str
  max_age:
    description:
      - With C(list), the freshness gate (for example C(24h)); see O(require_fresh).
      - With C(prune), backups older than this may be deleted (unless kept by O(keep_last) or as the newest verified).
      - A duration as every apex.ops module takes it - V(24h), V(30d), V(1d12h), V(90m), V(2 days), V(30min), V(500ms),
        or seconds (V(3600)).
    type: str
  require_fresh:
    description:
      - With C(list) and O(max_age), fail when no (verified) backup is younger than O(max_age).
    type: bool
    default: false
  require_verified:
    description:
      - With C(list), only verified backups count for the freshness gate.
    type: bool
    default: true
  min_verify_level:
    description:
      - Verification level a backup needs to count as verified (for C(restore), the freshness gate, and the
        newest-verified protection of C(prune)).
    type: str
    choices: [checksum, toc, deep]
    default: checksum
  keep_last:
    description:
      - With C(prune), keep the newest N backups.
    type: int
  orphan_grace:
    description:
      - With C(prune), data objects without a manifest and unfinished multipart uploads older than this are
        removed (they are left-overs of interrupted runs). Younger ones may belong to a running backup.
      - A duration like O(max_age).
    type: str
    default: 24h
  target_db:
    description:
      - Database C(restore) writes into. Created when missing.
      - O(maintenance_db), C(postgres), C(template0) and C(template1) are refused before anything changes.
    type: str
  confirm:
    description:
      - Must equal O(target_db) for C(restore) to run, and for C(drain) with O(drain_terminate=true) (it terminates
        sessions).
    type: str
  force:
    description:
      - Allow C(restore) of a backup that is not verified.
    type: bool
    default: false
  safety_backup:
    description:
      - Before C(restore) replaces an existing database, back it up (a normal backup tagged C(safety)).
    type: bool
    default: true
  rollback_on_failure:
    description:
      - With C(restore), when the restore fails after it changed the target (and did not roll back by itself, as a
        single transaction does), restore the safety backup it took first (C(recreate)) and verify it (row counts
        against the safety backup's manifest, owner and privileges read back). The failure then says so in
        RV(details.rolled_back) and RV(details.rollback_verified).
      - Needs O(safety_backup) and an existing target. Never after an interrupt (the C(recover) playbook's job).
    type: bool
    default: true
  restore_mode:
    description:
      - C(clean) restores into the existing database with C(pg_restore --clean --if-exists); with O(jobs=1) this
        runs in a single transaction, so a failure leaves the target as it was. Objects that are not in the
        dump are left alone.
      - C(recreate) drops and recreates the target first (it must have no sessions); the result is exactly the dump.
    type: str
    choices: [clean, recreate]
    default: clean
  target_owner:
    description:
      - Owner of the database when C(restore) creates or recreates it.
      - Default with O(restore_mode=recreate) is the previous owner of the target (its C(datdba)); for a new
        database the connecting user.
    type: str
  no_owner:
    description:
      - Pass C(--no-owner) to C(pg_restore) (objects owned by the restoring user).
    type: bool
    default: false
  jobs:
    description:
      - Parallel C(pg_restore) jobs. With 1 the backup is streamed from S3 into C(pg_restore) (no local disk,
        single transaction). With more, C(pg_restore -j) needs a seekable file, so the backup is downloaded to
        a temp file in O(temp_dir) first (disk = backup size; checksum verified before use; deleted after).
    type: int
    default: 1
  restore_timeout:
    description:
      - Overall deadline in seconds of C(restore) (download and C(pg_restore)). At the deadline C(pg_restore) is
        killed, its server session terminated, and the restore fails; with O(jobs=1) over an existing database
        (O(restore_mode=clean)) the single transaction rolls back and the target is unchanged.
      - C(0) disables the deadline.
    type: float
    default: 14400
  restore_lock_timeout:
    description:
      - Seconds a statement of C(pg_restore) may wait for a lock held by another session (an application not
        drained) before it is cancelled and the restore fails, naming the blocking sessions. With O(jobs=1) over
        an existing database the single transaction rolls back.
      - Watched in C(pg_stat_activity) and cancelled with C(pg_cancel_backend), because every archive of C(pg_dump)
        sets C(lock_timeout) to 0 itself.
      - C(0) disables it (waits for locks until O(restore_timeout)).
    type: float
    default: 60
  temp_dir:
    description:
      - Directory for the temp file of a parallel restore. Default is the system temp directory.
    type: path
  analyze:
    description:
      - Run C(ANALYZE) in the target after a successful restore (pg_restore does not restore planner statistics).
    type: bool
    default: true
  dest:
    description:
      - With C(fetch), the file to write (replaced atomically after the checksum matched).
    type: path
  rdb_path:
    description:
      - With C(redis_backup) and the C(file) source, the RDB file to upload. Default from C(CONFIG GET dir) and
        C(dbfilename).
    type: path
  rdb_source:
    description:
      - How C(redis_backup) gets the snapshot.
      - C(network) streams a fresh snapshot over the Redis replication protocol (C(SYNC), as C(redis-cli --rdb)
        does) straight into S3; it only needs the Redis port (Redis in Kubernetes, Ansible on a control host).
        Managed Redis services that disable C(SYNC) need C(file) or their own snapshots.
      - C(file) runs C(BGSAVE), waits for it, and uploads the RDB file at O(rdb_path); the module must run where
        that file is readable.
      - C(auto) uses C(file) when the directory of O(rdb_path) (or of the C(CONFIG GET dir)/C(dbfilename)
        location) is readable here and, after C(BGSAVE), the file there is the one Redis just wrote (modified
        after the BGSAVE started); otherwise C(network). The manifest's C(source) says which was used.
    type: str
    choices: [auto, network, file]
    default: auto
  bgsave_timeout:
    description:
      - Seconds to wait for BGSAVE to finish (C(file) source) or for Redis to start sending the snapshot after C(SYNC)
        (C(network) source).
    type: float
    default: 300
  drain_users:
    description:
      - With C(drain), only sessions of these roles count (for example the application role C(apex)). Default all.
    type: list
    elements: str
  drain_applications:
    description:
      - With C(drain), only sessions with these C(application_name)s count. Default all.
    type: list
    elements: str
  drain_grace:
    description:
      - With C(drain), seconds to let sessions end by themselves before terminating them.
    type: float
    default: 30
  drain_timeout:
    description:
      - With C(drain), seconds after which the wait fails (reporting the sessions still there).
    type: float
    default: 120
  drain_terminate:
    description:
      - With C(drain), terminate sessions still there after O(drain_grace). Without it, only wait.
      - Needs O(confirm) equal to O(target_db).
    type: bool
    default: true
notes:
  - Supports check mode. C(backup) and C(redis_backup) check connectivity and report the planned key;
    C(verify) reports what it would check; C(prune) lists what would be deleted; C(restore) runs all
    pre-flight checks and reports the plan.
  - Credentials travel in the environment of C(pg_dump)/C(pg_restore), never on their command line, and are
    redacted from any error output.
  - The module handles SIGTERM and SIGINT (for example an Ansible task timeout) by aborting the running upload
    and stopping C(pg_dump).
seealso:
  - name: Backup and restore runbook
    description: docs/backup.md in this collection.
    link: https://example.invalid/apex/ops/docs/backup.md
"""

EXAMPLES = r"""
- name: Nightly database backup (streamed to S3)
  apex.ops.apex_backup:
    state: backup
    db: apex
  register: backup

- name: Verify it (checksum and table of contents)
  apex.ops.apex_backup:
    state: verify
    backup_id: "{{ backup.backup.backup_id }}"
    verify_level: toc

- name: Pre-maintenance gate - a verified backup younger than 24 hours
  apex.ops.apex_backup:
    state: facts
    max_age: 24h
    require_fresh: true

- name: Monthly test restore into a scratch database
  apex.ops.apex_backup:
    state: verify
    verify_level: deep

- name: Retention - keep 14 backups or 30 days, whichever keeps more
  apex.ops.apex_backup:
    state: prune
    keep_last: 14
    max_age: 30d

- name: Restore the newest verified backup into apex
  apex.ops.apex_backup:
    state: restore
    target_db: apex
    confirm: apex
    rollback_on_failure: true  # the default: a failure after apex changed puts its safety backup back
  register: restored

- name: Catalog and freshness gate through the connection options set once for the play
  module_defaults:
    group/apex.ops.s3:
      s3_bucket: apex-backups
      s3_prefix: apex
  apex.ops.apex_backup:
    state: facts
    max_age: 2 days

- name: Before a restore - wait until the application's sessions are gone, terminate stragglers after 30 s
  apex.ops.apex_backup:
    state: drain
    target_db: apex
    confirm: apex            # required: drain_terminate (default true) terminates sessions
    drain_users: [apex]
    drain_grace: 30
    drain_timeout: 180

- name: Only wait for sessions to end (no confirmation needed, nothing terminated)
  apex.ops.apex_backup:
    state: drain
    target_db: apex
    drain_terminate: false
    drain_timeout: 120

- name: Base backup of the cluster (the start of a point-in-time recovery)
  apex.ops.apex_backup:
    state: base_backup
    cluster: apex

- name: Redis snapshot (streamed over SYNC unless the RDB file is readable here)
  apex.ops.apex_backup:
    state: redis_backup

- name: Download the newest Redis snapshot for an offline restore
  apex.ops.apex_backup:
    state: fetch
    kind: redis
    dest: /var/lib/redis/dump.rdb.restore
"""

RETURN = r"""
backup:
  description:
    - The manifest of the backup taken (C(backup), C(redis_backup), C(base_backup)); in check mode the plan.
    - A base backup's manifest also has C(start_lsn), C(end_lsn), C(timeline), C(system_identifier) and C(label).
  returned: state is backup, redis_backup or base_backup
  type: dict
  sample:
    backup_id: 20261127T064512Z-1a2b3c4d
    key: apex/postgres/apex/2026/11/27/20261127T064512Z-1a2b3c4d.dump
    size: 123456
    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    row_counts: {public.tasks: 5000}
backups:
  description: Catalog entries, newest first, with age, size and verification state.
  returned: state is facts
  type: list
  elements: dict
orphans:
  description: Data objects without a manifest (interrupted runs); never counted as backups.
  returned: state is facts
  type: list
  elements: dict
latest:
  description: The newest backup (catalog entry), or null.
  returned: state is facts
  type: dict
latest_verified:
  description: The newest backup verified at O(min_verify_level) or deeper, or null.
  returned: state is facts
  type: dict
freshness:
  description: The freshness gate (when O(max_age) is given with C(list)).
  returned: state is facts and max_age is set
  type: dict
  sample: {fresh: true, backup_id: 20261127T064512Z-1a2b3c4d, age_seconds: 3600, reason: "..."}
verification:
  description: The verification record (checks with their results, C(ok), C(failed_check)).
  returned: state is verify
  type: dict
deleted:
  description: Backups deleted (or, in check mode, that would be deleted) with the reason.
  returned: state is prune
  type: list
  elements: dict
kept:
  description: Backups kept by C(prune) with the rule that kept them.
  returned: state is prune
  type: list
  elements: dict
orphans_removed:
  description: Orphaned data objects removed by C(prune).
  returned: state is prune
  type: list
  elements: str
uploads_aborted:
  description: Stale multipart uploads aborted by C(prune).
  returned: state is prune
  type: list
  elements: str
restore:
  description:
    - What C(restore) did (target, timings, row counts, differences) or, in check mode, would do.
    - C(privileges) (not in check mode) - C(source) (C(target), C(backup) or null when nothing was known),
      C(before) and C(after) (owner, C(acl), C(public_schema), C(default_acl)), C(match), C(differences),
      C(applied) (statements run) and C(errors); C(note) when the backup's privileges could not be applied.
  returned: state is restore
  type: dict
safety_backup:
  description: Manifest of the safety backup taken before C(restore), or null.
  returned: state is restore
  type: dict
fetched:
  description: File written by C(fetch) (dest, size, sha256).
  returned: state is fetch
  type: dict
drain:
  description: Sessions seen at the start (C(initial)), C(terminated) ones, C(waited_seconds); in check mode C(remaining).
  returned: state is drain
  type: dict
msg:
  description: What was done; on failure, what failed and, for a restore, what state the target is in.
  returned: always
  type: str
refused:
  description: A safety precondition was not met (confirmation, verification, protected database); nothing was changed.
  returned: failure
  type: bool
last_state:
  description:
    - What the failing step last observed, for C(backup) (C(phase), C(backup_id), C(key), C(snapshot),
      C(upload_aborted)), C(redis_backup) (the Redis persistence state) and C(drain) (C(sessions), C(terminated)).
  returned: failure
  type: dict
details:
  description:
    - Where a failed run got to and what state it left. Only the keys that apply are present.
    - The restore role's rescue reads C(stage), C(restore_started), C(target_unchanged), C(safety_backup_id),
      C(rolled_back) and C(rollback_verified).
  returned: failure
  type: dict
  contains:
    stage:
      description: How far C(restore) got - C(preflight), C(safety_backup), C(restore) or C(verify) (after pg_restore).
      type: str
    restore_started:
      description: Whether C(restore) touched the target (dropped, created or fed it to pg_restore).
      type: bool
    target_unchanged:
      description: The target is as it was (the restore never started, or its single transaction rolled back).
      type: bool
    target_dropped:
      description: A C(recreate) restore dropped the target before it failed.
      type: bool
    dropped_created_target:
      description: A target the restore had created was dropped again.
      type: bool
    plan:
      description: The restore plan (as in check mode).
      type: dict
    safety_backup_id:
      description: The safety backup taken before the restore, or null.
      type: str
    single_transaction:
      description: pg_restore ran as one transaction (O(jobs=1)).
      type: bool
    timed_out:
      description: O(restore_timeout) was reached.
      type: bool
    terminated_backends:
      description: Server sessions of the killed pg_restore that were terminated.
      type: list
      elements: int
    lock_waits:
      description: Statements of pg_restore cancelled by O(restore_lock_timeout), with the sessions blocking them.
      type: list
      elements: dict
    checksum:
      description: The checksum result when the stored backup does not match its manifest.
      type: dict
    sessions:
      description: Sessions still connected to a target that C(recreate) would drop.
      type: list
      elements: dict
    refused:
      description: The target is protected (the maintenance database, C(postgres), C(template0), C(template1)).
      type: bool
    privileges:
      description: The target's owner and privileges before, after, and whether they match (see RV(restore)).
      type: dict
    restore:
      description: What the restore did before the check that failed (row counts, differences).
      type: dict
    rolled_back:
      description:
        - The safety backup was put back into the target and verified (O(rollback_on_failure)). False when no
          rollback ran or it failed.
      type: bool
    rollback_verified:
      description:
        - What was checked after the rollback - C(data) (row counts equal the safety backup's manifest) and
          C(privileges) (owner and privileges read back equal the ones before; null when they were not known).
      type: dict
      sample: {data: true, privileges: true}
    rollback:
      description: The rollback - C(backup_id), C(error) (or null), C(row_counts), C(differences), C(privileges).
      type: dict
    pg_dump_returncode:
      description: pg_dump's exit status when the backup failed.
      type: int
    pg_dump_errors:
      description: The number of error lines pg_dump printed although it exited 0.
      type: int
    available_tables:
      description: The tables that exist, when O(tables) names one that does not.
      type: list
      elements: str
    maintenance_db:
      description: The maintenance database, when it is the database to create or drop.
      type: str
"""

from ansible.module_utils.basic import env_fallback
from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as catalog
from ansible_collections.apex.ops.plugins.module_utils import backup_runner as runner
from ansible_collections.apex.ops.plugins.module_utils import postgres as pg
from ansible_collections.apex.ops.plugins.module_utils import redis_client
from ansible_collections.apex.ops.plugins.module_utils import s3_store
from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import (POSTGRES_ARGSPEC, REDIS_ARGSPEC,
                                                                           S3_ARGSPEC)
from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration

LEVEL_CHOICES = list(catalog.LEVELS)

ARGSPEC = dict(
    state=dict(type="str", default="facts", aliases=["action"],
               deprecated_aliases=[dict(name="action", version="2.0.0", collection_name="apex.ops")],
               choices=list(runner.STATES)),
    db=dict(type="str"),
    maintenance_db=dict(type="str", fallback=(env_fallback, ["APEX_PG_MAINTENANCE_DB"]), default="postgres"),
    kind=dict(type="str", choices=list(catalog.KINDS), default="postgres"),
    redis_instance=dict(type="str", default="apex"),
    cluster=dict(type="str", default="apex"),
    backup_id=dict(type="str"),
    tables=dict(type="list", elements="str"),
    tags=dict(type="list", elements="str", default=[]),
    part_size_mb=dict(type="int", default=16),
    upload_concurrency=dict(type="int", default=2),
    compress=dict(type="int"),
    pg_bin_dir=dict(type="path", fallback=(env_fallback, ["APEX_PG_BIN"])),
    s3_max_attempts=dict(type="int", default=3),
    s3_connect_timeout=dict(type="float", default=5),
    s3_read_timeout=dict(type="float", default=60),
    verify_level=dict(type="str", choices=LEVEL_CHOICES, default="toc"),
    scratch_db=dict(type="str"),
    max_age=dict(type="str"),
    require_fresh=dict(type="bool", default=False),
    require_verified=dict(type="bool", default=True),
    min_verify_level=dict(type="str", choices=LEVEL_CHOICES, default="checksum"),
    keep_last=dict(type="int"),
    orphan_grace=dict(type="str", default="24h"),
    target_db=dict(type="str"),
    confirm=dict(type="str"),
    force=dict(type="bool", default=False),
    safety_backup=dict(type="bool", default=True),
    rollback_on_failure=dict(type="bool", default=True),
    restore_mode=dict(type="str", choices=["clean", "recreate"], default="clean"),
    target_owner=dict(type="str"),
    no_owner=dict(type="bool", default=False),
    jobs=dict(type="int", default=1),
    temp_dir=dict(type="path"),
    restore_timeout=dict(type="float", default=14400),
    restore_lock_timeout=dict(type="float", default=60),
    analyze=dict(type="bool", default=True),
    dest=dict(type="path"),
    rdb_path=dict(type="path"),
    rdb_source=dict(type="str", choices=["auto", "network", "file"], default="auto"),
    bgsave_timeout=dict(type="float", default=300),
    drain_users=dict(type="list", elements="str"),
    drain_applications=dict(type="list", elements="str"),
    drain_grace=dict(type="float", default=30),
    drain_timeout=dict(type="float", default=120),
    drain_terminate=dict(type="bool", default=True),
)

SECRET_OPTIONS = ("login_password", "access_key", "secret_key", "session_token", "redis_password")
DURATION_OPTIONS = ("max_age", "orphan_grace")
BACKUP_OPTIONS = ("tags", "part_size_mb", "upload_concurrency")
# the options each state takes (the runner's keyword arguments have the same names)
STATE_OPTIONS = {
    "backup": ("db", "tables", "compress", "pg_bin_dir") + BACKUP_OPTIONS,
    "base_backup": ("cluster", "compress", "pg_bin_dir") + BACKUP_OPTIONS,
    "redis_backup": ("redis_instance", "rdb_source", "rdb_path", "bgsave_timeout") + BACKUP_OPTIONS,
    "facts": ("kind", "name", "max_age", "require_fresh", "require_verified", "min_verify_level"),
    "verify": ("kind", "name", "backup_id", "verify_level", "pg_bin_dir", "scratch_db"),
    "prune": ("kind", "name", "keep_last", "max_age", "orphan_grace", "min_verify_level"),
    "fetch": ("kind", "name", "backup_id", "dest"),
    "drain": ("target_db", "confirm", "drain_users", "drain_applications", "drain_grace", "drain_timeout",
              "drain_terminate"),
    "restore": ("db", "target_db", "confirm", "backup_id", "force", "min_verify_level", "safety_backup",
                "restore_mode", "target_owner", "no_owner", "jobs", "temp_dir", "analyze", "restore_timeout",
                "restore_lock_timeout", "pg_bin_dir", "tables", "compress", "rollback_on_failure") + BACKUP_OPTIONS,
}


def main():
    module = ApexModule(ARGSPEC, fragments=(POSTGRES_ARGSPEC, REDIS_ARGSPEC, S3_ARGSPEC), supports_check_mode=True,
                        value_synonyms={"state": runner.STATE_SYNONYMS})
    for dummy, old, new in module.replaced_values:
        module.deprecate("state=%s is deprecated, use state=%s" % (old, new), version="2.0.0",
                         collection_name="apex.ops")
    p = module.params
    state = p["state"]
    requirements = [] if state == "drain" else [s3_store.REQUIREMENT]  # the drain only reads pg_stat_activity
    requirements += [redis_client.REQUIREMENT] if state == "redis_backup" else [pg.REQUIREMENT] if state in (
        "backup", "base_backup", "verify", "restore", "drain") else []
    for pip_name, error in requirements:
        module.require(pip_name, error)
    if p["part_size_mb"] < 5:
        module.fail("part_size_mb must be at least 5 (S3 multipart rule)")
    if p["upload_concurrency"] < 1:
        module.fail("upload_concurrency must be at least 1")
    options = dict(p, db=p["db"] or p["login_db"])
    options["name"] = runner.backup_name(p["kind"], options["db"], p["redis_instance"], p["cluster"])
    for name in DURATION_OPTIONS:
        try:
            options[name] = parse_duration(p[name] or None, name)
        except ValueError as exc:
            module.fail(str(exc))
    secrets = [p.get(k) for k in SECRET_OPTIONS if p.get(k)]
    ctx = runner.BackupContext(p, runner.store_factory(p, p["s3_max_attempts"], p["s3_connect_timeout"],
                                                       p["s3_read_timeout"]),
                               p["s3_prefix"], secrets=secrets, check_mode=module.check_mode)
    from ansible_collections.apex.ops.plugins.module_utils.pg_programs import interruptible

    try:
        with interruptible():
            result = getattr(runner, state)(ctx, **dict((k, options[k]) for k in STATE_OPTIONS[state]))
    except Exception as exc:  # noqa: BLE001 - runner.failure says what to return
        msg, extra = runner.failure(exc, state, secrets)
        module.fail(msg, **extra)
    if result.pop("failed", False):
        module.fail(result.pop("msg"), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
