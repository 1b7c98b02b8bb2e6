# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What each ``state`` of apex_backup does: one function per state.

Each function takes a :class:`BackupContext` (connection options, the S3 store, the key prefix,
the secrets to redact, check mode) and its own options as keyword arguments named like the
module's options, and returns the module result. Nothing here reads or changes
``module.params``. A failure raises; :func:`failure` turns the exception into the message and
exactly the keys apex_backup's RETURN documents for failures (:data:`FAILURE_DETAIL_KEYS`).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as catalog
from ansible_collections.apex.ops.plugins.module_utils import catalog_store
from ansible_collections.apex.ops.plugins.module_utils import s3_store
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import BackupError, Interrupted
from ansible_collections.apex.ops.plugins.module_utils.redaction import redact
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow

STATES = ("facts", "backup", "redis_backup", "base_backup", "verify", "prune", "restore", "fetch", "drain")
# deprecated spellings of a state, and what they mean now
STATE_SYNONYMS = {"list": "facts"}

# The keys of ``details`` a failure may return (apex_backup RETURN, "returned: failure").
FAILURE_DETAIL_KEYS = (
    # where a restore got to, and what state the target is in
    "stage", "restore_started", "target_unchanged", "target_dropped", "dropped_created_target", "plan",
    "safety_backup_id", "single_transaction", "timed_out", "terminated_backends", "lock_waits", "checksum",
    "sessions", "refused", "privileges", "restore",
    # the rollback to the safety backup (rollback_on_failure)
    "rolled_back", "rollback_verified", "rollback",
    # backups
    "pg_dump_returncode", "pg_dump_errors", "available_tables", "maintenance_db",
)


class Refused(Exception):
    """A safety precondition is not met: nothing was changed."""


class BackupContext(object):
    """What every state needs.

    ``conn_params``: the PostgreSQL (and Redis) connection options, as ``postgres.connect`` and
    ``redis_client.connect`` take them; ``store_factory()`` builds the S3 store on first use (a
    drain never touches S3); ``secrets`` are redacted from every message.
    """

    def __init__(self, conn_params, store_factory, prefix, secrets=(), check_mode=False):
        self.conn_params = conn_params
        self._store_factory = store_factory
        self._store = None
        self.prefix = prefix
        self.secrets = [s for s in secrets if s]
        self.check_mode = check_mode

    @property
    def store(self):
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def catalog(self, kind, name):
        return catalog_store.load_catalog(self.store, self.prefix, kind, name)

    def find(self, entries, manifests, kind, name, backup_id=None, verified_only=False, min_level="checksum"):
        return catalog_store.find_backup(entries, manifests, kind, name, self.prefix, backup_id=backup_id,
                                         verified_only=verified_only, min_level=min_level)


def store_factory(params, max_attempts=3, connect_timeout=5.0, read_timeout=60.0):
    """A function building the ``s3_store.Store`` of the S3 options in ``params``."""
    def build():
        policy = s3_store.RetryPolicy(max_attempts=max(1, max_attempts))
        client = s3_store.make_client(params, connect_timeout=connect_timeout, read_timeout=read_timeout)
        return s3_store.Store(client, params.get("s3_bucket"), policy)
    return build


def backup_name(kind, db, redis_instance, cluster=None):
    """The catalog name of a backup: the database, the Redis instance, or the cluster of a base backup."""
    if kind == "postgres_base":
        return cluster
    return redis_instance if kind == "redis" else db


# ---------------------------------------------------------------------------- states

def backup(ctx, db, tables=None, tags=(), part_size_mb=16, upload_concurrency=2, compress=None, pg_bin_dir=None):
    from ansible_collections.apex.ops.plugins.module_utils import pg_backup

    if ctx.check_mode:
        plan = pg_backup.plan_backup(ctx.conn_params, ctx.store, ctx.prefix, db, tables, pg_bin_dir)
        return dict(changed=True, backup=plan, msg="would back up %s to s3://%s/%s" % (
            db, ctx.store.bucket, plan["key"]))
    manifest = pg_backup.backup_postgres(
        ctx.conn_params, ctx.store, ctx.prefix, db, tables=tables, tags=tags, part_size=part_size_mb * s3_store.MIB,
        concurrency=upload_concurrency, compress=compress, pg_bin_dir=pg_bin_dir, secrets=ctx.secrets)
    return dict(changed=True, backup=manifest, msg="backup %s of %s: %d bytes, %d tables, %.1fs" % (
        manifest["backup_id"], db, manifest["size"], len(manifest["row_counts"]), manifest["duration_seconds"]))


