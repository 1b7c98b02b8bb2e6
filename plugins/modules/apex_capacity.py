#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_capacity
short_description: The capacity report - thresholds table, recommendations, cost notes, RDS headroom; RDS storage expansion
version_added: 0.4.0
description:
  - O(state=facts) reads, concurrently in one process, the namespace with C(metrics.k8s.io) (as M(apex.ops.apex_info)),
    PostgreSQL (as M(apex.ops.apex_db_maint)), Redis (as M(apex.ops.apex_queue)) and the RDS instance
    (C(DescribeDBInstances), CloudWatch C(FreeStorageSpace)), and returns the runbook's capacity table (current use,
    threshold, action point), its scaling guidelines applied as recommendations, cost notes (workloads using well
    under their requests), the node-count outlook and the daily figures - as data and as a self-contained HTML page
    with inline SVG charts.
  - O(state=expand) grows the RDS instance's C(AllocatedStorage) to O(expand_storage_gib) - only with O(confirm)
    naming the instance, only upwards by at least the 10 % AWS requires, never above O(max_storage_gib) or the
    instance's C(MaxAllocatedStorage), never while another storage change is pending. Check mode plans only.
author:
  - Apex platform team (@apex-platform)
attributes:
  check_mode:
    support: full
    description: Facts are read-only; an expansion in check mode returns its plan and changes nothing.
  diff_mode:
    support: none
    description: No diff.
