"""Issue 15, cause 4: a restore keeps the target's owner, grants and default privileges, and refuses
the maintenance and system databases before anything changes.

The targets are owned by the application role (``APEX_PG_APP_USER``, ``apex``) with grants of their
own; every assertion reads PostgreSQL (pg_database, pg_namespace, pg_default_acl) or connects as the
application role and creates/selects in schema public, as the application does.
"""
import glob
import json
import os

import psycopg
import pytest


@pytest.fixture()
def report_dir(tmp_path):
    return str(tmp_path / "reports")


def last_report(report_dir, name):
    files = sorted(glob.glob(os.path.join(report_dir, "%s-*.json" % name)))
    assert files, "no %s report in %s" % (name, report_dir)
    with open(files[-1]) as handle:
        return json.load(handle)


def restore_vars(prefix, report_dir, source_db, target, **extra):
    data = {"apex_s3_prefix": prefix, "apex_report_dir": report_dir, "restore_source_db": source_db,
            "restore_target_db": target, "restore_confirm": target, "restore_manage_workloads": False}
    data.update(extra)
    return data


def ok(result):
    assert not result.failed, "module failed: %s" % result.get("msg")
    return result


def privileges(pg_admin, db):
    """Owner, ACL and default privileges as PostgreSQL stores them (text), read independently of the module."""
    with pg_admin() as conn:
        owner, datacl = conn.execute("SELECT pg_get_userbyid(datdba), datacl::text[] FROM pg_database "
                                     "WHERE datname = %s", (db,)).fetchone()
    with pg_admin(db) as conn:
        nsp = conn.execute("SELECT pg_get_userbyid(nspowner), nspacl::text[] FROM pg_namespace "
                           "WHERE nspname = 'public'").fetchone()
        defaults = conn.execute("SELECT pg_get_userbyid(defaclrole), defaclnamespace::regnamespace::text, "
                                "defaclobjtype::text, defaclacl::text[] FROM pg_default_acl ORDER BY 1, 2, 3").fetchall()
    return {"owner": owner, "datacl": sorted(datacl or []), "public": (nsp[0], sorted(nsp[1] or [])),
            "defaults": [(r[0], r[1], r[2], sorted(r[3])) for r in defaults]}


def make_app_target(helpers, pg_admin, lab, name):
    """A database owned by the application role, with database grants, a schema grant and default privileges."""
    app = lab["APEX_PG_APP_USER"]
    helpers.create_db(name, tasks=5, events=5, agents=1)
    with pg_admin() as conn:
        conn.execute('ALTER DATABASE "%s" OWNER TO "%s"' % (name, app))
        conn.execute('REVOKE TEMPORARY ON DATABASE "%s" FROM PUBLIC' % name)
        conn.execute('GRANT CONNECT, CREATE ON DATABASE "%s" TO pg_monitor' % name)
    with pg_admin(name) as conn:
        conn.execute("GRANT USAGE ON SCHEMA public TO pg_monitor")
        conn.execute('ALTER DEFAULT PRIVILEGES FOR ROLE "%s" IN SCHEMA public GRANT SELECT ON TABLES TO pg_monitor' % app)
        conn.execute("ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT SELECT, UPDATE ON SEQUENCES TO pg_monitor")
        conn.execute('GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO "%s"' % app)
    return privileges(pg_admin, name)


def app_can_work(lab, db):
    """Connect as the application role and create, insert and select in schema public."""
    dsn = psycopg.conninfo.conninfo_to_dict(lab["APEX_PG_DSN"])
    dsn["dbname"] = db
    with psycopg.connect(autocommit=True, **dsn) as conn:
        conn.execute("CREATE TABLE public.app_probe (x int)")
        conn.execute("INSERT INTO public.app_probe VALUES (1)")
        assert conn.execute("SELECT count(*) FROM public.app_probe").fetchone() == (1,)
        conn.execute("DROP TABLE public.app_probe")


@pytest.fixture(scope="module")
def source_backup(bk, source_db):
    return ok(bk(state="backup", db=source_db, part_size_mb=5))["backup"]


def test_recreate_keeps_owner_grants_and_default_privileges(bk, source_db, source_backup, helpers, scratch_name,
                                                            pg_admin, lab):
    target = scratch_name()
    before = make_app_target(helpers, pg_admin, lab, target)
    result = ok(bk(state="restore", db=source_db, target_db=target, confirm=target, restore_mode="recreate",
                   safety_backup=False, force=True, backup_id=source_backup["backup_id"]))
    section = result["restore"]["privileges"]
    assert section["source"] == "target" and section["match"] is True and section["differences"] == []
    assert privileges(pg_admin, target) == before  # datacl and default ACLs as they were, not the dump's
    assert "owner and privileges as before" in result["msg"]
    app_can_work(lab, target)


