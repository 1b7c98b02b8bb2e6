"""apex_cert against the lab: the simulator's cert-manager controller and the twin's HTTPS endpoint.

Every test asserts what the services hold afterwards (the Secret's certificate, the certificate
the endpoint serves), not only what the module says.
"""
import base64

import pytest

NS = "apex"
CERT = "apex-tls"
CTX = dict(context="apex-primary")


def _secret_raw(kube, name=CERT):
    secret = kube.get_secret(NS, name)
    if secret is None:
        return None
    return secret["metadata"]["resourceVersion"], dict(secret.get("data") or {})


def _fp(info):
    return (info or {}).get("fingerprint_sha256")


# ------------------------------------------------------------------ facts

def test_facts_certificate_secret_endpoint(run_module, endpoint, stored, served):
    res = run_module("apex_cert", state="facts", cert_name=CERT, **endpoint, **CTX)
    assert not res.failed, res.get("msg")
    assert res["cert_manager_installed"] is True
    cert = res["certificates"][0]
    assert cert["name"] == CERT and cert["secret_name"] == CERT
    assert cert["ready"] is True and cert["not_after"] and cert["issuer_ref"].get("name")
    assert "renewal_time" in cert and "failed_issuance_attempts" in cert
    secret = res["secret"]
    assert secret["present"] and secret["key_matches"] is True
    assert secret["certificate"]["serial"] == stored()["certificate"]["serial"]
    ep = res["endpoint"]
    assert ep["verified"] is True and ep["hostname_match"] is True and ep["sni_sent"] is True
    assert ep["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert ep["certificate"]["fingerprint_sha256"] == _fp(served())
    assert res["expiry"]["status"] in ("ok", "warning", "critical", "expired")
    assert res["changed"] is False


def test_facts_all_certificates_of_namespace(run_module, endpoint):
    res = run_module("apex_cert", state="facts", sources=["certificate", "secret"], **CTX)
    assert not res.failed, res.get("msg")
    assert CERT in [c["name"] for c in res["certificates"]]
    assert CERT in res["secrets"]


# ------------------------------------------------------------------ renew

@pytest.mark.parametrize("method", ["issuing_condition", "delete_secret"])
def test_renew_produces_new_certificate_that_is_served(run_module, endpoint, stored, served, method):
    before = stored()["certificate"]
    res = run_module("apex_cert", state="renew", cert_name=CERT, method=method, restart_ingress=True,
                     wait_for_endpoint=True, wait_timeout=120, diff=True, **endpoint, **CTX)
    assert not res.failed, res.get("msg")
    assert res["changed"] is True and res["renewed"] is True
    after = stored()
    assert after["key_matches"] is True
    assert after["certificate"]["serial"] != before["serial"]
    assert _fp(served()) == _fp(after["certificate"]), "the endpoint does not serve the renewed certificate"
    assert res["certificates"][0]["ready"] is True and res["certificates"][0]["issuing"] is False
    assert res["diff"]["before"]["certificate"]["serial"] == before["serial"]
    assert res["diff"]["after"]["certificate"]["serial"] == after["certificate"]["serial"]
    assert res["ingress_restart"]["rollout"]["complete"] is True
    assert "PRIVATE KEY" not in res["_stdout"]


def test_renew_check_mode_changes_nothing(run_module, endpoint, kube):
    raw = _secret_raw(kube)
    res = run_module("apex_cert", check_mode=True, state="renew", cert_name=CERT, **endpoint, **CTX)
    assert not res.failed and res["changed"] is True and res["renewed"] is False
    assert _secret_raw(kube) == raw
    obj = kube.get_certificate(NS, CERT)
    assert not any(c["type"] == "Issuing" and c["status"] == "True" for c in obj["status"].get("conditions", []))


def test_renew_not_due_is_unchanged(run_module, kube):
    raw = _secret_raw(kube)
    res = run_module("apex_cert", state="renew", cert_name=CERT, renew_threshold_days=1, **CTX)
    assert not res.failed and res["changed"] is False and res["renewed"] is False
    assert "not due" in res["reason"]
    assert _secret_raw(kube) == raw


def test_drift_is_flagged_until_the_ingress_restarts(run_module, endpoint, stored, served):
    res = run_module("apex_cert", state="renew", cert_name=CERT, wait_timeout=120, **CTX)
    assert not res.failed, res.get("msg")
    facts = run_module("apex_cert", state="facts", cert_name=CERT, **endpoint, **CTX)
    assert facts["drift"]["drift"] is True and facts["drift"]["secret_newer"] is True
    assert any(p["source"] == "drift" for p in facts["problems"])
    assert _fp(served()) != _fp(stored()["certificate"])
    # check mode: would restart, does not
    res = run_module("apex_cert", check_mode=True, state="reload", cert_name=CERT, **endpoint, **CTX)
    assert not res.failed and res["changed"] is True and "ingress_restart" not in res
    assert _fp(served()) != _fp(stored()["certificate"])
    res = run_module("apex_cert", state="reload", cert_name=CERT, wait_timeout=120, **endpoint, **CTX)
    assert not res.failed, res.get("msg")
    assert res["changed"] is True and res["ingress_restart"]["rollout"]["complete"] is True
    assert _fp(served()) == _fp(stored()["certificate"])
    # nothing lags any more: no restart
    res = run_module("apex_cert", state="reload", cert_name=CERT, **endpoint, **CTX)
    assert not res.failed and res["changed"] is False and "ingress_restart" not in res
    facts = run_module("apex_cert", state="facts", cert_name=CERT, **endpoint, **CTX)
    assert not facts.failed, facts.get("msg")
    assert facts["drift"]["drift"] is False, facts["drift"]


# ------------------------------------------------------------------ install

def test_install_supplied_certificate_is_served(run_module, endpoint, issue, stored, served, lab):
    cert_pem, key_pem = issue(days=45)
    res = run_module("apex_cert", state="install", cert_name=CERT, certificate=cert_pem, private_key=key_pem,
                     restart_ingress=True, wait_for_endpoint=True, wait_timeout=120, diff=True, **endpoint, **CTX)
    assert not res.failed, res.get("msg")
    assert res["changed"] is True and res["validation"]["problems"] == []
    now = stored()
    assert now["key_matches"] and now["certificate"]["serial"] == res["validation"]["certificate"]["serial"]
    assert _fp(served()) == _fp(now["certificate"])
    assert 43.9 < served()["days_left"] <= 44
    key_body = key_pem.splitlines()[1]
    assert key_body not in res["_stdout"] and key_body not in res["_stderr"]
    assert "tls.key" not in repr(res["diff"]) and key_body not in repr(res["diff"])
    # the same certificate again: nothing to do
    again = run_module("apex_cert", state="install", cert_name=CERT, certificate=cert_pem, private_key=key_pem,
                       **endpoint, **CTX)
    assert not again.failed and again["changed"] is False


def test_install_check_mode_changes_nothing(run_module, endpoint, issue, kube):
    cert_pem, key_pem = issue()
    raw = _secret_raw(kube)
    res = run_module("apex_cert", check_mode=True, diff=True, state="install", cert_name=CERT, certificate=cert_pem,
                     private_key=key_pem, **endpoint, **CTX)
    assert not res.failed and res["changed"] is True
    assert res["diff"]["after"]["certificate"]["serial"] != res["diff"]["before"]["certificate"]["serial"]
    assert _secret_raw(kube) == raw


@pytest.mark.parametrize("defect,expect", [
    ("mismatched_key", "does not match"),
    ("expired", "has expired"),
    ("other_hostname", "does not cover localhost"),
    ("not_yet_valid", "not valid yet"),
])
def test_install_refuses_bad_input_and_changes_nothing(run_module, endpoint, issue, kube, served, defect, expect):
    if defect == "mismatched_key":
        cert_pem = issue()[0]
        key_pem = issue()[1]
    elif defect == "expired":
        cert_pem, key_pem = issue(days=10, start_days=-20)
    elif defect == "not_yet_valid":
        cert_pem, key_pem = issue(days=10, start_days=2)
    else:
        cert_pem, key_pem = issue(sans=("other.example.com",))
    raw, serving = _secret_raw(kube), _fp(served())
    res = run_module("apex_cert", state="install", cert_name=CERT, certificate=cert_pem, private_key=key_pem,
                     restart_ingress=True, wait_for_endpoint=True, **endpoint, **CTX)
    assert res.failed and expect in res["msg"] and "nothing was changed" in res["msg"]
    assert _secret_raw(kube) == raw, "the Secret changed although the input was refused"
    assert _fp(served()) == serving
    assert key_pem.splitlines()[1] not in res["_stdout"]


def test_install_refuses_chain_out_of_order(run_module, endpoint, issue, lab, kube):
    cert_pem, key_pem = issue()
    other_pem = issue()[0]
    raw = _secret_raw(kube)
    res = run_module("apex_cert", state="install", cert_name=CERT, certificate=cert_pem, private_key=key_pem,
                     chain=other_pem, **endpoint, **CTX)
    assert res.failed and "out of order" in res["msg"]
    assert _secret_raw(kube) == raw


# ------------------------------------------------------------------ failures and expiry

def test_key_never_in_output_at_vvv(run_playbook, issue, tmp_path, endpoint):
    cert_pem, key_pem = issue()
    play = tmp_path / "install.yml"
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - apex.ops.apex_cert:\n        state: install\n        name: apex-tls\n        context: apex-primary\n"
        "        certificate: \"{{ cert }}\"\n        private_key: \"{{ key }}\"\n"
        "        hostname: other.example.com\n      check_mode: true\n"
    )
    proc = run_playbook(play, extra_vars={"cert": cert_pem, "key": key_pem}, verbosity=3)
    out = proc.stdout + proc.stderr
    assert "does not cover other.example.com" in out  # refused: the module really ran
    for line in key_pem.splitlines()[1:-1]:
        assert line not in out


