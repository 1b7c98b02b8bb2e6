# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One apex_cert call, for each state: facts (and ``judge``), renew, install, reload.

``CertRunner(params, check_mode, warn)`` is given the module's options; each state returns the
module result or raises ``CertManagerError`` with the message, ``last_state`` and the other keys a
failure returns (``changed``, ``renewed``, ``secret``, ``previous``, ``endpoint``, ``validation``,
``certificates``: documented in the module's RETURN). ``judge`` turns facts into the problems an
on-call engineer must act on. The Kubernetes and TLS work is ``cert_manager``'s and ``tls``'s.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.apex.ops.plugins.module_utils import cert_manager as cm
from ansible_collections.apex.ops.plugins.module_utils import k8s, tls
from ansible_collections.apex.ops.plugins.module_utils.cert_manager import CertManagerError
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline


def check_options(p):
    """Refuse option combinations the argument spec cannot express (raises CertManagerError)."""
    if p["critical_days"] > p["warning_days"]:
        raise CertManagerError("critical_days (%s) must not exceed warning_days (%s)" % (
            p["critical_days"], p["warning_days"]))
    if p["wait_for_endpoint"] and not p["endpoint"]:
        raise CertManagerError("wait_for_endpoint needs endpoint")
    if p["state"] == "renew" and not p["wait"] and (p["restart_ingress"] or p["wait_for_endpoint"]):
        raise CertManagerError("wait=false skips waiting for the new certificate, which restart_ingress and "
                               "wait_for_endpoint need: set wait=true or drop them")
    if p["tls_ca_file"] and not os.path.isfile(p["tls_ca_file"]):
        raise CertManagerError("tls_ca_file %s does not exist" % p["tls_ca_file"])


class CertRunner(object):
    """One apex_cert call: ``getattr(runner, state)()`` returns the result or raises
    ``CertManagerError`` (its ``result`` holds the keys returned with the failure)."""

    def __init__(self, params, check_mode=False, warn=None):
        self.p = params
        self.check_mode = check_mode
        self.warn = warn or (lambda message: None)
        self.ns = self.p["namespace"]
        self.warn_days, self.crit_days = self.p["warning_days"], self.p["critical_days"]
        self._cm = None
        self.deadline = Deadline(self.p["wait_timeout"])

    @property
    def cm(self):
        if self._cm is None:
            self._cm = cm.CertManager(k8s.connect(self.p))
        return self._cm

    # ------------------------------------------------------------------ helpers
    def endpoint_target(self):
        if not self.p["endpoint"]:
            return None
        host, port = tls.parse_endpoint(self.p["endpoint"])
        server_name = self.p["server_name"] or host
        return host, port, server_name, self.p["hostname"] or server_name

    def hostname(self):
        target = self.endpoint_target()
        return self.p["hostname"] or self.p["server_name"] or (target[3] if target else None)

    def probe(self):
        host, port, server_name, hostname = self.endpoint_target()
        return tls.probe_endpoint(host, port, server_name=server_name, ca_file=self.p["tls_ca_file"],
                                  timeout=self.p["endpoint_timeout"], hostname=hostname,
                                  warning_days=self.warn_days, critical_days=self.crit_days)

    def probe_safely(self):
        try:
            return self.probe()
        except Exception as exc:
            host, port, server_name, hostname = self.endpoint_target()
            return dict(host=host, port=port, server_name=server_name, hostname=hostname, error="%s: %s" % (
                type(exc).__name__, exc), expiry_status=None, days_left=None)

    def secret_facts(self, name):
        return cm.secret_facts(self.cm.get_secret(self.ns, name), warning_days=self.warn_days,
                               critical_days=self.crit_days, hostname=self.hostname())

    def cert_facts(self, obj):
        return cm.certificate_facts(obj, warning_days=self.warn_days, critical_days=self.crit_days)

    def resolve_secret_name(self, cert_obj):
        if self.p["secret_name"]:
            return self.p["secret_name"]
        if cert_obj and (cert_obj.get("spec") or {}).get("secretName"):
            return cert_obj["spec"]["secretName"]
        return self.p["name"] or "apex-tls"

    def after_change(self, result, new_fingerprint):
        """Optional ingress restart, then optional wait for the endpoint to serve the new cert."""
        if self.p["restart_ingress"]:
            where = "%s/%s" % (self.p["ingress_namespace"], self.p["ingress_deployment"])
            try:
                restarted = self.cm.restart_ingress(self.p["ingress_namespace"], self.p["ingress_deployment"],
                                                    self.deadline)
            except k8s.KubeApiError as exc:
                # the certificate change has happened: report it with the failure (caller adds the state)
                raise CertManagerError(
                    "the certificate was changed, but the rolling restart of the ingress Deployment %s failed: %s%s"
                    % (where, exc, " (check ingress_namespace/ingress_deployment)" if exc.status == 404 else ""))
            result["ingress_restart"] = restarted
        if self.p["wait_for_endpoint"]:
            result["endpoint"] = cm.wait_for_endpoint(self.probe, new_fingerprint, self.deadline)
            result["drift"] = dict(drift=False, secret_newer=False,
                                   secret_serial=result["endpoint"]["certificate"]["serial"],
                                   served_serial=result["endpoint"]["certificate"]["serial"])
        elif self.p["endpoint"]:
            result["endpoint"] = self.probe_safely()

    # ------------------------------------------------------------------ facts
    def facts(self):
        probe = self.probe_safely if self.p["endpoint"] else None
        result = cm.gather_facts(self.cm, self.ns, name=self.p["name"], secret_name=self.p["secret_name"],
                                 sources=self.p["sources"], probe=probe, hostname=self.hostname(),
                                 warning_days=self.warn_days, critical_days=self.crit_days, warn=self.warn)
        result["problems"] = judge(result)
        result["status"] = overall_status(result["problems"])
        return result

    # ------------------------------------------------------------------ renew
    def renew(self):
        name = self.p["name"] or "apex-tls"
        obj = self.cm.get_certificate(self.ns, name)
        if obj is None:
            raise CertManagerError("Certificate %s/%s not found (is cert-manager managing this certificate? "
                                   "use state=install for a manually supplied one)" % (self.ns, name))
        secret_name = self.resolve_secret_name(obj)
        before = self.secret_facts(secret_name)
        before_cert = before.get("certificate")
        result = dict(changed=False, renewed=False, method=self.p["method"], name=name, secret_name=secret_name,
                      previous=cm.cert_summary(before_cert), certificates=[self.cert_facts(obj)])
        threshold = self.p["renew_threshold_days"]
        if threshold is not None and before_cert and before.get("key_matches") and before["days_left"] >= threshold:
            result["reason"] = "not due: %.1f days left >= renew_threshold_days %s" % (before["days_left"], threshold)
            result["secret"] = before
            if self.p["endpoint"]:
                result["endpoint"] = self.probe_safely()
            return result
        result["reason"] = "forced (no renew_threshold_days)" if threshold is None else (
            "due: %s" % ("%.1f days left < %s" % (before["days_left"], threshold) if before_cert and before.get("key_matches")
                         else "the Secret holds no usable certificate"))
        if self.p["method"] == "delete_secret":
            ready, why = self.cm.issuer_ready(self.ns, (obj.get("spec") or {}).get("issuerRef") or {})
            if not ready:
                raise CertManagerError("refusing to delete Secret %s/%s: %s, so cert-manager could not issue a new "
                                       "certificate and the ingress would be left without one; nothing was changed "
                                       "(fix the issuer, or use method=issuing_condition, which keeps the old certificate "
                                       "served)" % (self.ns, secret_name, why), certificates=result["certificates"])
        result["changed"] = True
        result["diff"] = dict(before=cm.secret_summary(before),
                              after=dict(present=True, certificate="(a new certificate issued by %s)" % (
                                  (obj.get("spec") or {}).get("issuerRef") or {}).get("name")))
        if self.check_mode:
            return result
        old_fp = (before_cert or {}).get("fingerprint_sha256")
        if self.p["method"] == "issuing_condition":
            triggered = self.cm.trigger_issuing(self.ns, name)
            if not triggered:
                self.warn("Certificate %s/%s was already issuing; waiting for that issuance" % (self.ns, name))
        else:
            self.cm.delete_secret(self.ns, secret_name)
        result["renewed"] = True
        if not self.p["wait"]:
            return result
        try:
            obj, after = self.cm.wait_for_issuance(self.ns, name, secret_name, old_fp, self.deadline)
        except CertManagerError as exc:
            raise CertManagerError(str(exc), last_state=exc.last_state, renewed=True, changed=True)
        except k8s.KubeApiError as exc:  # the renewal was triggered: say so with the failure
            raise CertManagerError("renewal of Certificate %s/%s triggered, then waiting for it failed: %s"
                                   % (self.ns, name, exc), renewed=True, changed=True)
        after["hostname"] = self.hostname()
        result["certificates"] = [self.cert_facts(obj)]
        result["secret"] = after
        result["diff"]["after"] = cm.secret_summary(after)
        try:
            self.after_change(result, after["certificate"]["fingerprint_sha256"])
        except CertManagerError as exc:
            raise CertManagerError(str(exc), last_state=exc.last_state, renewed=True, changed=True, secret=after)
        result["elapsed"] = round(self.deadline.elapsed(), 3)
        return result

    # ------------------------------------------------------------------ reload
    def reload(self):
        if not self.p["endpoint"]:
            raise CertManagerError("state=reload needs endpoint")
        cert_obj = self.cm.get_certificate(self.ns, self.p["name"]) if self.p["name"] else None
        secret_name = self.resolve_secret_name(cert_obj)
        secret = self.secret_facts(secret_name)
        if not secret.get("certificate"):
            raise CertManagerError("Secret %s/%s holds no certificate to serve" % (self.ns, secret_name),
                                   last_state=dict(secret=secret))
        served = self.probe_safely()
        if served.get("error"):
            # a restart could not be verified, and an unreachable endpoint is rarely cured by one
            raise CertManagerError("cannot probe %s (%s); not restarting the ingress controller: nothing was changed"
                                   % (self.p["endpoint"], served["error"]), secret=secret, endpoint=served)
        drift = tls.compare_served(secret["certificate"], served.get("certificate"))
        drift["secret_name"] = secret_name
        if drift["drift"] and not drift["secret_newer"]:
            self.warn("%s serves certificate %s, not older than the Secret's %s: something other than this "
                      "ingress may terminate TLS (load balancer, CDN), or the Secret was rolled back; a restart "
                      "would not change what is served, so none was done"
                      % (self.p["endpoint"], drift["served_serial"], drift["secret_serial"]))
        result = dict(changed=bool(drift["drift"] and drift["secret_newer"]), secret_name=secret_name, secret=secret,
                      endpoint=served, drift=drift,
                      diff=dict(before=dict(served=cm.cert_summary(served.get("certificate"))),
                                after=dict(served=cm.cert_summary(secret["certificate"]))))
        if not result["changed"] or self.check_mode:
            return result
        result["ingress_restart"] = self.cm.restart_ingress(self.p["ingress_namespace"], self.p["ingress_deployment"],
                                                            self.deadline)
        if self.p["wait"]:
            result["endpoint"] = cm.wait_for_endpoint(self.probe, secret["certificate"]["fingerprint_sha256"],
                                                      self.deadline)
            result["drift"] = dict(tls.compare_served(secret["certificate"], result["endpoint"]["certificate"]),
                                   secret_name=secret_name)
        result["elapsed"] = round(self.deadline.elapsed(), 3)
        return result

    # ------------------------------------------------------------------ install
    def _read(self, text_opt, path_opt, what, required):
        if self.p[text_opt] and self.p[path_opt]:
            raise CertManagerError("%s and %s are mutually exclusive" % (text_opt, path_opt))
        data = None
        if self.p[text_opt]:
            data = self.p[text_opt].encode("utf-8")
        elif self.p[path_opt]:
            try:
                with open(self.p[path_opt], "rb") as handle:
                    data = handle.read()
            except (IOError, OSError) as exc:
                raise CertManagerError("cannot read %s %s: %s" % (what, self.p[path_opt], exc.strerror))
        if data is not None:
            if text_opt != "private_key" and b"PRIVATE KEY-----" in data:
                # a combined bundle would put the key in the certificate's place (and its option into logs)
                raise CertManagerError("%s contains a private key: pass the certificate and the key separately "
                                       "(private_key is no_log; prefer private_key_path); nothing was changed" % what)
            return data
        if required:
            raise CertManagerError("state=install needs %s or %s" % (text_opt, path_opt))
        return None

    def install(self):
        cert_pem = self._read("certificate", "certificate_path", "certificate", True)
        key_pem = self._read("private_key", "private_key_path", "private key", True)
        chain_pem = self._read("chain", "chain_path", "chain", False)
        ca_pem = None
        if self.p["tls_ca_file"]:
            with open(self.p["tls_ca_file"], "rb") as handle:
                ca_pem = handle.read()
        hostname = self.hostname()
        cert_obj = self.cm.get_certificate(self.ns, self.p["name"]) if self.p["name"] else None
        if not hostname and cert_obj and (cert_obj.get("spec") or {}).get("dnsNames"):
            hostname = cert_obj["spec"]["dnsNames"][0]
        try:
            report, leaf, chain, key = tls.validate_bundle(
                cert_pem, key_pem, chain_pem, hostnames=[hostname] if hostname else [],
                passphrase=self.p["private_key_passphrase"], ca_pem=ca_pem,
                warning_days=self.warn_days, critical_days=self.crit_days)
        except tls.TLSError as exc:
            raise CertManagerError("refusing to install: %s; nothing was changed" % exc)
        if not hostname:
            self.warn("no hostname given (hostname/server_name/endpoint): hostname coverage was not checked")
        secret_name = self.resolve_secret_name(cert_obj)
        existing = self.cm.get_secret(self.ns, secret_name)
        before = cm.secret_facts(existing, warning_days=self.warn_days, critical_days=self.crit_days)
        if report["problems"]:
            raise CertManagerError("refusing to install the certificate into Secret %s/%s: %s; nothing was changed"
                                   % (self.ns, secret_name, "; ".join(report["problems"])),
                                   validation=report, secret=before)
        managers = [o for o in (self.cm.list_certificates(self.ns) or [])
                    if (o.get("spec") or {}).get("secretName") == secret_name]
        for manager in managers:
            wanted = sorted((manager.get("spec") or {}).get("dnsNames") or [])
            if wanted != sorted(report["certificate"]["dns_names"]):
                self.warn("Secret %s/%s is managed by Certificate %s whose dnsNames (%s) differ from the "
                          "certificate's (%s): cert-manager will reissue and overwrite it right away"
                          % (self.ns, secret_name, manager["metadata"]["name"], ", ".join(wanted),
                             ", ".join(report["certificate"]["dns_names"])))
            else:
                self.warn("Secret %s/%s is managed by Certificate %s: cert-manager will replace the installed "
                          "certificate at its next renewal" % (self.ns, secret_name, manager["metadata"]["name"]))
        new_fps = [tls.fingerprint_sha256(c) for c in chain]
        old_fps = [before.get("certificate", {}).get("fingerprint_sha256")] + \
            [c["fingerprint_sha256"] for c in before.get("chain") or []] if before.get("certificate") else []
        same = bool(before.get("present") and before.get("key_matches") and old_fps == new_fps)
        after_summary = dict(present=True, certificate=cm.cert_summary(report["certificate"]),
                             chain=[c["serial"] + " " + c["subject"] for c in report["chain"]])
        result = dict(changed=not same, secret_name=secret_name, validation=report,
                      previous=cm.cert_summary(before.get("certificate")),
                      diff=dict(before=cm.secret_summary(before), after=after_summary))
        if same:
            result["secret"] = before
            if self.p["endpoint"]:
                result["endpoint"] = self.probe_safely()
            return result
        if self.check_mode:
            return result
        self.cm.put_tls_secret(self.ns, secret_name, tls.certs_to_pem(chain), tls.key_to_pem(key),
                               existing=existing)
        after = self.secret_facts(secret_name)
        result["secret"] = after
        try:
            self.after_change(result, new_fps[0])
        except CertManagerError as exc:
            raise CertManagerError(str(exc), last_state=exc.last_state, changed=True, secret=after,
                                   previous=result["previous"])
        result["elapsed"] = round(self.deadline.elapsed(), 3)
        return result


def judge(result):
    """Problems an on-call engineer must know about, each with a severity (warning/critical)."""
    problems = []

    def add(severity, source, message):
        problems.append(dict(severity=severity, source=source, message=message))

    def expiry(source, facts):
        status = facts.get("expiry_status")
        if status in ("warning", "critical", "expired"):
            add("warning" if status == "warning" else "critical", source,
                "%s %s (%.1f days left, notAfter %s)" % (source, "has expired" if status == "expired" else
                                                         "expires soon", facts.get("days_left"),
                                                         facts.get("not_after") or (facts.get("certificate") or {}).get("not_after")))

    for cert in result.get("certificates") or []:
        source = "certificate/%s" % cert["name"]
        if not cert["ready"]:
            add("critical", source, "Certificate %s is not Ready (%s: %s)"
                % (cert["name"], cert["ready_reason"], cert["ready_message"]))
        if cert["failed_issuance_attempts"]:
            add("warning", source, "Certificate %s has %s failed issuance attempt(s)" % (
                cert["name"], cert["failed_issuance_attempts"]))
        expiry(source, cert)
    for name, sec in (result.get("secrets") or {}).items():
        source = "secret/%s" % name
        if not sec.get("present"):
            add("critical", source, "Secret %s does not exist" % name)
            continue
        if sec.get("error"):
            add("critical", source, "Secret %s: %s" % (name, sec["error"]))
            continue
        if not sec.get("key_matches"):
            add("critical", source, "Secret %s: %s" % (name, sec.get("key_error") or "tls.key does not match tls.crt"))
        if sec.get("hostname_match") is False:
            add("critical", source, "Secret %s: certificate does not cover %s" % (name, sec.get("hostname")))
        for text in sec.get("chain_problems") or []:
            add("warning", source, "Secret %s: %s" % (name, text))
        expiry(source, sec)
    ep = result.get("endpoint")
    if ep:
        if ep.get("error"):
            add("critical", "endpoint", "endpoint %s:%s unreachable: %s" % (ep.get("host"), ep.get("port"), ep["error"]))
        else:
            if not ep.get("verified"):
                add("critical", "endpoint", "endpoint chain does not verify: %s" % ep.get("verify_error"))
            if not ep.get("hostname_match"):
                add("critical", "endpoint", "endpoint certificate does not cover %s" % ep.get("hostname"))
            for text in ep.get("chain_problems") or []:
                add("warning", "endpoint", "endpoint: %s" % text)
            expiry("endpoint", ep)
    drift = result.get("drift") or {}
    if drift.get("drift"):
        add("warning", "drift", "the endpoint serves %s but Secret %s holds %s%s" % (
            drift.get("served_serial"), drift.get("secret_name"), drift.get("secret_serial"),
            " (newer: restart the ingress controller)" if drift.get("secret_newer") else ""))
    return problems


def overall_status(problems):
    severities = set(p["severity"] for p in problems)
    if "critical" in severities:
        return "critical"
    if "warning" in severities:
        return "warning"
    return "ok"
