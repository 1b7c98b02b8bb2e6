# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The capacity report (apex_capacity), pure: the runbook's "Current Capacity Metrics" table with
current use, threshold and action point; its "When to Scale" guidelines as recommendations with
numbers; cost notes (workloads using well under their requests); the node-count outlook; and the
storage expansion plan with its bounds. Inputs are what ``capacity_gather`` read; unit-tested.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import mebibytes, millicores

GIB = 1024 ** 3
RDS_MAX_GIB = 65536  # RDS for PostgreSQL: 64 TiB


def min_growth_gib(current_gib):
    """The smallest AllocatedStorage AWS accepts as an increase: +10 %, rounded up (integers: 100 * 1.1 is not 110.0)."""
    return -(-int(current_gib) * 11 // 10)


# the levels (percent) the thresholds table and the guidelines give; every one is overridable
DEFAULT_LIMITS = dict(
    pods_warning=70, pods_threshold=80,
    db_connections_warning=60, db_connections_threshold=80,
    db_storage_warning=70, db_storage_threshold=80, db_storage_critical=85,
    redis_memory_warning=70, redis_memory_threshold=80,
    node_cpu_warning=70, node_cpu_threshold=80,
    node_memory_warning=75, node_memory_threshold=85,
    api_cpu_warning=70, api_cpu_critical=85,
    api_memory_warning=75, api_memory_critical=90,
    queue_depth_warning=50, queue_depth_critical=100,
    cost_cpu_percent=30, cost_memory_percent=30,
    storage_target_percent=50,
)


class CapacityError(ValueError):
    """A request refused before anything changed."""


def limits(overrides):
    unknown = sorted(set(overrides or {}) - set(DEFAULT_LIMITS))
    if unknown:
        raise CapacityError("unknown thresholds: %s (known: %s)" % (", ".join(unknown), ", ".join(sorted(DEFAULT_LIMITS))))
    out = dict(DEFAULT_LIMITS)
    out.update(dict((k, float(v)) for k, v in (overrides or {}).items() if v is not None))
    return out


def percent(used, capacity):
    return round(100.0 * used / capacity, 1) if used is not None and capacity else None


def status_of(value, warning, threshold):
    """``ok`` below the warning level, ``warning`` from it, ``action`` from the action point on."""
    if value is None:
        return "unknown"
    if value >= threshold:
        return "action"
    return "warning" if value >= warning else "ok"


def _failed(part):
    return part is None or (isinstance(part, dict) and part.get("failed"))


def _row(key, resource, current, used, capacity, unit, warning, threshold, threshold_text, action_point, detail=None):
    value = percent(used, capacity)
    return dict(key=key, resource=resource, current=current, used=used, capacity=capacity, unit=unit, percent=value,
                warning_percent=warning, threshold_percent=threshold, threshold=threshold_text,
                action_point=action_point, status=status_of(value, warning, threshold), detail=detail)


def _unknown(key, resource, threshold_text, action_point, why):
    return dict(key=key, resource=resource, current=None, used=None, capacity=None, unit=None, percent=None,
                warning_percent=None, threshold_percent=None, threshold=threshold_text, action_point=action_point,
                status="unknown", detail=why)


def hpa_of(info, workload):
    for hpa in info.get("hpas") or []:
        if hpa["target"] == "Deployment/%s" % workload:
            return hpa
    return None


def pod_rows(info, lim, api, worker):
    rows = []
    for key, resource, name in (("api_pods", "API Pods", api), ("worker_pods", "Worker Pods", worker)):
        hpa = hpa_of(info, name) if info else None
        if hpa is None:
            rows.append(_unknown(key, resource, "80% of max", "Increase HPA max",
                                 "no HPA targets Deployment/%s" % name if info else "Kubernetes not read"))
            continue
        current = "%s of %s-%s (HPA)" % (hpa["current_replicas"], hpa["min_replicas"], hpa["max_replicas"])
        rows.append(_row(key, resource, current,
                         hpa["current_replicas"], hpa["max_replicas"], "pods", lim["pods_warning"],
                         lim["pods_threshold"], "%d%% of max" % lim["pods_threshold"], "Increase HPA max",
                         "HPA %s" % hpa["name"]))
    return rows


def node_totals(info):
    """Sum of the nodes' allocatable and (metrics.k8s.io) usage: ``(cpu_m, mem_mib, used_cpu_m, used_mib, ready)``."""
    nodes = [n for n in info.get("nodes") or [] if n.get("ready") and not n.get("cordoned")]
    alloc_cpu = sum(n.get("cpu_allocatable_millicores") or 0 for n in nodes)
    alloc_mem = sum(n.get("memory_allocatable_mib") or 0 for n in nodes)
    ready = set(n["name"] for n in nodes)
    usage = [u for u in (info.get("metrics") or {}).get("nodes") or [] if u["name"] in ready]
    used_cpu = sum(u["cpu_millicores"] for u in usage) if usage else None
    used_mem = sum(u["memory_mib"] for u in usage) if usage else None
    return alloc_cpu, alloc_mem, used_cpu, used_mem, len(nodes)


def capacity_table(gathered, lim, settings):
    """The runbook's capacity table, one row per resource, with today's figures."""
    info = None if _failed(gathered.get("kubernetes")) else gathered["kubernetes"]
    rows = pod_rows(info, lim, settings["api_deployment"], settings["worker_deployment"])
    db = None if _failed(gathered.get("database")) else gathered["database"]
    if db:
        conns = db["connections"]
        rows.append(_row("db_connections", "Database Connections", "%s of %s max" % (conns["total"], conns["max_connections"]),
                         conns["total"], conns["max_connections"], "connections", lim["db_connections_warning"],
                         lim["db_connections_threshold"], "%d connections" % round(
                             conns["max_connections"] * lim["db_connections_threshold"] / 100.0), "Increase pool size"))
    else:
        rows.append(_unknown("db_connections", "Database Connections", "80 connections", "Increase pool size",
                             (gathered.get("database") or {}).get("msg", "not read")))
    storage = storage_figures(gathered, settings)
    if storage["used_bytes"] is not None and storage["allocated_bytes"]:
        current = "%.1f of %.0f GiB" % (storage["used_bytes"] / GIB, storage["allocated_bytes"] / GIB)
        rows.append(_row("db_storage", "Database Storage", current,
                         storage["used_bytes"], storage["allocated_bytes"], "bytes", lim["db_storage_warning"],
                         lim["db_storage_threshold"], "%d%% full" % lim["db_storage_threshold"], "Expand volume",
                         storage["source"]))
    else:
        rows.append(_unknown("db_storage", "Database Storage", "80% full", "Expand volume", storage["source"]))
    redis = None if _failed(gathered.get("redis")) else gathered["redis"]
    if redis and redis["memory"]["limit_bytes"]:
        mem = redis["memory"]
        rows.append(_row("redis_memory", "Redis Memory", "%s of %.1f GiB" % (mem["used_human"], mem["limit_bytes"] / float(GIB)),
                         mem["used_bytes"], mem["limit_bytes"], "bytes", lim["redis_memory_warning"],
                         lim["redis_memory_threshold"], "%d%% used" % lim["redis_memory_threshold"], "Scale Redis",
                         "maxmemory" if mem["maxmemory_bytes"] else "capacity_report_redis_memory_limit"))
    else:
        rows.append(_unknown("redis_memory", "Redis Memory", "80% used", "Scale Redis",
                             (gathered.get("redis") or {}).get("msg", "no memory limit known")))
    if info and (info.get("metrics") or {}).get("available"):
        alloc_cpu, alloc_mem, used_cpu, used_mem, count = node_totals(info)
        note = "one sample of metrics.k8s.io over %d ready node(s); the runbook's threshold is sustained use" % count
        rows.append(_row("node_cpu", "Node CPU", "%dm of %dm" % (used_cpu or 0, alloc_cpu), used_cpu, alloc_cpu, "millicores",
                         lim["node_cpu_warning"], lim["node_cpu_threshold"], "%d%% sustained" % lim["node_cpu_threshold"],
                         "Add nodes", note))
        rows.append(_row("node_memory", "Node Memory", "%d of %d MiB" % (used_mem or 0, alloc_mem), used_mem, alloc_mem, "MiB",
                         lim["node_memory_warning"], lim["node_memory_threshold"],
                         "%d%% sustained" % lim["node_memory_threshold"], "Add nodes", note))
    else:
        why = "metrics.k8s.io not served: %s" % ((info or {}).get("metrics") or {}).get("error") if info else "Kubernetes not read"
        rows.append(_unknown("node_cpu", "Node CPU", "80% sustained", "Add nodes", why))
        rows.append(_unknown("node_memory", "Node Memory", "85% sustained", "Add nodes", why))
    return rows


def storage_figures(gathered, settings):
    """Database storage: allocated from RDS (else the configured volume size), used from CloudWatch's
    FreeStorageSpace (else the PostgreSQL database sizes, which leave out WAL and logs)."""
    rds = gathered.get("rds")
    db = None if _failed(gathered.get("database")) else gathered["database"]
    pg_used = db["server"].get("cluster_size_bytes") or db["server"].get("database_size_bytes") if db else None
    if rds is not None and not _failed(rds):
        allocated = rds["allocated_gib"] * GIB
        if rds.get("free_bytes") is not None:
            return dict(allocated_bytes=allocated, used_bytes=allocated - rds["free_bytes"],
                        source="RDS %s: AllocatedStorage, CloudWatch FreeStorageSpace" % rds["identifier"])
        return dict(allocated_bytes=allocated, used_bytes=pg_used,
                    source="RDS %s: AllocatedStorage; used = PostgreSQL database sizes (no FreeStorageSpace datapoint)"
                    % rds["identifier"])
    volume = settings.get("db_storage_bytes") or None
    why = "volume capacity_report_db_storage_bytes; used = PostgreSQL database sizes"
    if rds is not None:
        why = "RDS not read (%s); %s" % (rds.get("msg"), why)
    return dict(allocated_bytes=volume, used_bytes=pg_used, source=why)


def suggested_storage_gib(used_bytes, allocated_gib, target_percent):
    """A size that brings use down to ``target_percent`` - at least the 10 % growth AWS requires."""
    need = int(math.ceil(used_bytes / float(GIB) / (target_percent / 100.0)))
    return min(max(need, min_growth_gib(allocated_gib)), RDS_MAX_GIB)


def _avg(values):
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 1) if values else None