def base_backup(ctx, cluster="apex", tags=(), part_size_mb=16, upload_concurrency=2, compress=None, pg_bin_dir=None):
    from ansible_collections.apex.ops.plugins.module_utils import pg_base_backup

    if ctx.check_mode:
        plan = pg_base_backup.plan_base_backup(ctx.conn_params, ctx.store, ctx.prefix, cluster, pg_bin_dir)
        return dict(changed=True, backup=plan, msg="would take a base backup of %s to s3://%s/%s" % (
            cluster, ctx.store.bucket, plan["key"]))
    manifest = pg_base_backup.base_backup(
        ctx.conn_params, ctx.store, ctx.prefix, cluster, tags=tags, part_size=part_size_mb * s3_store.MIB,
        concurrency=upload_concurrency, compress=compress, pg_bin_dir=pg_bin_dir, secrets=ctx.secrets)
    return dict(changed=True, backup=manifest, msg="base backup %s of %s: %d bytes, WAL %s-%s, %.1fs" % (
        manifest["backup_id"], cluster, manifest["size"], manifest["start_lsn"], manifest["end_lsn"],
        manifest["duration_seconds"]))


def redis_backup(ctx, redis_instance="apex", rdb_source="auto", rdb_path=None, bgsave_timeout=300.0, tags=(),
                 part_size_mb=16, upload_concurrency=2):
    import os

    from ansible_collections.apex.ops.plugins.module_utils import redis_backup as rb
    from ansible_collections.apex.ops.plugins.module_utils import redis_client

    client = redis_client.connect(ctx.conn_params)
    if ctx.check_mode:
        source, path = rb.choose_source(client, rdb_source, rdb_path)
        ctx.store.check_bucket()
        plan = {"source": source, "rdb_path": path, "instance": redis_instance}
        if source == "file":
            plan["readable"] = os.access(path, os.R_OK)
        return dict(changed=True, backup=plan, msg="would %s and upload it" % (
            "BGSAVE %s" % path if source == "file" else "stream a snapshot over SYNC"))
    manifest = rb.backup_redis(
        client, ctx.store, ctx.prefix, redis_instance, timeout=bgsave_timeout, part_size=part_size_mb * s3_store.MIB,
        concurrency=upload_concurrency, tags=tags, rdb_path=rdb_path, source=rdb_source, params=ctx.conn_params)
    return dict(changed=True, backup=manifest, msg="redis backup %s (%s): %d bytes" % (
        manifest["backup_id"], manifest["source"], manifest["size"]))


def facts(ctx, kind="postgres", name=None, max_age=None, require_fresh=False, require_verified=True,
          min_verify_level="checksum"):
    """The catalog; with ``max_age`` (seconds) the freshness gate (``failed`` when it is required and not met)."""
    entries, orphans, dummy, dummy = ctx.catalog(kind, name)
    result = dict(changed=False, backups=entries, orphans=orphans, count=len(entries),
                  latest=entries[0] if entries else None,
                  latest_verified=catalog.latest_verified(entries, min_verify_level))
    if max_age is None:
        result["msg"] = "%d backup(s) of %s %s" % (len(entries), kind, name)
        return result
    fresh = catalog.freshness(entries, max_age, utcnow(), require_verified=require_verified,
                              min_level=min_verify_level)
    result["freshness"] = fresh
    if require_fresh and not fresh["fresh"]:
        result.update(failed=True, msg="freshness gate failed: %s" % fresh["reason"])
    else:
        result["msg"] = fresh["reason"]
    return result