def _set_issuer_ready(kube, ready, seconds=15):
    """Flip the lab Issuer and wait until its Ready condition says so (the simulator's cert-manager
    rewrites it on its next pass: a module reading before that would see the old state)."""
    import time

    body = {"metadata": {"annotations": {"kubesim.apex.dev/ready": "true" if ready else "false"}}}
    kube.client.merge_patch("/apis/cert-manager.io/v1/namespaces/%s/issuers/lab-ca" % NS, body)
    deadline = time.monotonic() + seconds
    while kube.issuer_ready(NS, {"name": "lab-ca", "kind": "Issuer"})[0] is not ready:
        assert time.monotonic() < deadline, "Issuer lab-ca did not become Ready=%s" % ready
        time.sleep(0.05)


def test_issuer_not_ready_times_out_with_conditions(run_module, kube, stored):
    from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline

    before = stored()["certificate"]
    _set_issuer_ready(kube, False)
    try:
        res = run_module("apex_cert", state="renew", cert_name=CERT, wait_timeout=4, **CTX)
        assert res.failed
        assert "timed out after 4s" in res["msg"] and "last conditions:" in res["msg"]
        assert "Issuing=True (ManuallyTriggered" in res["msg"]
        assert res["last_state"]["certificate"]["issuing"] is True
        assert res["last_state"]["certificate"]["failed_issuance_attempts"] == 1
        assert stored()["certificate"]["serial"] == before["serial"], "nothing may be issued while the issuer is down"
        facts = run_module("apex_cert", state="facts", cert_name=CERT, **CTX)
        assert any("failed issuance" in p["message"] for p in facts["problems"])
    finally:
        _set_issuer_ready(kube, True)
    # the pending issuance completes once the issuer is back
    obj, after = kube.wait_for_issuance(NS, CERT, CERT, before["fingerprint_sha256"], Deadline(60))
    assert after["certificate"]["serial"] != before["serial"]


