"""Unit tests for plugins/module_utils/tls.py: generated certificates, a local TLS server."""
import datetime
import ssl
import socket
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ansible_collections.apex.ops.plugins.module_utils import tls

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_key(kind="ec"):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def make_cert(cn, key, issuer_cert=None, issuer_key=None, dns=(), ips=(), ca=False,
              not_before=None, not_after=None, serial=None):
    import ipaddress

    issuer_key = issuer_key or key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(cn))
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before or NOW - DAY)
        .not_valid_after(not_after or NOW + 90 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(*certs):
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs).decode()


def key_pem(key, passphrase=None):
    enc = serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc).decode()


@pytest.fixture(scope="module")
def pki():
    root_key = make_key()
    root = make_cert("Lab Root CA", root_key, ca=True, not_after=NOW + 3650 * DAY)
    int_key = make_key()
    inter = make_cert("Lab Intermediate", int_key, root, root_key, ca=True, not_after=NOW + 1000 * DAY)
    leaf_key = make_key("rsa")
    leaf = make_cert("apex.lab.test", leaf_key, inter, int_key, dns=["apex.lab.test", "localhost", "*.apps.lab.test"],
                     ips=["127.0.0.1"])
    return dict(root=root, root_key=root_key, inter=inter, int_key=int_key, leaf=leaf, leaf_key=leaf_key)


# ------------------------------------------------------------------ parsing & facts

def test_load_certificates_keeps_order(pki):
    certs = tls.load_certificates(pem(pki["leaf"], pki["inter"], pki["root"]))
    assert [c.subject.rfc4514_string() for c in certs] == ["CN=apex.lab.test", "CN=Lab Intermediate", "CN=Lab Root CA"]


def test_load_certificates_rejects_garbage():
    with pytest.raises(tls.TLSError, match="no PEM certificate"):
        tls.load_certificates("hello")


def test_load_private_key_wrong_passphrase_message_has_no_key(pki):
    text = key_pem(pki["leaf_key"], passphrase="right")
    assert tls.key_matches(pki["leaf"], tls.load_private_key(text, "right"))
    with pytest.raises(tls.TLSError) as err:
        tls.load_private_key(text, "wrong")
    assert "PRIVATE KEY" not in str(err.value) and "wrong passphrase" in str(err.value)


def test_key_match_and_mismatch(pki):
    assert tls.key_matches(pki["leaf"], pki["leaf_key"])
    assert not tls.key_matches(pki["leaf"], pki["int_key"])


def test_cert_info_fields(pki):
    info = tls.cert_info(pki["leaf"], now=NOW)
    assert info["subject"] == "CN=apex.lab.test"
    assert info["issuer"] == "CN=Lab Intermediate"
    assert info["dns_names"] == ["apex.lab.test", "localhost", "*.apps.lab.test"]
    assert info["ip_addresses"] == ["127.0.0.1"]
    assert 89.9 < info["days_left"] <= 90
    assert info["expiry_status"] == "ok"
    assert int(info["serial"].replace(":", ""), 16) == pki["leaf"].serial_number
    assert len(info["fingerprint_sha256"]) == 64
    assert not info["is_ca"] and not info["self_signed"]
    assert "KEY" not in repr(info)


def test_serial_hex_is_even_length_pairs():
    key = make_key()
    cert = make_cert("x", key, serial=0xABC)
    assert tls.serial_hex(cert) == "0A:BC"


# ------------------------------------------------------------------ thresholds

@pytest.mark.parametrize("days,status", [
    (90, "ok"), (30, "ok"), (29.9, "warning"), (7, "warning"), (6.9, "critical"), (0.01, "critical"),
    (0, "expired"), (-3, "expired"), (None, None),
])
def test_expiry_status_defaults(days, status):
    assert tls.expiry_status(days) == status


def test_expiry_status_custom_thresholds():
    assert tls.expiry_status(50, warning_days=60, critical_days=45) == "warning"
    assert tls.expiry_status(40, warning_days=60, critical_days=45) == "critical"
    with pytest.raises(ValueError):
        tls.expiry_status(10, warning_days=5, critical_days=10)


def test_worst_status():
    assert tls.worst_status(["ok", None, "warning", "ok"]) == "warning"
    assert tls.worst_status(["critical", "expired"]) == "expired"
    assert tls.worst_status([None]) is None


