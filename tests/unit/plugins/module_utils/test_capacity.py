"""The capacity report, pure parts: the thresholds table's statuses, the guidelines as recommendations,
cost notes, the node outlook, the guarded expansion's refusals, and the HTML page (self-contained)."""
import pytest

from ansible_collections.apex.ops.plugins.module_utils import capacity_html, capacity_plan as cp

GIB = cp.GIB
SETTINGS = dict(api_deployment="apex-api", worker_deployment="apex-worker", db_storage_bytes=100 * GIB)
LIM = cp.limits({})


def deployment(name, replicas, cpu="500m", mem="1Gi"):
    return dict(kind="Deployment", name=name, desired=replicas,
                resources={"c": {"requests": {"cpu": cpu, "memory": mem}}})


def hpa(name, current, low, high):
    return dict(name=name, target="Deployment/%s" % name, current_replicas=current, min_replicas=low, max_replicas=high,
                cpu_current=70, cpu_target=70)


def kube(api_cpu=70.0, worker_cpu=10.0):
    pods = []
    metrics = []
    for name, count, cpu in (("apex-api", 3, api_cpu), ("apex-worker", 5, worker_cpu)):
        for i in range(count):
            pod = "%s-abc12-%d" % (name, i)
            pods.append(dict(name=pod, owner="ReplicaSet/%s-abc12" % name))
            metrics.append(dict(name=pod, cpu_millicores=5 * cpu, cpu_request_millicores=500, cpu_percent_of_request=cpu,
                                memory_mib=700.0, memory_request_mib=1024.0, memory_percent_of_request=68.4,
                                memory_percent_of_limit=34.2))
    nodes = [dict(name="n%d" % i, ready=True, cordoned=False, cpu_allocatable_millicores=8000,
                  memory_allocatable_mib=32768) for i in range(3)]
    return dict(deployments=[deployment("apex-api", 3), deployment("apex-worker", 5)], statefulsets=[],
                hpas=[hpa("apex-api", 3, 3, 3), hpa("apex-worker", 5, 5, 50)], pods=pods, nodes=nodes,
                metrics=dict(available=True, pods=metrics,
                             nodes=[dict(name="n%d" % i, cpu_millicores=2000, memory_mib=8192) for i in range(3)]))


def gathered(queue=60, free=2 * GIB, connections=85):
    return dict(
        kubernetes=kube(),
        database=dict(connections=dict(total=connections, max_connections=100, database=connections),
                      server=dict(database_size_bytes=GIB, database_size="1 GB")),
        redis=dict(queue=dict(depth=queue), memory=dict(used_bytes=GIB, used_human="1G", limit_bytes=4 * GIB,
                                                        maxmemory_bytes=0)),
        rds=dict(identifier="apex-prod", status="available", allocated_gib=20, max_allocated_gib=None,
                 pending_allocated_gib=None, free_bytes=free))


@pytest.mark.parametrize("value, expected", [(None, "unknown"), (69.9, "ok"), (70, "warning"), (79.9, "warning"),
                                             (80, "action"), (100, "action")])
def test_status_levels(value, expected):
    assert cp.status_of(value, 70, 80) == expected


def test_unknown_thresholds_are_refused():
    with pytest.raises(cp.CapacityError, match="unknown thresholds: pods_max"):
        cp.limits({"pods_max": 3})
    assert cp.limits({"pods_threshold": 90})["pods_threshold"] == 90


