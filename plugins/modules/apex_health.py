#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_health
short_description: The daily health check - every gather at once, every check judged
version_added: 0.3.0
description:
  - Gathers, concurrently in one process on the target, what the read-only modules of each area read - the API health
    endpoints (one GET per path), the task queue and Redis (as M(apex.ops.apex_queue) C(state=facts)), PostgreSQL (as
    M(apex.ops.apex_db_maint) C(state=facts)), TLS (as M(apex.ops.apex_cert) C(state=facts)) and the namespace (as
    M(apex.ops.apex_info)) - and judges every check against warning and critical thresholds.
  - The wall time is the slowest part, not the sum of five module round trips.
  - A part that cannot run (Redis down, no Kubernetes access) is itself a critical check carrying the error; the module
    never fails for it, so the report is always written.
  - The procedure journal is not read here - O(journal) is what M(apex.ops.apex_preflight) found, reported with the
    Kubernetes part as the check C(procedure interrupted), critical when a procedure was left half-done.
  - Used by the C(apex.ops.health_check) role; the report is written by M(apex.ops.apex_report).
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
  parts:
    description: The parts to check.
    type: list
    elements: str
    choices: [api, queue, database, tls, kubernetes]
    default: [api, queue, database, tls, kubernetes]
  api_url:
    description: Base URL of the Apex API. Empty makes the API part one C(unknown) check, and skips the endpoint in TLS.
    type: str
    default: ""
  api_paths:
    description: API paths probed; each must answer 200.
    type: list
    elements: str
    default: [/health, /ready, /live]
  api_ok_statuses:
    description:
      - Values of the JSON body's C(status) that count as healthy. A 200 whose body reports another status, C(ready=false)
        or a component with C(ok=false) is a warning; anything but 200 is critical.
    type: list
    elements: str
    default: [healthy, ok, alive, ready]
  api_timeout:
    description: Seconds per API request and for the TLS handshake with the endpoint.
    type: float
    default: 10.0
  api_ca_file:
    description: CA bundle verifying the API certificate; empty uses the system trust store.
    type: path
  api_validate_certs:
    description: Verify the API certificate in the health probes.
    type: bool
    default: true
  api_hostname:
    description: The name clients use for the API (SNI, and the certificate must cover it). Empty means the host of O(api_url).
    type: str
    default: ""
  queue_key:
    description: Redis key of the task queue.
    type: str
    default: "apex:tasks:queue"
  dead_letter_key:
    description: Redis key of the dead-letter list.
    type: str
    default: "apex:tasks:dead-letter"
  processing_pattern:
    description: SCAN pattern of the per-worker processing lists (tasks in flight).
    type: str
    default: "apex:tasks:processing:*"
  redis_memory_limit:
    description: Memory available to Redis (e.g. C(4GB)) when Redis has no C(maxmemory); used for the percent.
    type: str
  db_long_query_threshold:
    description: A statement running longer than this counts as long-running (a duration like C(5m)).
    type: raw
    default: 5m
  db_idle_threshold:
    description: A connection idle in transaction for longer than this is counted (a duration like C(10m)).
    type: raw
    default: 10m
  tls_certificate:
    description: Name of the cert-manager Certificate (and its Secret) serving the API.
    type: str
    default: apex-tls
  thresholds:
    description:
      - Warning and critical levels by name, for example C(queue_depth_warning), C(db_connections_critical),
        C(tls_warning_days), C(k8s_hpa_critical); also C(db_storage_bytes) (0 skips the storage check) and
        C(db_expected_replicas). Unknown names are refused.
      - A value above a level counts (for TLS, days left below it); null means no such level.
      - Names not given keep the runbook's levels (the defaults of the C(apex.ops.health_check) role).
    type: dict
    default: {}
  journal:
    description: The result of M(apex.ops.apex_preflight) (its C(interrupted) and C(interrupted_message)).
    type: dict
    default: {}
  started:
    description: When the run started (ISO 8601), copied into the report.
    type: str
  report_file:
    description: Where the report will be written, copied into the report and the summary.
    type: str
  postgres:
    description: PostgreSQL connection (the options of the C(apex.ops.postgres) fragment; unset ones fall back to E(PGHOST) and so on).
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
    description: Redis connection (the options of the C(apex.ops.redis) fragment; unset ones fall back to E(APEX_REDIS_HOST) and so on).
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
  k8s:
    description: Kubernetes connection (the options of the C(apex.ops.k8s) fragment; unset ones fall back to E(KUBECONFIG) and so on).
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
- name: Gather every part at once and judge the checks
  apex.ops.apex_health:
    api_url: https://apex.yourdomain.com
    thresholds:
      queue_depth_warning: 50
      queue_depth_critical: 100
    journal: "{{ preflight }}"
    postgres:
      login_host: postgresql.apex.internal
      login_password: "{{ vault_apex_pg_password }}"
  register: health

