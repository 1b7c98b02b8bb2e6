# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Certificate facts and validation, and the live TLS endpoint probe.

Pure functions over ``cryptography`` objects (parsing, key match, validity window,
hostname coverage with wildcards, chain order, days left against thresholds) plus one
function that talks to the network: ``probe_endpoint`` (stdlib ``ssl``, with SNI) which
returns the chain exactly as the server sent it and whether it verifies.

Nothing here ever returns or formats private-key material: keys are only compared by
their public halves.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import ipaddress
import socket
import ssl

from ansible_collections.apex.ops.plugins.module_utils.apex_module import import_error_of
# the one clock and timestamp parser; cert_manager reads them as tls.utcnow / tls.parse_time
from ansible_collections.apex.ops.plugins.module_utils.timestamps import parse_time, utcnow  # noqa: F401


def _import_verifier():
    # cryptography >= 45: the X.509 path verifier with configurable extension policies
    from cryptography.x509.verification import ExtensionPolicy

    if not hasattr(ExtensionPolicy, "webpki_defaults_ca"):
        raise ImportError("cryptography.x509.verification.ExtensionPolicy lacks webpki_defaults_ca")


CRYPTOGRAPHY_IMPORT_ERROR = import_error_of(_import_verifier)
REQUIREMENT = ("cryptography>=45", CRYPTOGRAPHY_IMPORT_ERROR)

DEFAULT_WARNING_DAYS = 30
DEFAULT_CRITICAL_DAYS = 7

STATUS_ORDER = ("ok", "warning", "critical", "expired")


class TLSError(Exception):
    """Bad certificate input (unparseable PEM, wrong passphrase...)."""


def _iso(value):
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- parsing

def _to_bytes(data):
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    return data.encode("utf-8")


