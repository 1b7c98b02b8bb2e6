"""cert-manager's Certificate / CertificateRequest / Issuer controllers, issuing real X.509
certificates from the lab CA into the Certificate's Secret."""
import base64
import copy
import datetime
import time

from .. import registry
from .common import get_condition, parse_go_duration, set_condition
from ..pki import cert_info, csr_pem
from ..store import now_iso

CERTS = ("cert-manager.io", "certificates")
CRS = ("cert-manager.io", "certificaterequests")
ISSUERS = ("cert-manager.io", "issuers")
CISSUERS = ("cert-manager.io", "clusterissuers")
SECRETS = ("", "secrets")
NOT_READY_ANN = "kubesim.apex.dev/ready"


def _iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(data):
    return base64.b64encode(data).decode()


def issuer_ready(issuer):
    if issuer is None:
        return False
    return (issuer["metadata"].get("annotations") or {}).get(NOT_READY_ANN, "true") != "false"


def reconcile(ctl):
    c = ctl.c
    with c.lock:
        for skey in (ISSUERS, CISSUERS):
            for iss in c.store.list(skey):
                ready = issuer_ready(iss)
                st = copy.deepcopy(iss.get("status") or {})
                conds = st.setdefault("conditions", [])
                if ready:
                    set_condition(conds, "Ready", "True", "KeyPairVerified",
                                  "Signing CA verified")
                else:
                    set_condition(conds, "Ready", "False", "ErrGetKeyPair",
                                  "Error getting keypair for CA issuer: secret \"%s\" not found"
                                  % ((iss.get("spec") or {}).get("ca") or {}).get("secretName", "ca-key-pair"))
                for cond in conds:
                    cond["observedGeneration"] = iss["metadata"].get("generation", 1)
                if st != (iss.get("status") or {}):
                    def put(o, st=st):
                        o["status"] = st
                    c.mutate(skey, iss["metadata"].get("namespace", ""), iss["metadata"]["name"],
                             put, sub="status")
        certs = list(c.store.list(CERTS))
    for cert in certs:
        _certificate(ctl, cert)


