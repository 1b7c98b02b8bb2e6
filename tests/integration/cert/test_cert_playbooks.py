"""playbooks/cert_check.yml and playbooks/cert_renew.yml against the lab."""
import json
import re

NS = "apex"
CERT = "apex-tls"


def _reports(directory, prefix):
    return sorted(directory.glob(prefix + "-*.json"))


def _recap_changed(stdout):
    match = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", stdout)
    assert match, stdout[-2000:]
    return int(match.group(1))


def test_cert_check_ok_writes_report(run_playbook, run_module, tmp_path, stored, lab):
    # start from an endpoint that serves what the Secret holds (earlier tests may have left drift)
    sync = run_module("apex_cert", state="reload", cert_name=CERT, context="apex-primary",
                      endpoint=lab["APEX_API_URL"], tls_ca_file=lab["APEX_CA_FILE"])
    assert not sync.failed, sync.get("msg")
    proc = run_playbook("playbooks/cert_check.yml", extra_vars={"apex_report_dir": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    files = _reports(tmp_path, "cert_check")
    assert len(files) == 1
    report = json.loads(files[0].read_text())
    assert report["status"] == "ok" and report["problems"] == []
    assert report["endpoint"]["verified"] is True
    assert report["secret"]["certificate"]["serial"] == stored()["certificate"]["serial"]
    assert report["certificates"][0]["name"] == CERT
    assert 0 < report["expiry"]["days_left"] <= 90


def test_cert_check_fails_on_critical_unless_told_not_to(run_playbook, tmp_path):
    strict = {"apex_report_dir": str(tmp_path), "cert_check_warning_days": 1000, "cert_check_critical_days": 500}
    proc = run_playbook("playbooks/cert_check.yml", extra_vars=strict)
    assert proc.returncode != 0
    assert "TLS critical" in proc.stdout
    report = json.loads(_reports(tmp_path, "cert_check")[-1].read_text())
    assert report["status"] == "critical"
    assert any("expires soon" in p["message"] for p in report["problems"])
    relaxed = dict(strict, cert_check_fail_on_critical=False)
    proc = run_playbook("playbooks/cert_check.yml", extra_vars=relaxed)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_cert_renew_not_due_changes_nothing(run_playbook, tmp_path, stored):
    before = stored()["certificate"]["serial"]
    proc = run_playbook("playbooks/cert_renew.yml", extra_vars={"apex_report_dir": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert _recap_changed(proc.stdout) == 0
    assert stored()["certificate"]["serial"] == before
    report = json.loads(_reports(tmp_path, "cert_renew")[-1].read_text())
    assert report["outcome"] == "unchanged" and "not due" in report["reason"]


def test_cert_renew_forced_is_served(run_playbook, tmp_path, stored, served):
    before = stored()["certificate"]["serial"]
    proc = run_playbook("playbooks/cert_renew.yml", extra_vars={"apex_report_dir": str(tmp_path),
                                                                "cert_renew_force": True,
                                                                "cert_renew_method": "delete_secret"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    after = stored()["certificate"]
    assert after["serial"] != before
    assert served()["fingerprint_sha256"] == after["fingerprint_sha256"]
    report = json.loads(_reports(tmp_path, "cert_renew")[-1].read_text())
    assert report["outcome"] == "changed" and report["method"] == "delete_secret"
    assert report["before"]["secret"]["serial"] == before and report["after"]["endpoint"]["serial"] == after["serial"]


def test_check_mode_writes_the_reports_with_the_planned_action(run_playbook, tmp_path, stored, served):
    """--check changes nothing, and both roles still write their report; cert_renew's names the planned renewal."""
    before, served_before = stored()["certificate"]["serial"], served()["serial"]
    proc = run_playbook("playbooks/cert_check.yml", check=True, extra_vars={"apex_report_dir": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    check = json.loads(_reports(tmp_path, "cert_check")[-1].read_text())
    assert check["check_mode"] is True and check["status"] == "ok"
    assert check["secret"]["certificate"]["serial"] == before
    proc = run_playbook("playbooks/cert_renew.yml", check=True, extra_vars={"apex_report_dir": str(tmp_path),
                                                                            "cert_renew_force": True})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads(_reports(tmp_path, "cert_renew")[-1].read_text())
    assert report["check_mode"] is True and report["outcome"] == "planned", report
    assert report["reason"].startswith("forced") and report["planned"]["action"] == "renew by issuing_condition"
    assert report["planned"]["replaces"]["serial"] == before
    assert report["before"]["secret"]["serial"] == before
    assert stored()["certificate"]["serial"] == before and served()["serial"] == served_before  # nothing changed


def test_cert_renew_install_mode_served_and_key_never_shown(run_playbook, tmp_path, issue, stored, served):
    cert_pem, key_pem = issue(days=60)
    proc = run_playbook("playbooks/cert_renew.yml", verbosity=3, extra_vars={
        "apex_report_dir": str(tmp_path), "cert_renew_mode": "install",
        "cert_renew_cert_pem": cert_pem, "cert_renew_key_pem": key_pem})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for line in key_pem.splitlines()[1:-1]:
        assert line not in out, "private key material in the -vvv output"
    for path in tmp_path.iterdir():
        assert key_pem.splitlines()[1] not in path.read_text()
    now = stored()["certificate"]
    assert served()["fingerprint_sha256"] == now["fingerprint_sha256"]
    assert 58.9 < now["days_left"] <= 59


def test_cert_renew_install_refuses_expired_and_reports(run_playbook, tmp_path, issue, kube):
    cert_pem, key_pem = issue(days=5, start_days=-10)
    before = kube.get_secret(NS, CERT)["metadata"]["resourceVersion"]
    proc = run_playbook("playbooks/cert_renew.yml", extra_vars={
        "apex_report_dir": str(tmp_path), "cert_renew_mode": "install",
        "cert_renew_cert_pem": cert_pem, "cert_renew_key_pem": key_pem})
    assert proc.returncode != 0
    assert "has expired" in proc.stdout
    assert kube.get_secret(NS, CERT)["metadata"]["resourceVersion"] == before
    report = json.loads(_reports(tmp_path, "cert_renew")[-1].read_text())
    assert report["outcome"] == "failed" and "has expired" in report["error"]


def test_cert_renew_heals_drift_then_is_idempotent(run_playbook, run_module, tmp_path, stored, served):
    # cert-manager renewed on its own, the ingress did not reload: the Secret is newer than what is served
    res = run_module("apex_cert", state="renew", cert_name=CERT, context="apex-primary", wait_timeout=120)
    assert not res.failed, res.get("msg")
    assert served()["fingerprint_sha256"] != stored()["certificate"]["fingerprint_sha256"]
    proc = run_playbook("playbooks/cert_renew.yml", extra_vars={"apex_report_dir": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert _recap_changed(proc.stdout) == 1
    assert served()["fingerprint_sha256"] == stored()["certificate"]["fingerprint_sha256"]
    report = json.loads(_reports(tmp_path, "cert_renew")[-1].read_text())
    assert report["outcome"] == "reloaded" and report["ingress_restart"]["rollout"]["complete"] is True
    proc = run_playbook("playbooks/cert_renew.yml", extra_vars={"apex_report_dir": str(tmp_path)})
    assert proc.returncode == 0 and _recap_changed(proc.stdout) == 0


def test_cert_renew_issuer_not_ready_fails_with_conditions_and_report(run_playbook, tmp_path, kube, stored, served):
    from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline

    before, serving = stored()["certificate"], served()["fingerprint_sha256"]

    def issuer_ready(ready):
        kube.client.merge_patch("/apis/cert-manager.io/v1/namespaces/%s/issuers/lab-ca" % NS, {
            "metadata": {"annotations": {"kubesim.apex.dev/ready": "true" if ready else "false"}}})

    issuer_ready(False)
    try:
        proc = run_playbook("playbooks/cert_renew.yml", extra_vars={
            "apex_report_dir": str(tmp_path), "cert_renew_force": True, "cert_renew_wait_timeout": 4})
        assert proc.returncode != 0
        assert "last conditions" in proc.stdout and "Issuing=True" in proc.stdout
        report = json.loads(_reports(tmp_path, "cert_renew")[-1].read_text())
        assert report["outcome"] == "failed" and "last conditions" in report["error"]
        # no worse than before: the old certificate is still stored and served
        assert stored()["certificate"]["serial"] == before["serial"]
        assert served()["fingerprint_sha256"] == serving
    finally:
        issuer_ready(True)
    kube.wait_for_issuance(NS, CERT, CERT, before["fingerprint_sha256"], Deadline(60))
