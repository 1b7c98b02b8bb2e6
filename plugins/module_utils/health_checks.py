# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The daily health check's records and judgments, from what the read-only modules gathered.

Pure functions (no I/O): each ``*_checks`` turns one module result into check records
``{name, group, value, unit, warning, critical, [status], detail}``; ``judge`` gives every record
its status; ``report`` sums them up. A module result without its facts (the module failed) is one
critical record carrying the module's message, so the report is always written.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

STATUSES = ("ok", "warning", "critical", "unknown")
DEFAULT_API_PATHS = ("/health", "/ready", "/live")
DEFAULT_API_OK_STATUSES = ("healthy", "ok", "alive", "ready")
NO_JOURNAL_RECORD = "no apex.ops procedure in progress or interrupted"

# The runbook's thresholds (roles/health_check/defaults/main.yml names them health_check_<key>).
# A value above ``*_warning`` / ``*_critical`` counts; None means no such level.
DEFAULT_THRESHOLDS = dict(
    queue_depth_warning=50, queue_depth_critical=100,
    dead_letter_warning=0, dead_letter_critical=100,
    redis_memory_warning=80, redis_memory_critical=90,
    db_connections_warning=60, db_connections_critical=80,
    db_storage_bytes=107374182400, db_storage_warning=70, db_storage_critical=85,
    db_long_queries_warning=0, db_long_queries_critical=5,
    db_idle_in_transaction_warning=0, db_idle_in_transaction_critical=5,
    db_expected_replicas=0,
    db_replication_lag_warning=30, db_replication_lag_critical=300,
    tls_warning_days=30, tls_critical_days=7,
    k8s_pods_not_running_warning=0, k8s_pods_not_running_critical=2,
    k8s_job_pods_failed_warning=0,
    k8s_restarts_warning=0, k8s_restarts_critical=10,
    k8s_hpa_warning=80, k8s_hpa_critical=99,
    k8s_nodes_not_ready_warning=None, k8s_nodes_not_ready_critical=0,
    k8s_nodes_cordoned_warning=0,
    k8s_workloads_warning=0,
)