def _certificate(ctl, cert):
    c = ctl.c
    ns, name = cert["metadata"]["namespace"], cert["metadata"]["name"]
    with c.lock:
        # decide on the object as it is now, not on the pass's listing: a condition set since (an
        # Issuing trigger) would otherwise be overwritten by a status written from the old copy
        cert = c.store.get(CERTS, ns, name)
        if cert is None:
            return
        meta, spec = cert["metadata"], cert.get("spec") or {}
        secret = c.store.get(SECRETS, ns, spec.get("secretName"))
        ref = spec.get("issuerRef") or {}
        if ref.get("kind") == "ClusterIssuer":
            issuer = c.store.get(CISSUERS, "", ref.get("name"))
        else:
            issuer = c.store.get(ISSUERS, ns, ref.get("name"))
        st = cert.get("status") or {}
        issuing = get_condition(cert, "Issuing")
        reason = None
        if secret is None:
            reason = ("DoesNotExist", "Issuing certificate as Secret does not exist")
        elif issuing and issuing.get("status") == "True":
            reason = (issuing.get("reason") or "ManuallyTriggered",
                      issuing.get("message") or "Certificate re-issuance manually triggered")
        else:
            crt = (secret.get("data") or {}).get("tls.crt")
            info = None
            if crt:
                try:
                    info = cert_info(base64.b64decode(crt))
                except Exception:
                    info = None
            if info is None:
                reason = ("InvalidCertificate", "Issuing certificate as Secret contains an "
                          "invalid certificate")
            elif sorted(info["dns"]) != sorted(spec.get("dnsNames") or []):
                reason = ("SecretMismatch", "Issuing certificate as Secret was previously issued "
                          "for a different set of DNS names")
            else:
                renew_at = _renewal(spec, info["not_before"], info["not_after"])
                if datetime.datetime.now(datetime.timezone.utc) >= renew_at:
                    reason = ("Renewing", "Renewing certificate as renewal was scheduled at %s"
                              % _iso(renew_at))
                else:
                    ctl.wake_at(time.monotonic() + min(
                        (renew_at - datetime.datetime.now(datetime.timezone.utc))
                        .total_seconds(), 3600))
                    if not st.get("notAfter") or st.get("notAfter") != _iso(info["not_after"]) \
                            or (get_condition(cert, "Ready") or {}).get("status") != "True" or \
                            (get_condition(cert, "Ready") or {}).get("observedGeneration") != meta.get("generation"):
                        _mark_ready(c, cert, info, spec, st.get("revision") or 1)
                    return
        # --- issuance needed
        now = now_iso()
        if not issuing or issuing.get("status") != "True":
            c.event(cert, "Issuing", reason[1], component="cert-manager-certificates-trigger")
        rev = (st.get("revision") or 0) + 1
        if not issuer_ready(issuer):
            cr_name = "%s-%d" % (name, rev)
            msg = 'Referenced "%s" not found: issuer.cert-manager.io "%s" not found' % (
                ref.get("kind", "Issuer"), ref.get("name")) if issuer is None else \
                "Waiting on certificate issuance from order %s: issuer %s is not ready" % (
                    cr_name, ref.get("name"))
            if c.store.get(CRS, ns, cr_name) is None:
                _create_cr(c, cert, cr_name, None, ready=False, message=msg)
                c.event(cert, "Requested", 'Created new CertificateRequest resource "%s"'
                        % cr_name, component="cert-manager-certificates-request-manager")

            def pending(o, reason=reason, msg=msg):
                s = o.setdefault("status", {})
                conds = s.setdefault("conditions", [])
                set_condition(conds, "Issuing", "True", reason[0], reason[1], now)
                if secret is None:
                    set_condition(conds, "Ready", "False", "DoesNotExist",
                                  "Issuing certificate as Secret does not exist", now)
                s["lastFailureTime"] = s.get("lastFailureTime") or now
                s["failedIssuanceAttempts"] = 1
                for cond in conds:
                    cond["observedGeneration"] = o["metadata"].get("generation", 1)
            c.mutate(CERTS, ns, name, pending, sub="status")
            ctl.wake_at(time.monotonic() + 0.5)
            return
    # issue (outside the lock: key generation)
    dns = list(spec.get("dnsNames") or [])
    ips = list(spec.get("ipAddresses") or [])
    duration = parse_go_duration(spec.get("duration"), 90 * 86400)
    pk = spec.get("privateKey") or {}
    _crt, key, cert_pem, key_pem = ctl.pki.issue(
        dns, ips, spec.get("commonName"), duration, pk.get("algorithm", "RSA"),
        pk.get("size") or (2048 if pk.get("algorithm", "RSA").upper() == "RSA" else 256),
        server=True, client="client auth" in (spec.get("usages") or []))
    with c.lock:
        cur = c.store.get(CERTS, ns, name)
        if cur is None:
            return
        cr_name = "%s-%d" % (name, rev)
        if c.store.get(CRS, ns, cr_name) is not None:
            c.store.remove(CRS, ns, cr_name)
        _create_cr(c, cur, cr_name, (cert_pem, key), ready=True, message="Certificate fetched "
                   "from issuer successfully")
        c.event(cur, "Generated", "Stored new private key in temporary Secret resource "
                '"%s-%s"' % (name, "kubesim"), component="cert-manager-certificates-key-manager")
        c.event(cur, "Requested", 'Created new CertificateRequest resource "%s"' % cr_name,
                component="cert-manager-certificates-request-manager")
        data = {"tls.crt": _b64(cert_pem), "tls.key": _b64(key_pem),
                "ca.crt": _b64(ctl.pki.cert_pem)}
        ann = {"cert-manager.io/alt-names": ",".join(dns),
               "cert-manager.io/certificate-name": name,
               "cert-manager.io/common-name": spec.get("commonName") or "",
               "cert-manager.io/ip-sans": ",".join(ips),
               "cert-manager.io/issuer-group": ref.get("group", "cert-manager.io"),
               "cert-manager.io/issuer-kind": ref.get("kind", "Issuer"),
               "cert-manager.io/issuer-name": ref.get("name"),
               "cert-manager.io/uri-sans": ""}
        sec = c.store.get(SECRETS, ns, spec["secretName"])
        sres = registry.lookup("", "v1", "secrets")
        if sec is None:
            c.create(sres, {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                            "metadata": {"name": spec["secretName"], "namespace": ns,
                                         "annotations": ann,
                                         "labels": {"controller.cert-manager.io/fao": "true"}},
                            "data": data})
        else:
            def upd(o):
                o["data"] = dict(o.get("data") or {}, **data)
                o["metadata"].setdefault("annotations", {}).update(ann)
                o["metadata"].setdefault("labels", {})["controller.cert-manager.io/fao"] = "true"
            c.mutate(SECRETS, ns, spec["secretName"], upd)
        info = cert_info(cert_pem)
        _mark_ready(c, cur, info, spec, rev)
        c.event(cur, "Issuing", "The certificate has been successfully issued",
                component="cert-manager-certificates-issuing")
        # keep the newest CertificateRequest only (cert-manager's revisionHistoryLimit: 1)
        limit = spec.get("revisionHistoryLimit") or 1
        owned = [r for r in c.store.list(CRS, ns)
                 if any(o.get("uid") == cur["metadata"]["uid"]
                        for o in r["metadata"].get("ownerReferences") or [])]
        owned.sort(key=lambda r: int((r["metadata"].get("annotations") or {}).get(
            "cert-manager.io/certificate-revision", "0")))
        for r in owned[:-limit]:
            c.store.remove(CRS, ns, r["metadata"]["name"])


