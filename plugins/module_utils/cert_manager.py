# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cert-manager Certificates, their TLS Secrets and the ingress controller's rollout.

- facts of a Certificate (conditions, notAfter, renewalTime, issuer, dnsNames, secretName,
  failedIssuanceAttempts) and of the certificate stored in its Secret;
- renewal the way ``cmctl renew`` does it (there is no ``cert-manager.io/renew``
  annotation): the ``Issuing`` condition is set True with reason ``ManuallyTriggered``
  through the ``status`` subresource; or by deleting the Secret;
- waiting for the new certificate (serial changed, Ready True, no longer Issuing) with a
  monotonic deadline, watching the Certificate (in short windows, re-reading the Secret
  between them); a timeout raises with the Certificate's last conditions;
- creating/replacing a ``kubernetes.io/tls`` Secret from a validated bundle;
- the ingress controller's rolling restart and the wait for its rollout (``k8s_rollout``), as
  ``CertManagerError`` with the rollout last seen.

Private keys are read only to compare them with the certificate; they are never returned.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import time

from ansible_collections.apex.ops.plugins.module_utils import tls
from ansible_collections.apex.ops.plugins.module_utils import k8s_rollout
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, get_or_none, object_stream
from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import condition, condition_true, workload_path
from ansible_collections.apex.ops.plugins.module_utils.timestamps import parse_time, utcnow
from ansible_collections.apex.ops.plugins.module_utils.waiting import poll_until, watch_until

GROUP = "cert-manager.io"
VERSION = "v1"
PLURAL = "certificates"
MANUAL_REASON = "ManuallyTriggered"
MANUAL_MESSAGE = "Certificate re-issuance manually triggered"
WATCH_WINDOW = 2  # seconds per watch call; the Secret is re-read between windows


def certificates_path(namespace, name=None, sub=None):
    return "/".join(["/apis/%s/%s/namespaces/%s/%s" % (GROUP, VERSION, namespace, PLURAL)] +
                    [part for part in (name, sub) if part])


def secret_path(namespace, name=None):
    return "/api/v1/namespaces/%s/secrets%s" % (namespace, "/" + name if name else "")


class CertManagerError(Exception):
    """A failure with the last observed state attached (for ``ApexModule.fail``), and in ``result``
    the other keys the module returns with it (``changed``, ``secret``...)."""

    def __init__(self, msg, last_state=None, **result):
        super(CertManagerError, self).__init__(msg)
        self.last_state = last_state
        self.result = result


def summarize_conditions(obj):
    """``Ready=False (reason: message); Issuing=True (...)`` for error messages."""
    parts = []
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        parts.append("%s=%s (%s: %s)" % (cond.get("type"), cond.get("status"), cond.get("reason"), cond.get("message")))
    return "; ".join(parts) or "no conditions"


def certificate_facts(obj, now=None, warning_days=tls.DEFAULT_WARNING_DAYS, critical_days=tls.DEFAULT_CRITICAL_DAYS):
    """Facts of one cert-manager Certificate object (a dict as the API returns it)."""
    now = now or utcnow()
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ready, issuing = condition(obj, "Ready"), condition(obj, "Issuing")
    not_after = parse_time(status.get("notAfter"))
    left = tls.days_left(not_after, now) if not_after else None
    return dict(
        name=meta.get("name"),
        namespace=meta.get("namespace"),
        ready=bool(ready) and str(ready.get("status")) == "True",
        ready_reason=(ready or {}).get("reason"),
        ready_message=(ready or {}).get("message"),
        issuing=bool(issuing) and str(issuing.get("status")) == "True",
        issuing_reason=(issuing or {}).get("reason"),
        conditions=status.get("conditions") or [],
        not_before=status.get("notBefore"),
        not_after=status.get("notAfter"),
        renewal_time=status.get("renewalTime"),
        revision=status.get("revision"),
        failed_issuance_attempts=status.get("failedIssuanceAttempts"),
        last_failure_time=status.get("lastFailureTime"),
        issuer_ref=spec.get("issuerRef") or {},
        dns_names=spec.get("dnsNames") or [],
        common_name=spec.get("commonName"),
        duration=spec.get("duration"),
        renew_before=spec.get("renewBefore"),
        secret_name=spec.get("secretName"),
        days_left=round(left, 3) if left is not None else None,
        expiry_status=tls.expiry_status(left, warning_days, critical_days),
    )


def _b64(data, key):
    value = (data or {}).get(key)
    if not value:
        return None
    return base64.b64decode(value)


