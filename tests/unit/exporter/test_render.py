"""The lab exporter's text: production metric names and labels, a CPU counter that integrates usage."""
from exporter.render import CpuCounters, kubernetes_text, postgres_text


def _samples(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_postgres_text_has_postgres_exporter_names():
    text = postgres_text(True, 100, [("apex", "idle", "apex", "apex-api", 7), (None, None, "postgres", "", 1)])
    got = _samples(text)
    assert got["pg_up"] == 1 and got["pg_settings_max_connections"] == 100
    assert got['pg_stat_activity_count{application_name="apex-api",datname="apex",state="idle",usename="apex"}'] == 7
    assert got['pg_stat_activity_count{application_name="",datname="",state="",usename="postgres"}'] == 1
    assert "# TYPE pg_stat_activity_count gauge" in text


def test_postgres_down_is_pg_up_0_only():
    assert _samples(postgres_text(False)) == {"pg_up": 0}


def test_label_values_are_escaped():
    text = postgres_text(True, 100, [("a\"b", "idle", "u", "x\\y\nz", 1)])
    assert 'application_name="x\\\\y\\nz",datname="a\\"b"' in text


def _pod(name, limits):
    return {"metadata": {"namespace": "apex", "name": name},
            "spec": {"containers": [{"name": "api", "resources": {"limits": limits}}]}}


def _usage(name, cpu, memory):
    return {"metadata": {"namespace": "apex", "name": name},
            "containers": [{"name": "api", "usage": {"cpu": cpu, "memory": memory}}]}


def test_kubernetes_text_limits_memory_and_cpu_counter():
    counters = CpuCounters()
    pods = [_pod("p1", {"cpu": "2", "memory": "2Gi"}), _pod("p2", {"memory": "512Mi"})]
    first = _samples(kubernetes_text(pods, [_usage("p1", "1500m", "1900Mi")], counters, now=100.0))
    base = 'container="api",namespace="apex",pod="p1"'
    assert first['kube_pod_container_resource_limits{%s,resource="cpu",unit="core"}' % base] == 2
    assert first['kube_pod_container_resource_limits{%s,resource="memory",unit="byte"}' % base] == 2 << 30
    assert first['kube_pod_container_resource_limits{container="api",namespace="apex",pod="p2",resource="memory",unit="byte"}'] \
        == 512 << 20
    assert first["container_memory_working_set_bytes{%s}" % base] == 1900 << 20
    assert first["container_cpu_usage_seconds_total{%s}" % base] == 0  # first seen: starts at 0
    # 1.5 cores for 10 s, then 0.5 cores for 4 s
    second = _samples(kubernetes_text(pods, [_usage("p1", "1500m", "1900Mi")], counters, now=110.0))
    assert second["container_cpu_usage_seconds_total{%s}" % base] == 15.0
    third = _samples(kubernetes_text(pods, [_usage("p1", "500000000n", "1900Mi")], counters, now=114.0))
    assert third["container_cpu_usage_seconds_total{%s}" % base] == 17.0


def test_cpu_counter_forgets_a_gone_container():
    counters = CpuCounters()
    counters.observe({"a": 1.0}, 0.0)
    assert counters.observe({"a": 1.0}, 2.0) == {"a": 2.0}
    assert counters.observe({"b": 1.0}, 3.0) == {"b": 0.0}
    assert counters.observe({"a": 1.0}, 4.0) == {"a": 0.0}
