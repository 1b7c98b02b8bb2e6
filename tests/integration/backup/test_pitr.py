"""Point-in-time recovery against the lab: base backup, the pitr playbook, the confirmed swap.

One scenario in a scratch database of the lab's primary (the whole cluster is recovered, only the
scratch database is verified and swapped, so the shared ``apex`` database is only read): a row,
the target time, a second row; the copy has the first row and not the second; the swap is
refused without the confirmation and, with it, puts the recovered database in place of the live
one, whose previous content is a safety backup in the catalog.
"""
import glob
import json
import os
import socket

import pytest


def last_report(report_dir, name):
    files = sorted(glob.glob(os.path.join(report_dir, "%s-*.json" % name)))
    assert files, "no %s report in %s" % (name, report_dir)
    with open(files[-1]) as handle:
        return json.load(handle)


def notes(lab, db, port):
    import psycopg

    with psycopg.connect(lab["APEX_PG_ADMIN_DSN"], dbname=db, port=port, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT note FROM pitr_probe ORDER BY id").fetchall()]


def listening(port):
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", int(port))) == 0


@pytest.fixture(scope="module")
def scenario(pg_admin, helpers, lab, run_module, run_playbook, prefix, session_token, tmp_path_factory):
    """The scratch database, a base backup by the nightly backup playbook, then row 1, the target, row 2."""
    db = "apex_pitr_%s" % session_token
    reports = str(tmp_path_factory.mktemp("pitr-reports"))
    helpers.create_db(db, tasks=10, events=10, agents=2)
    with pg_admin(db) as conn:
        conn.execute("CREATE TABLE pitr_probe (id int PRIMARY KEY, note text NOT NULL)")
    proc = run_playbook("playbooks/backup.yml", {
        "apex_s3_prefix": prefix, "apex_report_dir": reports, "backup_databases": [db], "backup_redis": False,
        "backup_verify_level": "checksum", "backup_base": True, "backup_base_cluster": "itest"})
    assert proc.returncode == 0, proc.stdout[-4000:]
    base = last_report(reports, "backup")["base_backup"]
    with pg_admin(db) as conn:
        conn.execute("INSERT INTO pitr_probe VALUES (1, 'before the target')")
        target = conn.execute("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                              "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')").fetchone()[0]
        conn.execute("INSERT INTO pitr_probe VALUES (2, 'after the target')")
    data_dir = os.path.join(lab["APEX_LAB_DIR"], "pg", "pitr-%s" % session_token)
    yield dict(db=db, base=base, target=target, data_dir=data_dir, reports=reports)
    run_module("apex_pitr", state="absent", data_dir=data_dir)
    helpers.drop_db(db)


def pitr_vars(scenario, prefix, **extra):
    data = {"apex_s3_prefix": prefix, "apex_report_dir": scenario["reports"], "pitr_cluster": "itest",
            "pitr_target_time": scenario["target"], "pitr_data_dir": scenario["data_dir"],
            "pitr_database": scenario["db"], "pitr_manage_workloads": False}
    data.update(extra)
    return data


def test_base_backup_is_catalogued_with_its_wal_points(scenario, bk, s3, lab):
    base = scenario["base"]
    assert base["cluster"] == "itest" and base["start_lsn"] and base["verified"] is True
    listed = bk(state="facts", kind="postgres_base", cluster="itest")
    assert [b["backup_id"] for b in listed["backups"]] == [base["backup_id"]]
    assert listed["latest"]["verification"] == "verified" and listed["latest"]["key"].endswith(".tar")
    manifest = json.loads(s3.get_object(Bucket=lab["APEX_S3_BUCKET"], Key=listed["latest"]["key"].replace(
        ".tar", ".manifest.json"))["Body"].read())
    assert manifest["kind"] == "postgres_base" and manifest["end_lsn"] and manifest["timeline"] >= 1
    assert manifest["system_identifier"] and manifest["size"] == listed["latest"]["size"]


def test_pitr_between_two_inserts_then_the_swap_refused_and_confirmed(scenario, run_playbook, lab, prefix, bk, s3):
    db = scenario["db"]
    # 1. recover and verify, no swap: the copy has the first row only; the live database is untouched
    proc = run_playbook("playbooks/pitr.yml", pitr_vars(scenario, prefix, pitr_remove_copy="never"))
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = last_report(scenario["reports"], "pitr")
    verification = report["verification"]
    assert report["base_backup_id"] == scenario["base"]["backup_id"]
    assert verification["ok"] and verification["target_reached"], verification
    assert verification["recovery"]["stopped"]["position"] == "before"
    assert verification["migrations"]["latest_version"] == 2
    assert verification["rows"]["public.pitr_probe"] == {"recovered": 1, "live": 2, "difference": 1}
    port = report["recovered_copy"]["port"]
    assert notes(lab, db, port) == ["before the target"]
    assert notes(lab, db, lab["PGPORT"]) == ["before the target", "after the target"]

    # 2. a swap without the confirmation is refused before anything happens
    proc = run_playbook("playbooks/pitr.yml", pitr_vars(scenario, prefix, pitr_swap=True))
    assert proc.returncode != 0
    assert "Refusing to swap: pitr_confirm must equal pitr_database" in proc.stdout
    assert last_report(scenario["reports"], "pitr")["live_database"] == "unchanged: the swap did not start"
    assert notes(lab, db, lab["PGPORT"]) == ["before the target", "after the target"]

    # 3. with it: the running copy is reused, its database restored over the live one, safety backup first
    proc = run_playbook("playbooks/pitr.yml", pitr_vars(scenario, prefix, pitr_swap=True, pitr_confirm=db))
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = last_report(scenario["reports"], "pitr")
    assert report["swapped"] and report["recovered_copy"]["removed"] and report["recovered_copy"]["port"] == port
    assert notes(lab, db, lab["PGPORT"]) == ["before the target"]
    backups = dict((b["backup_id"], b) for b in bk(state="facts", db=db)["backups"])
    assert "pitr" in backups[report["swap_backup_id"]]["tags"]
    safety = backups[report["safety_backup_id"]]
    assert "safety" in safety["tags"]
    # the safety copy holds what the swap replaced: both rows
    manifest = json.loads(s3.get_object(Bucket=lab["APEX_S3_BUCKET"], Key=safety["key"].replace(
        ".dump", ".manifest.json"))["Body"].read())
    assert manifest["row_counts"]["public.pitr_probe"] == 2
    assert not os.path.exists(scenario["data_dir"]) and not listening(port)


def test_refusals_change_nothing(run_module, lab, prefix, tmp_path):
    future = run_module("apex_pitr", data_dir=os.path.join(lab["APEX_LAB_DIR"], "pg", "pitr-never"),
                        target_time="2999-01-01T00:00:00Z", s3_prefix=prefix, cluster="itest")
    assert future.failed and future["refused"] and "in the future" in future["msg"]
    assert not os.path.exists(os.path.join(lab["APEX_LAB_DIR"], "pg", "pitr-never"))
    foreign = tmp_path / "not-a-copy"
    foreign.mkdir()
    (foreign / "PG_VERSION").write_text("15\n")
    removed = run_module("apex_pitr", state="absent", data_dir=str(foreign))
    assert removed.failed and "not a recovered copy" in removed["msg"] and (foreign / "PG_VERSION").exists()