def _short_certificate(kube, name, duration):
    from ansible_collections.apex.ops.plugins.module_utils.cert_manager import certificates_path

    body = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"secretName": name, "dnsNames": ["%s.apex.lab.test" % name], "duration": duration,
                     "renewBefore": "1h0m0s", "privateKey": {"algorithm": "ECDSA", "size": 256},
                     "issuerRef": {"name": "lab-ca", "kind": "Issuer", "group": "cert-manager.io"}}}
    kube.client.post(certificates_path(NS), body)


@pytest.fixture()
def short_certs(kube):
    from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline

    names = {"apex-short-critical": "120h0m0s", "apex-short-warning": "480h0m0s"}
    for name, duration in names.items():
        _short_certificate(kube, name, duration)
    for name in names:
        kube.wait_for_issuance(NS, name, name, None, Deadline(60))
    yield list(names)
    from ansible_collections.apex.ops.plugins.module_utils.cert_manager import certificates_path

    for name in names:
        kube.client.delete(certificates_path(NS, name))
        kube.delete_secret(NS, name)


def test_near_expiry_reported_warning_and_critical(run_module, short_certs):
    crit = run_module("apex_cert", state="facts", cert_name="apex-short-critical", **CTX)
    assert not crit.failed, crit.get("msg")
    assert crit["certificates"][0]["expiry_status"] == "critical"
    assert crit["secret"]["expiry_status"] == "critical" and 4.9 < crit["secret"]["days_left"] <= 5
    assert crit["status"] == "critical" and crit["expiry"]["status"] == "critical"
    warn = run_module("apex_cert", state="facts", cert_name="apex-short-warning", **CTX)
    assert warn["certificates"][0]["expiry_status"] == "warning" and warn["status"] == "warning"
    # thresholds are overridable
    relaxed = run_module("apex_cert", state="facts", cert_name="apex-short-critical", warning_days=4, critical_days=2,
                         **CTX)
    assert relaxed["status"] == "ok"
    # the whole namespace: the worst one wins
    everything = run_module("apex_cert", state="facts", sources=["certificate", "secret"], **CTX)
    assert everything["expiry"]["status"] == "critical"
    assert everything["expiry"]["source"] in ("certificate/apex-short-critical", "secret/apex-short-critical")


