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
  - C(action=backup) streams C(pg_dump -Fc) straight into an S3 multipart upload (no local temp file,
    memory bounded by a few parts, sha256 computed on the way). Per-table row counts come from the
    same exported snapshot the dump uses. A manifest is written last; a failed or interrupted backup
    aborts its upload and leaves no manifest.
  - C(action=redis_backup) streams a fresh snapshot over the replication protocol (C(SYNC)) into S3, or
    (O(rdb_source=file)) runs BGSAVE, waits for that save to finish (watching C(INFO persistence)) and uploads
    the RDB file; either way with its checksum and a manifest.
  - C(action=list) reads the catalog (manifests and verification records) with age, size and
    verification state, the latest verified backup, and a freshness gate (O(max_age)).
  - C(action=verify) re-reads a backup once and checks it up to O(verify_level) (C(checksum), C(toc) with
    C(pg_restore --list), C(deep) with a test restore into a scratch database and row counts); the result
    is recorded beside the manifest.
  - C(action=prune) applies retention (O(keep_last) and/or O(max_age)); never deletes the newest verified
    backup; also removes orphaned data objects and stale multipart uploads older than O(orphan_grace).
  - C(action=restore) restores a backup into O(target_db). It refuses unless O(confirm) equals O(target_db),
    refuses an unverified backup unless O(force=true), takes a safety backup of an existing target first,
    and fails when the restored row counts differ from the manifest.
  - A restore keeps the target's owner, database ACL, schema C(public) owner and ACL and default privileges
    (read before anything changes; for a target that no longer exists, from the backup's manifest when it is a
    backup of a database of that name), re-applies them after C(pg_restore), reads them back and fails when
    they do not match.
  - C(action=drain) waits until no (matching) session is connected to O(target_db), observed in
    C(pg_stat_activity); stragglers are terminated after O(drain_grace) (only with O(confirm) equal to
    O(target_db)); fails at O(drain_timeout). The restore
    playbook runs it after scaling the application to zero.
  - C(action=fetch) downloads a backup (for example a Redis RDB for an offline restore) to O(dest),
    checked against its manifest before it is moved into place.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.postgres
  - apex.ops.redis
  - apex.ops.s3
options:
  action:
    description:
      - What to do. See the description for each action.
    type: str
    required: true
    choices: [backup, redis_backup, list, verify, prune, restore, fetch, drain]
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
    type: str
    choices: [postgres, redis]
    default: postgres
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
      - Units C(s), C(m), C(h), C(d), C(w); combinations like C(1d12h).
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
    action: backup
    db: apex
  register: backup

- name: Verify it (checksum and table of contents)
  apex.ops.apex_backup:
    action: verify
    backup_id: "{{ backup.backup.backup_id }}"
    verify_level: toc

- name: Pre-maintenance gate - a verified backup younger than 24 hours
  apex.ops.apex_backup:
    action: list
    max_age: 24h
    require_fresh: true

- name: Monthly test restore into a scratch database
  apex.ops.apex_backup:
    action: verify
    verify_level: deep

- name: Retention - keep 14 backups or 30 days, whichever keeps more
  apex.ops.apex_backup:
    action: prune
    keep_last: 14
    max_age: 30d

- name: Restore the newest verified backup into apex
  apex.ops.apex_backup:
    action: restore
    target_db: apex
    confirm: apex

- name: Before a restore - wait until the application's sessions are gone, terminate stragglers after 30 s
  apex.ops.apex_backup:
    action: drain
    target_db: apex
    confirm: apex            # required: drain_terminate (default true) terminates sessions
    drain_users: [apex]
    drain_grace: 30
    drain_timeout: 180

- name: Only wait for sessions to end (no confirmation needed, nothing terminated)
  apex.ops.apex_backup:
    action: drain
    target_db: apex
    drain_terminate: false
    drain_timeout: 120

- name: Redis snapshot (streamed over SYNC unless the RDB file is readable here)
  apex.ops.apex_backup:
    action: redis_backup

