"""health_check's TLS part, judged against the served certificate of the lab's Apex twin."""
import datetime
import json
import ssl
import urllib.parse
from pathlib import Path

from cryptography import x509


def load_report(directory):
    files = sorted(Path(directory).glob("health_check-*.json"))
    assert files, "no report written in %s" % directory
    return json.loads(files[-1].read_text())


def served_days_left(lab):
    url = urllib.parse.urlparse(lab["APEX_API_URL"])
    pem = ssl.get_server_certificate((url.hostname, url.port))
    cert = x509.load_pem_x509_certificate(pem.encode())
    return (cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400


def only_tls(tmp_path, **extra):
    return dict({"apex_report_dir": str(tmp_path), "health_check_api": False, "health_check_queue": False,
                 "health_check_database": False}, **extra)


def test_tls_checks_ok_on_the_lab(lab, run_playbook, tmp_path):
    proc = run_playbook("playbooks/health_check.yml", extra_vars=only_tls(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = dict((c["name"], c) for c in load_report(tmp_path)["checks"])
    assert checks["tls endpoint trusted"]["status"] == "ok"
    assert checks["tls certificate ready"]["status"] == "ok"
    days = checks["tls days left"]
    # the value is what the endpoint really serves (within a minute of rounding)
    assert abs(days["value"] - served_days_left(lab)) < 0.01
    assert days["status"] == "ok"


def test_tls_days_left_judged_against_thresholds(lab, run_playbook, tmp_path):
    days = served_days_left(lab)
    warn = run_playbook("playbooks/health_check.yml", extra_vars=only_tls(
        tmp_path / "warn", health_check_tls_warning_days=int(days) + 10))
    assert warn.returncode == 0, warn.stdout
    assert dict((c["name"], c) for c in load_report(tmp_path / "warn")["checks"])["tls days left"]["status"] == "warning"

    crit = run_playbook("playbooks/health_check.yml", extra_vars=only_tls(
        tmp_path / "crit", health_check_tls_warning_days=int(days) + 20, health_check_tls_critical_days=int(days) + 10))
    assert crit.returncode != 0, "a critical TLS check must fail the play"
    report = load_report(tmp_path / "crit")
    assert report["status"] == "critical"
    assert dict((c["name"], c) for c in report["checks"])["tls days left"]["status"] == "critical"


def test_tls_unreachable_cluster_is_critical_not_a_crash(run_playbook, tmp_path):
    proc = run_playbook("playbooks/health_check.yml", extra_vars=only_tls(
        tmp_path, apex_kube_context="no-such-context", health_check_fail_on_critical=False))
    assert proc.returncode == 0, proc.stdout
    report = load_report(tmp_path)
    assert report["status"] == "critical"
    assert [c for c in report["checks"] if c["group"] == "tls"][0]["status"] == "critical"


def test_tls_missing_certificate_is_critical(run_playbook, tmp_path):
    """cert-manager is installed but the named Certificate does not exist: nothing renews the API's
    certificate, which is critical (not a silently skipped check)."""
    proc = run_playbook("playbooks/health_check.yml", extra_vars=only_tls(
        tmp_path, health_check_tls_certificate="apex-no-such-cert", health_check_fail_on_critical=False))
    assert proc.returncode == 0, proc.stdout
    check = dict((c["name"], c) for c in load_report(tmp_path)["checks"])["tls certificate ready"]
    assert check["status"] == "critical" and "apex-no-such-cert not found" in check["detail"]