def test_install_creates_unmanaged_secret_with_chain_and_encrypted_key(run_module, kube, lab_ca, tmp_path):
    """No Certificate, no Secret yet: the Secret is created; the chain is kept in order; an encrypted
    key is stored decrypted (what ingress controllers read); a second run changes nothing."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from ansible_collections.apex.ops.plugins.module_utils import tls

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_cert = x509.load_pem_x509_certificate(lab_ca[0])
    ca_key = serialization.load_pem_private_key(lab_ca[1], password=None)
    int_key = ec.generate_private_key(ec.SECP256R1())
    inter = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apex test intermediate")]))
             .issuer_name(ca_cert.subject).public_key(int_key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
             .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "manual.apex.lab.test")]))
            .issuer_name(inter.subject).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=20))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("*.apex.lab.test")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(int_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(lab_ca[0])
    encrypted = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"s3cret-pass")).decode()
    args = dict(state="install", secret_name="apex-manual-tls", certificate=leaf.public_bytes(pem).decode(),
                chain=inter.public_bytes(pem).decode(), private_key=encrypted, private_key_passphrase="s3cret-pass",
                hostname="manual.apex.lab.test", tls_ca_file=str(ca_file), **CTX)
    kube.delete_secret(NS, "apex-manual-tls")
    try:
        res = run_module("apex_cert", diff=True, **args)
        assert not res.failed, res.get("msg")
        assert res["changed"] is True and res["diff"]["before"] == {"present": False}
        assert res["validation"]["anchored_to_ca"] is True
        assert "s3cret-pass" not in res["_stdout"]
        secret = kube.get_secret(NS, "apex-manual-tls")
        assert secret["type"] == "kubernetes.io/tls"
        crt = base64.b64decode(secret["data"]["tls.crt"])
        chain = tls.load_certificates(crt)
        assert [c.subject.rfc4514_string() for c in chain] == ["CN=manual.apex.lab.test", "CN=apex test intermediate"]
        key = tls.load_private_key(base64.b64decode(secret["data"]["tls.key"]))  # stored unencrypted
        assert tls.key_matches(chain[0], key)
        again = run_module("apex_cert", **args)
        assert not again.failed and again["changed"] is False
        # a wrong passphrase is refused with a clear message, nothing changed
        rv = kube.get_secret(NS, "apex-manual-tls")["metadata"]["resourceVersion"]
        bad = run_module("apex_cert", **dict(args, private_key_passphrase="not-the-pass-phrase"))
        assert bad.failed and "wrong passphrase" in bad["msg"] and "nothing was changed" in bad["msg"]
        assert kube.get_secret(NS, "apex-manual-tls")["metadata"]["resourceVersion"] == rv
    finally:
        kube.delete_secret(NS, "apex-manual-tls")


def test_install_then_failed_ingress_restart_reports_new_and_previous(run_module, kube, issue, stored):
    """The Secret is replaced, then the ingress restart fails (no such Deployment): the run fails with
    changed=true, names the failure, and carries what is stored now and what was replaced."""
    first, second = issue(), issue()
    base = dict(state="install", secret_name="apex-manual-tls", hostname="localhost", **CTX)
    kube.delete_secret(NS, "apex-manual-tls")
    try:
        ok = run_module("apex_cert", **dict(base, certificate=first[0], private_key=first[1]))
        assert not ok.failed, ok.get("msg")
        before = stored("apex-manual-tls")["certificate"]
        res = run_module("apex_cert", **dict(base, certificate=second[0], private_key=second[1], restart_ingress=True,
                                             ingress_deployment="apex-no-such-ingress", wait_timeout=10))
        assert res.failed and res["changed"] is True
        assert "the certificate was changed, but the rolling restart" in res["msg"]
        assert "check ingress_namespace/ingress_deployment" in res["msg"]
        now = stored("apex-manual-tls")["certificate"]
        assert now["serial"] != before["serial"] and res["secret"]["certificate"]["serial"] == now["serial"]
        assert res["previous"]["serial"] == before["serial"]
        assert "PRIVATE KEY" not in res["_stdout"]
    finally:
        kube.delete_secret(NS, "apex-manual-tls")


# ------------------------------------------------------------------ safety refusals

def _ingress_generation(kube):
    return kube.get_deployment("ingress-nginx", "ingress-nginx-controller")["metadata"]["generation"]


def test_delete_secret_refused_while_the_issuer_is_not_ready(run_module, kube, served):
    raw, serving = _secret_raw(kube), _fp(served())
    _set_issuer_ready(kube, False)
    try:
        res = run_module("apex_cert", state="renew", cert_name=CERT, method="delete_secret", wait_timeout=10, **CTX)
        assert res.failed and "refusing to delete Secret apex/apex-tls" in res["msg"]
        assert "Issuer lab-ca is not Ready" in res["msg"] and "nothing was changed" in res["msg"]
        assert _secret_raw(kube) == raw, "the Secret must be untouched"
    finally:
        _set_issuer_ready(kube, True)
    assert _fp(served()) == serving


def test_reload_does_not_restart_for_an_unreachable_endpoint(run_module, kube):
    generation = _ingress_generation(kube)
    res = run_module("apex_cert", state="reload", cert_name=CERT, endpoint="https://127.0.0.1:9",
                     hostname="localhost", endpoint_timeout=2, **CTX)
    assert res.failed and "cannot probe https://127.0.0.1:9" in res["msg"] and "nothing was changed" in res["msg"]
    assert _ingress_generation(kube) == generation


def test_reload_leaves_an_endpoint_serving_a_newer_certificate_alone(run_module, kube, issue, endpoint):
    """The Secret holds an older certificate than the one served (another terminator, or a rolled-back
    Secret): restarting the ingress would not change what is served, so nothing is restarted."""
    old_cert, old_key = issue(start_days=-20, days=60)
    kube.delete_secret(NS, "apex-manual-tls")
    try:
        res = run_module("apex_cert", state="install", secret_name="apex-manual-tls", certificate=old_cert,
                         private_key=old_key, hostname="localhost", **CTX)
        assert not res.failed, res.get("msg")
        generation = _ingress_generation(kube)
        res = run_module("apex_cert", state="reload", secret_name="apex-manual-tls", **endpoint, **CTX)
        assert not res.failed, res.get("msg")
        assert res["changed"] is False and "ingress_restart" not in res
        assert res["drift"]["drift"] is True and res["drift"]["secret_newer"] is False
        assert "a restart would not change what is served" in str(res.get("warnings"))  # 2.19: structured warnings
        assert _ingress_generation(kube) == generation
    finally:
        kube.delete_secret(NS, "apex-manual-tls")


def test_renew_without_wait_cannot_restart_or_wait_for_the_endpoint(run_module, kube, endpoint):
    raw = _secret_raw(kube)
    res = run_module("apex_cert", state="renew", cert_name=CERT, wait=False, restart_ingress=True, **endpoint, **CTX)
    assert res.failed and "wait=false" in res["msg"]
    assert _secret_raw(kube) == raw


def test_certificate_bundle_with_a_key_is_refused_and_the_key_not_shown(run_module, kube, issue):
    cert_pem, key_pem = issue()
    raw = _secret_raw(kube)
    res = run_module("apex_cert", state="install", cert_name=CERT, certificate=cert_pem + key_pem,
                     private_key=key_pem, hostname="localhost", **CTX)
    assert res.failed and "contains a private key" in res["msg"] and "nothing was changed" in res["msg"]
    for line in key_pem.splitlines()[1:-1]:
        assert line not in res["_stdout"]
    assert _secret_raw(kube) == raw


def _lab_chain(lab_ca, intermediate_is_ca, hostname="manual.apex.lab.test"):
    """leaf <- intermediate <- the lab CA; the intermediate with CA:TRUE or CA:FALSE."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_cert = x509.load_pem_x509_certificate(lab_ca[0])
    ca_key = serialization.load_pem_private_key(lab_ca[1], password=None)
    int_key = ec.generate_private_key(ec.SECP256R1())
    inter = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apex test issuer")]))
             .issuer_name(ca_cert.subject).public_key(int_key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=intermediate_is_ca, path_length=None), critical=True)
             .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(inter.subject).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=20))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .sign(int_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return leaf.public_bytes(pem).decode(), inter.public_bytes(pem).decode(), key_pem


@pytest.mark.parametrize("with_ca_file", [True, False])
def test_install_refuses_intermediate_that_is_not_a_ca(run_module, kube, lab_ca, tmp_path, with_ca_file):
    """Issue 9: names and signatures chain, but the 'intermediate' is CA:FALSE — no client trusts
    that chain. Before the fix it was installed into the Secret."""
    secret = "apex-notca-tls"
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(lab_ca[0])
    extra = dict(tls_ca_file=str(ca_file)) if with_ca_file else {}
    # with the root in the chain instead of a CA file, the supplied root is the anchor
    leaf_pem, inter_pem, key_pem = _lab_chain(lab_ca, intermediate_is_ca=False)
    chain = inter_pem if with_ca_file else inter_pem + lab_ca[0].decode()
    kube.delete_secret(NS, secret)
    try:
        res = run_module("apex_cert", state="install", secret_name=secret, certificate=leaf_pem, private_key=key_pem,
                         chain=chain, hostname="manual.apex.lab.test", **extra, **CTX)
        assert res.failed and "nothing was changed" in res["msg"]
        assert "is not a CA" in res["msg"] and "does not verify" in res["msg"], res["msg"]
        assert res["validation"]["verified"] is False
        assert kube.get_secret(NS, secret) is None, "a Secret was written although the chain was refused"
        # the same chain with a real CA as intermediate is installed, and the Secret holds it
        leaf_pem, inter_pem, key_pem = _lab_chain(lab_ca, intermediate_is_ca=True)
        chain = inter_pem if with_ca_file else inter_pem + lab_ca[0].decode()
        res = run_module("apex_cert", state="install", secret_name=secret, certificate=leaf_pem, private_key=key_pem,
                         chain=chain, hostname="manual.apex.lab.test", **extra, **CTX)
        assert not res.failed, res.get("msg")
        assert res["validation"]["verified"] is True
        assert res["validation"]["trust_anchor"] == ("ca_bundle" if with_ca_file else "supplied_chain")
        stored = base64.b64decode(kube.get_secret(NS, secret)["data"]["tls.crt"]).decode()
        assert stored.startswith(leaf_pem.strip())
    finally:
        kube.delete_secret(NS, secret)