def secret_facts(secret, now=None, warning_days=tls.DEFAULT_WARNING_DAYS, critical_days=tls.DEFAULT_CRITICAL_DAYS,
                 hostname=None):
    """Facts of the certificate in a TLS Secret (the API's JSON object, or None). No key material."""
    if secret is None:
        return dict(present=False)
    now = now or utcnow()
    meta, data = secret.get("metadata") or {}, secret.get("data") or {}
    out = dict(present=True, name=meta.get("name"), namespace=meta.get("namespace"), type=secret.get("type"),
               resource_version=meta.get("resourceVersion"),
               annotations={k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("cert-manager.io/")},
               keys=sorted(data.keys()))
    crt, key = _b64(data, "tls.crt"), _b64(data, "tls.key")
    if not crt:
        out["error"] = "the Secret has no tls.crt"
        return out
    try:
        certs = tls.load_certificates(crt)
    except tls.TLSError as exc:
        out["error"] = "tls.crt: %s" % exc
        return out
    out["certificate"] = tls.cert_info(certs[0], now, warning_days, critical_days)
    out["chain"] = [tls.cert_info(c, now, warning_days, critical_days) for c in certs[1:]]
    out["chain_problems"] = tls.chain_problems(certs)
    out["days_left"] = out["certificate"]["days_left"]
    out["expiry_status"] = out["certificate"]["expiry_status"]
    if hostname:
        out["hostname"] = hostname
        out["hostname_match"] = tls.hostname_matches(certs[0], hostname)
    if key:
        try:
            out["key_matches"] = tls.key_matches(certs[0], tls.load_private_key(key))
        except tls.TLSError as exc:
            out["key_matches"] = False
            out["key_error"] = str(exc)
    else:
        out["key_matches"] = False
        out["key_error"] = "the Secret has no tls.key"
    return out


def cert_summary(info):
    """What a diff may show about a certificate: serials and dates, never key material."""
    if not info:
        return None
    keys = ("subject", "issuer", "serial", "fingerprint_sha256", "not_before", "not_after", "dns_names", "ip_addresses")
    return dict((k, info.get(k)) for k in keys)


def secret_summary(facts):
    if not facts or not facts.get("present"):
        return dict(present=False)
    return dict(present=True, certificate=cert_summary(facts.get("certificate")),
                chain=[c["serial"] + " " + c["subject"] for c in facts.get("chain") or []])


