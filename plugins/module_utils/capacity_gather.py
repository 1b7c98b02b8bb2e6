# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The capacity report's reads, all at once (apex_capacity), and the one change it can make.

One thread per part: the namespace with metrics.k8s.io (as ``apex_info``), PostgreSQL (as
``apex_db_maint state=facts``), Redis (as ``apex_queue state=facts``) and the RDS instance
(``DescribeDBInstances`` and CloudWatch's ``FreeStorageSpace``). A part that fails becomes
``{failed, msg}`` (``health_gather.run_all``); ``capacity_plan`` says what could not be judged.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible_collections.apex.ops.plugins.module_utils import aws_clients, health_gather


def kubernetes(params):
    from ansible_collections.apex.ops.plugins.module_utils import k8s, k8s_info

    client = k8s.connect(params["k8s"], request_timeout=15.0)
    try:
        return k8s_info.gather(client, params["k8s"]["namespace"],
                               sections=["workloads", "pods", "hpas", "nodes", "metrics"])
    finally:
        client.close()


def rds_instance(params, client=None):
    """The instance's storage: allocated, autoscaling bound, pending change, and the newest FreeStorageSpace
    datapoint of the last hour (None when CloudWatch has none)."""
    client = client or aws_clients.client(params["s3"], "rds")
    found = client.describe_db_instances(DBInstanceIdentifier=params["rds_instance"])["DBInstances"][0]
    pending = (found.get("PendingModifiedValues") or {}).get("AllocatedStorage")
    out = dict(identifier=found["DBInstanceIdentifier"], status=found.get("DBInstanceStatus"),
               engine=found.get("Engine"), instance_class=found.get("DBInstanceClass"),
               allocated_gib=int(found["AllocatedStorage"]), max_allocated_gib=found.get("MaxAllocatedStorage"),
               storage_type=found.get("StorageType"), pending_allocated_gib=pending, free_bytes=None)
    now = datetime.datetime.now(datetime.timezone.utc)
    points = aws_clients.client(params["s3"], "cloudwatch").get_metric_statistics(
        Namespace="AWS/RDS", MetricName="FreeStorageSpace", StartTime=now - datetime.timedelta(hours=1), EndTime=now,
        Period=300, Statistics=["Minimum"],
        Dimensions=[{"Name": "DBInstanceIdentifier", "Value": out["identifier"]}]).get("Datapoints") or []
    if points:
        newest = max(points, key=lambda p: p["Timestamp"])
        out.update(free_bytes=int(newest["Minimum"]), free_at=newest["Timestamp"].isoformat())
    return out


def gather(params):
    jobs = dict(kubernetes=lambda: kubernetes(params), database=lambda: health_gather.database_facts(params),
                redis=lambda: health_gather.queue_facts(params))
    if params["rds_instance"]:
        jobs["rds"] = lambda: rds_instance(params)
    return health_gather.run_all(jobs)


def expand_storage(params, plan):
    """ModifyDBInstance AllocatedStorage (applied now unless ``apply_immediately`` is false), then the instance
    as RDS describes it afterwards."""
    client = aws_clients.client(params["s3"], "rds")
    client.modify_db_instance(DBInstanceIdentifier=plan["identifier"], AllocatedStorage=plan["to_gib"],
                              ApplyImmediately=params["apply_immediately"])
    found = client.describe_db_instances(DBInstanceIdentifier=plan["identifier"])["DBInstances"][0]
    return dict(identifier=plan["identifier"], allocated_gib=int(found["AllocatedStorage"]),
                pending_allocated_gib=(found.get("PendingModifiedValues") or {}).get("AllocatedStorage"),
                status=found.get("DBInstanceStatus"))
