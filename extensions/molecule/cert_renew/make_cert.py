"""Write a certificate signed by the lab CA ($APEX_CA_FILE/$APEX_CA_KEY) valid for --days days."""
import argparse
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

parser = argparse.ArgumentParser()
parser.add_argument("--days", type=float, required=True)
parser.add_argument("--out", required=True)
args = parser.parse_args()
with open(os.environ["APEX_CA_FILE"], "rb") as handle:
    ca = x509.load_pem_x509_certificate(handle.read())
with open(os.environ["APEX_CA_KEY"], "rb") as handle:
    ca_key = serialization.load_pem_private_key(handle.read(), password=None)
key = ec.generate_private_key(ec.SECP256R1())
now = datetime.datetime.now(datetime.timezone.utc)
sans = [x509.DNSName("localhost"), x509.DNSName("apex.lab.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=args.days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256()))
os.makedirs(args.out, exist_ok=True)
with open(os.path.join(args.out, "tls.crt"), "wb") as handle:
    handle.write(cert.public_bytes(serialization.Encoding.PEM))
fd = os.open(os.path.join(args.out, "tls.key"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "wb") as handle:
    handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