options:
  state:
    description: C(facts) reads and judges; C(expand) grows the RDS storage.
    type: str
    choices: [facts, expand]
    default: facts
  rds_instance:
    description: RDS instance identifier of the database; empty judges storage against O(db_storage_bytes).
    type: str
    default: ""
  expand_storage_gib:
    description: New C(AllocatedStorage) in GiB (O(state=expand)).
    type: int
  confirm:
    description: Must equal O(rds_instance) for O(state=expand) to change anything.
    type: str
    default: ""
  max_storage_gib:
    description: Upper bound of an expansion in GiB; 0 means twice the current size.
    type: int
    default: 0
  apply_immediately:
    description: Apply the storage change now rather than in the next maintenance window.
    type: bool
    default: true
  thresholds:
    description:
      - Levels in percent by name (C(pods_threshold), C(db_storage_critical), C(cost_cpu_percent), C(queue_depth_warning)
        ...; the names and the runbook's values are in C(module_utils/capacity_plan.py) DEFAULT_LIMITS). Unknown names
        are refused.
    type: dict
    default: {}
  api_deployment:
    description: The API Deployment (its HPA gives the API Pods row).
    type: str
    default: apex-api
  worker_deployment:
    description: The worker Deployment.
    type: str
    default: apex-worker
  db_storage_bytes:
    description: Size of the database volume when there is no RDS instance (0 leaves storage unjudged).
    type: int
    default: 107374182400
  redis_memory_limit:
    description: Memory available to Redis (e.g. C(4GB)) when Redis has no C(maxmemory).
    type: str
    default: 4GB
  queue_key:
    description: Redis key of the task queue.
    type: str
    default: "apex:tasks:queue"
  dead_letter_key:
    description: Redis key of the dead-letter list.
    type: str
    default: "apex:tasks:dead-letter"
  finished_label:
    description: Text naming the run in the HTML page (for example the report time).
    type: str
    default: ""
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
    description: AWS credentials and region (the options of the C(apex.ops.s3) fragment); RDS and CloudWatch use boto3's own endpoints.
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
    description: Kubernetes connection (the options of the C(apex.ops.k8s) fragment).
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
- name: Capacity report
  apex.ops.apex_capacity:
    rds_instance: apex-prod
    k8s: {namespace: apex}
  register: capacity

- name: Expand the database storage to 200 GiB
  apex.ops.apex_capacity:
    state: expand
    rds_instance: apex-prod
    expand_storage_gib: 200
    confirm: apex-prod
"""

RETURN = r"""
report:
  description:
    - O(state=facts) - C(status) (ok, warning, action), C(table) (key, resource, current, percent, threshold,
      action_point, status, detail), C(recommendations) (metric, level, text), C(cost_notes), C(workloads) (use per
      workload as percent of the requests), C(node_outlook), C(daily) (the runbook's daily script as data), C(rds),
      C(errors) (parts that could not be read).
  returned: state=facts
  type: dict
html:
  description: The report as a self-contained HTML page (inline SVG, no external asset).
  returned: state=facts
  type: str
summary:
  description: The report as lines for the console.
  returned: state=facts
  type: list
  elements: str
expansion:
  description: O(state=expand) - the plan (C(identifier), C(from_gib), C(to_gib)) and, unless in check mode, C(after) as RDS describes it.
  returned: state=expand
  type: dict
refused:
  description: Why an expansion was refused before anything changed.
  returned: failure
  type: str
"""

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import (
    K8S_ARGSPEC, POSTGRES_ARGSPEC, REDIS_ARGSPEC, S3_ARGSPEC)
from ansible_collections.apex.ops.plugins.module_utils import capacity_gather, capacity_html, capacity_plan

ARGUMENT_SPEC = dict(
    state=dict(type="str", choices=["facts", "expand"], default="facts"),
    rds_instance=dict(type="str", default=""),
    expand_storage_gib=dict(type="int"),
    confirm=dict(type="str", default=""),
    max_storage_gib=dict(type="int", default=0),
    apply_immediately=dict(type="bool", default=True),
    thresholds=dict(type="dict", default={}),
    api_deployment=dict(type="str", default="apex-api"),
    worker_deployment=dict(type="str", default="apex-worker"),
    db_storage_bytes=dict(type="int", default=107374182400),
    redis_memory_limit=dict(type="str", default="4GB"),
    queue_key=dict(type="str", default="apex:tasks:queue", no_log=False),
    dead_letter_key=dict(type="str", default="apex:tasks:dead-letter", no_log=False),
    finished_label=dict(type="str", default=""),
    postgres=dict(type="dict", default={}, options=POSTGRES_ARGSPEC),
    redis=dict(type="dict", default={}, options=REDIS_ARGSPEC),
    s3=dict(type="dict", default={}, options=S3_ARGSPEC),
    k8s=dict(type="dict", default={}, options=K8S_ARGSPEC),
)


def expand(module, params):
    try:
        rds = capacity_gather.rds_instance(params) if params["rds_instance"] else None
        bound = params["max_storage_gib"] or 2 * (rds or {}).get("allocated_gib", 0)
        plan = capacity_plan.plan_expansion(rds, params["expand_storage_gib"], bound)
    except capacity_plan.CapacityError as exc:
        module.fail(str(exc), refused=str(exc))
    if params["confirm"] != plan["identifier"]:
        why = ("expanding RDS %s from %d to %d GiB needs confirm=%s (capacity_report_confirm_expand)"
               % (plan["identifier"], plan["from_gib"], plan["to_gib"], plan["identifier"]))
        module.fail(why, refused=why, expansion=plan)
    if module.check_mode:
        module.exit_json(changed=True, expansion=plan)
    try:
        after = capacity_gather.expand_storage(params, plan)
    except Exception as exc:
        module.fail("ModifyDBInstance of %s failed" % plan["identifier"], exception=exc, expansion=plan)
    module.exit_json(changed=True, expansion=dict(plan, after=after))


def main():
    module = ApexModule(ARGUMENT_SPEC, supports_check_mode=True,
                        required_if=[("state", "expand", ("expand_storage_gib", "rds_instance"))])
    p = module.params
    try:
        lim = capacity_plan.limits(p["thresholds"])
    except capacity_plan.CapacityError as exc:
        module.fail(str(exc))
    # what the shared gathers (health_gather's database and queue reads) expect besides the options
    params = dict(p, processing_pattern="apex:tasks:processing:*", db_idle_threshold="10m", db_long_query_threshold="5m")
    if p["state"] == "expand":
        expand(module, params)
    gathered, elapsed = capacity_gather.gather(params)
    report = capacity_plan.build(gathered, lim, params)
    report.update(namespace=p["k8s"]["namespace"], finished=p["finished_label"], elapsed=elapsed)
    module.exit_json(changed=False, report=report, html=capacity_html.render(report),
                     summary=capacity_plan.summary_lines(report))


if __name__ == "__main__":
    main()
