"""The lab CA and the serving certificates it issues (the twin's, PostgreSQL's). ``cryptography``
is imported only when something has to be (re)issued."""
import os
import pwd
import ssl
import time

from .procs import say
from .state import write_private


def ensure_pki(state):
    ca_crt, ca_key = state.ca_dir / "ca.crt", state.ca_dir / "ca.key"
    twin_crt, twin_key = state.twin_dir / "tls.crt", state.twin_dir / "tls.key"
    pg_crt, pg_key = state.pg_tls / "server.crt", state.pg_tls / "server.key"
    fresh = not (ca_crt.exists() and ca_key.exists())
    todo = [(twin_crt, twin_key, None), (pg_crt, pg_key, "postgres")]
    if not fresh and all(cert_ok(c, ca_crt) and k.exists() for c, k, _ in todo):
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import datetime
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    pem = serialization.Encoding.PEM

    def key_pem(key):
        return key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()

    if fresh:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "apex.ops lab"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "apex.ops lab CA")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        write_private(ca_key, key_pem(key))
        write_private(ca_crt, cert.public_bytes(pem).decode(), 0o644)
        say("created lab CA %s" % ca_crt)
    ca_key_obj = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    for crt, keyfile, owner in todo:
        if not fresh and cert_ok(crt, ca_crt) and keyfile.exists():
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.DNSName("localhost"), x509.DNSName("apex.lab.test"), x509.DNSName("*.apex.lab.test"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=397))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key_obj.public_key()),
                               critical=False)
                .sign(ca_key_obj, hashes.SHA256()))
        write_private(keyfile, key_pem(key))
        write_private(crt, cert.public_bytes(pem).decode(), 0o644)
        if owner:
            pw = pwd.getpwnam(owner)
            for f in (crt, keyfile):
                os.chown(str(f), pw.pw_uid, pw.pw_gid)


def cert_ok(crt, ca_crt):
    """Cheap stdlib check: the cert exists, was issued by the lab CA and is not near expiry."""
    try:
        info = ssl._ssl._test_decode_cert(str(crt))  # noqa: SLF001 (stdlib, no cryptography import)
        expires = ssl.cert_time_to_seconds(info["notAfter"])
        return expires - time.time() > 30 * 86400 and issuer_matches(info, ca_crt)
    except Exception:
        return False


def issuer_matches(info, ca_crt):
    ca_info = ssl._ssl._test_decode_cert(str(ca_crt))  # noqa: SLF001
    return info.get("issuer") == ca_info.get("subject")
