"""The twin's HTTPS API: health, readiness, maintenance, admin auth, metrics by track, TLS hot-swap."""
import re
import time

from twin import certs

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$')


def parse_metrics(text):
    """Prometheus text format → {(name, frozenset(labels)): value}; checks every line parses."""
    samples, types = {}, {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            name, kind = line.split(" ", 3)[2:]
            types[name] = kind
            continue
        if line.startswith("#"):
            continue
        match = SAMPLE_RE.match(line)
        assert match, "unparsable metrics line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_lab_twin_is_up(lab):
    """The lab's own twin (started by lab.py) answers over HTTPS with the lab CA."""
    import http.client
    import ssl
    from urllib.parse import urlsplit
    url = urlsplit(lab["APEX_API_URL"])
    ctx = ssl.create_default_context(cafile=lab["APEX_CA_FILE"])
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=10)
    conn.request("GET", "/live")
    assert conn.getresponse().status == 200
    conn.close()


def test_health_reports_database_and_redis(fresh_twin):
    fresh_twin.set_state(version="2.3.4")
    status, headers, body = fresh_twin.request("GET", "/health")
    assert status == 200, body
    assert body["status"] == "healthy" and body["version"] == "2.3.4"
    assert body["database"]["ok"] is True and body["database"]["latency_ms"] >= 0
    assert body["redis"]["ok"] is True
    assert body["maintenance_mode"] is False and body["circuit_breaker"]["state"] == "closed"
    assert headers["x-apex-version"] == "2.3.4" and headers["x-apex-track"] == "stable"
    assert fresh_twin.request("GET", "/ready")[0] == 200
    assert fresh_twin.request("GET", "/live")[0] == 200


def test_health_is_503_when_redis_is_unreachable(make_twin):
    from twin.testing import free_port
    closed = free_port()  # nothing listens there
    t = make_twin("noredis", APEX_REDIS_URL="redis://:x@127.0.0.1:%d/0" % closed)
    status, dummy, body = t.request("GET", "/health")
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["redis"]["ok"] is False and body["redis"].get("error")
    assert body["database"]["ok"] is True
    status, dummy, body = t.request("GET", "/ready")
    assert status == 503 and "redis unavailable" in body["reasons"]
    assert t.request("GET", "/live")[0] == 200
    status, dummy, body = t.request("POST", "/api/v1/tasks", {"payload": {"x": 1}})
    assert status == 503


def test_health_is_503_when_database_is_unreachable(make_twin):
    from twin.testing import free_port
    t = make_twin("nodb", APEX_PG_DSN="host=127.0.0.1 port=%d user=apex dbname=apex connect_timeout=1" % free_port())
    status, dummy, body = t.request("GET", "/health")
    assert status == 503 and body["database"]["ok"] is False and body["redis"]["ok"] is True


def test_maintenance_mode_via_state_file(fresh_twin, scratch_db):
    before = scratch_db.execute("SELECT count(*) FROM tasks").fetchone()[0]
    fresh_twin.set_state(maintenance_mode=True)
    status, headers, body = fresh_twin.request("POST", "/api/v1/tasks", {"payload": {"x": 1}})
    assert status == 503 and body["error"] == "maintenance" and "maintenance" in body["message"]
    assert headers.get("retry-after")
    assert fresh_twin.request("GET", "/api/v1/tasks/whatever")[0] == 503
    status, dummy, body = fresh_twin.request("GET", "/health")
    assert status == 200 and body["maintenance_mode"] is True and body["status"] == "maintenance"
    status, dummy, body = fresh_twin.request("GET", "/ready")
    assert status == 503 and "maintenance_mode" in body["reasons"]
    assert scratch_db.execute("SELECT count(*) FROM tasks").fetchone()[0] == before
    fresh_twin.set_state(maintenance_mode=False)
    assert fresh_twin.request("POST", "/api/v1/tasks", {"payload": {"x": 1}})[0] == 202


def test_admin_reset_needs_the_bearer_token(fresh_twin, twin_base_env):
    token = twin_base_env["env"]["APEX_ADMIN_TOKEN"]
    path = "/admin/circuit-breaker/reset"
    status, headers, body = fresh_twin.request("POST", path)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert token not in str(body)
    assert fresh_twin.request("POST", path, headers={"Authorization": "Bearer wrong"})[0] == 401
    assert fresh_twin.request("POST", path, headers={"Authorization": "Basic " + token})[0] == 401
    assert fresh_twin.request("POST", path, headers={"Authorization": "Bearer " + token + "x"})[0] == 401
    auth = {"Authorization": "Bearer " + token}
    status, dummy, body = fresh_twin.request("POST", "/admin/circuit-breaker/trip", {"provider": "openai"}, auth)
    assert status == 200 and body["circuit_breaker"]["state"] == "open"
    health = fresh_twin.request("GET", "/health")[2]
    assert health["circuit_breaker"]["state"] == "open" and health["status"] == "degraded"
    status, dummy, body = fresh_twin.request("POST", path, headers=auth)
    assert status == 200 and body["circuit_breaker"]["state"] == "closed" and body["previous"]["state"] == "open"
    assert fresh_twin.request("GET", "/health")[2]["circuit_breaker"]["state"] == "closed"