def workload_of(pod):
    """``apex-api`` from the owner ``ReplicaSet/apex-api-7d9f8c6b5`` (the pod-template hash dropped)."""
    owner = pod.get("owner") or ""
    kind, dummy, name = owner.partition("/")
    if kind == "ReplicaSet" and "-" in name:
        return name.rsplit("-", 1)[0]
    return name or pod.get("name")


def workload_usage(info):
    """Per workload: pods, average CPU and memory use as percent of the requests, and the figures behind them."""
    owners = dict((p["name"], workload_of(p)) for p in info.get("pods") or [])
    groups = {}
    for usage in (info.get("metrics") or {}).get("pods") or []:
        groups.setdefault(owners.get(usage["name"], usage["name"]), []).append(usage)
    out = {}
    for name, pods in sorted(groups.items()):
        out[name] = dict(
            pods=len(pods),
            cpu_millicores=_avg(u["cpu_millicores"] for u in pods),
            cpu_request_millicores=_avg(u.get("cpu_request_millicores") for u in pods),
            cpu_percent_of_request=_avg(u.get("cpu_percent_of_request") for u in pods),
            memory_mib=_avg(u["memory_mib"] for u in pods),
            memory_request_mib=_avg(u.get("memory_request_mib") for u in pods),
            memory_percent_of_request=_avg(u.get("memory_percent_of_request") for u in pods),
            memory_percent_of_limit=_avg(u.get("memory_percent_of_limit") for u in pods),
        )
    return out


