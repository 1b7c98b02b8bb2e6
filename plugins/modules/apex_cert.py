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
  description:
    - Facts of each Certificate looked at (conditions, not_after, renewal_time, issuer_ref, dns_names,
      secret_name, failed_issuance_attempts, days_left, expiry_status...).
    - On failure, when O(method=delete_secret) was refused because the issuer is not Ready.
  returned: when Kubernetes was consulted; failure (the delete_secret refusal)
  type: list
  elements: dict
cert_manager_installed:
  description: False when the cert-manager Certificate API does not exist in the cluster.
  returned: state=facts
  type: bool
secret:
  description:
    - The certificate stored in the TLS Secret (subject, dns_names, issuer, serial, not_before, not_after,
      days_left), its chain, key_matches. Never key material.
    - On failure, what the Secret holds when the failure came after it changed (the new certificate of a renewal
      or an install whose ingress restart or endpoint wait failed), when an install was refused (the Secret as
      it is, unchanged), or when O(state=reload) could not probe the endpoint.
  returned: when the Secret was consulted; failure (see the description)
  type: dict
secrets:
  description: Secret facts by Secret name, for every Certificate reported.
  returned: state=facts
  type: dict
endpoint:
  description:
    - The live endpoint (host, port, server_name, sni_sent, tls_version, cipher, certificate, chain,
      chain_problems, verified, verify_error, hostname_match, trusted, days_left, expiry_status).
    - On failure, when O(state=reload) could not probe it (with C(error); nothing was restarted).
  returned: when an endpoint was probed; failure (state=reload, endpoint unreachable)
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
  description: Whether a renewal was triggered (state=renew). True on a failure that came after the trigger.
  returned: state=renew; failure after the renewal was triggered
  type: bool
reason:
  description: Why a renewal was or was not done.
  returned: state=renew
  type: str
previous:
  description:
    - Serial, fingerprint and dates of the certificate before the action.
    - On failure, what an install replaced, when the ingress restart or the endpoint wait after it failed.
  returned: state=renew or state=install; failure after an install replaced the Secret
  type: dict
validation:
  description:
    - The validation report of a supplied certificate (certificate, chain, key_matches, problems).
    - The trust decision is made by the X.509 path verifier of C(cryptography) (every issuer a CA,
      path lengths, validity of every certificate, hostname); C(verified), C(verify_error),
      C(verified_path) (subjects, leaf to anchor) and C(trust_anchor) (C(ca_bundle) = O(tls_ca_file),
      C(supplied_chain) = the top certificate of the supplied chain, C(none) = the leaf alone) report it.
    - On failure, the report of a certificate refused (its C(problems) say why); nothing was changed.
  returned: state=install; failure (an install refused by validation)
  type: dict
ingress_restart:
  description: The rollout of the ingress controller (restarted_at and final rollout state).
  returned: when the ingress controller was restarted
  type: dict
elapsed:
  description: Seconds spent waiting.
  returned: state=renew or state=install
  type: float
changed:
  description: On failure, true when the failure came after a change (a renewal triggered, a Secret replaced).
  returned: failure after a change
  type: bool
last_state:
  description:
    - What the module last observed when a wait failed or a precondition on the cluster did not hold.
  returned: failure
  type: dict
  contains:
    certificate:
      description: The Certificate's facts, when waiting for the reissue timed out (Ready, Issuing, failed attempts).
      type: dict
    secret:
      description:
        - When waiting for the reissue timed out, the Secret's certificate as last read (serials and dates).
        - With O(state=reload), the Secret's facts when it holds no certificate to serve.
      type: dict
    rollout:
      description:
        - When the ingress rollout failed or timed out, its status as last seen (state, message, complete,
          generation, observed_generation, replicas, updated_replicas, ready_replicas, available_replicas,
          desired_replicas, conditions).
      type: dict
    endpoint:
      description: When waiting for the endpoint to serve the new certificate timed out, the endpoint as last probed.
      type: dict
    error:
      description: With RV(last_state.endpoint), the last probe's error (the ingress refuses while it restarts).
      type: str
exception:
  description: The traceback of an unexpected error (the message names its type and text); never key material.
  returned: failure (unexpected errors)
  type: str
"""

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC
from ansible_collections.apex.ops.plugins.module_utils import k8s, tls
from ansible_collections.apex.ops.plugins.module_utils.cert_manager import CertManagerError
from ansible_collections.apex.ops.plugins.module_utils.cert_runner import CertRunner, check_options


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
    try:
        check_options(p)
        result = getattr(CertRunner(p, check_mode=module.check_mode, warn=module.warn), p["state"])()
    except CertManagerError as exc:
        module.fail(str(exc), last_state=exc.last_state, **exc.result)
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