- name: Download the newest Redis snapshot for an offline restore
  apex.ops.apex_backup:
    action: fetch
    kind: redis
    dest: /var/lib/redis/dump.rdb.restore
"""

RETURN = r"""
backup:
  description: The manifest of the backup taken (C(backup), C(redis_backup)); in check mode the plan.
  returned: action is backup or redis_backup
  type: dict
  sample:
    backup_id: 20261127T064512Z-1a2b3c4d
    key: apex/postgres/apex/2026/11/27/20261127T064512Z-1a2b3c4d.dump
    size: 123456
    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    row_counts: {public.tasks: 5000}
backups:
  description: Catalog entries, newest first, with age, size and verification state.
  returned: action is list
  type: list
  elements: dict
orphans:
  description: Data objects without a manifest (interrupted runs); never counted as backups.
  returned: action is list
  type: list
  elements: dict
latest:
  description: The newest backup (catalog entry), or null.
  returned: action is list
  type: dict
latest_verified:
  description: The newest backup verified at O(min_verify_level) or deeper, or null.
  returned: action is list
  type: dict
freshness:
  description: The freshness gate (when O(max_age) is given with C(list)).
  returned: action is list and max_age is set
  type: dict
  sample: {fresh: true, backup_id: 20261127T064512Z-1a2b3c4d, age_seconds: 3600, reason: "..."}
verification:
  description: The verification record (checks with their results, C(ok), C(failed_check)).
  returned: action is verify
  type: dict
deleted:
  description: Backups deleted (or, in check mode, that would be deleted) with the reason.
  returned: action is prune
  type: list
  elements: dict
kept:
  description: Backups kept by C(prune) with the rule that kept them.
  returned: action is prune
  type: list
  elements: dict
orphans_removed:
  description: Orphaned data objects removed by C(prune).
  returned: action is prune
  type: list
  elements: str
uploads_aborted:
  description: Stale multipart uploads aborted by C(prune).
  returned: action is prune
  type: list
  elements: str
restore:
  description:
    - What C(restore) did (target, timings, row counts, differences) or, in check mode, would do.
    - C(privileges) (not in check mode) - C(source) (C(target), C(backup) or null when nothing was known),
      C(before) and C(after) (owner, C(acl), C(public_schema), C(default_acl)), C(match), C(differences),
      C(applied) (statements run) and C(errors); C(note) when the backup's privileges could not be applied.
  returned: action is restore
  type: dict
safety_backup:
  description: Manifest of the safety backup taken before C(restore), or null.
  returned: action is restore
  type: dict
fetched:
  description: File written by C(fetch) (dest, size, sha256).
  returned: action is fetch
  type: dict
drain:
  description: Sessions seen at the start (C(initial)), C(terminated) ones, C(waited_seconds); in check mode C(remaining).
  returned: action is drain
  type: dict