def verify(ctx, kind="postgres", name=None, backup_id=None, verify_level="toc", pg_bin_dir=None, scratch_db=None):
    entries, dummy, manifests, records = ctx.catalog(kind, name)
    entry, manifest = ctx.find(entries, manifests, kind, name, backup_id)
    level = verify_level if kind == "postgres" else "checksum"
    planned = catalog.levels_upto(level, kind)
    if ctx.check_mode:
        return dict(changed=True, verification={"backup_id": entry["backup_id"], "level": level, "checks": planned},
                    msg="would verify %s (%s)" % (entry["backup_id"], ", ".join(planned)))
    if kind == "redis":
        from ansible_collections.apex.ops.plugins.module_utils import redis_backup as rb
        checks = rb.verify_redis(ctx.store, manifest)
    elif kind == "postgres_base":
        from ansible_collections.apex.ops.plugins.module_utils import pg_base_backup
        checks = pg_base_backup.verify_base_backup(ctx.store, manifest)
    else:
        from ansible_collections.apex.ops.plugins.module_utils import pg_verify
        checks = pg_verify.verify_postgres(ctx.conn_params, ctx.store, manifest, level, pg_bin_dir, ctx.secrets,
                                           scratch_db)
    record = catalog_store.record_verification(ctx.store, ctx.prefix, kind, name, entry["backup_id"], level, checks,
                                               previous=records.get(entry["backup_id"]))
    result = dict(changed=True, verification=record, backup_id=entry["backup_id"])
    if not record["ok"]:
        failed = record["failed_check"]
        result.update(failed=True, msg="verification of %s FAILED at check %r: %s" % (
            entry["backup_id"], failed, checks[failed].get("error")))
    else:
        result["msg"] = "backup %s verified (%s)" % (
            entry["backup_id"], ", ".join(sorted(checks, key=list(catalog.LEVELS).index)))
    return result


def prune(ctx, kind="postgres", name=None, keep_last=None, max_age=None, orphan_grace=86400.0,
          min_verify_level="checksum"):
    result = catalog_store.prune(ctx.store, ctx.prefix, kind, name, keep_last=keep_last, max_age_seconds=max_age,
                                 grace_seconds=orphan_grace, min_level=min_verify_level, check_mode=ctx.check_mode)
    result["msg"] = "%s %d backup(s), kept %d, %d orphan(s), %d stale upload(s)" % (
        "would delete" if ctx.check_mode else "deleted", len(result["deleted"]), len(result["kept"]),
        len(result["orphans_removed"]), len(result["uploads_aborted"]))
    return result


def fetch(ctx, kind="postgres", name=None, backup_id=None, dest=None):
    if not dest:
        raise catalog.CatalogError("fetch needs dest")
    entries, dummy, manifests, dummy = ctx.catalog(kind, name)
    entry, manifest = ctx.find(entries, manifests, kind, name, backup_id)
    if ctx.check_mode:
        return dict(changed=True, fetched={"dest": dest, "backup_id": entry["backup_id"], "size": manifest["size"]},
                    msg="would download %s to %s" % (entry["backup_id"], dest))
    fetched = s3_store.download_to_file(ctx.store, manifest["key"], dest, manifest["size"], manifest["sha256"])
    fetched["backup_id"] = entry["backup_id"]
    return dict(changed=True, fetched=fetched, msg="downloaded %s to %s (sha256 matches)" % (entry["backup_id"], dest))


def drain(ctx, target_db=None, confirm=None, drain_users=None, drain_applications=None, drain_grace=30.0,
          drain_timeout=120.0, drain_terminate=True):
    from ansible_collections.apex.ops.plugins.module_utils import pg_drain

    if not target_db:
        raise catalog.CatalogError("drain needs target_db")
    catalog.check_db_name(target_db, "target_db")
    if drain_terminate and confirm != target_db:
        # terminating sessions of a production database is destructive: name it explicitly
        raise Refused("refusing to drain %s with drain_terminate=true: confirm must equal target_db (got %s); "
                      "nothing was terminated. Set drain_terminate=false to only wait" % (
                          target_db, "nothing" if confirm is None else repr(confirm)))
    outcome = pg_drain.drain_sessions(ctx.conn_params, target_db, users=drain_users, applications=drain_applications,
                                      grace=drain_grace, timeout=drain_timeout, terminate=drain_terminate,
                                      check_mode=ctx.check_mode)
    changed = bool(outcome["terminated"]) or (ctx.check_mode and bool(outcome["initial"]) and drain_terminate)
    return dict(changed=changed, drain=outcome, msg="%s: %d session(s) at start, %d terminated, %.1fs" % (
        target_db, len(outcome["initial"]), len(outcome["terminated"]), outcome["waited_seconds"]))


