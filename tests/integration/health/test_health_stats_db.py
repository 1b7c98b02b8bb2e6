"""health_check: the set_stats block AWX sees, and the db connections check driven to warning/critical."""
import json

import pytest

from dbq_helpers import admin_conn, unique

ONLY_DB = {"health_check_api": False, "health_check_queue": False, "health_check_tls": False,
           "health_check_kubernetes": False}


def report(directory):
    files = sorted(directory.glob("health_check-*.json"))
    assert files, "no health_check report in %s" % directory
    return json.loads(files[-1].read_text())


@pytest.fixture
def qkeys(rds):
    prefix = unique("apex-ops-stats")
    yield dict(queue="%s:tasks:queue" % prefix, dead="%s:tasks:dead-letter" % prefix)
    for key in rds.scan_iter(match=prefix + ":*"):
        rds.delete(key)


def run_json(run_playbook, extra):
    """ansible-playbook with the json callback and custom stats shown: (proc, parsed output)."""
    proc = run_playbook("playbooks/health_check.yml", extra_vars=extra,
                        env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_SHOW_CUSTOM_STATS": "1",
                             "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    start = proc.stdout.find("{")
    assert start >= 0, proc.stdout + proc.stderr
    return proc, json.loads(proc.stdout[start:])


def test_set_stats_block(run_playbook, rds, qkeys, tmp_path):
    rds.lpush(qkeys["queue"], *["tsk_stats_%d" % i for i in range(101)])  # critical queue depth
    rds.lpush(qkeys["dead"], json.dumps({"task_id": "tsk_dead"}))        # one dead letter: a warning
    extra = {"apex_report_dir": str(tmp_path), "health_check_queue_key": qkeys["queue"],
             "health_check_dead_letter_key": qkeys["dead"], "health_check_fail_on_critical": False,
             "health_check_api": False, "health_check_tls": False, "health_check_kubernetes": False}
    proc, out = run_json(run_playbook, extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    doc = report(tmp_path)
    stats = out["global_custom_stats"]["health_check"]
    assert set(stats) == {"status", "counts", "report_file", "problems"}
    assert stats["status"] == "critical" == doc["status"]
    assert stats["counts"] == doc["counts"] and stats["counts"]["critical"] >= 1
    assert stats["report_file"] == doc["report_file"] and stats["report_file"].startswith(str(tmp_path))
    assert stats["problems"] == [c["name"] for c in doc["checks"] if c["status"] != "ok"]
    assert "queue depth" in stats["problems"] and "dead letters" in stats["problems"]
    assert sum(stats["counts"].values()) == len(doc["checks"])

    # healthy: the stats say ok with no problems
    rds.delete(qkeys["queue"], qkeys["dead"])
    proc, out = run_json(run_playbook, dict(extra, apex_report_dir=str(tmp_path / "ok"), health_check_database=False))
    assert proc.returncode == 0, proc.stdout[-3000:]
    stats = out["global_custom_stats"]["health_check"]
    assert stats["problems"] == [] and stats["status"] == "ok" and stats["counts"]["ok"] == len(report(tmp_path / "ok")["checks"])


def test_db_connections_warning_and_critical(lab, run_playbook, tmp_path):
    """Hold connections open and set thresholds under the measured percentage."""
    held = [admin_conn(lab, unique("conn-threshold")) for _i in range(3)]
    try:
        with held[0].cursor() as cur:
            total, maximum = cur.execute(
                "SELECT count(*), current_setting('max_connections')::int FROM pg_stat_activity "
                "WHERE backend_type = 'client backend'").fetchone()
        floor = round(100.0 * (len(held) - 1) / maximum, 1)  # always exceeded while we hold 3
        assert total >= len(held)
        proc = run_playbook("playbooks/health_check.yml", extra_vars=dict(
            ONLY_DB, apex_report_dir=str(tmp_path / "warn"), health_check_db_connections_warning=floor,
            health_check_db_connections_critical=100))
        assert proc.returncode == 0, proc.stdout
        check = [c for c in report(tmp_path / "warn")["checks"] if c["name"] == "db connections"][0]
        assert check["status"] == "warning" and check["value"] > floor and check["warning"] == floor
        used, _sep, mx = check["detail"].partition("/")
        assert int(mx) == maximum and int(used) >= len(held)

        proc = run_playbook("playbooks/health_check.yml", extra_vars=dict(
            ONLY_DB, apex_report_dir=str(tmp_path / "crit"), health_check_db_connections_warning=0,
            health_check_db_connections_critical=floor))
        assert proc.returncode != 0 and "Apex health is CRITICAL: db connections" in proc.stdout
        doc = report(tmp_path / "crit")
        check = [c for c in doc["checks"] if c["name"] == "db connections"][0]
        assert check["status"] == "critical" and doc["status"] == "critical"
    finally:
        for conn in held:
            conn.close()
