"""The lab CA and the certificates kubesim needs (its own serving cert, cert-manager issues)."""
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CA:
    def __init__(self, cert_pem, key_pem):
        self.cert_pem = cert_pem
        self.key_pem = key_pem
        self.cert = x509.load_pem_x509_certificate(cert_pem)
        self.key = serialization.load_pem_private_key(key_pem, None)

    @classmethod
    def load_or_create(cls, ca_file, ca_key, fallback_dir):
        if ca_file and ca_key and os.path.exists(ca_file) and os.path.exists(ca_key):
            with open(ca_file, "rb") as f1, open(ca_key, "rb") as f2:
                return cls(f1.read(), f2.read())
        os.makedirs(fallback_dir, exist_ok=True)
        cf, kf = os.path.join(fallback_dir, "ca.crt"), os.path.join(fallback_dir, "ca.key")
        if os.path.exists(cf) and os.path.exists(kf):
            with open(cf, "rb") as f1, open(kf, "rb") as f2:
                return cls(f1.read(), f2.read())
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubesim lab CA")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(_now() - datetime.timedelta(minutes=5))
                .not_valid_after(_now() + datetime.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                             False), critical=True)
                .sign(key, hashes.SHA256()))
        with open(cf, "wb") as f:
            f.write(pem_cert(cert))
        fd = os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem_key(key))
        return cls(pem_cert(cert), pem_key(key))

    def issue(self, dns_names=(), ips=(), common_name=None, duration=90 * 86400, key_alg="RSA",
              key_size=2048, server=True, client=False):
        """Returns (cert, key, cert_pem, key_pem)."""
        if key_alg.upper() == "ECDSA":
            curve = {384: ec.SECP384R1(), 521: ec.SECP521R1()}.get(key_size, ec.SECP256R1())
            key = ec.generate_private_key(curve)
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=key_size or 2048)
        cn = common_name or (list(dns_names) or ["kubesim"])[0]
        sans = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        now = _now()
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(seconds=1))
                   .not_valid_after(now + datetime.timedelta(seconds=duration))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                   .add_extension(x509.KeyUsage(True, False, True, False, False, False, False,
                                                False, False), True))
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert, key, pem_cert(cert), pem_key(key)


def csr_pem(key, cn, dns_names):
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns_names]), False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def cert_info(pem):
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    return {"serial": cert.serial_number, "dns": dns,
            "not_before": cert.not_valid_before_utc, "not_after": cert.not_valid_after_utc}