"""

from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as catalog
from ansible_collections.apex.ops.plugins.module_utils import postgres as pg
from ansible_collections.apex.ops.plugins.module_utils import redis_client
from ansible_collections.apex.ops.plugins.module_utils import s3_store
from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import (POSTGRES_ARGSPEC, REDIS_ARGSPEC,
                                                                           S3_ARGSPEC)
from ansible.module_utils.basic import env_fallback

LEVEL_CHOICES = list(catalog.LEVELS)

ARGSPEC = dict(
    action=dict(type="str", required=True,
                choices=["backup", "redis_backup", "list", "verify", "prune", "restore", "fetch", "drain"]),
    db=dict(type="str"),
    maintenance_db=dict(type="str", fallback=(env_fallback, ["APEX_PG_MAINTENANCE_DB"]), default="postgres"),
    kind=dict(type="str", choices=list(catalog.KINDS), default="postgres"),
    redis_instance=dict(type="str", default="apex"),
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


class Runner(object):
    """Maps one action to module_utils calls; holds the shared S3 store and options."""

    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.check = module.check_mode
        self.secrets = [self.p.get(k) for k in SECRET_OPTIONS if self.p.get(k)]
        self.prefix = self.p["s3_prefix"]
        self.db = self.p["db"] or self.p["login_db"]
        self._store = None
        self.part_size = self.p["part_size_mb"] * s3_store.MIB

    @property
    def store(self):
        """The S3 store, built on first use (a drain never touches S3: no boto3 import, no client)."""
        if self._store is None:
            policy = s3_store.RetryPolicy(max_attempts=max(1, self.p["s3_max_attempts"]))
            client = s3_store.make_client(self.p, connect_timeout=self.p["s3_connect_timeout"],
                                          read_timeout=self.p["s3_read_timeout"])
            self._store = s3_store.Store(client, self.p["s3_bucket"], policy)
        return self._store

    # -- helpers
    def name(self):
        return self.p["redis_instance"] if self.p["kind"] == "redis" else self.db

    def catalog(self, kind=None, name=None):
        kind = kind or self.p["kind"]
        return s3_store.load_catalog(self.store, self.prefix, kind, name or self.name())

    def resolve(self, entries, manifests, backup_id=None, verified_only=False):
        if backup_id:
            for entry in entries:
                if entry["backup_id"] == backup_id:
                    return entry, manifests[backup_id]
            raise catalog.CatalogError("backup %s not found (no manifest) for %s %s under %s" % (
                backup_id, self.p["kind"], self.name(), self.prefix))
        if verified_only:
            entry = catalog.latest_verified(entries, self.p["min_verify_level"])
            if entry is None:
                raise catalog.CatalogError("no backup of %s verified at level %s or deeper; verify one first "
                                           "(action=verify) or name backup_id with force=true"
                                           % (self.name(), self.p["min_verify_level"]))
        else:
            if not entries:
                raise catalog.CatalogError("no backups of %s %s under %s" % (self.p["kind"], self.name(), self.prefix))
            entry = entries[0]
        return entry, manifests[entry["backup_id"]]

    def pg_backup(self, db, tags):
        from ansible_collections.apex.ops.plugins.module_utils import pg_backup

        return pg_backup.backup_postgres(
            self.p, self.store, self.prefix, db, tables=self.p["tables"], tags=tags, part_size=self.part_size,
            concurrency=self.p["upload_concurrency"], compress=self.p["compress"], pg_bin_dir=self.p["pg_bin_dir"],
            secrets=self.secrets)

    # -- actions
    def backup(self):
        from ansible_collections.apex.ops.plugins.module_utils import pg_backup

        if self.check:
            plan = pg_backup.plan_backup(self.p, self.store, self.prefix, self.db, self.p["tables"],
                                         self.p["pg_bin_dir"])
            return dict(changed=True, backup=plan, msg="would back up %s to s3://%s/%s" % (
                self.db, self.p["s3_bucket"], plan["key"]))
        manifest = pg_backup.backup_postgres(
            self.p, self.store, self.prefix, self.db, tables=self.p["tables"], tags=self.p["tags"],
            part_size=self.part_size, concurrency=self.p["upload_concurrency"], compress=self.p["compress"],
            pg_bin_dir=self.p["pg_bin_dir"], secrets=self.secrets)
        return dict(changed=True, backup=manifest, msg="backup %s of %s: %d bytes, %d tables, %.1fs" % (
            manifest["backup_id"], self.db, manifest["size"], len(manifest["row_counts"]),
            manifest["duration_seconds"]))

    def redis_backup(self):
        from ansible_collections.apex.ops.plugins.module_utils import redis_backup

        client = redis_client.connect(self.p)
        instance = self.p["redis_instance"]
        if self.check:
            source, path = redis_backup.choose_source(client, self.p["rdb_source"], self.p["rdb_path"])
            self.store.check_bucket()
            plan = {"source": source, "rdb_path": path, "instance": instance}
            if source == "file":
                plan["readable"] = _readable(path)
            return dict(changed=True, backup=plan, msg="would %s and upload it" % (
                "BGSAVE %s" % path if source == "file" else "stream a snapshot over SYNC"))
        manifest = redis_backup.backup_redis(
            client, self.store, self.prefix, instance, timeout=self.p["bgsave_timeout"], part_size=self.part_size,
            concurrency=self.p["upload_concurrency"], tags=self.p["tags"], rdb_path=self.p["rdb_path"],
            source=self.p["rdb_source"], params=self.p)
        return dict(changed=True, backup=manifest, msg="redis backup %s (%s): %d bytes" % (
            manifest["backup_id"], manifest["source"], manifest["size"]))

    def list(self):
        entries, orphans, _manifests, _records = self.catalog()
        result = dict(changed=False, backups=entries, orphans=orphans, count=len(entries),
                      latest=entries[0] if entries else None,
                      latest_verified=catalog.latest_verified(entries, self.p["min_verify_level"]))
        if self.p["max_age"]:
            fresh = catalog.freshness(entries, catalog.parse_duration(self.p["max_age"]), catalog.utcnow(),
                                      require_verified=self.p["require_verified"],
                                      min_level=self.p["min_verify_level"])
            result["freshness"] = fresh
            if self.p["require_fresh"] and not fresh["fresh"]:
                result["msg"] = "freshness gate failed: %s" % fresh["reason"]
                result["failed"] = True
                return result
            result["msg"] = fresh["reason"]
        else:
            result["msg"] = "%d backup(s) of %s %s" % (len(entries), self.p["kind"], self.name())
        return result

    def verify(self):
        entries, _orphans, manifests, records = self.catalog()
        entry, manifest = self.resolve(entries, manifests, self.p["backup_id"])
        kind = self.p["kind"]
        level = self.p["verify_level"] if kind == "postgres" else "checksum"
        checks_planned = catalog.levels_upto(level, kind)
        if self.check:
            return dict(changed=True, verification={"backup_id": entry["backup_id"], "level": level,
                                                    "checks": checks_planned},
                        msg="would verify %s (%s)" % (entry["backup_id"], ", ".join(checks_planned)))
        if kind == "redis":
            from ansible_collections.apex.ops.plugins.module_utils import redis_backup
            checks = redis_backup.verify_redis(self.store, manifest)
        else:
            from ansible_collections.apex.ops.plugins.module_utils import pg_backup
            checks = pg_backup.verify_postgres(self.p, self.store, manifest, level, self.p["pg_bin_dir"],
                                               self.secrets, self.p["scratch_db"])
        record = catalog.build_verify_record(entry["backup_id"], level, checks, catalog.utcnow(),
                                             previous=records.get(entry["backup_id"]))
        keys = catalog.backup_keys(self.prefix, kind, self.name(), entry["backup_id"])
        self.store.put_json(keys["verify"], record)
        record["record_key"] = keys["verify"]
        result = dict(changed=True, verification=record, backup_id=entry["backup_id"])
        if not record["ok"]:
            failed = record["failed_check"]
            result.update(failed=True, msg="verification of %s FAILED at check %r: %s" % (
                entry["backup_id"], failed, checks[failed].get("error")))
        else:
            result["msg"] = "backup %s verified (%s)" % (entry["backup_id"], ", ".join(sorted(checks, key=LEVEL_CHOICES.index)))
        return result

    def prune(self):
        result = s3_store.prune(
            self.store, self.prefix, self.p["kind"], self.name(), keep_last=self.p["keep_last"],
            max_age_seconds=catalog.parse_duration(self.p["max_age"]),
            grace_seconds=catalog.parse_duration(self.p["orphan_grace"]), min_level=self.p["min_verify_level"],
            check_mode=self.check)
        result["msg"] = "%s %d backup(s), kept %d, %d orphan(s), %d stale upload(s)" % (
            "would delete" if self.check else "deleted", len(result["deleted"]), len(result["kept"]),
            len(result["orphans_removed"]), len(result["uploads_aborted"]))
        return result

    def restore(self):
        from ansible_collections.apex.ops.plugins.module_utils import pg_backup

        target = self.p["target_db"]
        if not target:
            raise catalog.CatalogError("restore needs target_db")
        catalog.check_db_name(target, "target_db")
        refusal = pg_backup.protected_target_refusal(self.p, target) or catalog.confirmation_refusal(
            target, self.p["confirm"])
        if refusal:
            raise Refused(refusal)
        if self.p["jobs"] < 1:
            raise catalog.CatalogError("jobs must be at least 1")
        self.p["kind"] = "postgres"
        entries, _orphans, manifests, _records = self.catalog()
        entry, manifest = self.resolve(entries, manifests, self.p["backup_id"], verified_only=not self.p["backup_id"])
        refusal = catalog.verification_refusal(entry, self.p["min_verify_level"], self.p["force"])
        if refusal:
            raise Refused(refusal)
        exists = pg_backup.database_exists(self.p, target)
        plan = {"backup_id": entry["backup_id"], "source_db": self.db, "target_db": target, "target_exists": exists,
                "verification": entry["verification"], "verified_level": entry["verified_level"],
                "forced": bool(self.p["force"] and entry["verification"] != "verified"),
                "mode": self.p["restore_mode"] if exists else "create", "jobs": self.p["jobs"],
                "streamed": self.p["jobs"] == 1, "safety_backup": bool(self.p["safety_backup"] and exists),
                "sessions_on_target": pg_backup.database_sessions(self.p, target) if exists else []}
        if self.check:
            return dict(changed=True, restore=plan, safety_backup=None,
                        msg="would restore %s into %s" % (entry["backup_id"], target))
        # stage reached, carried in the failure details: the restore role's rescue decides from it
        progress = {"stage": "preflight", "restore_started": False}
        safety = None
        try:
            before_counts = None
            if exists:
                before_counts = pg_backup.count_in_database(self.p, target, sorted(manifest.get("row_counts") or {}))
            if plan["safety_backup"]:
                progress["stage"] = "safety_backup"
                safety = self.pg_backup(target, sorted(set(self.p["tags"]) | set(["safety"])))
            progress["stage"] = "restore"
            outcome = pg_backup.restore_postgres(
                self.p, self.store, manifest, target, jobs=self.p["jobs"], temp_dir=self.p["temp_dir"],
                mode=self.p["restore_mode"], owner=self.p["target_owner"], no_owner=self.p["no_owner"],
                analyze=self.p["analyze"], pg_bin_dir=self.p["pg_bin_dir"], secrets=self.secrets,
                progress=progress, timeout=self.p["restore_timeout"], lock_timeout=self.p["restore_lock_timeout"])
        except Exception as exc:  # noqa: BLE001 - every failure carries the stage it happened in
            if isinstance(exc, pg_backup.BackupError):
                error = exc
            elif isinstance(exc, (catalog.CatalogError, s3_store.S3StoreError, pg_backup.Interrupted)):
                error = pg_backup.BackupError(str(exc))
            else:
                error = pg_backup.BackupError("restore failed: %s: %s" % (type(exc).__name__, exc))
            if progress["stage"] == "safety_backup":
                error.args = ("safety backup of %s failed, the restore did not start (%s unchanged): %s"
                              % (target, target, error.args[0]),)
            error.details.update(progress)
            error.details.setdefault("target_unchanged", not progress["restore_started"])
            error.details["safety_backup_id"] = safety["backup_id"] if safety else None
            error.details["plan"] = plan
            if error is exc:
                raise
            raise error
        plan.update(outcome)
        return dict(changed=True, restore=plan, safety_backup=safety,
                    diff=dict(before={"row_counts": before_counts}, after={"row_counts": outcome["row_counts"]}),
                    msg="restored %s into %s (%d tables, row counts match the manifest%s)%s" % (
                        entry["backup_id"], target, len(outcome["row_counts"]),
                        ", owner and privileges as before" if outcome["privileges"]["match"] else "",
                        "; safety backup %s" % safety["backup_id"] if safety else ""))

    def fetch(self):
        if not self.p["dest"]:
            raise catalog.CatalogError("fetch needs dest")
        entries, _orphans, manifests, _records = self.catalog()
        entry, manifest = self.resolve(entries, manifests, self.p["backup_id"])
        if self.check:
            return dict(changed=True, fetched={"dest": self.p["dest"], "backup_id": entry["backup_id"],
                                               "size": manifest["size"]},
                        msg="would download %s to %s" % (entry["backup_id"], self.p["dest"]))
        fetched = s3_store.download_to_file(self.store, manifest["key"], self.p["dest"], manifest["size"],
                                            manifest["sha256"])
        fetched["backup_id"] = entry["backup_id"]
        return dict(changed=True, fetched=fetched, msg="downloaded %s to %s (sha256 matches)" % (
            entry["backup_id"], self.p["dest"]))

    def drain(self):
        from ansible_collections.apex.ops.plugins.module_utils import pg_backup

        target = self.p["target_db"]
        if not target:
            raise catalog.CatalogError("drain needs target_db")
        catalog.check_db_name(target, "target_db")
        if self.p["drain_terminate"] and self.p["confirm"] != target:
            # terminating sessions of a production database is destructive: name it explicitly
            raise Refused("refusing to drain %s with drain_terminate=true: confirm must equal target_db (got %s); "
                          "nothing was terminated. Set drain_terminate=false to only wait" % (
                              target, "nothing" if self.p["confirm"] is None else repr(self.p["confirm"])))
        outcome = pg_backup.drain_sessions(
            self.p, target, users=self.p["drain_users"], applications=self.p["drain_applications"],
            grace=self.p["drain_grace"], timeout=self.p["drain_timeout"], terminate=self.p["drain_terminate"],
            check_mode=self.check)
        changed = bool(outcome["terminated"]) or (self.check and bool(outcome["initial"]) and self.p["drain_terminate"])
        return dict(changed=changed, drain=outcome, msg="%s: %d session(s) at start, %d terminated, %.1fs" % (
            target, len(outcome["initial"]), len(outcome["terminated"]), outcome["waited_seconds"]))


class Refused(Exception):
    """A safety precondition is not met: nothing was changed."""


def _readable(path):
    import os
    return os.access(path, os.R_OK)


def main():
    module = ApexModule(ARGSPEC, fragments=(POSTGRES_ARGSPEC, REDIS_ARGSPEC, S3_ARGSPEC),
                        supports_check_mode=True)
    action = module.params["action"]
    requirements = [] if action == "drain" else [s3_store.REQUIREMENT]  # the drain only reads pg_stat_activity
    if action == "redis_backup":
        requirements.append(redis_client.REQUIREMENT)
    elif action in ("backup", "verify", "restore", "drain"):
        requirements.append(pg.REQUIREMENT)
    for pip_name, error in requirements:
        module.require(pip_name, error)
    if module.params["part_size_mb"] < 5:
        module.fail("part_size_mb must be at least 5 (S3 multipart rule)")
    if module.params["upload_concurrency"] < 1:
        module.fail("upload_concurrency must be at least 1")

    from ansible_collections.apex.ops.plugins.module_utils import pg_backup
    from ansible_collections.apex.ops.plugins.module_utils.redis_backup import RedisBackupError

    runner = None
    try:
        with pg_backup.interruptible():
            runner = Runner(module)
            result = getattr(runner, action)()
    except Refused as exc:
        module.fail(str(exc), refused=True, changed=False)
    except (pg_backup.BackupError, RedisBackupError) as exc:
        module.fail(catalog.redact(str(exc), runner.secrets if runner else []), **_details(exc, runner))
    except (catalog.CatalogError, s3_store.S3StoreError, pg_backup.Interrupted) as exc:
        module.fail(catalog.redact(str(exc), runner.secrets if runner else []))
    except Exception as exc:  # noqa: BLE001 - psycopg/redis errors: one clear failure
        secrets = runner.secrets if runner else []
        module.fail(catalog.redact("%s failed: %s: %s" % (action, type(exc).__name__, exc), secrets))
    if result.pop("failed", False):
        module.fail(result.pop("msg"), **result)
    module.exit_json(**result)


def _details(exc, runner):
    details = dict(getattr(exc, "details", {}) or {})
    last_state = details.pop("last_state", None)
    out = dict(details=details) if details else {}
    if last_state is not None:
        out["last_state"] = last_state
    return out


if __name__ == "__main__":
    main()
