# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shift handoff report (apex_handoff), pure: what ``handoff_gather`` read, shaped into the
sections an incoming on-call reads - access, changes in the window, alerts, queue, certificate,
maintenance lock, attention points - and rendered as Markdown. Unit-tested with fixtures.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils.k8s_info import event_summary
from ansible_collections.apex.ops.plugins.module_utils.rollout_plan import revisions_of
from ansible_collections.apex.ops.plugins.module_utils.timestamps import parse_time

NOT_CONFIGURED = "not configured"


def _failed(result):
    return isinstance(result, dict) and result.get("failed")


def _in_window(moment, since, now):
    moment = parse_time(moment)
    return moment is not None and since <= moment <= now


def _stamp(moment):
    moment = parse_time(moment)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


# --------------------------------------------------------------------------- access


def _access_detail(source, result):
    if source.startswith("kubernetes"):
        return "%s: %d node(s), %d Ready" % (result["server"], result["nodes"], result["ready"])
    if source == "database":
        standby = ", standby" if result["in_recovery"] else ""
        return "%s@%s (PostgreSQL %s%s)" % (result["user"], result["database"], result["version"], standby)
    if source == "redis":
        return "queue %s, dead letters %s" % (result["queue"]["depth"], result["dead_letter"]["depth"])
    if source == "s3":
        return "bucket %s, %d backup(s) in the catalog" % (result["bucket"], result["total"])
    if source == "route53":
        if result.get("zone_id"):
            return "zone %s (%s), %s record(s)" % (result["zone"], result["zone_id"], result["records"])
        return "%d hosted zone(s) listed" % result["zones"]
    if source == "prometheus":
        return "%d alert(s) fired in the window" % len(result["fired"])
    if source == "alertmanager":
        return "%d alert(s) firing" % len(result["firing"])
    if source == "helm":
        if not result.get("available"):
            return result["msg"]
        return "release %s: %s" % (result["release"], "%d revision(s)" % len(result["history"])
                                   if result["exists"] else "not installed")
    if source == "tls":
        expiry = result.get("expiry") or {}
        return "certificate read (soonest expiry from %s)" % expiry.get("source")
    if source == "cluster":
        return "lease, events, workloads and revisions read"
    return ""


def access(gathered, configured):
    """One row per system the on-call needs: ``name``, ``status`` (ok, failed, not configured), ``detail``."""
    rows = []
    for source in sorted(gathered):
        result = gathered[source]
        if _failed(result):
            rows.append(dict(name=source, status="failed", detail=result.get("msg")))
        elif source == "helm" and not result.get("available"):
            rows.append(dict(name=source, status="unavailable", detail=result["msg"]))
        else:
            rows.append(dict(name=source, status="ok", detail=_access_detail(source, result)))
    for source in configured:
        if source not in gathered:
            rows.append(dict(name=source, status=NOT_CONFIGURED, detail=configured[source]))
    return rows


# --------------------------------------------------------------------------- changes


def rollout_changes(cluster, since, now):
    """New workload revisions (ReplicaSets / ControllerRevisions created in the window)."""
    out = []
    for kind, owners, objects in (("Deployment", cluster.get("deployments"), cluster.get("replicasets")),
                                  ("StatefulSet", cluster.get("statefulsets"), cluster.get("controllerrevisions"))):
        for owner in owners or []:
            name = (owner.get("metadata") or {}).get("name")
            for rev in revisions_of(kind, owner, objects):
                if _in_window(rev["created"], since, now):
                    out.append(dict(time=_stamp(rev["created"]), source="kubernetes", category="rollout",
                                    what="%s/%s revision %s" % (kind, name, rev["revision"]),
                                    outcome=rev["change_cause"] or "no change-cause recorded"))
    return out


def scale_events(cluster, since, now):
    """The Deployment controller's and the HPA's scale events in the window (Kubernetes keeps events
    about an hour by default: older ones come from the reports)."""
    out = []
    for event in cluster.get("events") or []:
        if event.get("reason") not in ("ScalingReplicaSet", "SuccessfulRescale"):
            continue
        summary = event_summary(event, now)
        if _in_window(summary["last_seen"], since, now):
            out.append(dict(time=_stamp(summary["last_seen"]), source="kubernetes", category="scale",
                            what="%s %s" % (summary["object"], summary["reason"]), outcome=summary["message"]))
    return out


def helm_changes(helm, since, now):
    out = []
    for entry in (helm or {}).get("history") or []:
        when = entry.get("deployed_at") or entry.get("updated")
        if _in_window(when, since, now):
            out.append(dict(time=_stamp(when), source="helm", category="release",
                            what="release %s revision %s (%s-%s, app %s)" % (
                                helm["release"], entry.get("revision"), entry.get("chart_name"),
                                entry.get("chart_version"), entry.get("app_version")),
                            outcome=entry.get("status")))
    return out