def cost_notes(usage, lim):
    """Workloads whose pods use well under what they request: the reservation the scheduler holds for nothing."""
    notes = []
    for name, u in sorted(usage.items()):
        if u["cpu_percent_of_request"] is not None and u["cpu_percent_of_request"] < lim["cost_cpu_percent"]:
            suggested = int(math.ceil(u["cpu_millicores"] * 1.5 / 10.0) * 10)
            notes.append(dict(workload=name, resource="cpu", percent_of_request=u["cpu_percent_of_request"],
                              used=u["cpu_millicores"], requested=u["cpu_request_millicores"], suggested=suggested,
                              unused_total=round((u["cpu_request_millicores"] - u["cpu_millicores"]) * u["pods"]),
                              text="%s: pods use %s%% of their CPU request on average (%sm of %sm); a request of about "
                                   "%dm (use + 50%%) would free %dm over %d pod(s)" % (
                                       name, u["cpu_percent_of_request"], int(u["cpu_millicores"]),
                                       int(u["cpu_request_millicores"]), suggested,
                                       (u["cpu_request_millicores"] - suggested) * u["pods"], u["pods"])))
        if u["memory_percent_of_request"] is not None and u["memory_percent_of_request"] < lim["cost_memory_percent"]:
            suggested = int(math.ceil(u["memory_mib"] * 1.5 / 16.0) * 16)
            notes.append(dict(workload=name, resource="memory", percent_of_request=u["memory_percent_of_request"],
                              used=u["memory_mib"], requested=u["memory_request_mib"], suggested=suggested,
                              unused_total=round((u["memory_request_mib"] - u["memory_mib"]) * u["pods"]),
                              text="%s: pods use %s%% of their memory request on average (%d of %d MiB); about %d MiB "
                                   "(use + 50%%) would do" % (name, u["memory_percent_of_request"], u["memory_mib"],
                                                              u["memory_request_mib"], suggested)))
    return notes


