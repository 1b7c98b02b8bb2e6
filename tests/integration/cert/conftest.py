"""Fixtures for the certificate tests: the lab's Kubernetes simulator (cert-manager controller),
the Apex twin's HTTPS endpoint, and certificates signed by the lab CA."""
import datetime
import ipaddress
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
COLLECTIONS = Path(os.environ.get("APEX_LAB_DIR", ROOT / ".lab")) / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

NS = "apex"
CERT = "apex-tls"
INGRESS_NS = "ingress-nginx"
INGRESS = "ingress-nginx-controller"


@pytest.fixture(scope="session")
def kube(lab):
    from ansible_collections.apex.ops.plugins.module_utils import k8s
    from ansible_collections.apex.ops.plugins.module_utils.cert_manager import CertManager

    kubeconfig = lab.get("K8S_AUTH_KUBECONFIG") or lab.get("KUBECONFIG")
    if not kubeconfig or not Path(kubeconfig).exists():
        pytest.fail("the lab has no Kubernetes simulator kubeconfig (KUBECONFIG=%r)" % kubeconfig)
    return CertManager(k8s.connect(dict(kubeconfig=kubeconfig, context="apex-primary")))


@pytest.fixture(scope="session")
def endpoint(lab):
    return dict(endpoint=lab["APEX_API_URL"], hostname=lab.get("APEX_API_HOSTNAME", "localhost"),
                tls_ca_file=lab["APEX_CA_FILE"])


@pytest.fixture(scope="session")
def served(endpoint):
    """The certificate the twin serves right now (cert_info dict)."""
    from ansible_collections.apex.ops.plugins.module_utils import tls

    def _served():
        host, port = tls.parse_endpoint(endpoint["endpoint"])
        return tls.probe_endpoint(host, port, server_name=endpoint["hostname"], ca_file=endpoint["tls_ca_file"],
                                  timeout=5)["certificate"]
    return _served


@pytest.fixture(scope="session")
def stored(kube):
    """The certificate stored in a Secret right now (secret_facts dict)."""
    from ansible_collections.apex.ops.plugins.module_utils.cert_manager import secret_facts

    def _stored(name=CERT):
        return secret_facts(kube.get_secret(NS, name))
    return _stored


@pytest.fixture(scope="session")
def lab_ca(lab):
    return Path(lab["APEX_CA_FILE"]).read_bytes(), Path(lab["APEX_CA_KEY"]).read_bytes()


@pytest.fixture(scope="session")
def issue(lab_ca):
    """issue(sans=..., days=..., start_days=...) -> (cert_pem, key_pem) signed by the lab CA
    (or self-signed with ca=None)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_cert = x509.load_pem_x509_certificate(lab_ca[0])
    ca_key = serialization.load_pem_private_key(lab_ca[1], password=None)

    def _issue(sans=("localhost", "apex.lab.test", "127.0.0.1"), days=60, start_days=-1, key=None):
        now = datetime.datetime.now(datetime.timezone.utc)
        key = key or ec.generate_private_key(ec.SECP256R1())
        alt = []
        for san in sans:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                alt.append(x509.DNSName(san))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now + datetime.timedelta(days=start_days))
                .not_valid_after(now + datetime.timedelta(days=start_days + days))
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(ca_key, hashes.SHA256()))
        return (cert.public_bytes(serialization.Encoding.PEM).decode(),
                key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode())
    return _issue


@pytest.fixture(scope="package", autouse=True)
def restore_apex_tls(lab, run_module, endpoint):
    """Right after the certificate tests (package scope, not the session's end: later tests, e.g.
    health_check's TLS part, must not meet the drift or short certificates they leave):
    apex-tls valid, issued by cert-manager, and served."""
    yield
    result = run_module("apex_cert", state="renew", cert_name=CERT, method="issuing_condition", restart_ingress=True,
                        wait_for_endpoint=True, wait_timeout=120, context="apex-primary", **endpoint)
    assert not result.failed, "could not restore apex-tls: %s" % result.get("msg")
