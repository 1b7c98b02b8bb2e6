"""The backup, backup_verify, backup_prune and restore playbooks against the lab.

Most restore tests run with ``restore_manage_workloads: false`` and assert the restore itself, its
refusals and its rescue in the database; the tests at the end manage workloads of their own namespace
in the lab's Kubernetes simulator (scale to 0, back to the recorded counts, health check).
"""
import glob
import json
import os

import pytest


@pytest.fixture()
def report_dir(tmp_path):
    return str(tmp_path / "reports")


def common(prefix, report_dir, **extra):
    data = {"apex_s3_prefix": prefix, "apex_report_dir": report_dir}
    data.update(extra)
    return data


def last_report(report_dir, name):
    files = sorted(glob.glob(os.path.join(report_dir, "%s-*.json" % name)))
    assert files, "no %s report in %s" % (name, report_dir)
    with open(files[-1]) as handle:
        return json.load(handle)


def test_backup_playbook_vvv_leaks_no_secret(run_playbook, lab, source_db, prefix, report_dir, helpers):
    proc = run_playbook("playbooks/backup.yml", common(prefix, report_dir, backup_databases=[source_db],
                                                       backup_redis_instance="itest-pb"), verbosity=3)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for name in ("PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "APEX_REDIS_PASSWORD"):
        assert lab[name] not in proc.stdout and lab[name] not in proc.stderr, "%s leaked with -vvv" % name
    report = last_report(report_dir, "backup")
    assert report["status"] == "ok"
    db = report["databases"][0]
    assert db["db"] == source_db and db["verified"] is True and db["verify_level"] == "toc"
    assert report["redis"]["verified"] is True
    assert db["key"].replace(".dump", ".manifest.json") in helpers.keys(prefix)


def test_backup_playbook_check_mode_uploads_nothing(run_playbook, source_db, prefix, report_dir, helpers):
    before = set(helpers.keys(prefix))
    proc = run_playbook("playbooks/backup.yml", common(prefix, report_dir, backup_databases=[source_db],
                                                       backup_redis_instance="itest-pb"), check=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert set(helpers.keys(prefix)) == before
    assert last_report(report_dir, "backup")["check_mode"] is True


def test_backup_playbook_failure_is_reported(run_playbook, prefix, report_dir, helpers):
    proc = run_playbook("playbooks/backup.yml", common(prefix, report_dir, backup_databases=["apex_bk_missing_db"],
                                                       backup_redis=False))
    assert proc.returncode != 0
    report = last_report(report_dir, "backup")
    assert report["status"] == "failed" and "apex_bk_missing_db" in report["error"]
    assert not helpers.keys("%s/postgres/apex_bk_missing_db/" % prefix)


def test_backup_verify_playbook_deep(run_playbook, bk, source_db, prefix, report_dir):
    bk(state="backup", db=source_db)
    proc = run_playbook("playbooks/backup_verify.yml", common(prefix, report_dir, backup_verify_databases=[source_db],
                                                              backup_verify_redis_instance="itest-pb"))
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = last_report(report_dir, "backup_verify")
    db = report["databases"][0]
    assert db["ok"] is True and sorted(db["checks"]) == ["checksum", "deep", "toc"]
    assert db["deep"]["differences"] == [] and db["deep"]["scratch_dropped"] is True
    assert db["freshness"]["fresh"] is True


def test_backup_prune_playbook_check(run_playbook, source_db, prefix, report_dir, helpers):
    before = set(helpers.keys(prefix))
    proc = run_playbook("playbooks/backup_prune.yml", common(prefix, report_dir, backup_prune_databases=[source_db],
                                                             backup_prune_keep_last=1, backup_prune_max_age="",
                                                             backup_prune_redis_instance="itest-pb"), check=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = last_report(report_dir, "backup_prune")
    assert report["check_mode"] is True and report["databases"][0]["kept"]
    assert set(helpers.keys(prefix)) == before


def test_backup_prune_playbook_real(run_playbook, bk, helpers, scratch_name, prefix, report_dir):
    db = scratch_name("apex_bk_pbprune")
    helpers.create_db(db, tasks=3, events=3, agents=1)
    ids = [bk(state="backup", db=db)["backup"]["backup_id"] for dummy in range(3)]
    assert not bk(state="verify", db=db, backup_id=ids[0], verify_level="checksum").failed  # the oldest is verified
    proc = run_playbook("playbooks/backup_prune.yml", common(prefix, report_dir, backup_prune_databases=[db],
                                                             backup_prune_keep_last=1, backup_prune_max_age="",
                                                             backup_prune_redis=False))
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = last_report(report_dir, "backup_prune")
    assert report["check_mode"] is False
    entry = report["databases"][0]
    assert sorted(d["backup_id"] for d in entry["deleted"]) == [ids[1]]
    remaining = sorted(k for k in helpers.keys("%s/postgres/%s/" % (prefix, db)) if k.endswith(".manifest.json"))
    assert [k.rsplit("/", 1)[1].split(".")[0] for k in remaining] == sorted([ids[0], ids[2]])  # newest + newest verified
    assert not [k for k in helpers.keys("%s/postgres/%s/" % (prefix, db)) if ids[1] in k]


def restore_vars(prefix, report_dir, source_db, target, **extra):
    data = common(prefix, report_dir, restore_source_db=source_db, restore_target_db=target, restore_confirm=target,
                  restore_manage_workloads=False)
    data.update(extra)
    return data


@pytest.fixture()
def verified_backup(bk, source_db):
    m = bk(state="backup", db=source_db)["backup"]
    assert not bk(state="verify", db=source_db, backup_id=m["backup_id"], verify_level="toc").failed
    return m


def test_restore_playbook_into_fresh_database(run_playbook, verified_backup, source_db, prefix, report_dir, helpers,
                                              scratch_name):
    target = scratch_name()
    proc = run_playbook("playbooks/restore.yml", restore_vars(prefix, report_dir, source_db, target))
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert helpers.fingerprint(target) == helpers.fingerprint(source_db)
    report = last_report(report_dir, "restore")
    assert report["status"] == "ok" and report["backup_id"] == verified_backup["backup_id"]
    assert report["database_state"] == "restored from %s" % verified_backup["backup_id"]


def test_restore_playbook_drains_sessions_and_keeps_safety_backup(run_playbook, verified_backup, source_db, prefix,
                                                                  report_dir, helpers, scratch_name, lab):
    import psycopg

    target = scratch_name()
    helpers.create_db(target, tasks=4, events=4, agents=1)
    # an "application" session that would block the restore's locks: the drain terminates it
    app = psycopg.connect(lab["APEX_PG_ADMIN_DSN"], dbname=target, application_name="apex-api", autocommit=True)
    app.execute("SELECT 1")
    proc = run_playbook("playbooks/restore.yml", restore_vars(prefix, report_dir, source_db, target,
                                                              restore_drain_users=[], restore_drain_applications=["apex-api"],
                                                              restore_drain_grace=1, restore_drain_timeout=30))
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = last_report(report_dir, "restore")
    assert [s["application_name"] for s in report["drain"]["terminated"]] == ["apex-api"]
    assert report["safety_backup_id"]
    assert helpers.fingerprint(target) == helpers.fingerprint(source_db)
    with pytest.raises(psycopg.OperationalError):
        app.execute("SELECT 1")


def test_restore_playbook_check_mode_changes_nothing(run_playbook, verified_backup, source_db, prefix, report_dir,
                                                     helpers, scratch_name, lab):
    import psycopg

    target = scratch_name()
    helpers.create_db(target, tasks=4, events=4, agents=1)
    before = helpers.fingerprint(target)
    keys_before = set(helpers.keys(prefix))
    app = psycopg.connect(lab["APEX_PG_ADMIN_DSN"], dbname=target, application_name="apex-api", autocommit=True)
    try:
        proc = run_playbook("playbooks/restore.yml", restore_vars(prefix, report_dir, source_db, target,
                                                                  restore_drain_users=[],
                                                                  restore_drain_applications=["apex-api"],
                                                                  restore_drain_grace=0), check=True)
        assert proc.returncode == 0, proc.stdout[-4000:]
        report = last_report(report_dir, "restore")
        assert report["status"] == "planned" and report["check_mode"] is True
        assert report["database_state"] == "unchanged (check mode)"
        assert report["plan"]["backup_id"] == verified_backup["backup_id"] and report["plan"]["target_exists"] is True
        assert app.execute("SELECT 1").fetchone() == (1,)  # the drain did not terminate it in check mode
    finally:
        app.close()
    assert helpers.fingerprint(target) == before
    assert set(helpers.keys(prefix)) == keys_before  # no safety backup either


def test_restore_playbook_wrong_confirmation(run_playbook, verified_backup, source_db, prefix, report_dir, helpers,
                                             scratch_name):
    target = scratch_name()
    helpers.create_db(target, tasks=4, events=4, agents=1)
    before = helpers.fingerprint(target)
    keys_before = set(helpers.keys(prefix))
    proc = run_playbook("playbooks/restore.yml", restore_vars(prefix, report_dir, source_db, target,
                                                              restore_confirm="apex"))
    assert proc.returncode != 0
    assert "restore_confirm must equal restore_target_db" in proc.stdout
    report = last_report(report_dir, "restore")
    assert report["status"] == "failed" and report["database_state"].startswith("unchanged")
    assert helpers.fingerprint(target) == before and set(helpers.keys(prefix)) == keys_before


def test_restore_playbook_refuses_unverified(run_playbook, bk, source_db, prefix, report_dir, helpers, scratch_name):
    unverified = bk(state="backup", db=source_db)["backup"]
    target = scratch_name()
    proc = run_playbook("playbooks/restore.yml", restore_vars(prefix, report_dir, source_db, target,
                                                              restore_backup_id=unverified["backup_id"]))
    assert proc.returncode != 0 and "unverified" in proc.stdout
    assert not helpers.db_exists(target)


def test_restore_playbook_rescue_rolls_back_to_safety_backup(
        run_playbook, bk, source_db, prefix, report_dir, helpers, scratch_name, s3):
    """A failure in the middle of the restore (row counts differ after the restore committed):
    the rescue puts the safety backup back and says so."""
    m = bk(state="backup", db=source_db)["backup"]
    assert not bk(state="verify", db=source_db, backup_id=m["backup_id"], verify_level="checksum").failed
    manifest_key = m["key"].replace(".dump", ".manifest.json")
    doctored = dict(m, row_counts=dict(m["row_counts"], **{"public.tasks": m["row_counts"]["public.tasks"] - 1}))
    s3.put_object(Bucket=helpers.bucket, Key=manifest_key, Body=json.dumps(doctored).encode())
    target = scratch_name()
    helpers.create_db(target, tasks=6, events=6, agents=1)
    before = helpers.fingerprint(target)
    proc = run_playbook("playbooks/restore.yml", restore_vars(prefix, report_dir, source_db, target,
                                                              restore_backup_id=m["backup_id"]))
    assert proc.returncode != 0
    report = last_report(report_dir, "restore")
    assert report["status"] == "failed" and report["phase"] == "restore" and report["rolled_back"] is True
    assert report["database_state"] == "rolled back to the safety backup %s" % report["safety_backup_id"]
    assert "rolled back to the safety backup" in proc.stdout
    assert "Application: untouched" in " ".join(proc.stdout.split())
    assert helpers.fingerprint(target) == before


def test_restore_playbook_over_the_login_db_recreate_and_rescue_rollback(
        run_playbook, bk, source_db, prefix, report_dir, helpers, scratch_name, s3):
    """The production case: the target is also login_db (apex_pg_database). recreate mode drops it, the
    row counts then differ (doctored manifest) and the rescue's rollback recreates it again from the
    safety backup - every DROP/CREATE DATABASE runs from maintenance_db."""
    m = bk(state="backup", db=source_db)["backup"]
    assert not bk(state="verify", db=source_db, backup_id=m["backup_id"], verify_level="checksum").failed
    doctored = dict(m, row_counts=dict(m["row_counts"], **{"public.events": m["row_counts"]["public.events"] + 3}))
    s3.put_object(Bucket=helpers.bucket, Key=m["key"].replace(".dump", ".manifest.json"),
                  Body=json.dumps(doctored).encode())
    target = scratch_name("apex_bk_login")
    helpers.create_db(target, tasks=7, events=7, agents=1)
    before = helpers.fingerprint(target)
    proc = run_playbook("playbooks/restore.yml", restore_vars(prefix, report_dir, source_db, target,
                                                              apex_pg_database=target, restore_mode="recreate",
                                                              restore_backup_id=m["backup_id"]))
    assert proc.returncode != 0
    report = last_report(report_dir, "restore")
    assert report["phase"] == "restore" and report["rolled_back"] is True, report
    assert "public.events" in report["error"]  # it failed at the row counts, after the recreate worked
    assert report["database_state"] == "rolled back to the safety backup %s" % report["safety_backup_id"]
    assert helpers.fingerprint(target) == before


@pytest.fixture()
def old_pg_dump_bin(tmp_path, lab):
    """A pg_bin_dir whose pg_dump is a 13.x client (older than the 15 server: it refuses to dump) and whose
    pg_restore is the real one: the safety backup fails, the restore itself could run."""
    bindir = tmp_path / "pgbin"
    bindir.mkdir()
    fake = bindir / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 13.11'\n")
    fake.chmod(0o755)
    os.symlink(os.path.join(lab["APEX_PG_BIN"], "pg_restore"), str(bindir / "pg_restore"))
    return str(bindir)


def test_restore_playbook_failed_safety_backup_reports_unchanged(
        run_playbook, verified_backup, source_db, prefix, report_dir, helpers, scratch_name, old_pg_dump_bin):
    target = scratch_name()
    helpers.create_db(target, tasks=9, events=9, agents=1)
    before = helpers.fingerprint(target)
    proc = run_playbook("playbooks/restore.yml", restore_vars(prefix, report_dir, source_db, target,
                                                              apex_pg_bin_dir=old_pg_dump_bin))
    assert proc.returncode != 0
    report = last_report(report_dir, "restore")
    assert report["status"] == "failed" and report["phase"] == "restore", report
    assert report["module_stage"] == "safety_backup" and report["restore_started"] is False, report
    assert report["database_state"] == "unchanged: the restore never started (failed during safety backup)"
    assert report["rolled_back"] is False and report["safety_backup_id"] is None
    assert "older than the server" in report["error"]
    assert helpers.fingerprint(target) == before  # and it really is unchanged


# ------------------------------------------------------------------ with the Kubernetes simulator

WORKLOADS = """
apiVersion: v1
kind: Namespace
metadata: {name: %(ns)s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: bk-api, namespace: %(ns)s}
spec:
  replicas: 3
  selector: {matchLabels: {app: bk-api}}
  template:
    metadata: {labels: {app: bk-api}}
    spec: {containers: [{name: api, image: "apex/api:1.0.0"}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: bk-worker, namespace: %(ns)s}
spec:
  replicas: 2
  selector: {matchLabels: {app: bk-worker}}
  template:
    metadata: {labels: {app: bk-worker}}
    spec: {containers: [{name: worker, image: "apex/worker:1.0.0"}]}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: bk-api, namespace: %(ns)s}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: bk-api}
  minReplicas: 2
  maxReplicas: 6
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}}]
"""


@pytest.fixture()
def workloads(lab_process_env, helpers):
    """Our own namespace with an api (HPA 2-6, 3 replicas) and a worker (2 replicas) in the simulator:
    the shared apex-api/apex-worker are never touched by these tests."""
    import subprocess

    ns = "apexbk-itest-%s" % helpers.token()
    kubectl = ["kubectl", "--context", "apex-primary"]
    subprocess.run(kubectl + ["apply", "-f", "-"], input=WORKLOADS % {"ns": ns}, text=True, check=True,
                   env=lab_process_env, capture_output=True, timeout=60)

    def replicas():
        out = subprocess.run(kubectl + ["-n", ns, "get", "deploy,hpa", "-o", "json"], env=lab_process_env,
                             capture_output=True, text=True, check=True, timeout=30)
        items = json.loads(out.stdout)["items"]
        return dict(("%s/%s" % (i["kind"], i["metadata"]["name"]),
                     i["spec"].get("replicas", i["spec"].get("minReplicas"))) for i in items)

    yield ns, replicas
    subprocess.run(kubectl + ["delete", "namespace", ns, "--wait=false"], env=lab_process_env, capture_output=True,
                   timeout=60, check=False)


def managed_vars(prefix, report_dir, source_db, target, ns, **extra):
    return restore_vars(prefix, report_dir, source_db, target, restore_manage_workloads=True, restore_namespace=ns,
                        restore_kube_context="apex-primary", restore_workloads=["bk-api", "bk-worker"],
                        restore_scale_wait_timeout=120, **extra)


def test_restore_playbook_scales_down_and_back_to_recorded_counts(run_playbook, verified_backup, source_db, prefix,
                                                                  report_dir, helpers, scratch_name, workloads):
    ns, replicas = workloads
    before = replicas()
    assert before == {"Deployment/bk-api": 3, "Deployment/bk-worker": 2, "HorizontalPodAutoscaler/bk-api": 2}
    target = scratch_name()
    proc = run_playbook("playbooks/restore.yml", managed_vars(prefix, report_dir, source_db, target, ns))
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = last_report(report_dir, "restore")
    assert report["replicas_during"]["Deployment/bk-api"]["replicas"] == 0
    assert report["replicas_during"]["Deployment/bk-worker"]["replicas"] == 0
    assert report["replicas_before"]["Deployment/bk-api"]["replicas"] == 3
    assert report["health"] == 200
    assert replicas() == before  # back to the recorded counts, HPA bounds included
    assert helpers.fingerprint(target) == helpers.fingerprint(source_db)


def test_restore_playbook_rescue_brings_the_application_back(
        run_playbook, bk, source_db, prefix, report_dir, helpers, scratch_name, s3, workloads):
    ns, replicas = workloads
    before = replicas()
    m = bk(state="backup", db=source_db)["backup"]
    assert not bk(state="verify", db=source_db, backup_id=m["backup_id"], verify_level="checksum").failed
    doctored = dict(m, row_counts=dict(m["row_counts"], **{"public.agents": m["row_counts"]["public.agents"] + 1}))
    s3.put_object(Bucket=helpers.bucket, Key=m["key"].replace(".dump", ".manifest.json"),
                  Body=json.dumps(doctored).encode())
    target = scratch_name()
    helpers.create_db(target, tasks=5, events=5, agents=1)
    db_before = helpers.fingerprint(target)
    proc = run_playbook("playbooks/restore.yml", managed_vars(prefix, report_dir, source_db, target, ns,
                                                              restore_backup_id=m["backup_id"]))
    assert proc.returncode != 0
    report = last_report(report_dir, "restore")
    assert report["status"] == "failed" and report["rolled_back"] is True
    assert report["workloads_scaled_back"] is True and report["health"] == 200
    assert "Application: scaled back to the recorded replica counts" in " ".join(proc.stdout.split())
    assert replicas() == before
    assert helpers.fingerprint(target) == db_before


def _journal(lab_process_env, ns):
    import subprocess

    out = subprocess.run(["kubectl", "--context", "apex-primary", "-n", ns, "get", "configmap", "apex-ops-journal",
                          "-o", "json", "--ignore-not-found"], env=lab_process_env, capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return json.loads(json.loads(out)["data"]["record"]) if out.strip() else None


def _wait_for(predicate, timeout, what):
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError("timed out after %ss waiting for %s (last seen: %r)" % (timeout, what, last))


def test_interrupted_restore_is_detected_and_recovered(run_playbook, verified_backup, source_db, prefix, report_dir,
                                                       helpers, scratch_name, workloads, lab, lab_process_env,
                                                       tmp_path):
    """Ctrl-C while pg_restore runs: no rescue runs, so the journal must say what is left; other playbooks refuse
    and name `recover`, and `recover` puts the workloads back and leaves the database consistent."""
    import signal
    import subprocess

    import psycopg

    ns, replicas = workloads
    before = replicas()
    target = scratch_name()
    helpers.create_db(target, tasks=5, events=5, agents=1)
    db_before = helpers.fingerprint(target)
    # a bystander's lock keeps pg_restore waiting, so the interrupt lands mid-restore
    blocker = psycopg.connect(lab["APEX_PG_ADMIN_DSN"], dbname=target, application_name="itest-blocker")
    blocker.execute("LOCK TABLE tasks IN ACCESS SHARE MODE")
    remote_tmp = tmp_path / "remote_tmp"
    env = dict(lab_process_env, ANSIBLE_REMOTE_TMP=str(remote_tmp))
    variables = managed_vars(prefix, report_dir, source_db, target, ns, restore_lock_timeout=300,
                             restore_drain_users=[], restore_drain_applications=["itest-app"])
    proc = subprocess.Popen(["ansible-playbook", "playbooks/restore.yml", "-e", json.dumps(variables)], env=env,
                            cwd=str(helpers_root()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        def restoring():
            with psycopg.connect(lab["APEX_PG_ADMIN_DSN"], autocommit=True) as conn:
                return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = "
                                    "'Lock' AND pid <> pg_backend_pid()", (target,)).fetchone()[0]
        _wait_for(restoring, 120, "pg_restore waiting on the bystander's lock")
        record = _journal(lab_process_env, ns)
        assert record["procedure"] == "restore" and record["phase"] == "restore"
        assert [s["action"] for s in record["undo"]] == ["scale_restore", "database_rollback"]
        # a pipelined module leaves no payload on disk: nothing there holds the PostgreSQL password
        for path in remote_tmp.rglob("*") if remote_tmp.exists() else []:
            assert not path.is_file() or lab["PGPASSWORD"] not in path.read_text(errors="replace"), path
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C on the terminal does
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        blocker.close()
    assert proc.returncode != 0, out[-3000:]
    assert "Rescue" not in out  # Ansible ran no rescue: the journal is all there is
    assert replicas()["Deployment/bk-api"] == 0 and replicas()["Deployment/bk-worker"] == 0
    record = _journal(lab_process_env, ns)
    assert record is not None and record["phase"] == "restore"
    _wait_for(lambda: not restoring(), 30, "the killed pg_restore's session to end")

    # any other changing playbook refuses and names the command that undoes it
    refused = run_playbook("playbooks/scale.yml", {"scale_namespace": ns, "scale_kube_context": "apex-primary",
                                                   "scale_deployments": {"api": "bk-api", "worker": "bk-worker"},
                                                   "scale_replicas": 4, "apex_report_dir": report_dir})
    assert refused.returncode != 0
    flat = " ".join(refused.stdout.split())
    assert "apex.ops.recover -e recover_confirm=%s" % record["run_id"] in flat and "Nothing was changed" in flat
    assert replicas()["Deployment/bk-api"] == 0

    recover_vars = {"recover_namespace": ns, "recover_kube_context": "apex-primary", "apex_s3_prefix": prefix,
                    "apex_report_dir": report_dir}
    dry = run_playbook("playbooks/recover.yml", recover_vars)
    assert dry.returncode == 0, dry.stdout[-3000:]
    assert last_report(report_dir, "recover")["status"] == "not confirmed: nothing was changed"
    assert replicas()["Deployment/bk-api"] == 0 and _journal(lab_process_env, ns) is not None

    done = run_playbook("playbooks/recover.yml", dict(recover_vars, recover_confirm=record["run_id"]))
    assert done.returncode == 0, done.stdout[-4000:]
    report = last_report(report_dir, "recover")
    assert report["status"] == "recovered"
    assert [s["action"] for s in report["steps_done"]] == ["database_rollback", "scale_restore"]
    assert replicas() == before
    assert _journal(lab_process_env, ns) is None
    assert helpers.fingerprint(target) == db_before  # one transaction: PostgreSQL rolled the restore back


def helpers_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[3]