def _container_requests(workload):
    cpu = mem = 0
    for resources in (workload.get("resources") or {}).values():
        requests = (resources or {}).get("requests") or {}
        cpu += millicores(requests.get("cpu")) or 0
        mem += mebibytes(requests.get("memory")) or 0
    return cpu, mem


def node_outlook(info, lim, settings):
    """Nodes now, and the nodes the namespace's requests need today and with every HPA at its max (at the
    node CPU / memory action points)."""
    alloc_cpu, alloc_mem, used_cpu, used_mem, count = node_totals(info)
    if not count:
        return dict(nodes=0, detail="no ready schedulable node")
    per_cpu, per_mem = alloc_cpu / float(count), alloc_mem / float(count)
    deployments = dict((d["name"], d) for d in info.get("deployments") or [])
    now_cpu = now_mem = peak_cpu = peak_mem = 0.0
    for workload in (info.get("deployments") or []) + (info.get("statefulsets") or []):
        cpu, mem = _container_requests(workload)
        hpa = hpa_of(info, workload["name"]) if workload["name"] in deployments else None
        now_cpu += cpu * workload["desired"]
        now_mem += mem * workload["desired"]
        peak = hpa["max_replicas"] if hpa else workload["desired"]
        peak_cpu += cpu * peak
        peak_mem += mem * peak

    def need(cpu, mem):
        return int(max(math.ceil(cpu / (per_cpu * lim["node_cpu_threshold"] / 100.0)),
                       math.ceil(mem / (per_mem * lim["node_memory_threshold"] / 100.0)), 1))
    out = dict(nodes=count, cpu_allocatable_per_node=round(per_cpu), memory_allocatable_mib_per_node=round(per_mem),
               requests_now=dict(cpu_millicores=round(now_cpu), memory_mib=round(now_mem)),
               requests_at_hpa_max=dict(cpu_millicores=round(peak_cpu), memory_mib=round(peak_mem)),
               nodes_needed_now=need(now_cpu, now_mem), nodes_needed_at_hpa_max=need(peak_cpu, peak_mem))
    if used_cpu is not None:
        out["nodes_needed_for_use_now"] = need(used_cpu, used_mem)
    out["detail"] = ("%d node(s); the namespace's requests need %d now and %d with every HPA at its max (at %d%% CPU / "
                     "%d%% memory of allocatable)"
                     % (count, out["nodes_needed_now"], out["nodes_needed_at_hpa_max"], lim["node_cpu_threshold"],
                        lim["node_memory_threshold"]))
    return out


def _guideline(metric, value, warning, critical, action, unit="%"):
    if value is None:
        return None
    level = "critical" if value > critical else "warning" if value > warning else None
    if level is None:
        return None
    return dict(metric=metric, level=level, value=value, warning=warning, critical=critical,
                action=action, text="%s at %s%s (%s above %s%s): %s" % (
                    metric, value, unit, level, critical if level == "critical" else warning, unit, action))


