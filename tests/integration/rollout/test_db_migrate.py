"""The db_migrate playbook against the lab: the migration Job really runs the twin's migrator (kubesim runs
``apex-migrate`` with the container's DATABASE_URL) against a scratch database, the Job is gone afterwards and
``_sqlx_migrations`` holds every migration; a wrong password in DATABASE_URL fails the run with the pod's log
line about authentication, no password in the output, and the Job kept for inspection."""
import json
import os
import subprocess
from urllib.parse import quote

import psycopg
import pytest

from k8s_lab import NS

PLAYBOOK = "playbooks/db_migrate.yml"
SCRATCH_DB = "apex_migrate_test"
SECRET = "apex-migrate-test"
SELECTOR = "app.kubernetes.io/name=apex-migration,app.kubernetes.io/managed-by=apex.ops"
LATEST = 20240101000003
WRONG_PASSWORD = "wrong-pw-4b1d9e"


def migration_jobs(kube):
    batch = kube.client.BatchV1Api(kube.apps.api_client)
    return batch.list_namespaced_job(NS, label_selector=SELECTOR).items


def delete_migration_jobs(kube):
    batch = kube.client.BatchV1Api(kube.apps.api_client)
    for job in migration_jobs(kube):
        batch.delete_namespaced_job(job.metadata.name, NS, propagation_policy="Background")


@pytest.fixture
def scratch(lab, kube):
    """A scratch database owned by the application role, and a Secret with a database URL for it;
    ``scratch(password)`` writes the URL with that password. Dropped, deleted (with any migration Job) after."""
    admin = lab["APEX_PG_ADMIN_DSN"]

    def drop():
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % SCRATCH_DB)
        try:
            kube.core.delete_namespaced_secret(SECRET, NS)
        except kube.client.exceptions.ApiException as exc:
            assert exc.status == 404
        delete_migration_jobs(kube)

    drop()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute('CREATE DATABASE "%s" OWNER %s' % (SCRATCH_DB, lab["APEX_PG_APP_USER"]))

    def secret(password):
        url = "postgresql://%s:%s@127.0.0.1:%s/%s" % (lab["APEX_PG_APP_USER"], quote(password, safe=""),
                                                      lab["PGPORT"], SCRATCH_DB)
        kube.core.create_namespaced_secret(NS, {"metadata": {"name": SECRET}, "stringData": {"database-url": url}})

    yield secret
    drop()


def sqlx_rows(lab):
    with psycopg.connect(lab["APEX_PG_ADMIN_DSN"], dbname=SCRATCH_DB) as conn:
        if conn.execute("SELECT to_regclass('_sqlx_migrations')").fetchone()[0] is None:
            return []
        return conn.execute("SELECT version, success FROM _sqlx_migrations ORDER BY version").fetchall()


def extra_vars(report_dir, **more):
    return dict({"db_migrate_database_url_secret": {"name": SECRET, "key": "database-url"},
                 "apex_pg_database": SCRATCH_DB, "apex_report_dir": str(report_dir)}, **more)


def test_a_migration_runs_the_job_checks_sqlx_migrations_and_deletes_the_job(
        lab, kube, scratch, run_playbook, report_dir, read_report):
    scratch(lab["APEX_PG_APP_PASSWORD"])
    assert sqlx_rows(lab) == []
    proc = run_playbook(PLAYBOOK, extra_vars(report_dir, db_migrate_expected_version=str(LATEST)))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # the migrator really ran against the scratch database, as the application role
    rows = sqlx_rows(lab)
    assert [r[0] for r in rows][-1] == LATEST and len(rows) == 3 and all(r[1] for r in rows)
    # the Job is gone, and so are its pods
    assert migration_jobs(kube) == []
    assert [p.metadata.name for p in kube.core.list_namespaced_pod(NS).items if p.metadata.name.startswith("apex-migration-")] == []
    report = read_report(report_dir, "db_migrate")
    assert report["status"] == "ok" and report["outcome"] == "complete" and report["job_deleted"] is True
    assert report["latest_version_before"] is None and report["latest_version_after"] == LATEST
    assert report["job"]["image"] == "apex/api:1.0.0" and "database_url_secret" in report["job"]["database_url_source"]
    assert any('"applied": [20240101000001' in line for line in report["log_tail"])
    # the same again: nothing to apply, still complete; a wrong expected version fails the check
    proc = run_playbook(PLAYBOOK, extra_vars(report_dir, db_migrate_expected_version=str(LATEST + 1)))
    assert proc.returncode != 0
    assert "latest migration is %d, expected %d" % (LATEST, LATEST + 1) in proc.stdout
    assert migration_jobs(kube) == []  # the Job itself completed: deleted


def test_a_wrong_password_fails_with_the_pod_log_and_keeps_the_job(
        lab, kube, scratch, run_playbook, report_dir, read_report):
    scratch(WRONG_PASSWORD)
    proc = run_playbook(PLAYBOOK, extra_vars(report_dir))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    assert 'password authentication failed for user "%s"' % lab["APEX_PG_APP_USER"] in out
    assert "BackoffLimitExceeded" in out
    assert WRONG_PASSWORD not in out and lab["APEX_PG_APP_PASSWORD"] not in out
    jobs = migration_jobs(kube)
    assert len(jobs) == 1, [j.metadata.name for j in jobs]
    kept = jobs[0]
    assert [c.type for c in kept.status.conditions if c.status == "True"][-1] == "Failed"
    report = read_report(report_dir, "db_migrate")
    assert report["status"] == "failed" and report["job_kept"] == kept.metadata.name
    assert kept.metadata.name in out
    assert WRONG_PASSWORD not in json.dumps(report)
    assert sqlx_rows(lab) == []


def test_check_mode_shows_the_job_and_creates_nothing(lab, kube, run_playbook, report_dir, read_report):
    before = [j.metadata.name for j in migration_jobs(kube)]
    proc = run_playbook(PLAYBOOK, {"apex_report_dir": str(report_dir)}, check=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert [j.metadata.name for j in migration_jobs(kube)] == before
    report = read_report(report_dir, "db_migrate")
    assert report["status"] == "planned (check mode)" and report["outcome"] == "planned"
    assert report["job"]["env"]["DATABASE_URL"] == "<secretKeyRef apex-secrets/database-url>"
    assert report["job"]["image"] == "apex/api:1.0.0"
    # the lab's own kubectl sees no migration pod either
    pods = subprocess.run(["kubectl", "get", "pods", "-n", NS, "-l", SELECTOR, "-o", "name"], capture_output=True,
                          text=True, check=True, env=dict(os.environ, KUBECONFIG=lab["KUBECONFIG"]))
    assert pods.stdout.strip() == ""