class CertManager(object):
    """Certificates, TLS Secrets and the ingress Deployment through the lean ``KubeClient``
    (plain JSON: no typed models, so a task does not pay for importing the official client)."""

    def __init__(self, client):
        self.client = client

    # ------------------------------------------------------------------ reads
    def _get_or_none(self, path):
        return get_or_none(self.client, path)

    def get_certificate(self, namespace, name):
        return self._get_or_none(certificates_path(namespace, name))

    def list_certificates(self, namespace):
        """All Certificates of a namespace; None when the cert-manager CRD is not installed."""
        try:
            return self.client.list(certificates_path(namespace)).get("items") or []
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def get_secret(self, namespace, name):
        return self._get_or_none(secret_path(namespace, name))

    def secret_fingerprint(self, namespace, name):
        facts = secret_facts(self.get_secret(namespace, name))
        return (facts.get("certificate") or {}).get("fingerprint_sha256"), facts

    # ------------------------------------------------------------------ renew
    def trigger_issuing(self, namespace, name, attempts=5):
        """Set Issuing=True (ManuallyTriggered) through the status subresource, as cmctl does.

        Returns False when the Certificate was already issuing (nothing to do), True when
        the condition was set. Conflicts (409) are retried on a fresh read.
        """
        for dummy in range(attempts):
            obj = self.get_certificate(namespace, name)
            if obj is None:
                raise CertManagerError("Certificate %s/%s not found" % (namespace, name))
            if condition_true(obj, "Issuing"):
                return False
            status = obj.setdefault("status", {})
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != "Issuing"]
            conditions.append(dict(
                type="Issuing", status="True", reason=MANUAL_REASON, message=MANUAL_MESSAGE,
                lastTransitionTime=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                observedGeneration=(obj.get("metadata") or {}).get("generation"),
            ))
            status["conditions"] = conditions
            try:
                # PUT with the read resourceVersion: a concurrent status change gives 409, not a lost update
                self.client.put(certificates_path(namespace, name, "status"), obj)
                return True
            except KubeApiError as exc:
                if exc.status == 409:
                    continue
                raise
        raise CertManagerError("could not update the status of Certificate %s/%s: kept conflicting" % (namespace, name))

    def issuer_ready(self, namespace, issuer_ref):
        """``(ready, why)`` for a Certificate's issuerRef (Issuer in ``namespace`` or ClusterIssuer)."""
        kind = issuer_ref.get("kind") or "Issuer"
        name = issuer_ref.get("name")
        if (issuer_ref.get("group") or GROUP) != GROUP:
            return True, "external issuer %s/%s (readiness not judged)" % (issuer_ref.get("group"), name)
        if kind == "ClusterIssuer":
            path = "/apis/%s/%s/clusterissuers/%s" % (GROUP, VERSION, name)
        else:
            path = "/apis/%s/%s/namespaces/%s/issuers/%s" % (GROUP, VERSION, namespace, name)
        obj = self._get_or_none(path)
        if obj is None:
            return False, "%s %s does not exist" % (kind, name)
        if condition_true(obj, "Ready"):
            return True, "%s %s is Ready" % (kind, name)
        return False, "%s %s is not Ready (%s)" % (kind, name, summarize_conditions(obj))

    def delete_secret(self, namespace, name):
        try:
            self.client.delete(secret_path(namespace, name))
            return True
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise

    def wait_for_issuance(self, namespace, name, secret_name, old_fingerprint, deadline):
        """Until the Secret holds a certificate other than ``old_fingerprint`` and the
        Certificate is Ready=True and not Issuing. Returns (certificate obj, secret facts).

        Watches the Certificate; the Secret is read whenever its conditions say "issued", and at
        least every WATCH_WINDOW seconds (each watch stream is that short)."""
        seen = dict(secret=None)

        def issued(obj):
            if obj is None or not condition_true(obj, "Ready") or condition_true(obj, "Issuing"):
                return False
            fingerprint, seen["secret"] = self.secret_fingerprint(namespace, secret_name)
            return fingerprint is not None and fingerprint != old_fingerprint

        relist, watch = object_stream(self.client, certificates_path(namespace), name)
        result = watch_until(relist, watch, issued, deadline, max_stream_seconds=WATCH_WINDOW)
        if result.ok:
            return result.last, seen["secret"]
        last_obj = result.last
        facts = certificate_facts(last_obj) if last_obj else None
        raise CertManagerError(
            "timed out after %ss waiting for Certificate %s/%s to be reissued; last conditions: %s"
            % (deadline.timeout, namespace, name, summarize_conditions(last_obj)),
            last_state=dict(certificate=facts, secret=secret_summary(seen["secret"])),
        )

    # ------------------------------------------------------------------ install
    def put_tls_secret(self, namespace, name, cert_chain_pem, key_pem, existing=None):
        """Create or replace a kubernetes.io/tls Secret (tls.crt = leaf + chain, tls.key).

        A replacement keeps the Secret's labels and annotations and carries the resourceVersion
        read before validation: a concurrent writer makes it fail (409) instead of being overwritten."""
        data = {
            "tls.crt": base64.b64encode(cert_chain_pem).decode("ascii"),
            "tls.key": base64.b64encode(key_pem).decode("ascii"),
        }
        body = dict(apiVersion="v1", kind="Secret", type="kubernetes.io/tls", data=data,
                    metadata=dict(name=name, namespace=namespace))
        if existing is None:
            return self.client.post(secret_path(namespace), body)
        meta = existing.get("metadata") or {}
        for key in ("labels", "annotations", "resourceVersion"):
            if meta.get(key):
                body["metadata"][key] = meta[key]
        body["type"] = existing.get("type") or "kubernetes.io/tls"
        return self.client.put(secret_path(namespace, name), body)

    # ------------------------------------------------------------------ ingress
    def get_deployment(self, namespace, name):
        return self._get_or_none(workload_path("Deployment", namespace, name))

    def restart_deployment(self, namespace, name):
        """``kubectl rollout restart``: stamp the pod template; returns the stamp."""
        return k8s_rollout.restart(self.client, "Deployment", namespace, name)

    def wait_rollout(self, namespace, name, deadline):
        """Like ``kubectl rollout status``: until the new ReplicaSet is fully rolled out and available;
        a rollout past its progress deadline fails at once. Returns the rollout status last seen;
        API errors (the Deployment missing or deleted) raise as ``KubeApiError``."""
        entry = k8s_rollout.wait_rollout(
            self.client, [k8s_rollout.rollout_target("Deployment", namespace, name)], deadline, raise_errors=True)[0]
        if entry["ok"]:
            return entry["last"]
        raise CertManagerError(k8s_rollout.failure_message(entry, deadline.timeout),
                               last_state=dict(rollout=entry["last"]))

    def restart_ingress(self, namespace, name, deadline):
        """Restart the ingress controller Deployment and wait for its rollout: the ``ingress_restart`` result."""
        stamp = self.restart_deployment(namespace, name)
        rollout = self.wait_rollout(namespace, name, deadline)
        return dict(namespace=namespace, deployment=name, restarted_at=stamp, rollout=rollout)