def test_metrics_count_requests_by_track(fresh_twin):
    fresh_twin.set_state(version="1.0.0", api_ready_replicas=3,
                         canary={"ready_replicas": 1, "version": "1.1.0", "failure_rate": 1.0, "latency_ms": 12})
    n = 200
    tracks = {"stable": 0, "canary": 0}
    conn = fresh_twin.connect()
    for dummy in range(n):
        status, headers, dummy = fresh_twin.request("GET", "/nothing-here", conn=conn)
        tracks[headers["x-apex-track"]] += 1
        assert status == (500 if headers["x-apex-track"] == "canary" else 404)
        assert headers["x-apex-version"] == ("1.1.0" if headers["x-apex-track"] == "canary" else "1.0.0")
    conn.close()
    # The twin counts a request after its response is sent: under load /metrics (another connection)
    # can be served before the last count lands, so read it until the counts are in (monotonic deadline).
    deadline = time.monotonic() + 10
    while True:
        status, headers, text = fresh_twin.request("GET", "/metrics")
        samples, types = parse_metrics(text)
        canary = value(samples, "apex_http_requests_total", status="500", track="canary")
        stable = value(samples, "apex_http_requests_total", status="404", track="stable")
        if (canary >= tracks["canary"] and stable >= tracks["stable"]) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert types["apex_http_requests_total"] == "counter"
    assert types["apex_http_request_duration_seconds"] == "histogram"
    for name in ("apex_tasks_completed_total", "apex_tasks_failed_total"):
        assert types[name] == "counter" and (name, frozenset()) in samples
    for name in ("apex_queue_depth", "apex_dead_letter_depth"):
        assert types[name] == "gauge" and (name, frozenset()) in samples
    assert value(samples, "apex_build_info", version="1.1.0", track="canary") == 1
    assert canary == tracks["canary"] and stable >= tracks["stable"]
    # 1 canary replica of 4: expect 25 %; 200 draws give sigma ~3.1 %, allow 3.6 sigma
    assert 0.14 <= tracks["canary"] / float(n) <= 0.36, tracks
    for track in ("stable", "canary"):
        count = value(samples, "apex_http_request_duration_seconds_count", track=track)
        assert value(samples, "apex_http_request_duration_seconds_bucket", track=track, le="+Inf") == count
        buckets = sorted((float(dict(k[1])["le"]), v) for k, v in samples.items()
                         if k[0] == "apex_http_request_duration_seconds_bucket" and dict(k[1])["track"] == track)
        assert [v for dummy, v in buckets] == sorted(v for dummy, v in buckets)  # cumulative
    # canary latency 12 ms: nothing of it lands in the 5 ms and 10 ms buckets
    assert value(samples, "apex_http_request_duration_seconds_bucket", track="canary", le="0.01") == 0
    assert value(samples, "apex_http_request_duration_seconds_sum", track="canary") >= 0.012 * canary


def test_no_ready_api_replicas_means_503_except_live(fresh_twin):
    fresh_twin.set_state(api_ready_replicas=0)
    for path in ("/health", "/ready", "/metrics", "/api/v1/tasks/x"):
        status, dummy, body = fresh_twin.request("GET", path)
        assert status == 503 and body["error"] == "no ready replicas", path
    assert fresh_twin.request("GET", "/live")[0] == 200
    fresh_twin.set_state(api_ready_replicas=0, canary={"ready_replicas": 2, "version": "9.9.9"})
    status, headers, body = fresh_twin.request("GET", "/health")
    assert status == 200 and headers["x-apex-track"] == "canary" and body["version"] == "9.9.9"


def test_failure_rate_and_latency_of_the_stable_track(fresh_twin):
    fresh_twin.set_state(failure_rate=1.0, latency_ms=150)
    t0 = time.monotonic()
    status, dummy, body = fresh_twin.request("GET", "/health")
    assert status == 500 and "injected" in body["detail"]
    assert time.monotonic() - t0 >= 0.15
    assert fresh_twin.request("GET", "/live")[0] == 200


