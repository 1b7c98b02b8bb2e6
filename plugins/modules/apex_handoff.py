#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_handoff
short_description: The shift handoff - access, the last hours of changes, alerts, queue, certificate and lock
version_added: 0.4.0
description:
  - Reads, concurrently in one process on the target, every source the incoming on-call needs - access to each
    Kubernetes context, PostgreSQL, Redis, the backup bucket, Route53, Prometheus and Alertmanager; the changes of the
    window (new workload revisions, the Deployment controller's and the HPA's scale events, Helm release revisions,
    backups in the catalog, and the apex.ops reports of the controller); the alerts that fired in the window
    (Prometheus C(ALERTS)) and fire now (Alertmanager); queue and dead letters; the certificate's days left; the
    maintenance lock (Lease O(lock_name), read directly - absent means none).
  - Read-only, never takes the lock, never fails for a source it cannot reach - that source is a failed access row.
  - An action plugin reads the reports directory O(report_dir) on the controller (where M(apex.ops.apex_report)
    writes them) and passes them to the module.
  - Returns the report as a dict (for JSON and AWX) and as Markdown.
author:
  - Apex platform team (@apex-platform)
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing.
options:
  since:
    description: The window of history, back from now (a duration like C(24h)).
    type: raw
    default: 24h
  report_dir:
    description: The reports directory on the controller; empty leaves the reports out.
    type: path
  reports:
    description: The reports of the window, as the action plugin read them from O(report_dir). Not set by hand.
    type: list
    elements: dict
    default: []
  kube_contexts:
    description: Kubeconfig contexts whose access is verified (C(kubectl get nodes)); empty checks the current one.
    type: list
    elements: str
    default: []
  lock_name:
    description: Name of the maintenance lock Lease in the namespace.
    type: str
    default: apex-ops-lock
  database:
    description: Verify PostgreSQL access.
    type: bool
    default: true
  queue:
    description: Verify Redis access and read the queue and dead letters.
    type: bool
    default: true
  route53:
    description: Verify Route53 access.
    type: bool
    default: true
  route53_zone_id:
    description: Hosted zone read for the Route53 check; empty lists the zones. Default E(APEX_ROUTE53_ZONE_ID).
    type: str
  helm:
    description: Read the Helm release history (needs C(helm-python-sdk); without it the row says so).
    type: bool
    default: true
  helm_release:
    description: Helm release name.
    type: str
    default: apex
  helm_storage_driver:
    description: Where Helm keeps the release history. Default E(HELM_DRIVER), else C(secret).
    type: str
    choices: [secret, configmap, sql]
    default: secret
  helm_sql_connection_string:
    description: Connection string of Helm's C(sql) storage. Default E(HELM_DRIVER_SQL_CONNECTION_STRING).
    type: str
  tls:
    description: Read the certificate's days left (cert-manager Certificate, its Secret and the live endpoint).
    type: bool
    default: true
  tls_certificate:
    description: Name of the cert-manager Certificate (and its Secret) serving the API.
    type: str
    default: apex-tls
  tls_warning_days:
    description: Days left below which the certificate is an attention point.
    type: int
    default: 30
  api_url:
    description: Base URL of the Apex API (its certificate is probed). Empty leaves the endpoint out.
    type: str
    default: ""
  api_hostname:
    description: The name clients use for the API (SNI); empty means the host of O(api_url).
    type: str
    default: ""
  api_ca_file:
    description: CA bundle verifying the API certificate.
    type: path
  prometheus_url:
    description: Prometheus base URL; empty reports the fired alerts as not configured.
    type: str
    default: ""
  alertmanager_url:
    description: Alertmanager base URL; empty reports the firing alerts as not configured.
    type: str
    default: ""
  prometheus_token:
    description: Bearer token for Prometheus and Alertmanager.
    type: str
  prometheus_username:
    description: Basic-auth user for Prometheus and Alertmanager (when no token).
    type: str
  prometheus_password:
    description: Basic-auth password.
    type: str
  prometheus_ca:
    description: CA bundle verifying Prometheus and Alertmanager.
    type: path
  http_timeout:
    description: Seconds per HTTP request (API, Prometheus, Alertmanager).
    type: float
    default: 10.0
  queue_key:
    description: Redis key of the task queue.
    type: str
    default: "apex:tasks:queue"
  dead_letter_key:
    description: Redis key of the dead-letter list.
    type: str
    default: "apex:tasks:dead-letter"
  queue_depth_warning:
    description: Queue depth above which the queue is an attention point (runbook 50).
    type: int
    default: 50
  journal:
    description: The result of M(apex.ops.apex_preflight) (its C(interrupted) and C(interrupted_message)).
    type: dict
    default: {}
  postgres:
    description: PostgreSQL connection (the options of the C(apex.ops.postgres) fragment, with its environment fallbacks).
    type: dict
    default: {}
    suboptions:
      login_host:
        description: Host. Default E(PGHOST), else C(localhost).
        type: str
        default: localhost
      login_port:
        description: Port. Default E(PGPORT), else 5432.
        type: int
        default: 5432
      login_user:
        description: Role. Default E(PGUSER), else C(postgres).
        type: str
        default: postgres
      login_password:
        description: Password. Default E(PGPASSWORD).
        type: str
      login_db:
        description: Database. Default E(PGDATABASE), else C(apex).
        type: str
        default: apex
      ssl_mode:
        description: libpq sslmode. Default E(PGSSLMODE), else C(prefer).
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
      ca_cert:
        description: CA bundle verifying the server certificate. Default E(PGSSLROOTCERT).
        type: path
      connect_timeout:
        description: Seconds to connect.
        type: int
        default: 10
      statement_timeout:
        description: Longest any statement may run.
        type: raw
        default: 5m
      lock_timeout:
        description: Longest any statement waits for a lock.
        type: raw
        default: 10s
  redis:
    description: Redis connection (the options of the C(apex.ops.redis) fragment, with its environment fallbacks).
    type: dict
    default: {}
    suboptions:
      redis_host:
        description: Host. Default E(APEX_REDIS_HOST), else C(localhost).
        type: str
        default: localhost
      redis_port:
        description: Port. Default E(APEX_REDIS_PORT), else 6379.
        type: int
        default: 6379
      redis_password:
        description: Password. Default E(APEX_REDIS_PASSWORD).
        type: str
      redis_db:
        description: Database number.
        type: int
        default: 0
      redis_tls:
        description: Connect with TLS.
        type: bool
        default: false
      redis_ca_file:
        description: CA bundle for TLS.
        type: path
      redis_timeout:
        description: Socket timeout in seconds.
        type: float
        default: 10.0
  s3:
    description:
      - The backup bucket and AWS credentials (the options of the C(apex.ops.s3) fragment, with its environment
        fallbacks); Route53 uses the same credentials and boto3's own endpoint settings.
    type: dict
    default: {}
    suboptions:
      s3_bucket:
        description:
          - Bucket holding the backups. Falls back to E(APEX_S3_BUCKET).
        type: str
      s3_prefix:
        description:
          - Key prefix under which backups are stored.
        type: str
        default: apex
      endpoint_url:
        description:
          - S3 endpoint URL (S3-compatible stores, the lab's moto). Falls back to E(AWS_ENDPOINT_URL_S3), then E(AWS_ENDPOINT_URL).
        type: str
      region:
        description:
          - AWS region. Falls back to E(AWS_REGION), then E(AWS_DEFAULT_REGION).
        type: str
        default: us-east-1
      access_key:
        description:
          - AWS access key id. Falls back to E(AWS_ACCESS_KEY_ID). Never logged or returned.
        type: str
        aliases: [aws_access_key]
      secret_key:
        description:
          - AWS secret access key. Falls back to E(AWS_SECRET_ACCESS_KEY). Never logged or returned.
        type: str
        aliases: [aws_secret_key]
      session_token:
        description:
          - AWS session token. Falls back to E(AWS_SESSION_TOKEN). Never logged or returned.
        type: str
  k8s:
    description: Kubernetes connection of the region's cluster (the options of the C(apex.ops.k8s) fragment).
    type: dict
    default: {}
    suboptions:
      kubeconfig:
        description: Kubeconfig file. Default E(K8S_AUTH_KUBECONFIG), E(KUBECONFIG), else C(~/.kube/config).
        type: path
      context:
        description: Kubeconfig context. Default E(K8S_AUTH_CONTEXT), else the current context.
        type: str
      host:
        description: API server URL, overriding the kubeconfig. Default E(K8S_AUTH_HOST).
        type: str
      api_key:
        description: Bearer token. Default E(K8S_AUTH_API_KEY).
        type: str
      validate_certs:
        description: Verify the API server certificate. Default E(K8S_AUTH_VERIFY_SSL).
        type: bool
        aliases: [verify_ssl]
      ca_cert:
        description: CA bundle of the API server. Default E(K8S_AUTH_SSL_CA_CERT).
        type: path
        aliases: [ssl_ca_cert]
      namespace:
        description: Namespace of the Apex workloads.
        type: str
        default: apex
"""

EXAMPLES = r"""
- name: Shift handoff
  apex.ops.apex_handoff:
    since: 24h
    report_dir: /var/lib/apex-ops/reports
    kube_contexts: [apex-primary, apex-secondary]
    prometheus_url: http://prometheus.monitoring:9090
    alertmanager_url: http://alertmanager.monitoring:9093
    k8s: {namespace: apex}
  register: handoff
"""

RETURN = r"""
report:
  description:
    - The handoff - C(status) (C(attention) when anything in C(attention)), C(window), C(access) (name, status - ok,
      failed, unavailable, not configured - detail), C(changes) (time, category, what, outcome, source; newest first),
      C(alerts) (C(firing), C(fired), each null with a C(*_detail) when not configured), C(queue), C(certificate)
      (C(days_left)), C(lock) (C(open), C(holder), C(annotations), C(expired)), C(journal), C(latest_backup),
      C(attention) (sentences), C(elapsed) (seconds per source).
  returned: always
  type: dict
markdown:
  description: The report as Markdown.
  returned: always
  type: str
"""

import datetime

from ansible.module_utils.basic import env_fallback

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import (
    K8S_ARGSPEC, POSTGRES_ARGSPEC, REDIS_ARGSPEC, S3_ARGSPEC)
from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration
from ansible_collections.apex.ops.plugins.module_utils import handoff_gather, handoff_report

ARGUMENT_SPEC = dict(
    since=dict(type="raw", default="24h"),
    report_dir=dict(type="path"),
    reports=dict(type="list", elements="dict", default=[]),
    kube_contexts=dict(type="list", elements="str", default=[]),
    lock_name=dict(type="str", default="apex-ops-lock"),
    database=dict(type="bool", default=True),
    queue=dict(type="bool", default=True),
    route53=dict(type="bool", default=True),
    route53_zone_id=dict(type="str", fallback=(env_fallback, ["APEX_ROUTE53_ZONE_ID"])),
    helm=dict(type="bool", default=True),
    helm_release=dict(type="str", default="apex"),
    helm_storage_driver=dict(type="str", choices=["secret", "configmap", "sql"], default="secret",
                             fallback=(env_fallback, ["HELM_DRIVER"])),
    helm_sql_connection_string=dict(type="str", no_log=True,
                                    fallback=(env_fallback, ["HELM_DRIVER_SQL_CONNECTION_STRING"])),
    tls=dict(type="bool", default=True),
    tls_certificate=dict(type="str", default="apex-tls"),
    tls_warning_days=dict(type="int", default=30),
    api_url=dict(type="str", default=""),
    api_hostname=dict(type="str", default=""),
    api_ca_file=dict(type="path"),
    prometheus_url=dict(type="str", default=""),
    alertmanager_url=dict(type="str", default=""),
    prometheus_token=dict(type="str", no_log=True),
    prometheus_username=dict(type="str"),
    prometheus_password=dict(type="str", no_log=True),
    prometheus_ca=dict(type="path"),
    http_timeout=dict(type="float", default=10.0),
    queue_key=dict(type="str", default="apex:tasks:queue", no_log=False),
    dead_letter_key=dict(type="str", default="apex:tasks:dead-letter", no_log=False),
    queue_depth_warning=dict(type="int", default=50),
    journal=dict(type="dict", default={}),
    postgres=dict(type="dict", default={}, options=POSTGRES_ARGSPEC),
    redis=dict(type="dict", default={}, options=REDIS_ARGSPEC),
    s3=dict(type="dict", default={}, options=S3_ARGSPEC),
    k8s=dict(type="dict", default={}, options=K8S_ARGSPEC),
)


def main():
    module = ApexModule(ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    try:
        window = parse_duration(p["since"], "since")
    except ValueError as exc:
        module.fail(str(exc))
    # what the shared gathers (health_gather's queue and TLS reads) expect besides the options
    settings = dict(p, processing_pattern="apex:tasks:processing:*", redis_memory_limit=None,
                    api_timeout=p["http_timeout"], tls_critical_days=7)
    gathered, elapsed = handoff_gather.gather(settings, window)
    now = datetime.datetime.now(datetime.timezone.utc)
    report = handoff_report.build(gathered, p["reports"], p["journal"], settings, now - datetime.timedelta(seconds=window),
                                  now, elapsed)
    module.exit_json(changed=False, report=report, markdown=handoff_report.markdown(report))


if __name__ == "__main__":
    main()
