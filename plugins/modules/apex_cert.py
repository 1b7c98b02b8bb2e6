#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_cert
short_description: Apex TLS certificates - facts, cert-manager renewal, manual installation
version_added: 0.1.0
description:
  - O(state=facts) reports each cert-manager Certificate (Ready and Issuing conditions, notAfter,
    renewalTime, issuer, DNS names, Secret name, failed issuance attempts), the certificate stored
    in its TLS Secret (subject, SANs, issuer, serial, validity, whether the key matches) and the live
    endpoint (SNI, the chain as served, verification against a CA bundle, hostname match, days
    left, TLS version). It flags drift (the Secret holds another certificate than the endpoint
    serves) and judges days left against O(warning_days) and O(critical_days).
  - O(state=renew) makes cert-manager reissue a Certificate, either the way C(cmctl renew) does
    (the C(Issuing) condition set True through the status subresource) or by deleting the Secret,
    then waits until the Secret holds a new certificate and the Certificate is Ready. There is no
    C(cert-manager.io/renew) annotation in cert-manager, whatever older runbooks say.
  - O(state=install) validates a supplied certificate, key and chain (the key matches, the
    certificate is current, it covers the hostname, the chain is in order) and only then creates
    or replaces the C(kubernetes.io/tls) Secret. Invalid input changes nothing.
  - O(state=reload) restarts the ingress controller only if the endpoint serves an older certificate than the
    Secret holds, and waits until the endpoint serves the Secret's certificate. An endpoint that cannot be
    probed fails the task without a restart; an endpoint serving a newer or unrelated certificate (a load
    balancer or CDN terminating TLS itself) is reported with a warning and left alone.
  - Both O(state=renew) and O(state=install) can restart the ingress controller (a rolling
    restart, like C(kubectl rollout restart)) and wait until the endpoint serves the new certificate.
  - Private keys are never returned, logged or shown in a diff; diffs show serials and dates.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.k8s
attributes:
  check_mode:
    support: full
    description: Renewals and installs are reported, not performed; validation still runs.
  diff_mode:
    support: full
    description: Serials, fingerprints, subjects and dates of the stored certificate before and after.