def load_certificates(pem):
    """All certificates of a PEM text, in the order they appear."""
    from cryptography import x509

    data = _to_bytes(pem)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TLSError("no PEM certificate found (expected '-----BEGIN CERTIFICATE-----')")
    try:
        return list(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise TLSError("could not parse the PEM certificate(s): %s" % exc)


def load_der_certificate(der):
    from cryptography import x509

    return x509.load_der_x509_certificate(der)


def load_private_key(pem, passphrase=None):
    """A private key from PEM. Error messages never include the key."""
    from cryptography.hazmat.primitives import serialization

    data = _to_bytes(pem)
    if b"PRIVATE KEY-----" not in data:
        raise TLSError("no PEM private key found (expected '-----BEGIN ... PRIVATE KEY-----')")
    try:
        return serialization.load_pem_private_key(data, password=_to_bytes(passphrase) or None)
    except (TypeError, ValueError):
        raise TLSError("could not load the private key (corrupt PEM, unsupported type or wrong passphrase)")


def _public_der(public_key):
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(cert, key):
    """True when the private key is the one the certificate's public key belongs to."""
    return _public_der(cert.public_key()) == _public_der(key.public_key())


# --------------------------------------------------------------------------- facts

def serial_hex(cert):
    """Serial as colon-separated upper-case hex pairs (how openssl and cmctl show it)."""
    text = "%X" % cert.serial_number
    if len(text) % 2:
        text = "0" + text
    return ":".join(text[i:i + 2] for i in range(0, len(text), 2))


def fingerprint_sha256(cert):
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex().upper()


def _not_before(cert):
    return getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def _not_after(cert):
    return getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def subject_alt_names(cert):
    """(dns_names, ip_addresses) from the SAN extension; empty lists when absent."""
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return list(ext.get_values_for_type(x509.DNSName)), [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]


def _is_ca(cert):
    from cryptography import x509

    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def days_left(cert_or_not_after, now=None):
    """Days (float, may be negative) until notAfter."""
    now = now or utcnow()
    not_after = cert_or_not_after
    if not isinstance(not_after, datetime.datetime):
        not_after = _not_after(cert_or_not_after)
    return (not_after - now).total_seconds() / 86400.0


def expiry_status(days, warning_days=DEFAULT_WARNING_DAYS, critical_days=DEFAULT_CRITICAL_DAYS):
    """ok / warning / critical / expired for a number of days left (None -> None)."""
    if days is None:
        return None
    if critical_days > warning_days:
        raise ValueError("critical_days (%s) must not exceed warning_days (%s)" % (critical_days, warning_days))
    if days <= 0:
        return "expired"
    if days < critical_days:
        return "critical"
    if days < warning_days:
        return "warning"
    return "ok"


def worst_status(statuses):
    known = [s for s in statuses if s in STATUS_ORDER]
    if not known:
        return None
    return max(known, key=STATUS_ORDER.index)


def cert_info(cert, now=None, warning_days=DEFAULT_WARNING_DAYS, critical_days=DEFAULT_CRITICAL_DAYS):
    """Public facts of one certificate (never key material)."""
    now = now or utcnow()
    dns, ips = subject_alt_names(cert)
    left = days_left(cert, now)
    return dict(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=serial_hex(cert),
        fingerprint_sha256=fingerprint_sha256(cert),
        not_before=_iso(_not_before(cert)),
        not_after=_iso(_not_after(cert)),
        dns_names=dns,
        ip_addresses=ips,
        is_ca=_is_ca(cert),
        self_signed=cert.issuer == cert.subject,
        days_left=round(left, 3),
        expiry_status=expiry_status(left, warning_days, critical_days),
    )


# --------------------------------------------------------------------------- validation

def validity_problems(cert, now=None):
    """Problems with the validity window ([] when current)."""
    now = now or utcnow()
    problems = []
    if now < _not_before(cert):
        problems.append("certificate %s is not valid yet (notBefore %s)" % (serial_hex(cert), _iso(_not_before(cert))))
    if now >= _not_after(cert):
        problems.append("certificate %s has expired (notAfter %s)" % (serial_hex(cert), _iso(_not_after(cert))))
    return problems


def _match_dns(pattern, hostname):
    """RFC 6125 matching: case-insensitive; a wildcard only as the whole left-most label,
    matching exactly one label (``*.a.b`` covers ``x.a.b`` but not ``a.b`` nor ``y.x.a.b``)."""
    pattern = pattern.lower().rstrip(".")
    hostname = hostname.lower().rstrip(".")
    if not pattern or not hostname:
        return False
    if pattern == hostname:
        return True
    if not pattern.startswith("*."):
        return False
    suffix = pattern[2:]
    if "*" in suffix or suffix.count(".") < 1:
        # no nested wildcards, no "*.com"-style wildcards over a single label
        return False
    head, dummy, rest = hostname.partition(".")
    return bool(head) and rest == suffix


def hostname_matches(cert, hostname):
    """True when the certificate's SANs cover ``hostname`` (DNS name or IP address).

    Like browsers and Python's ``ssl`` (3.7+), the subject CN is not consulted.
    """
    dns, ips = subject_alt_names(cert)
    try:
        address = ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        address = None
    if address is not None:
        return any(ipaddress.ip_address(ip) == address for ip in ips)
    return any(_match_dns(name, hostname) for name in dns)


def _issued_by(cert, issuer):
    """True when ``issuer``'s key signed ``cert`` (and the names chain)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:  # InvalidSignature, ValueError (name mismatch), TypeError (key type)
        return False


def chain_problems(chain):
    """Problems with a served/supplied chain (leaf first): each certificate must be issued
    by the next one. Returns [] when the order is right."""
    problems = []
    for index in range(len(chain) - 1):
        cert, issuer = chain[index], chain[index + 1]
        if not _issued_by(cert, issuer):
            problems.append(
                "chain out of order: certificate %d (%s) is not issued by certificate %d (%s)"
                % (index, cert.subject.rfc4514_string(), index + 1, issuer.subject.rfc4514_string())
            )
    return problems


def chain_anchored(chain, ca_certs):
    """True when the last certificate of ``chain`` is, or is issued by, one of ``ca_certs``."""
    if not chain or not ca_certs:
        return False
    last = chain[-1]
    for ca in ca_certs:
        if fingerprint_sha256(last) == fingerprint_sha256(ca):
            return True
        if _issued_by(last, ca):
            return True
    return False


def _ca_key_usage(policy, cert, key_usage):
    """A CA certificate may omit keyUsage; when present it must allow certificate signing."""
    if key_usage is not None and not key_usage.key_cert_sign:
        raise ValueError("keyUsage of a CA certificate lacks keyCertSign")


def _extension_policies():
    """RFC 5280 / CA-B Forum checks of ``cryptography``'s verifier (basicConstraints CA:TRUE and
    pathLenConstraint on every issuer, name constraints, EKU, SAN on the leaf), relaxed only where
    private CAs commonly differ: authority/subject key identifiers may be absent, and a CA's
    keyUsage may be absent (when present it must allow keyCertSign)."""
    from cryptography import x509
    from cryptography.x509.verification import Criticality, ExtensionPolicy

    ca_policy = (ExtensionPolicy.webpki_defaults_ca()
                 .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
                 .may_be_present(x509.SubjectKeyIdentifier, Criticality.AGNOSTIC, None)
                 .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage))
    ee_policy = (ExtensionPolicy.webpki_defaults_ee()
                 .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None))
    return ca_policy, ee_policy


def _verifier_subject(leaf, hostname):
    from cryptography import x509

    if hostname:
        try:
            return x509.IPAddress(ipaddress.ip_address(hostname.strip("[]")))
        except ValueError:
            # a wildcard hostname (a Certificate's first dnsName) stands for any one label under it
            return x509.DNSName(hostname.lower().rstrip(".").replace("*.", "wildcard.", 1))
    dns, ips = subject_alt_names(leaf)
    if dns:
        return x509.DNSName(dns[0].replace("*.", "wildcard.", 1).lower())
    if ips:
        return x509.IPAddress(ipaddress.ip_address(ips[0]))
    return None


def _not_a_ca_problems(certs):
    """Diagnosis for the verifier's verdict: chain certificates that sign the previous one
    although they are not CAs (basicConstraints absent or CA:FALSE)."""
    problems = []
    for index in range(1, len(certs)):
        if _issued_by(certs[index - 1], certs[index]) and not _is_ca(certs[index]):
            problems.append("chain: certificate %d (%s) issues certificate %d but is not a CA (basicConstraints CA:FALSE "
                            "or absent)" % (index, certs[index].subject.rfc4514_string(), index - 1))
    return problems


def verify_chain(certs, anchors, hostname=None, now=None):
    """The trust decision, made by ``cryptography``'s X.509 path verifier.

    ``certs`` is the supplied chain (leaf first, any order after it), ``anchors`` the trust
    store. Returns ``(verified, error, path)``: ``path`` is the verified chain as subjects
    (leaf to anchor), ``error`` the verifier's reason when it refuses.
    """
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    now = now or utcnow()
    leaf = certs[0]
    subject = _verifier_subject(leaf, hostname)
    if subject is None:
        return False, "the certificate has no subjectAltName (no TLS client accepts it)", []
    ca_policy, ee_policy = _extension_policies()
    builder = (PolicyBuilder().store(Store(list(anchors))).time(now)
               .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy))
    try:
        path = builder.build_server_verifier(subject).verify(leaf, list(certs[1:]))
    except ValueError as exc:  # a hostname the verifier cannot take as a DNS name
        return False, "cannot verify for %s: %s" % (hostname, exc), []
    except VerificationError as exc:
        text = str(exc)
        if text.startswith("validation failed: "):
            text = text[len("validation failed: "):]
        if "all candidates exhausted with no interior errors" in text:
            text = "no path from the certificate to a trusted certificate (missing intermediate or untrusted root)"
        return False, text, []
    return True, None, [c.subject.rfc4514_string() for c in path]


def validate_bundle(cert_pem, key_pem, chain_pem=None, hostnames=(), passphrase=None, now=None,
                    ca_pem=None, warning_days=DEFAULT_WARNING_DAYS, critical_days=DEFAULT_CRITICAL_DAYS):
    """Validate a supplied certificate/key/chain before it is installed.

    ``cert_pem`` may hold the leaf alone or the leaf followed by its chain; ``chain_pem``
    adds intermediates. Returns ``(report, leaf, chain, key)``; ``report['problems']``
    is empty when the bundle may be installed. The report holds no key material.

    The trust decision is ``verify_chain`` (``cryptography``'s verifier): against ``ca_pem``
    when given, else against the top certificate of the supplied chain (which must then be
    a CA itself: the verifier checks the anchor's basicConstraints too). A lone self-signed
    certificate is trusted only when ``ca_pem`` contains it. The other checks are kept for
    diagnosis: they say which certificate is wrong and why.
    """
    now = now or utcnow()
    problems = []
    certs = load_certificates(cert_pem)
    if chain_pem and _to_bytes(chain_pem).strip():
        certs += load_certificates(chain_pem)
    # A chain listing the same certificate twice (leaf in cert and chain) is tolerated.
    unique = []
    seen = set()
    for cert in certs:
        fp = fingerprint_sha256(cert)
        if fp not in seen:
            seen.add(fp)
            unique.append(cert)
    certs = unique
    leaf = certs[0]
    key = load_private_key(key_pem, passphrase)
    matches = key_matches(leaf, key)
    if not matches:
        problems.append("the private key does not match certificate %s (%s)" % (serial_hex(leaf), leaf.subject.rfc4514_string()))
    problems.extend(validity_problems(leaf, now))
    for cert in certs[1:]:
        problems.extend("chain: " + p for p in validity_problems(cert, now))
    uncovered = [h for h in hostnames if h and not hostname_matches(leaf, h)]
    if uncovered:
        dns, ips = subject_alt_names(leaf)
        problems.append("certificate %s does not cover %s (SANs: %s)" % (serial_hex(leaf), ", ".join(uncovered), ", ".join(dns + ips) or "none"))
    problems.extend(chain_problems(certs))
    problems.extend(_not_a_ca_problems(certs))
    anchored = None
    if ca_pem:
        anchors = load_certificates(ca_pem)
        anchored = chain_anchored(certs, anchors)
        if not anchored:
            problems.append("the chain does not lead to the given CA bundle")
        trust_anchor = "ca_bundle"
        intermediates = certs
    elif len(certs) == 1 and leaf.issuer == leaf.subject:
        anchors = []
        trust_anchor = None
        problems.append("certificate %s (%s) is self-signed and not in the trust store: give the CA bundle "
                        "(tls_ca_file) that contains it to install it" % (serial_hex(leaf), leaf.subject.rfc4514_string()))
        intermediates = certs
    elif len(certs) == 1:
        # the leaf alone, issued by a CA that was not supplied: nothing to verify a path against
        anchors = [leaf]
        trust_anchor = "none"
        intermediates = certs
    else:
        anchors = [certs[-1]]
        trust_anchor = "supplied_chain"
        intermediates = certs[:-1]
    verified, verify_error, path = False, None, []
    if anchors:
        names = [h for h in hostnames if h] or [None]
        for name in names:
            verified, verify_error, path = verify_chain(intermediates, anchors, name, now)
            if not verified:
                break
        if not verified:
            problems.append("the chain does not verify (X.509 path validation%s): %s"
                            % (" for %s" % name if name else "", verify_error))
    report = dict(
        certificate=cert_info(leaf, now, warning_days, critical_days),
        chain=[cert_info(c, now, warning_days, critical_days) for c in certs[1:]],
        key_matches=matches,
        hostnames=list(hostnames),
        anchored_to_ca=anchored,
        trust_anchor=trust_anchor,
        verified=verified,
        verify_error=verify_error,
        verified_path=path,
        problems=problems,
    )
    return report, leaf, certs, key


def certs_to_pem(certs):
    from cryptography.hazmat.primitives import serialization

    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_to_pem(key):
    """Unencrypted PKCS#8 PEM (what a kubernetes.io/tls Secret holds)."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


# --------------------------------------------------------------------------- endpoint

def parse_endpoint(endpoint, default_port=443):
    """``https://host:port/path``, ``host:port`` or ``host`` -> (host, port)."""
    text = endpoint.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if "@" in text:
        text = text.rsplit("@", 1)[1]
    if text.startswith("["):
        host, dummy, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, dummy, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError("no host in endpoint %r" % endpoint)
    return host, int(port) if port else default_port


_TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


def _served_chain(sslsock):
    """DER certificates as the server sent them (leaf first)."""
    sslobj = getattr(sslsock, "_sslobj", None)
    getter = getattr(sslobj, "get_unverified_chain", None)  # CPython 3.10+ (public in 3.13)
    if getter is not None:
        try:
            chain = getter()
            if chain:
                out = []
                for item in chain:
                    if isinstance(item, bytes):
                        out.append(item)
                    else:
                        out.append(item.public_bytes(ssl._ssl.ENCODING_DER))
                return out
        except Exception:  # pragma: no cover - fall back to the leaf
            pass
    leaf = sslsock.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def probe_endpoint(host, port, server_name=None, ca_file=None, timeout=10.0, hostname=None, now=None,
                   warning_days=DEFAULT_WARNING_DAYS, critical_days=DEFAULT_CRITICAL_DAYS):
    """Connect with SNI, report the chain as served, the TLS version, whether the chain
    verifies against ``ca_file`` (or the system store) and whether it covers ``hostname``.

    Two handshakes: one that accepts anything (to see what is served even when it is
    broken), one with full verification (the verdict a client would reach).
    """
    now = now or utcnow()
    server_name = server_name or host
    hostname = hostname or server_name
    sni = None if _is_ip(server_name) else server_name

    raw_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    raw_ctx.check_hostname = False
    raw_ctx.verify_mode = ssl.CERT_NONE
    result = dict(host=host, port=port, server_name=server_name, hostname=hostname, sni_sent=sni is not None)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with raw_ctx.wrap_socket(sock, server_hostname=sni) as tls:
            result["tls_version"] = tls.version()
            cipher = tls.cipher()
            result["cipher"] = cipher[0] if cipher else None
            der_chain = _served_chain(tls)
    chain = [load_der_certificate(der) for der in der_chain]
    if not chain:
        raise TLSError("%s:%s presented no certificate" % (host, port))
    leaf = chain[0]
    result["certificate"] = cert_info(leaf, now, warning_days, critical_days)
    result["chain"] = [cert_info(c, now, warning_days, critical_days) for c in chain]
    result["chain_problems"] = chain_problems(chain)
    result["hostname_match"] = hostname_matches(leaf, hostname)
    result["days_left"] = result["certificate"]["days_left"]
    result["expiry_status"] = result["certificate"]["expiry_status"]

    verify_ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    verify_ctx.check_hostname = False  # hostname judged separately above (IP/SNI aware)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with verify_ctx.wrap_socket(sock, server_hostname=sni):
                pass
        result["verified"] = True
        result["verify_error"] = None
    except ssl.SSLCertVerificationError as exc:
        result["verified"] = False
        result["verify_error"] = exc.verify_message or str(exc)
    except (ssl.SSLError, OSError) as exc:
        result["verified"] = False
        result["verify_error"] = str(exc)
    result["ca_file"] = ca_file
    result["trusted"] = bool(result["verified"] and result["hostname_match"])
    return result


def _is_ip(value):
    try:
        ipaddress.ip_address((value or "").strip("[]"))
        return True
    except ValueError:
        return False


def compare_served(stored_info, served_info):
    """Drift between the certificate stored in the Secret and the one the endpoint serves.

    Returns a dict: ``drift`` (they differ), ``secret_newer`` (the Secret's certificate
    was issued later: the ingress has not reloaded), and both serials.
    """
    if not stored_info or not served_info:
        return dict(drift=None, secret_newer=None, secret_serial=(stored_info or {}).get("serial"),
                    served_serial=(served_info or {}).get("serial"))
    differ = stored_info["fingerprint_sha256"] != served_info["fingerprint_sha256"]
    newer = False
    if differ:
        stored_nb, served_nb = parse_time(stored_info.get("not_before")), parse_time(served_info.get("not_before"))
        newer = bool(stored_nb and served_nb and stored_nb >= served_nb)
    return dict(drift=differ, secret_newer=bool(newer), secret_serial=stored_info["serial"],
                served_serial=served_info["serial"])