def recommendations(table, gathered, usage, outlook, lim, settings):
    """The runbook's scaling guidelines and action points applied to today's figures, with numbers."""
    out = []
    rows = dict((r["key"], r) for r in table)
    for key, hpa_name in (("api_pods", settings["api_deployment"]), ("worker_pods", settings["worker_deployment"])):
        row = rows[key]
        if row["status"] == "action":
            new_max = int(math.ceil(row["capacity"] * 1.5))
            out.append(dict(metric=row["resource"], level="action", value=row["percent"], action="Increase HPA max",
                            text="%s at %s%% of the HPA max (%s): increase the HPA max, e.g. to %d "
                                 "(ansible-playbook apex.ops.hpa -e hpa_component=%s -e hpa_max_replicas=%d)" % (
                                     row["resource"], row["percent"], row["current"], new_max,
                                     "api" if key == "api_pods" else "worker", new_max)))
    api = usage.get(settings["api_deployment"]) or {}
    api_memory = api.get("memory_percent_of_limit") or api.get("memory_percent_of_request")
    redis = None if _failed(gathered.get("redis")) else gathered["redis"]
    for item in (
            _guideline("API CPU", api.get("cpu_percent_of_request"), lim["api_cpu_warning"], lim["api_cpu_critical"],
                       "Increase replicas or limits"),
            _guideline("API Memory", api_memory, lim["api_memory_warning"], lim["api_memory_critical"],
                       "Increase limits, check for leaks"),
            _guideline("Worker queue depth", redis["queue"]["depth"] if redis else None, lim["queue_depth_warning"],
                       lim["queue_depth_critical"], "Add workers (ansible-playbook apex.ops.alert_queue_backlog)", ""),
            _guideline("DB connections", rows["db_connections"]["percent"], lim["db_connections_warning"],
                       lim["db_connections_threshold"], "Optimize queries, increase pool"),
            _guideline("DB storage", rows["db_storage"]["percent"], lim["db_storage_warning"], lim["db_storage_critical"],
                       "Expand volume, archive old data")):
        if item:
            out.append(item)
    storage = rows["db_storage"]
    rds = gathered.get("rds")
    if storage["status"] in ("warning", "action") and rds is not None and not _failed(rds):
        size = suggested_storage_gib(storage["used"], rds["allocated_gib"], lim["storage_target_percent"])
        out.append(dict(metric="Database Storage", level=storage["status"], value=storage["percent"],
                        action="Expand volume", suggested_gib=size,
                        text="RDS %s: %s%% of %d GiB used; expand to %d GiB (%d%% used after): ansible-playbook "
                             "apex.ops.capacity_report -e capacity_report_expand_storage_gib=%d "
                             "-e capacity_report_confirm_expand=%s" % (
                                 rds["identifier"], storage["percent"], rds["allocated_gib"], size,
                                 round(100.0 * storage["used"] / (size * GIB)), size, rds["identifier"])))
    for key in ("redis_memory", "node_cpu", "node_memory"):
        row = rows[key]
        if row["status"] == "action":
            out.append(dict(metric=row["resource"], level="action", value=row["percent"], action=row["action_point"],
                            text="%s at %s%% (action point %s): %s"
                            % (row["resource"], row["percent"], row["threshold"], row["action_point"])))
    if outlook.get("nodes") and outlook.get("nodes_needed_at_hpa_max", 0) > outlook["nodes"]:
        out.append(dict(metric="Node count", level="warning", value=outlook["nodes"], action="Add nodes",
                        text="with every HPA at its max the requests need %d nodes, %d are ready: add nodes before a "
                             "peak (e.g. eksctl scale nodegroup --nodes %d)" % (
                                 outlook["nodes_needed_at_hpa_max"], outlook["nodes"], outlook["nodes_needed_at_hpa_max"])))
    return out


