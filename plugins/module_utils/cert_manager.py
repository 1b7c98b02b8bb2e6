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
- a rolling restart of a Deployment (the ``kubectl.kubernetes.io/restartedAt`` pod-template
  annotation, like ``kubectl rollout restart``) and waiting for the rollout.

Private keys are read only to compare them with the certificate; they are never returned.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import time

from ansible_collections.apex.ops.plugins.module_utils import tls
from ansible_collections.apex.ops.plugins.module_utils.k8s import restart_patch

GROUP = "cert-manager.io"
VERSION = "v1"
PLURAL = "certificates"
MANUAL_REASON = "ManuallyTriggered"
MANUAL_MESSAGE = "Certificate re-issuance manually triggered"
WATCH_WINDOW = 2  # seconds per watch call; the Secret is re-read between windows


class CertManagerError(Exception):
    """A failure with the last observed state attached (for ``ApexModule.fail``)."""

    def __init__(self, msg, last_state=None):
        super(CertManagerError, self).__init__(msg)
        self.last_state = last_state


def _status_code(exc):
    return getattr(exc, "status", None)


def _api_exception():
    from kubernetes.client.rest import ApiException

    return ApiException


def condition(obj, ctype):
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def condition_true(obj, ctype):
    cond = condition(obj, ctype)
    return bool(cond) and str(cond.get("status")) == "True"


def summarize_conditions(obj):
    """``Ready=False (reason: message); Issuing=True (...)`` for error messages."""
    parts = []
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        parts.append("%s=%s (%s: %s)" % (cond.get("type"), cond.get("status"), cond.get("reason"), cond.get("message")))
    return "; ".join(parts) or "no conditions"


def certificate_facts(obj, now=None, warning_days=tls.DEFAULT_WARNING_DAYS, critical_days=tls.DEFAULT_CRITICAL_DAYS):
    """Facts of one cert-manager Certificate object (a dict as the API returns it)."""
    now = now or tls.utcnow()
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ready, issuing = condition(obj, "Ready"), condition(obj, "Issuing")
    not_after = tls.parse_time(status.get("notAfter"))
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
    """Facts of the certificate in a TLS Secret (a V1Secret or None). No key material."""
    if secret is None:
        return dict(present=False)
    now = now or tls.utcnow()
    meta = secret.metadata
    out = dict(present=True, name=meta.name, namespace=meta.namespace, type=secret.type,
               resource_version=meta.resource_version,
               annotations={k: v for k, v in (meta.annotations or {}).items() if k.startswith("cert-manager.io/")},
               keys=sorted((secret.data or {}).keys()))
    crt, key = _b64(secret.data, "tls.crt"), _b64(secret.data, "tls.key")
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


