"""Mint lab certificates (a CA, and server certificates it signs) with ``cryptography``.

Used by the twin's tests and for development; the lab itself has its own CA (APEX_CA_FILE /
APEX_CA_KEY) and this module can sign with it: ``issue(ca_cert_pem, ca_key_pem, ...)``.
"""
import datetime
import ipaddress
import os

DEFAULT_SANS = ("localhost", "127.0.0.1", "apex.lab.test")


def _x509():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    return x509, hashes, serialization, ec, NameOID, ExtendedKeyUsageOID


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def make_ca(common_name="apex twin test CA", days=30):
    """Return (cert_pem, key_pem) of a self-signed CA."""
    x509, hashes, serialization, ec, NameOID, _ = _x509()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def issue(ca_cert_pem, ca_key_pem, sans=DEFAULT_SANS, days=30, common_name=None, serial=None):
    """Return (cert_pem, key_pem, serial) of a server certificate signed by the CA."""
    x509, hashes, serialization, ec, NameOID, ExtendedKeyUsageOID = _x509()
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    serial = serial or x509.random_serial_number()
    alt = []
    for san in sans:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            alt.append(x509.DNSName(san))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or sans[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()), serial)


def write_pair(directory, stem, cert_pem, key_pem):
    os.makedirs(directory, exist_ok=True)
    cert_path = os.path.join(directory, stem + ".crt")
    key_path = os.path.join(directory, stem + ".key")
    with open(cert_path, "wb") as handle:
        handle.write(cert_pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    return cert_path, key_path


def served_serial(host, port, server_hostname="localhost", timeout=5):
    """Serial number of the certificate a TLS endpoint serves right now (no verification)."""
    import socket
    import ssl
    from cryptography import x509
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname=server_hostname) as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number
