"""The config playbook against the lab: settings reach the Deployments and the Apex twin, the report carries
old -> new, a rerun is no change, running it again with the old values undoes it, and a typo changes nothing."""

PLAYBOOK = "playbooks/config.yml"


def test_set_report_rerun_and_undo(run_playbook, cluster, twin, report_dir, read_report):
    settings = {"config_component": "worker", "config_env": {"APEX__WORKER__CONCURRENCY": 5},
                "config_api_env": {"APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD": 10}, "apex_report_dir": str(report_dir)}
    proc = run_playbook(PLAYBOOK, settings)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert cluster.env("apex-worker")["APEX__WORKER__CONCURRENCY"] == "5"
    assert cluster.env("apex-api")["APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD"] == "10"
    assert "APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD" not in cluster.env("apex-worker")  # config_api_env: api only
    twin.wait_for("the new settings", lambda h: (h.get("worker") or {}).get("concurrency") == 5)
    report = read_report(report_dir, "config")
    assert report["status"] == "ok" and report["changed"] is True
    assert report["values"]["Deployment/apex/apex-worker"] == [
        dict(container="worker", name="APEX__WORKER__CONCURRENCY", before="2", after="5")]
    assert report["values"]["Deployment/apex/apex-api"] == [
        dict(container="api", name="APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD", before="5", after="10")]

    revision = cluster.revision("apex-worker")
    again = run_playbook(PLAYBOOK, settings)
    assert again.returncode == 0 and cluster.revision("apex-worker") == revision
    assert read_report(report_dir, "config")["changed"] is False

    undo = run_playbook(PLAYBOOK, {"config_worker_env": {"APEX__WORKER__CONCURRENCY": 2},
                                   "config_api_env": {"APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD": 5},
                                   "apex_report_dir": str(report_dir)})
    assert undo.returncode == 0, undo.stdout[-4000:]
    assert cluster.env("apex-worker")["APEX__WORKER__CONCURRENCY"] == "2"
    twin.wait_for("the old settings", lambda h: (h.get("worker") or {}).get("concurrency") == 2)


def test_a_typo_is_refused_and_changes_nothing(run_playbook, cluster, report_dir, read_report):
    revision = cluster.revision("apex-worker")
    proc = run_playbook(PLAYBOOK, {"config_component": "worker", "config_env": {"APEX_WORKER__CONCURRENCY": 5},
                                   "apex_report_dir": str(report_dir)})
    assert proc.returncode != 0
    report = read_report(report_dir, "config")
    assert report["status"] == "failed" and "APEX_WORKER__CONCURRENCY" in report["error"]
    assert cluster.revision("apex-worker") == revision