- name: Report
  apex.ops.apex_report:
    procedure: health_check
    report: "{{ health.report }}"
    dir: /var/lib/apex-ops/reports
"""

RETURN = r"""
report:
  description: The judged report - C(status) (the worst check; C(unknown) counts as a warning), C(counts) per status,
    C(checks) (name, group, value, unit, warning, critical, status, detail), C(problems) (names of the checks not ok),
    C(started), C(finished), C(report_file).
  returned: always
  type: dict
  sample:
    status: warning
    counts: {ok: 27, warning: 1, critical: 0, unknown: 0}
    problems: [dead letters]
    checks:
      - {name: dead letters, group: queue, value: 3, unit: tasks, warning: 0, critical: 100, status: warning,
         detail: "apex:tasks:dead-letter"}
summary:
  description: The report as lines for the console, one per check, headed by the overall status.
  returned: always
  type: list
  elements: str
elapsed:
  description: Seconds per part (the slowest is the module's wall time).
  returned: always
  type: dict
"""

import datetime

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC, POSTGRES_ARGSPEC, REDIS_ARGSPEC
from ansible_collections.apex.ops.plugins.module_utils import health_checks as hc
from ansible_collections.apex.ops.plugins.module_utils import health_gather

ARGUMENT_SPEC = dict(
    parts=dict(type="list", elements="str", choices=list(health_gather.PARTS), default=list(health_gather.PARTS)),
    api_url=dict(type="str", default=""),
    api_paths=dict(type="list", elements="str", default=list(hc.DEFAULT_API_PATHS)),
    api_ok_statuses=dict(type="list", elements="str", default=list(hc.DEFAULT_API_OK_STATUSES)),
    api_timeout=dict(type="float", default=10.0),
    api_ca_file=dict(type="path"),
    api_validate_certs=dict(type="bool", default=True),
    api_hostname=dict(type="str", default=""),
    queue_key=dict(type="str", default="apex:tasks:queue", no_log=False),
    dead_letter_key=dict(type="str", default="apex:tasks:dead-letter", no_log=False),
    processing_pattern=dict(type="str", default="apex:tasks:processing:*"),
    redis_memory_limit=dict(type="str"),
    db_long_query_threshold=dict(type="raw", default="5m"),
    db_idle_threshold=dict(type="raw", default="10m"),
    tls_certificate=dict(type="str", default="apex-tls"),
    thresholds=dict(type="dict", default={}),
    journal=dict(type="dict", default={}),
    started=dict(type="str"),
    report_file=dict(type="str"),
    postgres=dict(type="dict", default={}, options=POSTGRES_ARGSPEC),
    redis=dict(type="dict", default={}, options=REDIS_ARGSPEC),
    k8s=dict(type="dict", default={}, options=K8S_ARGSPEC),
)


def main():
    module = ApexModule(ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    try:
        limits = hc.thresholds(p["thresholds"])
    except ValueError as exc:
        module.fail(str(exc))
    settings = dict(p, tls_warning_days=limits["tls_warning_days"], tls_critical_days=limits["tls_critical_days"])
    gathered, elapsed = health_gather.gather(settings, p["parts"])
    records = hc.checks(gathered, limits, settings)
    if "kubernetes" in p["parts"]:  # the journal lives in the cluster: part of the Kubernetes checks
        records += hc.journal_checks(p["journal"])
    finished = datetime.datetime.now(datetime.timezone.utc).isoformat()
    report = hc.report(records, started=p["started"], finished=finished, report_file=p["report_file"])
    module.exit_json(changed=False, report=report, summary=hc.summary_lines(report), elapsed=elapsed)


if __name__ == "__main__":
    main()