def thresholds(given):
    """DEFAULT_THRESHOLDS overridden by ``given``; an unknown key or a non-number is refused (ValueError)."""
    unknown = sorted(set(given) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ValueError("unknown thresholds: %s (known: %s)" % (", ".join(unknown), ", ".join(sorted(DEFAULT_THRESHOLDS))))
    merged = dict(DEFAULT_THRESHOLDS)
    for key, value in given.items():
        if value is None or value == "":
            merged[key] = None
            continue
        try:
            merged[key] = int(value) if str(value).strip().lstrip("-").isdigit() else float(value)
        except (TypeError, ValueError):
            raise ValueError("threshold %s must be a number, got %r" % (key, value))
    return merged


def check(name, group, value, unit=None, warning=None, critical=None, detail="", status=None):
    """One record; ``status`` set only where the value cannot be judged against thresholds."""
    record = dict(name=name, group=group, value=value, warning=warning, critical=critical, detail=detail)
    if unit is not None:
        record["unit"] = unit
    if status:
        record["status"] = status
    return record


def failed_check(name, group, result):
    """The part's module failed: one critical record with its message."""
    return [check(name, group, None, detail=result.get("msg") or "", status="critical")]


def judge_status(value, warning=None, critical=None):
    """No value is unknown; above ``critical`` is critical, above ``warning`` a warning, else ok."""
    if value is None:
        return "unknown"
    if critical is not None and value > critical:
        return "critical"
    if warning is not None and value > warning:
        return "warning"
    return "ok"


def judge(record):
    """The record with its status: one it carries is kept, else judged from value and thresholds."""
    judged = dict(record, warning=record.get("warning"), critical=record.get("critical"))
    if not record.get("status"):
        judged["status"] = judge_status(record.get("value"), judged["warning"], judged["critical"])
    return judged


def overall_status(statuses):
    """The worst status; unknown counts as a warning."""
    statuses = set(statuses)
    if "critical" in statuses:
        return "critical"
    if statuses & {"warning", "unknown"}:
        return "warning"
    return "ok"


def report(records, started=None, finished=None, report_file=None):
    """The report: every record judged, the overall status and the count per status."""
    checks = [judge(r) for r in records]
    states = [c["status"] for c in checks]
    return dict(status=overall_status(states), started=started, finished=finished, report_file=report_file,
                counts=dict((s, states.count(s)) for s in STATUSES), checks=checks,
                problems=[c["name"] for c in checks if c["status"] != "ok"])


def _truncate(text, length=120):
    text = "%s" % (text or "")
    return text if len(text) <= length else text[:length - 3] + "..."


# ---------------------------------------------------------------- API
def api_probe_check(path, result, ok_statuses=DEFAULT_API_OK_STATUSES):
    """One API path: not 200 is critical; a 200 whose body says otherwise (a status outside
    ``ok_statuses``, ``ready: false``, a component with ``ok: false``) is a warning."""
    try:
        code = int(result.get("status", -1))
    except (TypeError, ValueError):
        code = -1
    body = result.get("json")
    notes, down = [], []
    if isinstance(body, dict):
        down = [k for k, v in body.items() if isinstance(v, dict) and "ok" in v and not v["ok"]]
        status = body.get("status")
        if isinstance(status, str) and status.lower() not in [s.lower() for s in ok_statuses]:
            notes.append("status " + status)
        if body.get("ready") is False:
            notes.append("not ready")
        if body.get("reasons"):
            reasons = body["reasons"]
            notes.append(", ".join("%s" % r for r in reasons) if isinstance(reasons, list) else "%s" % reasons)
    if code != 200:
        state = "critical"
    else:
        state = "warning" if notes or down else "ok"
    parts = [_truncate(result.get("msg")) if code != 200 else ""] + notes + (["down: " + ",".join(down)] if down else [])
    return check("api " + path, "api", code, unit="http", detail="; ".join(p for p in parts if p), status=state)


def api_checks(url, probes, ok_statuses=DEFAULT_API_OK_STATUSES):
    """``probes``: (path, uri result) pairs. No URL is one unknown record."""
    if not url:
        return [check("api", "api", None, detail="health_check_api_url is not set", status="unknown")]
    return [api_probe_check(path, result, ok_statuses) for path, result in probes]


# ---------------------------------------------------------------- queue
def queue_checks(facts, limits):
    """apex_queue state=facts: depth, dead letters, tasks in flight, Redis memory."""
    if "queue" not in facts:
        return failed_check("redis", "queue", facts)
    memory = facts.get("memory") or {}
    return [
        check("queue depth", "queue", facts["queue"]["depth"], "tasks", limits["queue_depth_warning"],
              limits["queue_depth_critical"], facts["queue"]["key"]),
        check("dead letters", "queue", facts["dead_letter"]["depth"], "tasks", limits["dead_letter_warning"],
              limits["dead_letter_critical"], facts["dead_letter"]["key"]),
        check("tasks in flight", "queue", facts["processing"]["total"], "tasks",
              detail="%s lists" % facts["processing"]["lists"]),
        check("redis memory", "queue", memory.get("percent"), "%", limits["redis_memory_warning"],
              limits["redis_memory_critical"], "%s used" % memory.get("used_human")),
    ]


# ---------------------------------------------------------------- database
def _round(value, digits):
    return None if value is None else round(float(value), digits)


def database_checks(facts, limits, long_query_threshold="5m", idle_threshold="10m"):
    """apex_db_maint state=facts: connections, long queries, idle in transaction, storage,
    migrations, replication (primary) or the WAL receiver (standby)."""
    if "connections" not in facts:
        return failed_check("postgresql", "database", facts)
    conns, repl, server = facts["connections"], facts["replication"], facts.get("server") or {}
    long_running = facts.get("long_running") or []
    migrations = facts.get("migrations") or {}
    volume = int(limits["db_storage_bytes"] or 0)
    expected = int(limits["db_expected_replicas"] or 0)
    records = [
        check("db connections", "database", conns["percent"], "% of max", limits["db_connections_warning"],
              limits["db_connections_critical"], "%s/%s" % (conns["total"], conns["max_connections"])),
        check("db long-running queries", "database", len(long_running), "queries", limits["db_long_queries_warning"],
              limits["db_long_queries_critical"], "> %s%s" % (long_query_threshold, (
                  " pids " + ",".join("%s" % q["pid"] for q in long_running)) if long_running else "")),
        check("db idle in transaction", "database", len(facts.get("idle_in_transaction") or []), "conns",
              limits["db_idle_in_transaction_warning"], limits["db_idle_in_transaction_critical"],
              "> %s" % idle_threshold),
        check("db storage", "database",
              round(100.0 * server["database_size_bytes"] / volume, 1) if volume > 0 else None, "%",
              limits["db_storage_warning"], limits["db_storage_critical"], server.get("database_size")),
        check("db migrations failed", "database", len(migrations.get("failed") or []), "rows", None, 0,
              ("latest %s" % migrations.get("latest_version")) if migrations.get("present") else "_sqlx_migrations missing"),
        check("db streaming replicas", "database", repl["streaming_replicas"], "replicas",
              detail="%s, expect %s" % (repl["role"], expected),
              status="critical" if repl["role"] == "primary" and repl["streaming_replicas"] < expected else "ok"),
    ]
    if repl.get("replicas"):
        records.append(check("db replication lag", "database", _round(repl.get("max_replay_lag_seconds"), 3), "s",
                             limits["db_replication_lag_warning"], limits["db_replication_lag_critical"],
                             "%s bytes" % repl.get("max_replay_lag_bytes")))
    standby = repl.get("standby")
    if standby:
        receiver = standby.get("wal_receiver") or {}
        records += [
            check("db standby receiver", "database", receiver.get("status", "none"),
                  detail="standby of %s" % receiver.get("sender_host", "?"),
                  status="ok" if receiver.get("status") == "streaming" else "critical"),
            check("db standby replay delay", "database", _round(standby.get("replay_delay_seconds"), 3), "s",
                  limits["db_replication_lag_warning"], limits["db_replication_lag_critical"],
                  "%s bytes unreplayed" % standby.get("replay_lag_bytes")),
        ]
    return records


# ---------------------------------------------------------------- TLS
def tls_checks(facts, limits, certificate_name=None):
    """apex_cert state=facts: days left (soonest of endpoint, Secret and Certificate), endpoint
    trusted, Certificate Ready (or missing while cert-manager is installed), served = Secret."""
    if "expiry" not in facts:
        return failed_check("tls", "tls", facts)
    expiry = facts["expiry"]
    days_status = "critical" if expiry.get("status") in ("critical", "expired") else expiry.get("status")
    records = [check("tls days left", "tls", expiry.get("days_left"), "days", limits["tls_warning_days"],
                     limits["tls_critical_days"], expiry.get("source"), status=days_status)]
    endpoint = facts.get("endpoint")
    if endpoint:
        trusted = bool(endpoint.get("verified")) and bool(endpoint.get("hostname_match"))
        records.append(check("tls endpoint trusted", "tls", trusted, detail=endpoint.get("tls_version") or "",
                             status="ok" if trusted else "critical"))
    certificates = facts.get("certificates") or []
    if certificates:
        ready = bool(certificates[0].get("ready"))
        records.append(check("tls certificate ready", "tls", ready, detail=certificates[0].get("name") or "",
                             status="ok" if ready else "critical"))
    elif facts.get("cert_manager_installed"):
        records.append(check("tls certificate ready", "tls", False, status="critical",
                             detail="Certificate %s not found (cert-manager is installed)" % certificate_name))
    drift = bool((facts.get("drift") or {}).get("drift"))
    records.append(check("tls served = secret", "tls", not drift, detail="ingress not reloaded" if drift else "",
                         status="warning" if drift else "ok"))
    return records


# ---------------------------------------------------------------- Kubernetes
def kubernetes_checks(facts, limits):
    """apex_info (workloads, pods, hpas, nodes): pods, restarts, HPAs near max, nodes, rollouts."""
    if "summary" not in facts:
        return failed_check("kubernetes api", "kubernetes", facts)
    summary = facts["summary"]
    records = [
        check("pods not running", "kubernetes", len(summary["pods_not_running"]), "pods",
              limits["k8s_pods_not_running_warning"], limits["k8s_pods_not_running_critical"],
              ", ".join(summary["pods_not_running"]) or "%s pods running" % summary.get("pods_total")),
        check("job pods failed", "kubernetes", len(summary.get("job_pods_failed") or []), "pods",
              limits["k8s_job_pods_failed_warning"], None, ", ".join(summary.get("job_pods_failed") or []) or "none"),
        check("pod restarts", "kubernetes", summary["max_restarts"], "max", limits["k8s_restarts_warning"],
              limits["k8s_restarts_critical"], ", ".join(summary.get("pods_with_restarts") or {}) or "none"),
    ]
    for hpa in facts.get("hpas") or []:
        current, most = hpa.get("current_replicas") or 0, hpa.get("max_replicas")
        records.append(check("hpa " + hpa["name"], "kubernetes", round(100.0 * current / most, 1) if most else None,
                             "% of max", limits["k8s_hpa_warning"], limits["k8s_hpa_critical"],
                             "%s/%s%s" % (current, most, " AT MAX" if hpa.get("at_max") else "")))
    records += [
        check("nodes not ready", "kubernetes", len(summary["nodes_not_ready"]), "nodes",
              limits["k8s_nodes_not_ready_warning"], limits["k8s_nodes_not_ready_critical"],
              ", ".join(summary["nodes_not_ready"]) or "%s ready" % len(facts.get("nodes") or [])),
        check("nodes cordoned", "kubernetes", len(summary["nodes_cordoned"]), "nodes",
              limits["k8s_nodes_cordoned_warning"], None, ", ".join(summary["nodes_cordoned"]) or "none"),
        check("workloads not settled", "kubernetes", len(summary["workloads_not_ready"]), "workloads",
              limits["k8s_workloads_warning"], None,
              ", ".join(summary["workloads_not_ready"]) or "all rolled out and ready"),
    ]
    return records


# ---------------------------------------------------------------- all parts
def checks(gathered, limits, settings):
    """The records of every part gathered (health_gather.gather), in the report's order."""
    records = []
    if "api" in gathered:
        records += api_checks(settings.get("api_url"), gathered["api"],
                              settings.get("api_ok_statuses") or DEFAULT_API_OK_STATUSES)
    if "queue" in gathered:
        records += queue_checks(gathered["queue"], limits)
    if "database" in gathered:
        records += database_checks(gathered["database"], limits, settings.get("db_long_query_threshold"),
                                   settings.get("db_idle_threshold"))
    if "tls" in gathered:
        records += tls_checks(gathered["tls"], limits, settings.get("tls_certificate"))
    if "kubernetes" in gathered:
        records += kubernetes_checks(gathered["kubernetes"], limits)
    return records


# ---------------------------------------------------------------- journal
def journal_checks(preflight):
    """What apex_preflight found in the procedure journal: a record left behind is critical."""
    preflight = preflight or {}
    interrupted = bool(preflight.get("interrupted"))
    return [check("procedure interrupted", "kubernetes", 1 if interrupted else 0, "records", None, 0,
                  preflight.get("interrupted_message") or NO_JOURNAL_RECORD)]


# ---------------------------------------------------------------- summary
LINE = "%-24s %-8s %14s %11s  %s"


def _shown(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%s" % round(value, 2)
    return "%s" % value


def summary_lines(doc):
    """What the on-call engineer reads: the overall status, then one line per check."""
    lines = ["Apex health: %s  %s" % (doc["status"].upper(), doc.get("report_file") or ""),
             LINE % ("CHECK", "STATUS", "VALUE", "WARN/CRIT", "DETAIL")]
    for c in doc["checks"]:
        limits = "%s/%s" % ("-" if c["warning"] is None else c["warning"], "-" if c["critical"] is None else c["critical"])
        lines.append(LINE % (c["name"][:24], c["status"].upper(), ("%s %s" % (_shown(c["value"]), c.get("unit") or ""))[:14],
                             limits, ("%s" % (c.get("detail") or ""))[:24]))
    return lines