options:
  state:
    description:
      - V(facts) reports; V(renew) triggers a cert-manager reissue; V(install) writes a supplied certificate.
      - V(reload) restarts the ingress controller only when O(endpoint) serves an older certificate than the
        Secret holds (drift), then waits until it serves the Secret's (runbook "restart ingress controller to
        pick up new cert").
    type: str
    choices: [facts, renew, install, reload]
    default: facts
  name:
    description:
      - Name of the cert-manager Certificate.
      - With O(state=facts) and no O(name), every Certificate of O(namespace) is reported.
      - With O(state=renew) it defaults to C(apex-tls).
    type: str
    aliases: [cert_name]
  secret_name:
    description:
      - Name of the TLS Secret. Defaults to the Certificate's C(spec.secretName), else O(name), else C(apex-tls).
    type: str
  sources:
    description:
      - What O(state=facts) looks at. V(endpoint) is only probed when O(endpoint) is set.
    type: list
    elements: str
    choices: [certificate, secret, endpoint]
    default: [certificate, secret, endpoint]
  endpoint:
    description:
      - The live HTTPS endpoint, as a URL (C(https://apex.example.com)) or C(host:port).
    type: str
  server_name:
    description:
      - SNI name sent to O(endpoint). Defaults to the endpoint's host (no SNI is sent for an IP address).
    type: str
  hostname:
    description:
      - The name clients use; the certificate must cover it (SAN match, wildcards allowed in the
        left-most label). Defaults to O(server_name), then the endpoint's host. O(state=install)
        refuses a certificate that does not cover it.
    type: str
  tls_ca_file:
    description:
      - CA bundle (PEM) the endpoint's chain is verified against, and that a supplied chain must
        lead to with O(state=install). Defaults to the system trust store for the endpoint; for
        installs without it, the top certificate of the supplied chain is the trust anchor (it must
        be a CA), and a lone self-signed certificate is refused.
    type: path
  endpoint_timeout:
    description: Seconds for each TLS connection to the endpoint.
    type: float
    default: 10
  warning_days:
    description: Fewer days left than this is C(warning).
    type: int
    default: 30
  critical_days:
    description: Fewer days left than this is C(critical).
    type: int
    default: 7
  method:
    description:
      - How O(state=renew) makes cert-manager reissue.
      - V(issuing_condition) sets the C(Issuing) condition True (reason C(ManuallyTriggered)) through
        the status subresource, like C(cmctl renew); the old certificate keeps being served meanwhile.
      - V(delete_secret) deletes the Secret; cert-manager issues a new one (the ingress falls back to
        its default certificate until then). Refused, with nothing changed, unless the Certificate's
        Issuer (or ClusterIssuer) is Ready - otherwise the Secret would stay missing.
    type: str
    choices: [issuing_condition, delete_secret]
    default: issuing_condition
  renew_threshold_days:
    description:
      - With O(state=renew), renew only when the stored certificate has fewer days left than this
        (or the Secret is missing or broken). Unset means renew unconditionally.
    type: float
  wait:
    description:
      - Wait until the new certificate is issued (renew) and, when asked, served.
      - With O(state=renew), V(false) cannot be combined with O(restart_ingress) or O(wait_for_endpoint)
        (both need the new certificate first).
    type: bool
    default: true
  wait_timeout:
    description: Seconds for all waits of one run together (monotonic deadline).
    type: int
    default: 300
  wait_for_endpoint:
    description: After renew/install, wait until O(endpoint) serves the new certificate.
    type: bool
    default: false
  restart_ingress:
    description:
      - After renew/install, restart the ingress controller Deployment (pod-template annotation
        C(kubectl.kubernetes.io/restartedAt)) and wait for the rollout, so it loads the new certificate.
    type: bool
    default: false
  ingress_namespace:
    description: Namespace of the ingress controller Deployment.
    type: str
    default: ingress-nginx
  ingress_deployment:
    description: Name of the ingress controller Deployment.
    type: str
    default: ingress-nginx-controller
  certificate:
    description:
      - PEM certificate to install (the leaf, optionally followed by its chain). Mutually exclusive with O(certificate_path).
    type: str
  certificate_path:
    description: File holding the PEM certificate to install.
    type: path
  private_key:
    description: PEM private key of the certificate. Never logged or returned.
    type: str
  private_key_path:
    description: File holding the PEM private key.
    type: path
  private_key_passphrase:
    description: Passphrase of an encrypted private key; the Secret receives the key unencrypted (PKCS#8).
    type: str
  chain:
    description: PEM intermediate certificates, issuer of the leaf first.
    type: str
  chain_path:
    description: File holding the PEM intermediates.
    type: path
notes:
  - Endpoint probing uses Python's C(ssl); certificates are parsed with C(cryptography).
  - Installing into a Secret that a Certificate manages works, but cert-manager replaces it at its
    next renewal; the module warns about it.
requirements:
  - cryptography >= 45 (its X.509 path verifier)
"""

EXAMPLES = r"""
- name: Certificates, Secret and live endpoint, judged against 30/7 days
  apex.ops.apex_cert:
    state: facts
    endpoint: https://apex.example.com
    tls_ca_file: /etc/ssl/certs/ca-certificates.crt
  register: tls_facts

- name: Renew like cmctl renew, restart the ingress and wait until the endpoint serves the new cert
  apex.ops.apex_cert:
    state: renew
    name: apex-tls
    method: issuing_condition
    restart_ingress: true
    wait_for_endpoint: true
    endpoint: https://apex.example.com

- name: Renew only when fewer than 30 days are left
  apex.ops.apex_cert:
    state: renew
    name: apex-tls
    renew_threshold_days: 30

- name: Make the ingress serve what the Secret holds (restart only when it does not)
  apex.ops.apex_cert:
    state: reload
    name: apex-tls
    endpoint: https://apex.example.com

- name: Install a supplied certificate (validated first), then verify it is served
  apex.ops.apex_cert:
    state: install
    secret_name: apex-tls
    certificate_path: /secure/apex.crt
    private_key_path: /secure/apex.key
    chain_path: /secure/intermediates.pem
    hostname: apex.example.com
    restart_ingress: true
    wait_for_endpoint: true
    endpoint: https://apex.example.com
"""

RETURN = r"""
certificates:
  description: Facts of each Certificate looked at (conditions, not_after, renewal_time, issuer_ref, dns_names,
    secret_name, failed_issuance_attempts, days_left, expiry_status...).
  returned: when Kubernetes was consulted
  type: list
  elements: dict
cert_manager_installed:
  description: False when the cert-manager Certificate API does not exist in the cluster.
  returned: state=facts
  type: bool
secret:
  description: The certificate stored in the TLS Secret (subject, dns_names, issuer, serial, not_before, not_after,
    days_left), its chain, key_matches. Never key material.
  returned: when the Secret was consulted
  type: dict
secrets:
  description: Secret facts by Secret name, for every Certificate reported.
  returned: state=facts
  type: dict
endpoint:
  description: The live endpoint (host, port, server_name, sni_sent, tls_version, cipher, certificate, chain,
    chain_problems, verified, verify_error, hostname_match, trusted, days_left, expiry_status).
  returned: when an endpoint was probed
  type: dict
drift:
  description: Comparison of the Secret's certificate with the served one (drift, secret_newer, both serials).
  returned: when both the Secret and the endpoint were looked at
  type: dict
secret_name:
  description: The TLS Secret acted upon.
  returned: state=renew, install or reload
  type: str
problems:
  description: What needs attention, each with severity (warning or critical), source and message.
  returned: state=facts
  type: list
  elements: dict
status:
  description: C(ok), C(warning) or C(critical) - the worst severity in RV(problems).
  returned: state=facts
  type: str
expiry:
  description: The worst judgement over the Certificate(s), the Secret and the endpoint (status, days_left, source,
    warning_days, critical_days).
  returned: state=facts
  type: dict
renewed:
  description: Whether a renewal was triggered (state=renew).
  returned: state=renew
  type: bool
reason:
  description: Why a renewal was or was not done.
  returned: state=renew
  type: str
previous:
  description: Serial, fingerprint and dates of the certificate before the action.
  returned: state=renew or state=install
  type: dict
validation:
  description:
    - The validation report of a supplied certificate (certificate, chain, key_matches, problems).
    - The trust decision is made by the X.509 path verifier of C(cryptography) (every issuer a CA,
      path lengths, validity of every certificate, hostname); C(verified), C(verify_error),
      C(verified_path) (subjects, leaf to anchor) and C(trust_anchor) (C(ca_bundle) = O(tls_ca_file),
      C(supplied_chain) = the top certificate of the supplied chain, C(none) = the leaf alone) report it.
  returned: state=install
  type: dict
ingress_restart:
  description: The rollout of the ingress controller (restarted_at and final rollout state).
  returned: when the ingress controller was restarted
  type: dict
elapsed:
  description: Seconds spent waiting.
  returned: state=renew or state=install
  type: float
"""

import os

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC
from ansible_collections.apex.ops.plugins.module_utils import k8s, tls
from ansible_collections.apex.ops.plugins.module_utils import cert_manager as cm
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline


def argument_spec():
    return dict(
        state=dict(type="str", choices=["facts", "renew", "install", "reload"], default="facts"),
        name=dict(type="str", aliases=["cert_name"]),
        secret_name=dict(type="str"),
        sources=dict(type="list", elements="str", choices=["certificate", "secret", "endpoint"],
                     default=["certificate", "secret", "endpoint"]),
        endpoint=dict(type="str"),
        server_name=dict(type="str"),
        hostname=dict(type="str"),
        tls_ca_file=dict(type="path"),
        endpoint_timeout=dict(type="float", default=10.0),
        warning_days=dict(type="int", default=tls.DEFAULT_WARNING_DAYS),
        critical_days=dict(type="int", default=tls.DEFAULT_CRITICAL_DAYS),
        method=dict(type="str", choices=["issuing_condition", "delete_secret"], default="issuing_condition"),
        renew_threshold_days=dict(type="float"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=300),
        wait_for_endpoint=dict(type="bool", default=False),
        restart_ingress=dict(type="bool", default=False),
        ingress_namespace=dict(type="str", default="ingress-nginx"),
        ingress_deployment=dict(type="str", default="ingress-nginx-controller"),
        certificate=dict(type="str", no_log=True),  # no_log: a pasted bundle may carry the key
        certificate_path=dict(type="path"),
        private_key=dict(type="str", no_log=True),
        private_key_path=dict(type="path"),
        private_key_passphrase=dict(type="str", no_log=True),
        chain=dict(type="str", no_log=True),
        chain_path=dict(type="path"),
    )


class CertRunner(object):
    def __init__(self, module):
        self.module = module
        self.p = module.params
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
                stamp = self.cm.restart_deployment(self.p["ingress_namespace"], self.p["ingress_deployment"])
                state = self.cm.wait_rollout(self.p["ingress_namespace"], self.p["ingress_deployment"], self.deadline)
            except k8s.KubeApiError as exc:
                # the certificate change has happened: report it with the failure (caller adds the state)
                raise cm.CertManagerError(
                    "the certificate was changed, but the rolling restart of the ingress Deployment %s failed: %s%s"
                    % (where, exc, " (check ingress_namespace/ingress_deployment)" if exc.status == 404 else ""))
            result["ingress_restart"] = dict(namespace=self.p["ingress_namespace"],
                                             deployment=self.p["ingress_deployment"], restarted_at=stamp,
                                             rollout=state)
        if self.p["wait_for_endpoint"]:
            result["endpoint"] = cm.wait_for_endpoint(self.probe, new_fingerprint, self.deadline)
            result["drift"] = dict(drift=False, secret_newer=False,
                                   secret_serial=result["endpoint"]["certificate"]["serial"],
                                   served_serial=result["endpoint"]["certificate"]["serial"])
        elif self.p["endpoint"]:
            result["endpoint"] = self.probe_safely()

    # ------------------------------------------------------------------ facts
    def facts(self):
        sources = set(self.p["sources"])
        result = dict(changed=False)
        statuses = []  # (status, days_left, source)
        primary_secret = self.p["secret_name"]
        if "certificate" in sources:
            if self.p["name"]:
                obj = self.cm.get_certificate(self.ns, self.p["name"])
                objs = [obj] if obj is not None else []
                installed = True if obj is not None else self.cm.list_certificates(self.ns) is not None
                if obj is None and installed:
                    self.module.warn("Certificate %s/%s not found" % (self.ns, self.p["name"]))
            else:
                objs = self.cm.list_certificates(self.ns)
                installed = objs is not None
                objs = objs or []
            result["cert_manager_installed"] = installed
            result["certificates"] = [self.cert_facts(o) for o in objs]
            for facts in result["certificates"]:
                statuses.append((facts["expiry_status"], facts["days_left"], "certificate/%s" % facts["name"]))
            if not primary_secret:
                names = [f["secret_name"] for f in result["certificates"] if f["secret_name"]]
                if self.p["name"] and names:
                    primary_secret = names[0]
                elif "apex-tls" in names or not names:
                    primary_secret = self.p["name"] or "apex-tls"
                else:
                    primary_secret = names[0]
        primary_secret = primary_secret or self.p["name"] or "apex-tls"
        if "secret" in sources:
            names = [primary_secret] + [f["secret_name"] for f in result.get("certificates", []) if f["secret_name"]]
            result["secrets"] = {}
            for name in names:
                if name not in result["secrets"]:
                    result["secrets"][name] = self.secret_facts(name)
            result["secret"] = result["secrets"][primary_secret]
            for name, facts in result["secrets"].items():
                statuses.append((facts.get("expiry_status"), facts.get("days_left"), "secret/%s" % name))
        if "endpoint" in sources and self.p["endpoint"]:
            result["endpoint"] = self.probe_safely()
            statuses.append((result["endpoint"].get("expiry_status"), result["endpoint"].get("days_left"),
                             "endpoint"))
            if "secret" in sources:
                result["drift"] = tls.compare_served((result["secret"] or {}).get("certificate"),
                                                     result["endpoint"].get("certificate"))
                result["drift"]["secret_name"] = primary_secret
        known = [s for s in statuses if s[0]]
        worst = tls.worst_status([s[0] for s in known])
        soonest = min(known, key=lambda s: s[1]) if known else (None, None, None)
        result["expiry"] = dict(status=worst, days_left=soonest[1], source=soonest[2],
                                warning_days=self.warn_days, critical_days=self.crit_days)
        result["problems"] = judge(result)
        result["status"] = overall_status(result["problems"])
        return result

    # ------------------------------------------------------------------ renew
    def renew(self):
        name = self.p["name"] or "apex-tls"
        obj = self.cm.get_certificate(self.ns, name)
        if obj is None:
            self.module.fail("Certificate %s/%s not found (is cert-manager managing this certificate? "
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
                self.module.fail("refusing to delete Secret %s/%s: %s, so cert-manager could not issue a new "
                                 "certificate and the ingress would be left without one; nothing was changed "
                                 "(fix the issuer, or use method=issuing_condition, which keeps the old certificate "
                                 "served)" % (self.ns, secret_name, why), certificates=result["certificates"])
        result["changed"] = True
        result["diff"] = dict(before=cm.secret_summary(before),
                              after=dict(present=True, certificate="(a new certificate issued by %s)" % (
                                  (obj.get("spec") or {}).get("issuerRef") or {}).get("name")))
        if self.module.check_mode:
            return result
        old_fp = (before_cert or {}).get("fingerprint_sha256")
        if self.p["method"] == "issuing_condition":
            triggered = self.cm.trigger_issuing(self.ns, name)
            if not triggered:
                self.module.warn("Certificate %s/%s was already issuing; waiting for that issuance" % (self.ns, name))
        else:
            self.cm.delete_secret(self.ns, secret_name)
        result["renewed"] = True
        if not self.p["wait"]:
            return result
        try:
            obj, after = self.cm.wait_for_issuance(self.ns, name, secret_name, old_fp, self.deadline)
        except cm.CertManagerError as exc:
            self.module.fail(str(exc), last_state=exc.last_state, renewed=True, changed=True)
        except k8s.KubeApiError as exc:  # the renewal was triggered: say so with the failure
            self.module.fail("renewal of Certificate %s/%s triggered, then waiting for it failed: %s"
                             % (self.ns, name, exc), renewed=True, changed=True)
        after["hostname"] = self.hostname()
        result["certificates"] = [self.cert_facts(obj)]
        result["secret"] = after
        result["diff"]["after"] = cm.secret_summary(after)
        try:
            self.after_change(result, after["certificate"]["fingerprint_sha256"])
        except cm.CertManagerError as exc:
            self.module.fail(str(exc), last_state=exc.last_state, renewed=True, changed=True, secret=after)
        result["elapsed"] = round(self.deadline.elapsed(), 3)
        return result

    # ------------------------------------------------------------------ reload
    def reload(self):
        if not self.p["endpoint"]:
            self.module.fail("state=reload needs endpoint")
        cert_obj = self.cm.get_certificate(self.ns, self.p["name"]) if self.p["name"] else None
        secret_name = self.resolve_secret_name(cert_obj)
        secret = self.secret_facts(secret_name)
        if not secret.get("certificate"):
            self.module.fail("Secret %s/%s holds no certificate to serve" % (self.ns, secret_name),
                             last_state=dict(secret=secret))
        served = self.probe_safely()
        if served.get("error"):
            # a restart could not be verified, and an unreachable endpoint is rarely cured by one
            self.module.fail("cannot probe %s (%s); not restarting the ingress controller: nothing was changed"
                             % (self.p["endpoint"], served["error"]), secret=secret, endpoint=served)
        drift = tls.compare_served(secret["certificate"], served.get("certificate"))
        drift["secret_name"] = secret_name
        if drift["drift"] and not drift["secret_newer"]:
            self.module.warn("%s serves certificate %s, not older than the Secret's %s: something other than this "
                             "ingress may terminate TLS (load balancer, CDN), or the Secret was rolled back; a restart "
                             "would not change what is served, so none was done"
                             % (self.p["endpoint"], drift["served_serial"], drift["secret_serial"]))
        result = dict(changed=bool(drift["drift"] and drift["secret_newer"]), secret_name=secret_name, secret=secret,
                      endpoint=served, drift=drift,
                      diff=dict(before=dict(served=cm.cert_summary(served.get("certificate"))),
                                after=dict(served=cm.cert_summary(secret["certificate"]))))
        if not result["changed"] or self.module.check_mode:
            return result
        stamp = self.cm.restart_deployment(self.p["ingress_namespace"], self.p["ingress_deployment"])
        state = self.cm.wait_rollout(self.p["ingress_namespace"], self.p["ingress_deployment"], self.deadline)
        result["ingress_restart"] = dict(namespace=self.p["ingress_namespace"], deployment=self.p["ingress_deployment"],
                                         restarted_at=stamp, rollout=state)
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
            self.module.fail("%s and %s are mutually exclusive" % (text_opt, path_opt))
        data = None
        if self.p[text_opt]:
            data = self.p[text_opt].encode("utf-8")
        elif self.p[path_opt]:
            try:
                with open(self.p[path_opt], "rb") as handle:
                    data = handle.read()
            except (IOError, OSError) as exc:
                self.module.fail("cannot read %s %s: %s" % (what, self.p[path_opt], exc.strerror))
        if data is not None:
            if text_opt != "private_key" and b"PRIVATE KEY-----" in data:
                # a combined bundle would put the key in the certificate's place (and its option into logs)
                self.module.fail("%s contains a private key: pass the certificate and the key separately "
                                 "(private_key is no_log; prefer private_key_path); nothing was changed" % what)
            return data
        if required:
            self.module.fail("state=install needs %s or %s" % (text_opt, path_opt))
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
            self.module.fail("refusing to install: %s; nothing was changed" % exc)
        if not hostname:
            self.module.warn("no hostname given (hostname/server_name/endpoint): hostname coverage was not checked")
        secret_name = self.resolve_secret_name(cert_obj)
        existing = self.cm.get_secret(self.ns, secret_name)
        before = cm.secret_facts(existing, warning_days=self.warn_days, critical_days=self.crit_days)
        if report["problems"]:
            self.module.fail("refusing to install the certificate into Secret %s/%s: %s; nothing was changed"
                             % (self.ns, secret_name, "; ".join(report["problems"])),
                             validation=report, secret=before)
        managers = [o for o in (self.cm.list_certificates(self.ns) or [])
                    if (o.get("spec") or {}).get("secretName") == secret_name]
        for manager in managers:
            wanted = sorted((manager.get("spec") or {}).get("dnsNames") or [])
            if wanted != sorted(report["certificate"]["dns_names"]):
                self.module.warn("Secret %s/%s is managed by Certificate %s whose dnsNames (%s) differ from the "
                                 "certificate's (%s): cert-manager will reissue and overwrite it right away"
                                 % (self.ns, secret_name, manager["metadata"]["name"], ", ".join(wanted),
                                    ", ".join(report["certificate"]["dns_names"])))
            else:
                self.module.warn("Secret %s/%s is managed by Certificate %s: cert-manager will replace the installed "
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
        if self.module.check_mode:
            return result
        self.cm.put_tls_secret(self.ns, secret_name, tls.certs_to_pem(chain), tls.key_to_pem(key),
                               existing=existing)
        after = self.secret_facts(secret_name)
        result["secret"] = after
        try:
            self.after_change(result, new_fps[0])
        except cm.CertManagerError as exc:
            self.module.fail(str(exc), last_state=exc.last_state, changed=True, secret=after,
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


def main():
    module = ApexModule(
        argument_spec=argument_spec(),
        fragments=(K8S_ARGSPEC,),
        requirements=(tls.REQUIREMENT, k8s.REQUIREMENT),
        supports_check_mode=True,
        mutually_exclusive=[("certificate", "certificate_path"), ("private_key", "private_key_path"),
                            ("chain", "chain_path")],
    )
    p = module.params
    if p["critical_days"] > p["warning_days"]:
        module.fail("critical_days (%s) must not exceed warning_days (%s)" % (p["critical_days"], p["warning_days"]))
    if p["wait_for_endpoint"] and not p["endpoint"]:
        module.fail("wait_for_endpoint needs endpoint")
    if p["state"] == "renew" and not p["wait"] and (p["restart_ingress"] or p["wait_for_endpoint"]):
        module.fail("wait=false skips waiting for the new certificate, which restart_ingress and "
                    "wait_for_endpoint need: set wait=true or drop them")
    if p["tls_ca_file"] and not os.path.isfile(p["tls_ca_file"]):
        module.fail("tls_ca_file %s does not exist" % p["tls_ca_file"])
    runner = CertRunner(module)
    try:
        result = getattr(runner, p["state"])()
    except cm.CertManagerError as exc:
        module.fail(str(exc), last_state=exc.last_state)
    except k8s.KubeConfigError as exc:
        module.fail("Kubernetes connection is not configured: %s" % exc)
    except k8s.KubeApiError as exc:
        module.fail("apex_cert state=%s: Kubernetes API error: %s" % (p["state"], exc))
    except Exception as exc:  # API errors, connection errors: fail with the exception, no key material in it
        module.fail("apex_cert state=%s failed" % p["state"], exception=exc)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