def backup_changes(s3):
    out = []
    for entry in (s3 or {}).get("recent") or []:
        out.append(dict(time=_stamp(entry["finished_at"]), source="backup catalog", category="backup",
                        what="%s backup %s/%s (%s bytes)" % (entry["kind"], entry["name"], entry["backup_id"],
                                                             entry.get("size")),
                        outcome="verified (%s)" % entry["verified_level"] if entry["verification"] == "verified"
                        else entry["verification"] + (", " + entry["problem"] if entry.get("problem") else "")))
    return out


def report_changes(reports):
    return [dict(time=r["time"], source="report", category=r["category"], what="%s run (%s)" % (r["procedure"], r["file"]),
                 outcome=r["outcome"]) for r in reports or []]


def changes(gathered, reports, since, now):
    cluster = gathered.get("cluster")
    cluster = {} if _failed(cluster) or cluster is None else cluster
    helm = gathered.get("helm")
    s3 = gathered.get("s3")
    out = (rollout_changes(cluster, since, now) + scale_events(cluster, since, now)
           + helm_changes(None if _failed(helm) else helm, since, now)
           + backup_changes(None if _failed(s3) else s3) + report_changes(reports))
    out.sort(key=lambda c: c["time"] or "", reverse=True)
    return out


# --------------------------------------------------------------------------- state


def lock_state(cluster, lock_name, namespace, now):
    """The maintenance lock (Lease ``lock_name``): absent means none is held."""
    if cluster is None or _failed(cluster):
        return dict(name=lock_name, namespace=namespace, open=None, detail="unknown: the cluster could not be read")
    lease = cluster.get("lease")
    if not lease:
        return dict(name=lock_name, namespace=namespace, open=False, detail="none")
    meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
    notes = dict((k.split("/", 1)[1], v) for k, v in (meta.get("annotations") or {}).items() if k.startswith("apex.ops/"))
    renewed = parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds")
    expired = bool(renewed and duration and (now - renewed).total_seconds() > float(duration))
    detail = "held by %s" % (spec.get("holderIdentity") or "nobody")
    if notes:
        detail += " (%s)" % ", ".join("%s: %s" % kv for kv in sorted(notes.items()))
    if expired:
        detail += "; expired %s (not renewed for %ds)" % (_stamp(renewed), (now - renewed).total_seconds())
    return dict(name=lock_name, namespace=namespace, open=True, holder=spec.get("holderIdentity"), annotations=notes,
                acquired=_stamp(spec.get("acquireTime")), renewed=_stamp(spec.get("renewTime")),
                duration_seconds=duration, expired=expired, detail=detail)


def certificate_state(tls):
    if tls is None:
        return dict(days_left=None, detail=NOT_CONFIGURED)
    if _failed(tls):
        return dict(days_left=None, detail="unknown: %s" % tls.get("msg"))
    expiry = tls.get("expiry") or {}
    endpoint = tls.get("endpoint") or {}
    return dict(days_left=expiry.get("days_left"), status=expiry.get("status"), source=expiry.get("source"),
                endpoint_days_left=endpoint.get("days_left"), endpoint_not_after=endpoint.get("not_after"),
                detail="%s days left (%s)" % (expiry.get("days_left"), expiry.get("source")))


def queue_state(redis):
    if redis is None:
        return dict(detail=NOT_CONFIGURED)
    if _failed(redis):
        return dict(detail="unknown: %s" % redis.get("msg"))
    return dict(depth=redis["queue"]["depth"], dead_letters=redis["dead_letter"]["depth"],
                dead_letter_sample=redis["dead_letter"]["sample"], in_flight=redis["processing"]["total"],
                memory_percent=redis["memory"]["percent"],
                detail="queue %s, dead letters %s, in flight %s" % (
                    redis["queue"]["depth"], redis["dead_letter"]["depth"], redis["processing"]["total"]))


def alerts_state(gathered):
    prom, manager = gathered.get("prometheus"), gathered.get("alertmanager")
    return dict(
        fired=None if prom is None or _failed(prom) else prom["fired"],
        fired_detail=NOT_CONFIGURED if prom is None else ("unknown: %s" % prom["msg"] if _failed(prom) else None),
        firing=None if manager is None or _failed(manager) else manager["firing"],
        firing_detail=NOT_CONFIGURED if manager is None else ("unknown: %s" % manager["msg"] if _failed(manager) else None),
    )