def test_table_recommendations_cost_notes_and_outlook():
    report = cp.build(gathered(), LIM, SETTINGS)
    rows = dict((r["key"], r) for r in report["table"])
    assert (rows["api_pods"]["percent"], rows["api_pods"]["status"]) == (100.0, "action")
    assert (rows["worker_pods"]["percent"], rows["worker_pods"]["status"]) == (10.0, "ok")
    assert (rows["db_connections"]["percent"], rows["db_connections"]["status"]) == (85.0, "action")
    assert rows["db_connections"]["threshold"] == "80 connections"
    assert (rows["db_storage"]["used"], rows["db_storage"]["percent"]) == (18 * GIB, 90.0)
    assert (rows["redis_memory"]["percent"], rows["node_cpu"]["percent"], rows["node_memory"]["percent"]) == (25.0, 25.0, 25.0)
    texts = [r["text"] for r in report["recommendations"]]
    assert texts[0].startswith("API Pods at 100.0% of the HPA max (3 of 3-3 (HPA)): increase the HPA max, e.g. to 5")
    assert "Worker queue depth at 60 (warning above 50): Add workers (ansible-playbook apex.ops.alert_queue_backlog)" in texts
    assert "DB connections at 85.0% (critical above 80%): Optimize queries, increase pool" in texts
    assert [r["suggested_gib"] for r in report["recommendations"] if r.get("suggested_gib")] == [36]
    assert [(n["workload"], n["resource"], n["suggested"]) for n in report["cost_notes"]] == [("apex-worker", "cpu", 80)]
    outlook = report["node_outlook"]
    # requests now 8 x 500m = 4000m of 3 x 8000m; at HPA max (3 + 50) x 500m = 26500m -> 26500 / 6400 = 5 nodes
    assert (outlook["nodes"], outlook["nodes_needed_now"], outlook["nodes_needed_at_hpa_max"]) == (3, 1, 5)
    assert any(r["metric"] == "Node count" for r in report["recommendations"])
    assert report["status"] == "action"
    lines = cp.summary_lines(report)
    assert lines[0] == "capacity: ACTION" and any(line.startswith("cost: apex-worker") for line in lines)


def test_storage_without_cloudwatch_and_without_rds():
    data = gathered(free=None)
    assert cp.storage_figures(data, SETTINGS)["used_bytes"] == GIB
    data.pop("rds")
    figures = cp.storage_figures(data, SETTINGS)
    assert figures["allocated_bytes"] == 100 * GIB and figures["source"].startswith("volume")
    data["rds"] = dict(failed=True, msg="DBInstanceNotFound")
    assert "RDS not read (DBInstanceNotFound)" in cp.storage_figures(data, SETTINGS)["source"]


def test_failed_parts_are_unknown_rows_not_errors():
    report = cp.build(dict(kubernetes=dict(failed=True, msg="no kubeconfig"), database=dict(failed=True, msg="down"),
                           redis=dict(failed=True, msg="down")), LIM, SETTINGS)
    assert set(r["status"] for r in report["table"]) == {"unknown"}
    assert report["errors"] == {"kubernetes": "no kubeconfig", "database": "down", "redis": "down"}


RDS = dict(identifier="apex-prod", status="available", allocated_gib=100, max_allocated_gib=None, pending_allocated_gib=None)


@pytest.mark.parametrize("rds, gib, bound, why", [
    (None, 200, 400, "no RDS instance"),
    (dict(RDS, status="modifying"), 200, 400, "is modifying, not available"),
    (dict(RDS, pending_allocated_gib=150), 200, 400, "already has a storage change to 150 GiB pending"),
    (RDS, 100, 400, "not an expansion"),
    (RDS, 105, 400, "under the 10% growth AWS requires (at least 110 GiB)"),
    (RDS, 500, 400, "above the bound of 400 GiB"),
    (RDS, 70000, 100000, "above the bound of 65536 GiB"),
    (dict(RDS, max_allocated_gib=150), 200, 400, "above its MaxAllocatedStorage of 150 GiB"),
])
def test_expansion_refusals(rds, gib, bound, why):
    with pytest.raises(cp.CapacityError, match=why.replace("(", r"\(").replace(")", r"\)")):
        cp.plan_expansion(rds, gib, bound)


def test_expansion_plan_and_suggested_size():
    assert cp.plan_expansion(RDS, 200, 200) == dict(identifier="apex-prod", from_gib=100, to_gib=200)
    assert cp.suggested_storage_gib(90 * GIB, 100, 50) == 180
    assert cp.suggested_storage_gib(10 * GIB, 100, 50) == 110  # never under the 10 % AWS requires


def test_html_is_self_contained_and_escaped():
    report = cp.build(gathered(), LIM, SETTINGS)
    report.update(namespace="apex", finished="<now>")
    page = capacity_html.render(report)
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 2
    assert "&lt;now&gt;" in page and "<now>" not in page
    assert "<script" not in page and "src=" not in page and "href=" not in page and "@import" not in page
    assert page.count('fill="%s"' % capacity_html.COLOURS["action"]) == 3  # API pods, DB connections, DB storage