def test_failed_recreate_then_rollback_from_the_safety_backup_keeps_privileges(
        bk, source_db, source_backup, helpers, scratch_name, pg_admin, lab):
    """The lab run of issue 15: a recreate restore fails after the drop (the target is gone), the rollback
    recreates it from the safety backup - owned by postgres before the fix, 'permission denied for schema
    public' for the application."""
    target = scratch_name()
    before = make_app_target(helpers, pg_admin, lab, target)
    with pg_admin(target) as conn:
        conn.execute("CREATE TABLE blocker (x int)")  # pg_restore of the backup then fails: no such role
    failed = bk(state="restore", db=source_db, target_db=target, confirm=target, force=True, restore_mode="recreate",
                backup_id=source_backup["backup_id"], target_owner="apex_bk_no_such_role",
                rollback_on_failure=False)  # this test puts the safety backup back itself
    assert failed.failed and failed["details"]["target_dropped"] is True and not helpers.db_exists(target)
    assert failed["details"]["privileges"]["before"]["owner"] == lab["APEX_PG_APP_USER"]
    safety = failed["details"]["safety_backup_id"]
    result = ok(bk(state="restore", db=target, target_db=target, confirm=target, restore_mode="recreate",
                   safety_backup=False, force=True, backup_id=safety))
    section = result["restore"]["privileges"]
    assert section["source"] == "backup" and section["match"] is True, section
    assert privileges(pg_admin, target) == before
    app_can_work(lab, target)


def test_failed_recreate_is_rolled_back_by_the_module_with_its_privileges(
        bk, source_db, source_backup, helpers, scratch_name, pg_admin, lab):
    """rollback_on_failure (the default): the same failed recreate, and the module itself recreates the target
    from its safety backup, verifies the row counts and reads owner and privileges back."""
    target = scratch_name()
    before = make_app_target(helpers, pg_admin, lab, target)
    with pg_admin(target) as conn:
        conn.execute("CREATE TABLE blocker (x int)")
    data_before = helpers.fingerprint(target)
    failed = bk(state="restore", db=source_db, target_db=target, confirm=target, force=True, restore_mode="recreate",
                backup_id=source_backup["backup_id"], target_owner="apex_bk_no_such_role")
    details = failed["details"]
    assert failed.failed and details["target_dropped"] is True and details["stage"] == "restore"
    assert details["rolled_back"] is True, failed["msg"]
    assert details["rollback_verified"] == {"data": True, "privileges": True}
    assert details["rollback"]["backup_id"] == details["safety_backup_id"] and details["rollback"]["error"] is None
    assert "rolled back to the safety backup %s" % details["safety_backup_id"] in failed["msg"]
    assert helpers.fingerprint(target) == data_before and privileges(pg_admin, target) == before
    app_can_work(lab, target)


def test_no_rollback_when_the_single_transaction_left_the_target_unchanged(
        bk, source_db, source_backup, helpers, scratch_name, pg_admin):
    """A clean single-transaction restore that fails rolls back in PostgreSQL: nothing to put back."""
    target = scratch_name()
    helpers.create_db(target, tasks=3, events=3, agents=1)
    before = helpers.fingerprint(target)
    failed = bk(state="restore", db=source_db, target_db=target, confirm=target, force=True,
                backup_id=source_backup["backup_id"], restore_lock_timeout=0, restore_timeout=0.001)
    details = failed["details"]
    assert failed.failed and details["target_unchanged"] is True
    assert details["rolled_back"] is False and "rollback" not in details
    assert helpers.fingerprint(target) == before


def test_privileges_that_cannot_come_back_fail_the_restore(bk, source_db, source_backup, helpers, scratch_name,
                                                           pg_admin, lab):
    """A difference the module cannot repair is a failure that names it, not a 'restored'."""
    target = scratch_name()
    make_app_target(helpers, pg_admin, lab, target)
    role = "apex_bk_gone_%s" % helpers.token()
    with pg_admin() as conn:
        conn.execute('CREATE ROLE "%s"' % role)
        conn.execute('GRANT CONNECT ON DATABASE "%s" TO "%s"' % (target, role))
    backup = ok(bk(state="backup", db=target))["backup"]
    with pg_admin() as conn:
        conn.execute('REVOKE ALL ON DATABASE "%s" FROM "%s"' % (target, role))
        conn.execute('DROP ROLE "%s"' % role)
    helpers.drop_db(target)
    result = ok(bk(state="restore", db=target, target_db=target, confirm=target, force=True, safety_backup=False,
                   backup_id=backup["backup_id"]))
    section = result["restore"]["privileges"]
    assert section["source"] is None and role in section["note"]  # not applied: the role is gone