def test_bad_submissions_are_rejected_and_insert_nothing(fresh_twin, scratch_db):
    before = scratch_db.execute("SELECT count(*) FROM tasks").fetchone()[0]
    assert fresh_twin.request("POST", "/api/v1/tasks", b"{not json")[0] == 400
    assert fresh_twin.request("POST", "/api/v1/tasks", b"[1, 2]")[0] == 400
    assert fresh_twin.request("POST", "/api/v1/tasks", {"payload": "text"})[0] == 400
    assert fresh_twin.request("POST", "/api/v1/tasks", {"task_id": "a b; DROP TABLE tasks"})[0] == 400
    assert fresh_twin.request("POST", "/api/v1/tasks", {"agent_id": 987654321, "payload": {}})[0] == 400
    assert fresh_twin.request("GET", "/api/v1/tasks")[0] == 405
    assert scratch_db.execute("SELECT count(*) FROM tasks").fetchone()[0] == before
    status, dummy, body = fresh_twin.request("POST", "/api/v1/tasks", {"task_id": "dup-1", "payload": {}})
    assert status == 202
    assert fresh_twin.request("POST", "/api/v1/tasks", {"task_id": "dup-1", "payload": {}})[0] == 409
    status, dummy, body = fresh_twin.request("GET", "/api/v1/tasks/dup-1")
    assert status == 200 and body["status"] == "queued"
    assert fresh_twin.request("GET", "/api/v1/tasks/nope-404")[0] == 404


def test_certificate_hot_swap_via_state_file(fresh_twin, twin_base_env, tmp_path):
    from twin.testing import wait_for
    assert certs.served_serial("127.0.0.1", fresh_twin.port) == twin_base_env["serial"]
    cert_pem, key_pem, serial = certs.issue(twin_base_env["ca_pem"], twin_base_env["ca_key"])
    cert, key = certs.write_pair(str(tmp_path), "renewed", cert_pem, key_pem)
    fresh_twin.set_state(tls_cert_file=cert, tls_key_file=key)
    wait_for(lambda: certs.served_serial("127.0.0.1", fresh_twin.port) == serial, 5, what="renewed serial")
    assert fresh_twin.request("GET", "/live")[0] == 200  # verifies against the lab CA, SAN localhost
    # the same path rewritten in place (a secret update) is picked up too
    cert_pem2, key_pem2, serial2 = certs.issue(twin_base_env["ca_pem"], twin_base_env["ca_key"])
    time.sleep(0.01)
    certs.write_pair(str(tmp_path), "renewed", cert_pem2, key_pem2)
    wait_for(lambda: certs.served_serial("127.0.0.1", fresh_twin.port) == serial2, 5, what="rewritten serial")
    # a broken pair is refused; the previous certificate stays in service
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate")
    fresh_twin.set_state(tls_cert_file=str(bad), tls_key_file=key)
    assert certs.served_serial("127.0.0.1", fresh_twin.port) == serial2


def test_slow_queries_fill_the_pool_and_ready_says_no_capacity(fresh_twin, scratch_db):
    import threading
    # the slow query must outlast the wait for it plus the /ready request on a loaded machine
    fresh_twin.set_state(db_max_connections=1, db_latency_ms=3000)
    results = []
    thread = threading.Thread(target=lambda: results.append(
        fresh_twin.request("POST", "/api/v1/tasks", {"payload": {"slow": True}})[0]))
    thread.start()
    from twin.testing import wait_for
    wait_for(lambda: scratch_db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'apex-api' AND state = 'active' "
        "AND query LIKE '%%pg_sleep%%'").fetchone()[0] == 1, 5, what="slow query in pg_stat_activity")
    status, dummy, body = fresh_twin.request("GET", "/ready")
    assert status == 503 and any("no capacity" in r for r in body["reasons"]), body
    thread.join(10)
    assert results == [202]
    assert fresh_twin.request("GET", "/ready")[0] == 200


def test_provider_status_pages_are_statuspage_documents_set_with_the_admin_token(fresh_twin, twin_base_env):
    auth = {"Authorization": "Bearer " + twin_base_env["env"]["APEX_ADMIN_TOKEN"]}
    status, dummy, body = fresh_twin.request("GET", "/status/openai")
    assert status == 200 and body["status"] == {"indicator": "none", "description": "All Systems Operational"}
    assert fresh_twin.request("POST", "/status/openai", {"indicator": "major"})[0] == 401
    assert fresh_twin.request("POST", "/status/openai", {"indicator": "down"}, auth)[0] == 400
    fresh_twin.set_state(api_ready_replicas=0, failure_rate=1.0)  # another service: never routed to an API track
    status, dummy, body = fresh_twin.request("POST", "/status/openai", {"indicator": "major"}, auth)
    assert status == 200 and body["status"]["indicator"] == "major"
    assert fresh_twin.request("GET", "/status/openai")[2]["status"]["indicator"] == "major"
    assert fresh_twin.request("GET", "/status/anthropic")[2]["status"]["indicator"] == "none"
    assert fresh_twin.request("GET", "/status/../etc")[0] == 404