def restore(ctx, db, target_db=None, confirm=None, backup_id=None, force=False, min_verify_level="checksum",
            safety_backup=True, restore_mode="clean", target_owner=None, no_owner=False, jobs=1, temp_dir=None,
            analyze=True, restore_timeout=None, restore_lock_timeout=None, pg_bin_dir=None, tags=(), tables=None,
            part_size_mb=16, upload_concurrency=2, compress=None, rollback_on_failure=True):
    """Restore a backup of ``db`` into ``target_db`` after the pre-flight checks (confirmation,
    verification, protected databases), a safety backup of an existing target first.

    With ``rollback_on_failure``, a restore that fails after it touched the target (and did not
    roll back by itself: ``target_unchanged`` false) puts the safety backup back (``recreate``)
    and verifies it (row counts against the safety backup's manifest, owner and privileges read
    back); the failure then says ``rolled_back`` and ``rollback_verified``. Never after an
    interrupt: that is ``recover``'s job.
    """
    from ansible_collections.apex.ops.plugins.module_utils import pg_admin, pg_restore

    if not target_db:
        raise catalog.CatalogError("restore needs target_db")
    catalog.check_db_name(target_db, "target_db")
    refusal = pg_admin.protected_target_refusal(ctx.conn_params, target_db) or catalog.confirmation_refusal(
        target_db, confirm)
    if refusal:
        raise Refused(refusal)
    if jobs < 1:
        raise catalog.CatalogError("jobs must be at least 1")
    entries, dummy, manifests, dummy = ctx.catalog("postgres", db)
    entry, manifest = ctx.find(entries, manifests, "postgres", db, backup_id, verified_only=not backup_id,
                               min_level=min_verify_level)
    refusal = catalog.verification_refusal(entry, min_verify_level, force)
    if refusal:
        raise Refused(refusal)
    exists = pg_admin.database_exists(ctx.conn_params, target_db)
    plan = {"backup_id": entry["backup_id"], "source_db": db, "target_db": target_db, "target_exists": exists,
            "verification": entry["verification"], "verified_level": entry["verified_level"],
            "forced": bool(force and entry["verification"] != "verified"),
            "mode": restore_mode if exists else "create", "jobs": jobs, "streamed": jobs == 1,
            "safety_backup": bool(safety_backup and exists),
            "rollback_on_failure": bool(rollback_on_failure and safety_backup and exists),
            "sessions_on_target": pg_admin.database_sessions(ctx.conn_params, target_db) if exists else []}
    if ctx.check_mode:
        return dict(changed=True, restore=plan, safety_backup=None,
                    msg="would restore %s into %s" % (entry["backup_id"], target_db))
    # how far it got, carried in the failure details: the restore role's rescue reports from it
    progress = {"stage": "preflight", "restore_started": False}
    safety = None
    restore_options = dict(temp_dir=temp_dir, owner=target_owner, no_owner=no_owner, analyze=analyze,
                           pg_bin_dir=pg_bin_dir, secrets=ctx.secrets, timeout=restore_timeout,
                           lock_timeout=restore_lock_timeout)
    try:
        before_counts = None
        if exists:
            before_counts = pg_admin.count_in_database(ctx.conn_params, target_db,
                                                       sorted(manifest.get("row_counts") or {}))
        if plan["safety_backup"]:
            progress["stage"] = "safety_backup"
            safety = backup(ctx, target_db, tables=tables, tags=sorted(set(tags or ()) | set(["safety"])),
                            part_size_mb=part_size_mb, upload_concurrency=upload_concurrency, compress=compress,
                            pg_bin_dir=pg_bin_dir)["backup"]
        progress["stage"] = "restore"
        outcome = pg_restore.restore_postgres(ctx.conn_params, ctx.store, manifest, target_db, jobs=jobs,
                                              mode=restore_mode, progress=progress, **restore_options)
    except Exception as exc:  # noqa: BLE001 - every failure carries the stage it happened in
        error = _as_backup_error(exc)
        if progress["stage"] == "safety_backup":
            error.args = ("safety backup of %s failed, the restore did not start (%s unchanged): %s"
                          % (target_db, target_db, error.args[0]),)
        error.details.update(progress)
        error.details.setdefault("target_unchanged", not progress["restore_started"])
        error.details["safety_backup_id"] = safety["backup_id"] if safety else None
        error.details["plan"] = plan
        error.details["rolled_back"] = False
        if (rollback_on_failure and safety and progress["restore_started"] and not error.details["target_unchanged"]
                and not isinstance(exc, Interrupted)):
            _roll_back(ctx, error, safety, target_db, restore_options)
        if error is exc:
            raise
        raise error
    plan.update(outcome)
    return dict(changed=True, restore=plan, safety_backup=safety,
                diff=dict(before={"row_counts": before_counts}, after={"row_counts": outcome["row_counts"]}),
                msg="restored %s into %s (%d tables, row counts match the manifest%s)%s" % (
                    entry["backup_id"], target_db, len(outcome["row_counts"]),
                    ", owner and privileges as before" if outcome["privileges"]["match"] else "",
                    "; safety backup %s" % safety["backup_id"] if safety else ""))