@pytest.mark.parametrize("target", ["postgres", "template0", "template1", "maint"])
def test_system_and_maintenance_databases_are_refused(bk, source_db, source_backup, helpers, scratch_name, pg_admin,
                                                      target):
    maint = None
    if target == "maint":
        maint = target = scratch_name("apex_bk_maint")
        helpers.create_db(target, tasks=2, events=2, agents=1)
    before = privileges(pg_admin, target) if target != "template0" else None
    tables_before = helpers.fingerprint(target) if maint else None
    for check_mode in (True, False):
        args = dict(state="restore", db=source_db, target_db=target, confirm=target, force=True,
                    restore_mode="recreate", backup_id=source_backup["backup_id"])
        if maint:
            args["maintenance_db"] = maint
        result = bk(check_mode=check_mode, **args)
        assert result.failed and result.get("refused") is True, result
        assert "refusing to restore into %s" % target in result["msg"]
        assert ("system database" if target in ("template0", "template1") else "maintenance database") in result["msg"]
    if before is not None:
        assert privileges(pg_admin, target) == before
    if maint:
        assert helpers.fingerprint(target) == tables_before
    with pg_admin(target if target != "template0" else "postgres") as conn:
        names = [r[0] for r in conn.execute("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                                            " WHERE nspname = 'public' AND relname = 'agents'").fetchall()]
    assert names == ([] if not maint else ["agents"])  # nothing was restored into it


# ------------------------------------------------------------------ through the restore playbook

def test_restore_playbook_rescue_of_a_failed_recreate_keeps_owner_and_privileges(
        run_playbook, bk, source_db, prefix, report_dir, helpers, scratch_name, pg_admin, lab, s3):
    """The lab run of issue 15 through the role: recreate, the backup's checksum does not match (the stream
    stops before the last chunk, after the drop), the rescue rolls back to the safety backup. The database is
    owned by the application role again, with its grants and default privileges, and the application works."""
    m = bk(state="backup", db=source_db)["backup"]
    assert not bk(state="verify", db=source_db, backup_id=m["backup_id"], verify_level="checksum").failed
    doctored = dict(m, sha256="0" * 64)
    s3.put_object(Bucket=helpers.bucket, Key=m["key"].replace(".dump", ".manifest.json"),
                  Body=json.dumps(doctored).encode())
    target = scratch_name()
    before = make_app_target(helpers, pg_admin, lab, target)
    data_before = helpers.fingerprint(target)
    proc = run_playbook("playbooks/restore.yml", restore_vars(prefix, report_dir, source_db, target,
                                                              restore_mode="recreate", restore_backup_id=m["backup_id"]))
    assert proc.returncode != 0
    report = last_report(report_dir, "restore")
    assert report["phase"] == "restore" and "does not match its manifest" in report["error"], report
    assert report["rolled_back"] is True, report
    assert report["database_state"] == "rolled back to the safety backup %s" % report["safety_backup_id"], report
    assert report["privileges"]["match"] is True and report["privileges"]["source"] == "backup", report["privileges"]
    assert report["privileges"]["before"]["owner"] == report["privileges"]["after"]["owner"] == lab["APEX_PG_APP_USER"]
    # in PostgreSQL: the data, the owner, the database ACL and the default ACLs are those of before
    assert helpers.fingerprint(target) == data_before
    assert privileges(pg_admin, target) == before
    app_can_work(lab, target)


def test_restore_playbook_refuses_the_maintenance_database(run_playbook, bk, source_db, source_backup, prefix,
                                                           report_dir, helpers, pg_admin):
    assert not bk(state="verify", db=source_db, backup_id=source_backup["backup_id"], verify_level="checksum").failed
    before = privileges(pg_admin, "postgres")
    keys_before = set(helpers.keys(prefix))
    proc = run_playbook("playbooks/restore.yml", restore_vars(prefix, report_dir, source_db, "postgres",
                                                              restore_backup_id=source_backup["backup_id"]))
    assert proc.returncode != 0
    assert "refusing to restore into postgres" in proc.stdout
    report = last_report(report_dir, "restore")
    assert report["status"] == "failed" and report["database_state"].startswith("unchanged"), report
    assert privileges(pg_admin, "postgres") == before
    with pg_admin("postgres") as conn:
        assert conn.execute("SELECT to_regclass('public.agents')").fetchone() == (None,)
    assert set(helpers.keys(prefix)) == keys_before  # not even a safety backup