def _renewal(spec, not_before, not_after):
    total = (not_after - not_before).total_seconds()
    rb = parse_go_duration(spec.get("renewBefore"), total / 3.0)
    if spec.get("renewBeforePercentage"):
        rb = total * float(spec["renewBeforePercentage"]) / 100.0
    return not_after - datetime.timedelta(seconds=rb)


def _mark_ready(c, cert, info, spec, rev):
    def put(o):
        s = o.setdefault("status", {})
        conds = [x for x in s.get("conditions") or [] if x.get("type") != "Issuing"]
        set_condition(conds, "Ready", "True", "Ready",
                      "Certificate is up to date and has not expired")
        for cond in conds:
            cond["observedGeneration"] = o["metadata"].get("generation", 1)
        s["conditions"] = conds
        s["notBefore"] = _iso(info["not_before"])
        s["notAfter"] = _iso(info["not_after"])
        s["renewalTime"] = _iso(_renewal(spec, info["not_before"], info["not_after"]))
        s["revision"] = rev
        s.pop("lastFailureTime", None)
        s.pop("failedIssuanceAttempts", None)
        s.pop("nextPrivateKeySecretName", None)
    c.mutate(CERTS, cert["metadata"]["namespace"], cert["metadata"]["name"], put, sub="status")


def _create_cr(c, cert, cr_name, issued, ready, message):
    spec = cert.get("spec") or {}
    now = now_iso()
    conds = [{"type": "Approved", "status": "True", "reason": "cert-manager.io",
              "message": "Certificate request has been approved by cert-manager.io",
              "lastTransitionTime": now}]
    body = {"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
            "metadata": {"name": cr_name, "namespace": cert["metadata"]["namespace"],
                         "annotations": {
                             "cert-manager.io/certificate-name": cert["metadata"]["name"],
                             "cert-manager.io/certificate-revision": cr_name.rsplit("-", 1)[1],
                             "cert-manager.io/private-key-secret-name":
                                 "%s-kubesim" % cert["metadata"]["name"]},
                         "ownerReferences": [{"apiVersion": "cert-manager.io/v1",
                                              "kind": "Certificate",
                                              "name": cert["metadata"]["name"],
                                              "uid": cert["metadata"]["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": {"issuerRef": copy.deepcopy(spec.get("issuerRef") or {}),
                     "duration": spec.get("duration", "2160h0m0s"),
                     "usages": spec.get("usages") or ["digital signature", "key encipherment"],
                     "username": "system:serviceaccount:cert-manager:cert-manager",
                     "groups": ["system:serviceaccounts", "system:serviceaccounts:cert-manager",
                                "system:authenticated"]},
            "status": {"conditions": conds}}
    if issued:
        cert_pem, key = issued
        body["spec"]["request"] = _b64(csr_pem(key, spec.get("commonName") or (
            spec.get("dnsNames") or ["kubesim"])[0], spec.get("dnsNames") or []))
        body["status"]["certificate"] = _b64(cert_pem)
        conds.append({"type": "Ready", "status": "True", "reason": "Issued", "message": message,
                      "lastTransitionTime": now})
    else:
        conds.append({"type": "Ready", "status": "False", "reason": "Pending",
                      "message": message, "lastTransitionTime": now})
    created = c.create(registry.lookup("cert-manager.io", "v1", "certificaterequests"), body)
    st = body["status"]

    def put(o):
        o["status"] = st
    c.mutate(CRS, created["metadata"]["namespace"], cr_name, put, sub="status")