def test_near_expiry_generated_certs_are_judged():
    key = make_key()
    warning = make_cert("w", key, not_after=NOW + 20 * DAY)
    critical = make_cert("c", key, not_after=NOW + 2 * DAY)
    expired = make_cert("e", key, not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    assert tls.cert_info(warning, now=NOW)["expiry_status"] == "warning"
    assert tls.cert_info(critical, now=NOW)["expiry_status"] == "critical"
    assert tls.cert_info(expired, now=NOW)["expiry_status"] == "expired"
    assert tls.cert_info(warning, now=NOW, warning_days=10, critical_days=5)["expiry_status"] == "ok"


# ------------------------------------------------------------------ validity & hostnames

def test_validity_window(pki):
    key = make_key()
    assert tls.validity_problems(pki["leaf"], NOW) == []
    future = make_cert("f", key, not_before=NOW + DAY, not_after=NOW + 10 * DAY)
    assert "not valid yet" in tls.validity_problems(future, NOW)[0]
    past = make_cert("p", key, not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    assert "has expired" in tls.validity_problems(past, NOW)[0]


@pytest.mark.parametrize("host,ok", [
    ("apex.lab.test", True), ("APEX.Lab.Test.", True), ("localhost", True), ("127.0.0.1", True),
    ("x.apps.lab.test", True), ("apps.lab.test", False), ("a.b.apps.lab.test", False),
    ("other.lab.test", False), ("::1", False), ("10.0.0.1", False),
])
def test_hostname_matches(pki, host, ok):
    assert tls.hostname_matches(pki["leaf"], host) is ok


@pytest.mark.parametrize("pattern,host,ok", [
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "a.b.example.com", False),
    ("*.com", "example.com", False),
    ("a*.example.com", "ab.example.com", False),
    ("*.*.example.com", "a.b.example.com", False),
    ("", "a", False),
])
def test_wildcard_rules(pattern, host, ok):
    assert tls._match_dns(pattern, host) is ok


def test_cn_is_not_consulted():
    key = make_key()
    cert = make_cert("apex.lab.test", key)  # no SAN
    assert not tls.hostname_matches(cert, "apex.lab.test")


# ------------------------------------------------------------------ chains

def test_chain_order(pki):
    assert tls.chain_problems([pki["leaf"], pki["inter"], pki["root"]]) == []
    problems = tls.chain_problems([pki["leaf"], pki["root"], pki["inter"]])
    assert problems and "out of order" in problems[0]


def test_chain_with_forged_issuer_name_fails(pki):
    other_key = make_key()
    fake_inter = make_cert("Lab Intermediate", other_key, pki["root"], pki["root_key"], ca=True)
    assert tls.chain_problems([pki["leaf"], fake_inter])  # same name, wrong key


def test_chain_anchored(pki):
    assert tls.chain_anchored([pki["leaf"], pki["inter"]], [pki["root"]])
    assert tls.chain_anchored([pki["leaf"], pki["inter"], pki["root"]], [pki["root"]])
    other = make_cert("Other", make_key(), ca=True)
    assert not tls.chain_anchored([pki["leaf"], pki["inter"]], [other])


# ------------------------------------------------------------------ bundle validation

def test_validate_bundle_good(pki):
    report, leaf, chain, key = tls.validate_bundle(
        pem(pki["leaf"]), key_pem(pki["leaf_key"]), pem(pki["inter"]), hostnames=["apex.lab.test"],
        ca_pem=pem(pki["root"]))
    assert report["problems"] == []
    assert report["key_matches"] and report["anchored_to_ca"]
    assert [c["subject"] for c in report["chain"]] == ["CN=Lab Intermediate"]
    assert "PRIVATE" not in repr(report)


def test_validate_bundle_duplicate_leaf_tolerated(pki):
    report, dummy, chain, dummy2 = tls.validate_bundle(
        pem(pki["leaf"], pki["inter"]), key_pem(pki["leaf_key"]), pem(pki["leaf"], pki["inter"]), hostnames=["localhost"])
    assert report["problems"] == [] and len(chain) == 2


def test_validate_bundle_refuses_each_defect(pki):
    # mismatched key
    report = tls.validate_bundle(pem(pki["leaf"]), key_pem(pki["int_key"]), pem(pki["inter"]))[0]
    assert any("does not match" in p for p in report["problems"])
    # expired
    expired = make_cert("apex.lab.test", pki["leaf_key"], pki["inter"], pki["int_key"], dns=["apex.lab.test"],
                        not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    report = tls.validate_bundle(pem(expired), key_pem(pki["leaf_key"]), pem(pki["inter"]), ["apex.lab.test"])[0]
    assert any("expired" in p for p in report["problems"])
    # another hostname
    other = make_cert("other.example", pki["leaf_key"], pki["inter"], pki["int_key"], dns=["other.example"])
    report = tls.validate_bundle(pem(other), key_pem(pki["leaf_key"]), pem(pki["inter"]), ["apex.lab.test"])[0]
    assert any("does not cover apex.lab.test" in p for p in report["problems"])
    # chain out of order
    report = tls.validate_bundle(pem(pki["leaf"]), key_pem(pki["leaf_key"]), pem(pki["root"], pki["inter"]))[0]
    assert any("out of order" in p for p in report["problems"])
    # wrong CA
    report = tls.validate_bundle(pem(pki["leaf"]), key_pem(pki["leaf_key"]), pem(pki["inter"]),
                                 ca_pem=pem(make_cert("Other", make_key(), ca=True)))[0]
    assert any("CA bundle" in p for p in report["problems"])


def test_key_to_pem_roundtrip(pki):
    text = tls.key_to_pem(pki["leaf_key"])
    assert tls.key_matches(pki["leaf"], tls.load_private_key(text))


# ------------------------------------------------------------------ endpoint parsing & drift

@pytest.mark.parametrize("text,expected", [
    ("https://localhost:8443/health", ("localhost", 8443)),
    ("https://apex.example.com", ("apex.example.com", 443)),
    ("apex.example.com:9443", ("apex.example.com", 9443)),
    ("[::1]:8443", ("::1", 8443)),
    ("https://user@host:1/x", ("host", 1)),
])
def test_parse_endpoint(text, expected):
    assert tls.parse_endpoint(text) == expected


def test_compare_served(pki):
    key = make_key()
    old = tls.cert_info(make_cert("a", key, not_before=NOW - 10 * DAY), now=NOW)
    new = tls.cert_info(make_cert("a", key, not_before=NOW - DAY), now=NOW)
    assert tls.compare_served(new, new)["drift"] is False
    d = tls.compare_served(new, old)
    assert d["drift"] is True and d["secret_newer"] is True
    d = tls.compare_served(old, new)
    assert d["drift"] is True and d["secret_newer"] is False
    assert tls.compare_served(None, new)["drift"] is None


def test_parse_time():
    assert tls.parse_time("2026-01-02T03:04:05Z") == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert tls.parse_time(None) is None and tls.parse_time("garbage") is None


# ------------------------------------------------------------------ live probe (local ssl server)

class TLSServer:
    """A tiny TLS server on 127.0.0.1 that completes handshakes and closes."""

    def __init__(self, tmp_path, chain, key):
        cert_file = tmp_path / "server.pem"
        key_file = tmp_path / "server.key"
        cert_file.write_text(pem(*chain))
        key_file.write_text(key_pem(key))
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert_file), str(key_file))
        self.sni_seen = []
        self.ctx.sni_callback = lambda sock, name, ctx: self.sni_seen.append(name)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, dummy = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(1)
            except (ssl.SSLError, OSError):
                pass

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture()
def server(tmp_path, pki):
    srv = TLSServer(tmp_path, [pki["leaf"], pki["inter"]], pki["leaf_key"])
    yield srv
    srv.close()


