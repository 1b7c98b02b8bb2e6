# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shift handoff's reads, all at once (apex_handoff): one thread per source.

Every source is read-only and answers two questions: can the on-call reach it (access), and what
does it say about the last hours (changes, alerts, queue, certificate, lock). A source that fails
is a failed access check carrying the error (``health_gather.run_all`` turns the exception into
``{failed, msg}``); it never stops the others. ``handoff_report`` shapes the results.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils import alert_sources, aws_clients, health_gather, prometheus_api

LEASE_API = ("/apis/coordination.k8s.io/v1", "leases")
SCALE_EVENT_REASONS = ("ScalingReplicaSet", "SuccessfulRescale")


def kube_access(params, context):
    """``kubectl get nodes`` in one context: the node names and how many are Ready."""
    from ansible_collections.apex.ops.plugins.module_utils import k8s
    from ansible_collections.apex.ops.plugins.module_utils.k8s_info import node_summary

    client = k8s.connect(dict(params["k8s"], context=context or params["k8s"].get("context")), request_timeout=10.0)
    try:
        nodes = [node_summary(n) for n in (client.list("/api/v1/nodes") or {}).get("items") or []]
    finally:
        client.close()
    return dict(context=context, server=client.server, nodes=len(nodes), ready=sum(1 for n in nodes if n["ready"]))


def database_access(params):
    from ansible_collections.apex.ops.plugins.module_utils import postgres

    conn = postgres.connect(params["postgres"])
    try:
        row = conn.execute("SELECT current_user, current_database(), pg_is_in_recovery(), "
                           "current_setting('server_version')").fetchone()
    finally:
        conn.close()
    return dict(user=row[0], database=row[1], in_recovery=row[2], version=row[3])


def backups(params, since_seconds):
    """Access to the backup bucket, and the catalog's backups (newest first, within the window)."""
    from ansible_collections.apex.ops.plugins.module_utils import catalog_store, s3_store

    store = s3_store.Store(s3_store.make_client(params["s3"], read_timeout=15.0), params["s3"]["s3_bucket"])
    store.check_bucket()
    entries = catalog_store.load_catalog(store, params["s3"]["s3_prefix"])[0]
    recent = [e for e in entries if e["age_seconds"] <= since_seconds]
    return dict(bucket=params["s3"]["s3_bucket"], total=len(entries), recent=recent,
                latest=entries[0] if entries else None)


def route53_access(params):
    client = aws_clients.client(params["s3"], "route53")
    zone_id = params["route53_zone_id"]
    if zone_id:
        zone = client.get_hosted_zone(Id=zone_id)["HostedZone"]
        return dict(zone_id=zone_id, zone=zone.get("Name"), records=zone.get("ResourceRecordSetCount"))
    zones = client.list_hosted_zones(MaxItems="100").get("HostedZones") or []
    return dict(zone_id=None, zones=len(zones))


def _prom_headers(params):
    return alert_sources.auth_headers(params["prometheus_token"], params["prometheus_username"],
                                      params["prometheus_password"])


def prometheus_alerts(params, since_seconds):
    """The alerts that fired in the window (Prometheus' ALERTS series), through the collection's one
    Prometheus client (its errors say unreachable / refused / not the API)."""
    client = prometheus_api.PrometheusClient(
        params["prometheus_url"], token=params["prometheus_token"], username=params["prometheus_username"],
        password=params["prometheus_password"], ca_file=params["prometheus_ca"], timeout=params["http_timeout"])
    data = client.query(alert_sources.FIRED_QUERY % alert_sources.window_text(since_seconds))
    return dict(fired=alert_sources.fired_alerts(data))


def alertmanager_alerts(params):
    """What fires now (Alertmanager's active alerts, silenced and inhibited ones left out)."""
    alerts = alert_sources.get_json(params["alertmanager_url"].rstrip("/") + "/api/v2/alerts", _prom_headers(params),
                                    params["prometheus_ca"], params["http_timeout"],
                                    query={"active": "true", "silenced": "false", "inhibited": "false"})
    return dict(firing=alert_sources.firing_now(alerts))


def cluster_state(params):
    """The namespace's history and lock: Lease, events, workloads and their revisions (concurrent lists)."""
    from ansible_collections.apex.ops.plugins.module_utils import k8s
    from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import ns_path

    namespace = params["k8s"]["namespace"]
    client = k8s.connect(params["k8s"], request_timeout=15.0)
    calls = dict(
        lease=lambda: k8s.get_or_none(client, ns_path(LEASE_API, namespace, params["lock_name"])),
        events=lambda: client.list("/api/v1/namespaces/%s/events" % namespace),
        deployments=lambda: client.list("/apis/apps/v1/namespaces/%s/deployments" % namespace),
        replicasets=lambda: client.list("/apis/apps/v1/namespaces/%s/replicasets" % namespace),
        statefulsets=lambda: client.list("/apis/apps/v1/namespaces/%s/statefulsets" % namespace),
        controllerrevisions=lambda: client.list("/apis/apps/v1/namespaces/%s/controllerrevisions" % namespace),
    )
    try:
        raw = k8s.run_parallel(calls)
    finally:
        client.close()
    out = {}
    for key, (value, exc) in raw.items():
        if exc is not None:
            raise exc
        out[key] = value if key == "lease" else (value or {}).get("items") or []
    return out


def helm_history(params):
    from ansible_collections.apex.ops.plugins.module_utils import helm_client

    if helm_client.REQUIREMENT[1] is not None:
        return dict(available=False, msg="helm-python-sdk is not installed (pip install helm-python-sdk)")
    session_params = dict(params["k8s"], storage_driver=params["helm_storage_driver"],
                          sql_connection_string=params["helm_sql_connection_string"])
    with helm_client.HelmSession(session_params) as helm:
        try:
            history = helm.call("history", name=params["helm_release"])
        except helm_client.HelmCallError as exc:
            if exc.not_found:
                return dict(available=True, release=params["helm_release"], exists=False, history=[])
            raise
    return dict(available=True, release=params["helm_release"], exists=True, history=history)


def tls_state(params):
    return health_gather.tls_facts(params)


def jobs(params, since_seconds):
    """``{source: callable}`` for the sources the parameters configure."""
    out = {}
    for context in params["kube_contexts"] or [None]:
        out["kubernetes %s" % (context or "(current context)")] = (lambda c=context: kube_access(params, c))
    out["cluster"] = lambda: cluster_state(params)
    if params["database"]:
        out["database"] = lambda: database_access(params)
    if params["queue"]:
        out["redis"] = lambda: health_gather.queue_facts(params)
    if params["s3"]["s3_bucket"]:
        out["s3"] = lambda: backups(params, since_seconds)
    if params["route53"]:
        out["route53"] = lambda: route53_access(params)
    if params["prometheus_url"]:
        out["prometheus"] = lambda: prometheus_alerts(params, since_seconds)
    if params["alertmanager_url"]:
        out["alertmanager"] = lambda: alertmanager_alerts(params)
    if params["helm"]:
        out["helm"] = lambda: helm_history(params)
    if params["tls"]:
        out["tls"] = lambda: tls_state(params)
    return out


def gather(params, since_seconds):
    """Every source at once: ``({source: result or {failed, msg}}, {source: seconds})``."""
    return health_gather.run_all(jobs(params, since_seconds))