def daily(gathered):
    """The runbook's daily capacity script as data: pod count, HPAs, node and pod use, database, Redis, queue."""
    info = None if _failed(gathered.get("kubernetes")) else gathered["kubernetes"]
    db = None if _failed(gathered.get("database")) else gathered["database"]
    redis = None if _failed(gathered.get("redis")) else gathered["redis"]
    metrics = (info or {}).get("metrics") or {}
    return dict(
        pods=len((info or {}).get("pods") or []) if info else None,
        hpas=[dict((k, h[k]) for k in ("name", "target", "min_replicas", "max_replicas", "current_replicas",
                                       "cpu_current", "cpu_target")) for h in (info or {}).get("hpas") or []],
        top_nodes=metrics.get("nodes") or [],
        top_pods=sorted(metrics.get("pods") or [], key=lambda u: -u["memory_mib"]),
        db_size=db["server"].get("database_size") if db else None,
        db_connections=db["connections"]["database"] if db else None,
        redis_used_memory_human=redis["memory"]["used_human"] if redis else None,
        queue_depth=redis["queue"]["depth"] if redis else None,
    )


def build(gathered, lim, settings):
    info = None if _failed(gathered.get("kubernetes")) else gathered["kubernetes"]
    table = capacity_table(gathered, lim, settings)
    usage = workload_usage(info) if info else {}
    outlook = node_outlook(info, lim, settings) if info else dict(nodes=None, detail="Kubernetes not read")
    recs = recommendations(table, gathered, usage, outlook, lim, settings)
    errors = dict((part, result.get("msg")) for part, result in gathered.items() if _failed(result))
    levels = [r["status"] for r in table]
    status = "action" if "action" in levels or any(r["level"] in ("critical", "action") for r in recs) else \
        "warning" if "warning" in levels or recs else "ok"
    rds = gathered.get("rds")
    return dict(status=status, table=table, recommendations=recs, cost_notes=cost_notes(usage, lim) if usage else [],
                workloads=usage, node_outlook=outlook, daily=daily(gathered), errors=errors,
                rds=None if rds is None or _failed(rds) else rds, limits=lim)


def summary_lines(report):
    """The report for the console: status, one line per table row, then recommendations and cost notes."""
    lines = ["capacity: %s" % report["status"].upper()]
    for row in report["table"]:
        lines.append("%-8s %-21s %-26s %6s  threshold %s -> %s" % (
            row["status"], row["resource"], row["current"] or "-", "" if row["percent"] is None else "%s%%" % row["percent"],
            row["threshold"], row["action_point"]))
    lines += ["recommendation: %s" % r["text"] for r in report["recommendations"]]
    lines += ["cost: %s" % n["text"] for n in report["cost_notes"]]
    lines.append("nodes: %s" % report["node_outlook"].get("detail"))
    return lines


# --------------------------------------------------------------------------- the guarded expansion


def plan_expansion(rds, requested_gib, max_gib):
    """The RDS storage change to make, or CapacityError saying why not (nothing changed)."""
    if rds is None:
        raise CapacityError("no RDS instance to expand: set capacity_report_rds_instance")
    name, current = rds["identifier"], rds["allocated_gib"]
    if rds.get("status") != "available":
        raise CapacityError("RDS %s is %s, not available: expand it once it is" % (name, rds.get("status")))
    if rds.get("pending_allocated_gib"):
        raise CapacityError("RDS %s already has a storage change to %s GiB pending" % (name, rds["pending_allocated_gib"]))
    requested = int(requested_gib)
    if requested <= current:
        raise CapacityError("RDS %s has %d GiB; %d GiB is not an expansion (RDS storage never shrinks)"
                            % (name, current, requested))
    if requested < min_growth_gib(current):
        raise CapacityError("RDS %s: %d -> %d GiB is under the 10%% growth AWS requires (at least %d GiB)"
                            % (name, current, requested, min_growth_gib(current)))
    bound = min(int(max_gib), RDS_MAX_GIB)
    if requested > bound:
        raise CapacityError("RDS %s: %d GiB is above the bound of %d GiB (capacity_report_expand_max_gib; RDS allows "
                            "%d)" % (name, requested, bound, RDS_MAX_GIB))
    if rds.get("max_allocated_gib") and requested > rds["max_allocated_gib"]:
        raise CapacityError("RDS %s: %d GiB is above its MaxAllocatedStorage of %d GiB"
                            % (name, requested, rds["max_allocated_gib"]))
    return dict(identifier=name, from_gib=current, to_gib=requested)