def test_probe_endpoint_good(server, pki, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(pem(pki["root"]))
    res = tls.probe_endpoint("127.0.0.1", server.port, server_name="apex.lab.test", ca_file=str(ca), timeout=5)
    assert res["verified"] is True and res["verify_error"] is None
    assert res["hostname_match"] is True and res["trusted"] is True
    assert res["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert [c["subject"] for c in res["chain"]] == ["CN=apex.lab.test", "CN=Lab Intermediate"]
    assert res["certificate"]["serial"] == tls.serial_hex(pki["leaf"])
    assert res["chain_problems"] == []
    assert "apex.lab.test" in server.sni_seen
    assert 89 < res["days_left"] <= 90 and res["expiry_status"] == "ok"


def test_probe_endpoint_untrusted_and_wrong_name(server, pki, tmp_path):
    other = tmp_path / "other.pem"
    other.write_text(pem(make_cert("Other", make_key(), ca=True)))
    res = tls.probe_endpoint("127.0.0.1", server.port, server_name="nope.example", ca_file=str(other), timeout=5)
    assert res["verified"] is False and res["verify_error"]
    assert res["hostname_match"] is False and res["trusted"] is False
    assert res["chain"], "the chain is reported even when it does not verify"


def test_probe_endpoint_ip_sends_no_sni(server, pki, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(pem(pki["root"]))
    res = tls.probe_endpoint("127.0.0.1", server.port, ca_file=str(ca), timeout=5)
    assert res["sni_sent"] is False and res["hostname_match"] is True and res["verified"] is True


def test_probe_endpoint_refused():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(OSError):
        tls.probe_endpoint("127.0.0.1", port, timeout=2)


# ------------------------------------------------------------------ cert_manager facts (pure parts)

def _secret(crt_pem, key_text):
    """A Secret as the API returns it (JSON)."""
    import base64

    data = {}
    if crt_pem:
        data["tls.crt"] = base64.b64encode(crt_pem.encode()).decode()
    if key_text:
        data["tls.key"] = base64.b64encode(key_text.encode()).decode()
    meta = {"name": "apex-tls", "namespace": "apex", "resourceVersion": "7",
            "annotations": {"cert-manager.io/issuer-name": "lab-ca", "other": "x"}}
    return {"metadata": meta, "type": "kubernetes.io/tls", "data": data}


def test_certificate_facts_and_conditions():
    from ansible_collections.apex.ops.plugins.module_utils import cert_manager as cm

    obj = {
        "metadata": {"name": "apex-tls", "namespace": "apex", "generation": 2},
        "spec": {"secretName": "apex-tls", "dnsNames": ["apex.lab.test"], "issuerRef": {"name": "lab-ca", "kind": "Issuer"}},
        "status": {"notAfter": (NOW + 5 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ"), "renewalTime": "2026-01-01T00:00:00Z",
                   "failedIssuanceAttempts": 2,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "up to date"},
                                  {"type": "Issuing", "status": "True", "reason": "ManuallyTriggered", "message": "m"}]},
    }
    facts = cm.certificate_facts(obj, now=NOW)
    assert facts["ready"] and facts["issuing"] and facts["issuing_reason"] == "ManuallyTriggered"
    assert facts["expiry_status"] == "critical" and 4.9 < facts["days_left"] <= 5
    assert facts["failed_issuance_attempts"] == 2 and facts["issuer_ref"]["name"] == "lab-ca"
    assert "Issuing=True (ManuallyTriggered: m)" in cm.summarize_conditions(obj)
    assert cm.summarize_conditions({}) == "no conditions"
    assert cm.certificate_facts({"metadata": {"name": "x"}})["days_left"] is None


def test_secret_facts_key_match_and_no_key_material(pki):
    from ansible_collections.apex.ops.plugins.module_utils import cert_manager as cm

    good = cm.secret_facts(_secret(pem(pki["leaf"], pki["inter"]), key_pem(pki["leaf_key"])), now=NOW,
                           hostname="apex.lab.test")
    assert good["present"] and good["key_matches"] and good["hostname_match"]
    assert good["certificate"]["serial"] == tls.serial_hex(pki["leaf"]) and len(good["chain"]) == 1
    assert good["annotations"] == {"cert-manager.io/issuer-name": "lab-ca"}
    assert "PRIVATE" not in repr(good) and key_pem(pki["leaf_key"]).splitlines()[1] not in repr(good)
    bad = cm.secret_facts(_secret(pem(pki["leaf"]), key_pem(pki["int_key"])), now=NOW)
    assert bad["key_matches"] is False
    assert cm.secret_facts(None) == {"present": False}
    assert "no tls.crt" in cm.secret_facts(_secret(None, None))["error"]
    summary = cm.secret_summary(good)
    assert summary["certificate"]["serial"] == good["certificate"]["serial"] and "key_matches" not in summary


def test_judge_problems_and_status():
    from ansible_collections.apex.ops.plugins.module_utils.cert_runner import judge, overall_status

    result = {
        "certificates": [{"name": "apex-tls", "ready": False, "ready_reason": "Failed", "ready_message": "issuer down",
                          "failed_issuance_attempts": 1, "expiry_status": "warning", "days_left": 20.0,
                          "not_after": "x"}],
        "secrets": {"apex-tls": {"present": True, "key_matches": True, "expiry_status": "ok", "days_left": 50,
                                 "certificate": {"not_after": "y"}}},
        "endpoint": {"host": "h", "port": 1, "verified": True, "hostname_match": True, "expiry_status": "ok",
                     "days_left": 50, "chain_problems": []},
        "drift": {"drift": True, "secret_newer": True, "secret_serial": "AA", "served_serial": "BB",
                  "secret_name": "apex-tls"},
    }
    problems = judge(result)
    sev = {(p["source"], p["severity"]) for p in problems}
    assert ("certificate/apex-tls", "critical") in sev and ("certificate/apex-tls", "warning") in sev
    assert ("drift", "warning") in sev
    assert any("restart the ingress" in p["message"] for p in problems)
    assert overall_status(problems) == "critical"
    assert overall_status([]) == "ok"
    assert judge({"endpoint": {"host": "h", "port": 1, "error": "refused"}})[0]["severity"] == "critical"
    assert judge({"secrets": {"s": {"present": False}}})[0]["message"] == "Secret s does not exist"


# ------------------------------------------------------------------ trust decision (X.509 path verifier)

def _bundle(leaf, leaf_key, chain=(), ca=None, hostnames=("apex.lab.test",), now=None):
    return tls.validate_bundle(pem(leaf), key_pem(leaf_key), pem(*chain) if chain else None, hostnames=list(hostnames),
                               ca_pem=pem(*ca) if ca else None, now=now)[0]


def _refused(report, *fragments):
    assert report["verified"] is False and report["problems"], report
    text = " | ".join(report["problems"])
    for fragment in fragments:
        assert fragment in text, text
    return text


def test_verifier_accepts_good_chain_with_and_without_ca_bundle(pki):
    report = _bundle(pki["leaf"], pki["leaf_key"], [pki["inter"]], ca=[pki["root"]])
    assert report["problems"] == [] and report["verified"] and report["trust_anchor"] == "ca_bundle"
    assert report["verified_path"] == ["CN=apex.lab.test", "CN=Lab Intermediate", "CN=Lab Root CA"]
    report = _bundle(pki["leaf"], pki["leaf_key"], [pki["inter"], pki["root"]])
    assert report["problems"] == [] and report["verified"] and report["trust_anchor"] == "supplied_chain"
    # no hostname given: the chain is still verified (against the leaf's own SAN, wildcard too)
    report = _bundle(pki["leaf"], pki["leaf_key"], [pki["inter"]], ca=[pki["root"]], hostnames=())
    assert report["problems"] == [] and report["verified"]


def test_intermediate_that_is_not_a_ca_is_refused(pki):
    """The fault: an 'intermediate' with CA:FALSE signing the leaf was accepted (names and signatures chain)."""
    fake_key = make_key()
    not_ca = make_cert("Lab Intermediate", fake_key, pki["root"], pki["root_key"], ca=False)
    leaf = make_cert("apex.lab.test", pki["leaf_key"], not_ca, fake_key, dns=["apex.lab.test"])
    assert tls.chain_problems([leaf, not_ca, pki["root"]]) == []  # what the old check looked at
    text = _refused(_bundle(leaf, pki["leaf_key"], [not_ca], ca=[pki["root"]]),
                    "certificate 1 (CN=Lab Intermediate) issues certificate 0 but is not a CA", "basicConstraints")
    assert "does not verify" in text
    # the same chain with its root supplied and no CA bundle: refused too
    _refused(_bundle(leaf, pki["leaf_key"], [not_ca, pki["root"]]), "is not a CA")
    # and with the non-CA certificate at the top of the supplied chain (it becomes the anchor)
    _refused(_bundle(leaf, pki["leaf_key"], [not_ca]), "is not a CA")


def test_expired_intermediate_is_refused(pki):
    key = make_key()
    old = make_cert("Old Intermediate", key, pki["root"], pki["root_key"], ca=True,
                    not_before=NOW - 400 * DAY, not_after=NOW - DAY)
    leaf = make_cert("apex.lab.test", pki["leaf_key"], old, key, dns=["apex.lab.test"])
    _refused(_bundle(leaf, pki["leaf_key"], [old], ca=[pki["root"]]), "chain: certificate", "has expired", "does not verify")


def test_missing_intermediate_and_wrong_order(pki):
    # missing intermediate: the leaf alone against the root
    _refused(_bundle(pki["leaf"], pki["leaf_key"], ca=[pki["root"]]), "does not lead to the given CA bundle",
             "no path from the certificate to a trusted certificate")
    # wrong order: refused for the order (clients expect it), with the diagnosis naming the pair
    report = _bundle(pki["leaf"], pki["leaf_key"], [pki["root"], pki["inter"]])
    assert any("out of order" in p for p in report["problems"])
    # an unrelated intermediate: no path
    other_key = make_key()
    other_root = make_cert("Other Root", other_key, ca=True)
    other_int = make_cert("Other Int", make_key(), other_root, other_key, ca=True)
    _refused(_bundle(pki["leaf"], pki["leaf_key"], [other_int], ca=[pki["root"]]), "out of order", "does not verify")


def test_leaf_not_matching_hostname_is_refused_by_the_verifier(pki):
    text = _refused(_bundle(pki["leaf"], pki["leaf_key"], [pki["inter"]], ca=[pki["root"]], hostnames=["www.example.com"]),
                    "does not cover www.example.com", "for www.example.com")
    assert "subjectAltName" in text
    # IP hostnames go to the verifier as IP addresses
    assert _bundle(pki["leaf"], pki["leaf_key"], [pki["inter"]], ca=[pki["root"]], hostnames=["127.0.0.1"])["verified"]


def test_self_signed_leaf_not_in_trust_store_is_refused(pki):
    key = make_key()
    self_signed = make_cert("apex.lab.test", key, dns=["apex.lab.test"])
    _refused(_bundle(self_signed, key), "self-signed and not in the trust store")
    _refused(_bundle(self_signed, key, ca=[pki["root"]]), "does not verify")
    # trusted when the trust store holds it
    report = _bundle(self_signed, key, ca=[self_signed])
    assert report["problems"] == [] and report["verified"]


def test_path_length_violation_is_refused():
    root_key = make_key()
    root = (x509.CertificateBuilder().subject_name(_name("PathLen0 Root")).issuer_name(_name("PathLen0 Root"))
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY).not_valid_after(NOW + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(root_key, hashes.SHA256()))
    int_key = make_key()
    inter = make_cert("Sub CA", int_key, root, root_key, ca=True)
    leaf_key = make_key()
    leaf = make_cert("apex.lab.test", leaf_key, inter, int_key, dns=["apex.lab.test"])
    text = _refused(_bundle(leaf, leaf_key, [inter], ca=[root]), "does not verify")
    assert "path length" in text.lower() or "pathlen" in text.lower(), text
    # the same root may issue the leaf directly
    direct = make_cert("apex.lab.test", leaf_key, root, root_key, dns=["apex.lab.test"])
    assert _bundle(direct, leaf_key, ca=[root])["verified"]


def test_verify_chain_reports_path_and_error(pki):
    ok, error, path = tls.verify_chain([pki["leaf"], pki["inter"]], [pki["root"]], "apex.lab.test", NOW)
    assert ok and error is None and len(path) == 3
    ok, error, path = tls.verify_chain([pki["leaf"]], [pki["root"]], "apex.lab.test", NOW)
    assert not ok and "no path" in error and path == []
    no_san = make_cert("x", make_key(), pki["inter"], pki["int_key"])
    ok, error, dummy = tls.verify_chain([no_san, pki["inter"]], [pki["root"]], None, NOW)
    assert not ok and "subjectAltName" in error


def test_wildcard_hostname_and_odd_names(pki):
    # apex_cert falls back to the Certificate's first dnsName, which may be a wildcard
    report = _bundle(pki["leaf"], pki["leaf_key"], [pki["inter"]], ca=[pki["root"]], hostnames=["*.apps.lab.test"])
    assert report["problems"] == [] and report["verified"]
    ok, error, dummy = tls.verify_chain([pki["leaf"], pki["inter"]], [pki["root"]], "bad name..", NOW)
    assert not ok and error