def wait_for_endpoint(probe, fingerprint, deadline):
    """Probe the endpoint until it serves ``fingerprint``. ``probe()`` returns probe facts.

    There is nothing to watch on a TLS endpoint: probes back off from 0.2 s to 2 s.
    """
    seen = dict(last=None, error=None)

    def attempt():
        try:
            seen["last"], seen["error"] = probe(), None
        except Exception as exc:  # refused while the ingress restarts
            seen["error"] = "%s: %s" % (type(exc).__name__, exc)
        return seen["last"] if seen["error"] is None else None

    def serves(facts):
        return facts is not None and facts["certificate"]["fingerprint_sha256"] == fingerprint

    if poll_until(attempt, serves, deadline, interval=0.2, max_interval=2.0, backoff=2.0):
        return seen["last"]
    last, error = seen["last"], seen["error"]
    served = (last or {}).get("certificate") or {}
    raise CertManagerError(
        "timed out after %ss waiting for the endpoint to serve the new certificate (fingerprint %s); it serves %s%s"
        % (deadline.timeout, fingerprint, served.get("serial") or "nothing",
           " (last error: %s)" % error if error else ""),
        last_state=dict(endpoint=last, error=error))


def gather_facts(manager, namespace, name=None, secret_name=None, sources=("certificate", "secret", "endpoint"),
                 probe=None, hostname=None, warning_days=tls.DEFAULT_WARNING_DAYS,
                 critical_days=tls.DEFAULT_CRITICAL_DAYS, warn=None):
    """The Certificate(s), their Secret(s) and the live endpoint, with the soonest expiry of all.

    ``probe`` returns the endpoint's facts (``tls.probe_endpoint``, an ``error`` key instead of
    raising) or is None when no endpoint is checked. ``apex_cert state=facts`` and
    ``apex_health`` both read certificates through this function."""
    sources = set(sources)
    result = dict(changed=False)
    statuses = []  # (status, days_left, source)
    primary_secret = secret_name
    if "certificate" in sources:
        if name:
            obj = manager.get_certificate(namespace, name)
            objs = [obj] if obj is not None else []
            installed = True if obj is not None else manager.list_certificates(namespace) is not None
            if obj is None and installed and warn:
                warn("Certificate %s/%s not found" % (namespace, name))
        else:
            objs = manager.list_certificates(namespace)
            installed = objs is not None
            objs = objs or []
        result["cert_manager_installed"] = installed
        result["certificates"] = [certificate_facts(o, warning_days=warning_days, critical_days=critical_days)
                                  for o in objs]
        for facts in result["certificates"]:
            statuses.append((facts["expiry_status"], facts["days_left"], "certificate/%s" % facts["name"]))
        if not primary_secret:
            names = [f["secret_name"] for f in result["certificates"] if f["secret_name"]]
            if name and names:
                primary_secret = names[0]
            elif "apex-tls" in names or not names:
                primary_secret = name or "apex-tls"
            else:
                primary_secret = names[0]
    primary_secret = primary_secret or name or "apex-tls"
    if "secret" in sources:
        names = [primary_secret] + [f["secret_name"] for f in result.get("certificates", []) if f["secret_name"]]
        result["secrets"] = {}
        for secret in names:
            if secret not in result["secrets"]:
                result["secrets"][secret] = secret_facts(manager.get_secret(namespace, secret), warning_days=warning_days,
                                                         critical_days=critical_days, hostname=hostname)
        result["secret"] = result["secrets"][primary_secret]
        for secret, facts in result["secrets"].items():
            statuses.append((facts.get("expiry_status"), facts.get("days_left"), "secret/%s" % secret))
    if "endpoint" in sources and probe is not None:
        result["endpoint"] = probe()
        statuses.append((result["endpoint"].get("expiry_status"), result["endpoint"].get("days_left"), "endpoint"))
        if "secret" in sources:
            result["drift"] = tls.compare_served((result["secret"] or {}).get("certificate"),
                                                 result["endpoint"].get("certificate"))
            result["drift"]["secret_name"] = primary_secret
    known = [s for s in statuses if s[0]]
    soonest = min(known, key=lambda s: s[1]) if known else (None, None, None)
    result["expiry"] = dict(status=tls.worst_status([s[0] for s in known]), days_left=soonest[1], source=soonest[2],
                            warning_days=warning_days, critical_days=critical_days)
    return result
