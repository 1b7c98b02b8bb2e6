"""Pure: readings -> Prometheus text format 0.0.4, with the metric names of the production exporters
(postgres_exporter, kube-state-metrics, cAdvisor) so the alerting rules are the production ones."""
import threading

from kubesim.metrics import parse_cpu, parse_mem


def _escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels):
    if not labels:
        return ""
    return "{%s}" % ",".join('%s="%s"' % (k, _escape(v)) for k, v in sorted(labels.items()))


def family(name, kind, help_text, samples):
    """One metric family: samples are (labels dict, value)."""
    lines = ["# HELP %s %s" % (name, help_text), "# TYPE %s %s" % (name, kind)]
    lines += ["%s%s %s" % (name, _labels(labels), repr(float(value))) for labels, value in samples]
    return lines


def postgres_text(up, max_connections=None, activity=()):
    """activity: rows (datname, state, usename, application_name, count) of client backends."""
    lines = family("pg_up", "gauge", "Whether the last scrape could reach PostgreSQL.", [({}, 1 if up else 0)])
    if up:
        lines += family("pg_settings_max_connections", "gauge", "Server Parameter: max_connections.",
                        [({}, max_connections)])
        lines += family("pg_stat_activity_count", "gauge", "Client connections by database, state, user and application.",
                        [({"datname": d or "", "state": s or "", "usename": u or "", "application_name": a or ""}, n)
                         for d, s, u, a, n in activity])
    return "\n".join(lines) + "\n"


class CpuCounters:
    """cAdvisor's container_cpu_usage_seconds_total from instantaneous usage (metrics.k8s.io): each
    reading adds usage x elapsed time; a container seen for the first time starts at 0, one gone is
    dropped (its pod is gone)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.totals = {}  # key -> (seconds, monotonic time of the last reading)

    def observe(self, usage, now):
        """usage: {key: cores}; returns {key: seconds}."""
        with self.lock:
            totals = {}
            for key, cores in usage.items():
                seconds, last = self.totals.get(key, (0.0, now))
                totals[key] = (seconds + cores * max(now - last, 0.0), now)
            self.totals = totals
            return {key: seconds for key, (seconds, _last) in totals.items()}


def kubernetes_text(pods, pod_metrics, counters, now):
    """pods: Pod objects; pod_metrics: PodMetrics objects; counters: CpuCounters."""
    limits = []
    for pod in pods:
        meta = pod["metadata"]
        for c in pod["spec"].get("containers") or []:
            lim = (c.get("resources") or {}).get("limits") or {}
            base = {"namespace": meta["namespace"], "pod": meta["name"], "container": c["name"]}
            if "cpu" in lim:
                limits.append((dict(base, resource="cpu", unit="core"), parse_cpu(lim["cpu"])))
            if "memory" in lim:
                limits.append((dict(base, resource="memory", unit="byte"), parse_mem(lim["memory"])))
    memory, cpu = [], {}
    for pm in pod_metrics:
        meta = pm["metadata"]
        for c in pm.get("containers") or []:
            key = (meta["namespace"], meta["name"], c["name"])
            memory.append(({"namespace": key[0], "pod": key[1], "container": key[2]}, parse_mem(c["usage"]["memory"])))
            cpu[key] = parse_cpu(c["usage"]["cpu"])
    totals = counters.observe(cpu, now)
    lines = family("kube_pod_container_resource_limits", "gauge", "The container's resource limits (kube-state-metrics).",
                   limits)
    lines += family("container_memory_working_set_bytes", "gauge", "Current working set of the container (cAdvisor).",
                    memory)
    lines += family("container_cpu_usage_seconds_total", "counter", "CPU time consumed by the container (cAdvisor).",
                    [({"namespace": k[0], "pod": k[1], "container": k[2]}, v) for k, v in sorted(totals.items())])
    return "\n".join(lines) + "\n"