class Deadline(object):
    """A monotonic deadline."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.start = time.monotonic()
        self.end = self.start + seconds

    def remaining(self):
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return time.monotonic() >= self.end

    def elapsed(self):
        return round(time.monotonic() - self.start, 3)


class CertManager(object):
    def __init__(self, api_client):
        from kubernetes import client

        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)

    # ------------------------------------------------------------------ reads
    def get_certificate(self, namespace, name):
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except _api_exception() as exc:
            if _status_code(exc) == 404:
                return None
            raise

    def list_certificates(self, namespace):
        """All Certificates of a namespace; None when the cert-manager CRD is not installed."""
        try:
            return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL).get("items") or []
        except _api_exception() as exc:
            if _status_code(exc) == 404:
                return None
            raise

    def get_secret(self, namespace, name):
        try:
            return self.core.read_namespaced_secret(name, namespace)
        except _api_exception() as exc:
            if _status_code(exc) == 404:
                return None
            raise

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
                self.custom.replace_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, obj)
                return True
            except _api_exception() as exc:
                if _status_code(exc) == 409:
                    continue
                raise
        raise CertManagerError("could not update the status of Certificate %s/%s: kept conflicting" % (namespace, name))

    def delete_secret(self, namespace, name):
        try:
            self.core.delete_namespaced_secret(name, namespace)
            return True
        except _api_exception() as exc:
            if _status_code(exc) == 404:
                return False
            raise

    def wait_for_issuance(self, namespace, name, secret_name, old_fingerprint, deadline):
        """Until the Secret holds a certificate other than ``old_fingerprint`` and the
        Certificate is Ready=True and not Issuing. Returns (certificate obj, secret facts)."""
        from kubernetes import watch

        last_obj, last_secret = None, None
        while True:
            last_obj = self.get_certificate(namespace, name)
            fingerprint, last_secret = self.secret_fingerprint(namespace, secret_name)
            if self._issued(last_obj, fingerprint, old_fingerprint):
                return last_obj, last_secret
            if deadline.expired():
                break
            # Watch the Certificate for a short window: any status change wakes us up.
            window = max(1, int(min(WATCH_WINDOW, deadline.remaining()) + 0.999))
            w = watch.Watch()
            try:
                kwargs = dict(field_selector="metadata.name=%s" % name, timeout_seconds=window,
                              _request_timeout=window + 5)
                rv = ((last_obj or {}).get("metadata") or {}).get("resourceVersion")
                if rv:
                    kwargs["resource_version"] = rv
                for event in w.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace,
                                      PLURAL, **kwargs):
                    obj = event.get("object") or {}
                    if event.get("type") in ("MODIFIED", "ADDED") and condition_true(obj, "Ready") \
                            and not condition_true(obj, "Issuing"):
                        break  # re-check the Secret now
                    if deadline.expired():
                        break
            except Exception:  # 410 Gone / watch unsupported: the loop re-reads anyway
                if deadline.remaining() > 0:
                    time.sleep(min(0.5, deadline.remaining()))
            finally:
                w.stop()
        facts = certificate_facts(last_obj) if last_obj else None
        raise CertManagerError(
            "timed out after %ss waiting for Certificate %s/%s to be reissued; last conditions: %s"
            % (deadline.seconds, namespace, name, summarize_conditions(last_obj)),
            last_state=dict(certificate=facts, secret=secret_summary(last_secret)),
        )

    @staticmethod
    def _issued(obj, fingerprint, old_fingerprint):
        return bool(obj) and fingerprint is not None and fingerprint != old_fingerprint \
            and condition_true(obj, "Ready") and not condition_true(obj, "Issuing")

    # ------------------------------------------------------------------ install
    def put_tls_secret(self, namespace, name, cert_chain_pem, key_pem, existing=None):
        """Create or replace a kubernetes.io/tls Secret (tls.crt = leaf + chain, tls.key)."""
        from kubernetes import client

        data = {
            "tls.crt": base64.b64encode(cert_chain_pem).decode("ascii"),
            "tls.key": base64.b64encode(key_pem).decode("ascii"),
        }
        if existing is None:
            body = client.V1Secret(metadata=client.V1ObjectMeta(name=name, namespace=namespace),
                                   type="kubernetes.io/tls", data=data)
            return self.core.create_namespaced_secret(namespace, body)
        meta = existing.metadata
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=meta.labels,
                                         annotations=meta.annotations, resource_version=meta.resource_version),
            type=existing.type or "kubernetes.io/tls", data=data)
        return self.core.replace_namespaced_secret(name, namespace, body)

    # ------------------------------------------------------------------ ingress
    def get_deployment(self, namespace, name):
        try:
            return self.apps.read_namespaced_deployment(name, namespace)
        except _api_exception() as exc:
            if _status_code(exc) == 404:
                return None
            raise

    def restart_deployment(self, namespace, name):
        """``kubectl rollout restart``: stamp the pod template; returns the timestamp."""
        stamp, body = restart_patch()
        self.apps.patch_namespaced_deployment(name, namespace, body)
        return stamp

    @staticmethod
    def rollout_state(dep):
        spec, status, meta = dep.spec, dep.status, dep.metadata
        want = spec.replicas if spec.replicas is not None else 1
        state = dict(
            generation=meta.generation, observed_generation=status.observed_generation,
            replicas=status.replicas or 0, updated_replicas=status.updated_replicas or 0,
            ready_replicas=status.ready_replicas or 0, available_replicas=status.available_replicas or 0,
            desired_replicas=want,
        )
        state["complete"] = bool(
            (status.observed_generation or 0) >= (meta.generation or 0)
            and state["updated_replicas"] >= want and state["replicas"] <= state["updated_replicas"]
            and state["available_replicas"] >= want
        )
        return state

    def wait_rollout(self, namespace, name, deadline):
        """Like ``kubectl rollout status``: watch the Deployment until the new ReplicaSet
        is fully rolled out and available."""
        from kubernetes import watch

        state = None
        while True:
            dep = self.get_deployment(namespace, name)
            if dep is None:
                raise CertManagerError("Deployment %s/%s not found" % (namespace, name))
            state = self.rollout_state(dep)
            if state["complete"]:
                return state
            if deadline.expired():
                break
            window = max(1, int(min(WATCH_WINDOW * 5, deadline.remaining()) + 0.999))
            w = watch.Watch()
            try:
                for event in w.stream(self.apps.list_namespaced_deployment, namespace,
                                      field_selector="metadata.name=%s" % name, timeout_seconds=window,
                                      resource_version=dep.metadata.resource_version, _request_timeout=window + 5):
                    obj = event.get("object")
                    if obj is not None and hasattr(obj, "status") and self.rollout_state(obj)["complete"]:
                        break
                    if deadline.expired():
                        break
            except Exception:
                if deadline.remaining() > 0:
                    time.sleep(min(0.5, deadline.remaining()))
            finally:
                w.stop()
        raise CertManagerError("timed out after %ss waiting for the rollout of Deployment %s/%s" %
                               (deadline.seconds, namespace, name), last_state=dict(rollout=state))


def wait_for_endpoint(probe, fingerprint, deadline):
    """Probe the endpoint until it serves ``fingerprint``. ``probe()`` returns probe facts.

    There is nothing to watch on a TLS endpoint: probes back off from 0.2 s to 2 s.
    """
    delay, last, error = 0.2, None, None
    while True:
        try:
            last = probe()
            error = None
            if last["certificate"]["fingerprint_sha256"] == fingerprint:
                return last
        except Exception as exc:  # refused while the ingress restarts
            error = "%s: %s" % (type(exc).__name__, exc)
        if deadline.expired():
            break
        time.sleep(min(delay, deadline.remaining()))
        delay = min(delay * 2, 2.0)
    served = (last or {}).get("certificate") or {}
    raise CertManagerError(
        "timed out after %ss waiting for the endpoint to serve the new certificate (fingerprint %s); it serves %s%s"
        % (deadline.seconds, fingerprint, served.get("serial") or "nothing",
           " (last error: %s)" % error if error else ""),
        last_state=dict(endpoint=last, error=error))