def attention(report, limits):
    """What the incoming on-call should look at first, in words."""
    out = []
    for row in report["access"]:
        if row["status"] == "failed":
            out.append("no access to %s: %s" % (row["name"], row["detail"]))
    if report["lock"].get("open"):
        out.append("maintenance lock %s is open: %s" % (report["lock"]["name"], report["lock"]["detail"]))
    if report["journal"].get("interrupted"):
        out.append("a procedure was left half-done: %s" % report["journal"].get("message"))
    for alert in report["alerts"]["firing"] or []:
        out.append("alert %s (%s) firing since %s" % (alert["name"], alert["severity"], alert["since"]))
    queue = report["queue"]
    if queue.get("depth") is not None and queue["depth"] > limits["queue_depth_warning"]:
        out.append("task queue at %s (runbook warns above %s)" % (queue["depth"], limits["queue_depth_warning"]))
    if queue.get("dead_letters"):
        out.append("%s dead letter(s) to investigate (queue_deadletter)" % queue["dead_letters"])
    days = report["certificate"].get("days_left")
    if days is not None and days < limits["tls_warning_days"]:
        out.append("TLS certificate expires in %s days (cert_renew)" % days)
    failed_runs = [c for c in report["changes"] if c["source"] == "report" and "fail" in str(c["outcome"])]
    for change in failed_runs:
        out.append("failed run: %s - %s" % (change["what"], change["outcome"]))
    return out


def build(gathered, reports, journal, params, since, now, elapsed=None):
    configured = {}
    if not params["prometheus_url"]:
        configured["prometheus"] = "apex_prometheus_url is not set"
    if not params["alertmanager_url"]:
        configured["alertmanager"] = "apex_alertmanager_url is not set"
    if not params["s3"]["s3_bucket"]:
        configured["s3"] = "apex_s3_bucket is not set"
    cluster = gathered.get("cluster")
    report = dict(
        window=dict(since=_stamp(since), until=_stamp(now), hours=round((now - since).total_seconds() / 3600.0, 2)),
        access=access(gathered, configured),
        changes=changes(gathered, reports, since, now),
        alerts=alerts_state(gathered),
        queue=queue_state(gathered.get("redis")),
        certificate=certificate_state(gathered.get("tls")),
        lock=lock_state(cluster, params["lock_name"], params["k8s"]["namespace"], now),
        journal=dict(interrupted=bool((journal or {}).get("interrupted")),
                     message=(journal or {}).get("interrupted_message")),
        latest_backup=(gathered.get("s3") or {}).get("latest") if not _failed(gathered.get("s3")) else None,
        elapsed=elapsed or {},
    )
    report["attention"] = attention(report, dict(queue_depth_warning=params["queue_depth_warning"],
                                                 tls_warning_days=params["tls_warning_days"]))
    report["status"] = "attention" if report["attention"] else "ok"
    return report


# --------------------------------------------------------------------------- Markdown


def _cell(value):
    return str("" if value is None else value).replace("|", "\\|").replace("\n", " ")


def _table(headers, rows):
    lines = ["| %s |" % " | ".join(headers), "|%s|" % "|".join("---" for dummy in headers)]
    lines += ["| %s |" % " | ".join(_cell(v) for v in row) for row in rows]
    return lines


def markdown(report):
    """The report as the Markdown an on-call pastes into the handoff channel."""
    window = report["window"]
    out = ["# Apex shift handoff", "",
           "Window: %s to %s (%s h). Status: **%s**."
           % (window["since"], window["until"], window["hours"], report["status"]), ""]
    out += ["## Look at first", ""]
    out += ["- %s" % item for item in report["attention"]] or ["- nothing: no failed access, lock, alert or backlog"]
    access_rows = [(r["name"], r["status"], r["detail"]) for r in report["access"]]
    out += ["", "## Access", ""] + _table(["System", "Status", "Detail"], access_rows)
    out += ["", "## Changes in the window", ""]
    if report["changes"]:
        out += _table(["Time (UTC)", "Kind", "What", "Outcome", "Source"],
                      [(c["time"], c["category"], c["what"], c["outcome"], c["source"]) for c in report["changes"]])
    else:
        out.append("None recorded.")
    alerts = report["alerts"]
    out += ["", "## Alerts", "", "Firing now: " + (alerts["firing_detail"] or (
        ", ".join("%s (%s, since %s)" % (a["name"], a["severity"], a["since"]) for a in alerts["firing"]) or "none"))]
    out += ["Fired in the window: " + (alerts["fired_detail"] or (
        ", ".join("%s (%s)" % (a["name"], a["severity"]) for a in alerts["fired"]) or "none"))]
    out += ["", "## Queue", "", report["queue"]["detail"]]
    out += ["", "## Certificate", "", report["certificate"]["detail"]]
    lock = report["lock"]
    lock_text = "open, " + lock["detail"] if lock["open"] else lock["detail"]
    out += ["", "## Maintenance lock", "", "%s: %s" % (lock["name"], lock_text)]
    if report["journal"]["interrupted"]:
        out += ["", "Interrupted procedure: %s" % report["journal"]["message"]]
    return "\n".join(out) + "\n"