def _as_backup_error(exc):
    if isinstance(exc, BackupError):
        return exc
    if isinstance(exc, (catalog.CatalogError, s3_store.S3StoreError, Interrupted)):
        return BackupError(str(exc))
    return BackupError("restore failed: %s: %s" % (type(exc).__name__, exc))


def _roll_back(ctx, error, safety, target_db, restore_options):
    """Put the safety backup back into ``target_db`` (recreate) and record the outcome in ``error``."""
    from ansible_collections.apex.ops.plugins.module_utils import pg_restore

    rollback = {"backup_id": safety["backup_id"], "error": None, "privileges": None, "row_counts": None,
                "differences": None}
    verified = {"data": False, "privileges": None}
    try:
        # what was there before, as it was: the owner and privileges come from the safety backup, not target_owner
        options = dict(restore_options, owner=None, no_owner=False)
        outcome = pg_restore.restore_postgres(ctx.conn_params, ctx.store, safety, target_db, jobs=1,
                                              mode="recreate", **options)
        rollback.update(privileges=outcome["privileges"], row_counts=outcome["row_counts"],
                        differences=outcome["differences"])
        verified = {"data": True, "privileges": outcome["privileges"]["match"]}
        error.details["rolled_back"] = True
    except BaseException as exc:  # noqa: BLE001 - the first failure is the one reported; an interrupt stops here
        details = getattr(exc, "details", {}) or {}
        done = details.get("restore") or {}
        rollback.update(error=redact("%s: %s" % (type(exc).__name__, exc), ctx.secrets),
                        privileges=details.get("privileges"), row_counts=done.get("row_counts"),
                        differences=done.get("differences"))
        # the data is back when the rollback got to verifying and the row counts matched
        verified = {"data": done.get("differences") == [],
                    "privileges": (details.get("privileges") or {}).get("match")}
    error.details["rollback"] = rollback
    error.details["rollback_verified"] = verified
    if error.details["rolled_back"]:
        error.args = ("%s; rolled back to the safety backup %s (row counts verified%s)" % (
            error.args[0], safety["backup_id"],
            ", owner and privileges as before" if verified["privileges"] else
            ", owner and privileges NOT checked" if verified["privileges"] is None else ""),)
    else:
        error.args = ("%s; rolling back to the safety backup %s FAILED: %s" % (
            error.args[0], safety["backup_id"], rollback["error"]),)


# ---------------------------------------------------------------------------- failures

def failure(exc, state, secrets=()):
    """``(msg, result keys)`` of a failed state: ``refused`` for a refusal, else ``details``
    (only :data:`FAILURE_DETAIL_KEYS`) and ``last_state`` when the step observed something."""
    if isinstance(exc, Refused):
        return redact(str(exc), secrets), dict(refused=True, changed=False)
    if isinstance(exc, (catalog.CatalogError, s3_store.S3StoreError, Interrupted, BackupError)) or \
            type(exc).__name__ == "RedisBackupError":
        msg = redact(str(exc), secrets)
    else:  # psycopg/redis errors: one clear failure
        msg = redact("%s failed: %s: %s" % (state, type(exc).__name__, exc), secrets)
    raw = dict(getattr(exc, "details", {}) or {})
    out = {}
    if raw.get("last_state") is not None:
        out["last_state"] = raw.pop("last_state")
    details = dict((k, v) for k, v in raw.items() if k in FAILURE_DETAIL_KEYS)
    if details:
        out["details"] = details
    return msg, out
