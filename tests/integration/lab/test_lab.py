"""The lab's own contract: real services, replicating standby, persistence, moto resources.

These tests use the shared lab (``make lab-up``) and never stop it: `down`/`up` cycles are
exercised by tests/lab/selftest.sh in a throw-away lab directory.
"""
import json
import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LAB_PY = ROOT / "tests" / "lab" / "lab.py"


def _lab_cmd(lab, *args, timeout=120):
    env = dict(os.environ, APEX_LAB_DIR=lab["APEX_LAB_DIR"])
    return subprocess.run([sys.executable, str(LAB_PY)] + list(args), capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=str(ROOT), check=False)


@pytest.fixture(scope="module")
def pg():
    psycopg = pytest.importorskip("psycopg")
    return psycopg


def _wait(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    return last


def test_env_file_is_private_and_complete(lab):
    env_file = Path(lab["APEX_LAB_DIR"]) / "env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((Path(lab["APEX_LAB_DIR"]) / "secrets.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(lab["APEX_CA_KEY"]).stat().st_mode) == 0o600
    required = """APEX_LAB_DIR PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE APEX_PG_DSN APEX_PG_ADMIN_DSN
        APEX_PG_STANDBY_PORT APEX_PG_STANDBY_DSN APEX_PG_WAL_ARCHIVE APEX_PG_BIN APEX_REDIS_HOST
        APEX_REDIS_PORT APEX_REDIS_PASSWORD APEX_REDIS_URL APEX_REDIS_DIR AWS_ENDPOINT_URL
        AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION APEX_S3_BUCKET APEX_CA_FILE
        APEX_CA_KEY APEX_API_URL APEX_API_HOSTNAME APEX_ADMIN_TOKEN APEX_TWIN_STATE
        HELM_DRIVER_SQL_CONNECTION_STRING APEX_TWIN_PORT APEX_TWIN_CERT APEX_TWIN_KEY
        APEX_KUBE_PRIMARY_PORT APEX_KUBE_SECONDARY_PORT APEX_ROUTE53_ZONE_ID
        ANSIBLE_COLLECTIONS_PATH APEX_PROMETHEUS_URL APEX_ALERTMANAGER_URL APEX_EDA_WEBHOOK_PORT
        APEX_EXPORTER_URL""".split()
    missing = [k for k in required if not lab.get(k)]
    assert not missing, missing
    assert "PYTHONPATH" not in lab
    env_json = json.loads((Path(lab["APEX_LAB_DIR"]) / "env.json").read_text())
    assert env_json == lab
    link = Path(lab["ANSIBLE_COLLECTIONS_PATH"]) / "ansible_collections" / "apex" / "ops"
    assert link.resolve() == ROOT.resolve()


def test_status_exits_zero(lab):
    proc = _lab_cmd(lab, "status", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["healthy"] is True
    names = {s["service"] for s in report["services"]}
    assert {"pg-primary", "pg-standby", "redis", "moto"} <= names


def test_up_again_is_a_fast_noop(lab):
    pids_before = json.loads(_lab_cmd(lab, "status", "--json").stdout)
    started = time.monotonic()
    proc = _lab_cmd(lab, "up")
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stderr, proc.stderr
    # generous for a loaded CI machine; "nothing to do" and the unchanged PIDs carry the intent
    assert took < 15.0, "idempotent up took %.2fs" % took
    pids_after = json.loads(_lab_cmd(lab, "status", "--json").stdout)
    assert [(s["service"], s["pid"]) for s in pids_before["services"]] == \
           [(s["service"], s["pid"]) for s in pids_after["services"]]


def _listening_sockets():
    """(local address, port) of every TCP listener, from /proc/net/tcp{,6}."""
    found = []
    for path, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(path).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            found.append((addr_hex, int(port_hex, 16), width))
    return found


def test_every_port_is_bound_to_loopback_only(lab):
    ports = json.loads((Path(lab["APEX_LAB_DIR"]) / "ports.json").read_text())
    status = json.loads(_lab_cmd(lab, "status", "--json").stdout)
    running = set()
    for svc in status["services"]:
        if svc["healthy"] and svc["pid"] and svc["port"]:
            running.update(int(p) for p in str(svc["port"]).split(","))
    assert {ports["pg_primary"], ports["pg_standby"], ports["redis"], ports["moto"], ports["prometheus"],
            ports["alertmanager"], ports["exporter"]} <= running
    listeners = _listening_sockets()
    for port in running:
        addrs = [(a, w) for a, p, w in listeners if p == port]
        assert addrs, "nothing listens on %d" % port
        for addr, width in addrs:
            # 0100007F is 127.0.0.1 in /proc's little-endian hex; no wildcard, no IPv6 listener.
            assert width == 8 and addr == "0100007F", "port %d bound to %s" % (port, addr)
    # and a connection to a non-loopback address of this host is refused
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))
        own_ip = s.getsockname()[0]
    finally:
        s.close()
    if own_ip != "127.0.0.1":
        with pytest.raises(OSError):
            socket.create_connection((own_ip, ports["pg_primary"]), timeout=1).close()


def test_primary_settings_and_roles(lab, pg):
    with pg.connect(lab["APEX_PG_ADMIN_DSN"], autocommit=True) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('wal_level','archive_mode',"
            "'listen_addresses','shared_preload_libraries','password_encryption','max_wal_senders')"
        ).fetchall())
        assert settings["wal_level"] == "replica"
        assert settings["archive_mode"] == "on"
        assert settings["listen_addresses"] == "127.0.0.1"
        assert "pg_stat_statements" in settings["shared_preload_libraries"]
        assert settings["password_encryption"] == "scram-sha-256"
        assert int(settings["max_wal_senders"]) > 0
        ext = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()
        assert ext, "pg_stat_statements not created in db apex"
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'apex'").fetchone()[0]
        assert owner == "apex"
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'helm'").fetchone()
        assert conn.execute("SELECT rolreplication FROM pg_roles WHERE rolname = 'replicator'").fetchone()[0]
    with pg.connect(lab["APEX_PG_DSN"]) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == ("apex", "apex")
    with pg.connect(lab["HELM_DRIVER_SQL_CONNECTION_STRING"]) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "helm"
    bad = lab["APEX_PG_DSN"].replace("password=%s" % lab["APEX_PG_APP_PASSWORD"], "password=wrong")
    with pytest.raises(pg.OperationalError):
        pg.connect(bad, connect_timeout=5).close()


def test_tls_with_the_lab_ca(lab, pg):
    dsn = lab["APEX_PG_ADMIN_DSN"] + " sslmode=verify-full sslrootcert=%s" % lab["APEX_CA_FILE"]
    with pg.connect(dsn) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is True


def test_standby_really_replicates(lab, pg):
    # probe tables live in db `postgres`, so the application database stays as the twin left it
    marker = "lab-%s" % uuid.uuid4().hex
    table = "lab_replication_probe_%s" % marker[4:12]
    with pg.connect(lab["APEX_PG_ADMIN_DSN"], dbname="postgres", autocommit=True) as primary:
        primary.execute("CREATE TABLE %s (marker text PRIMARY KEY, at timestamptz)" % table)
        primary.execute("INSERT INTO %s VALUES (%%s, now())" % table, (marker,))
        rows = primary.execute("SELECT application_name, state FROM pg_stat_replication").fetchall()
        assert ("apex-standby", "streaming") in rows, rows
    try:
        with pg.connect(lab["APEX_PG_STANDBY_DSN"], dbname="postgres", autocommit=True) as standby:
            assert standby.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
            assert standby.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()[0] == "streaming"

            def seen():
                if not standby.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0]:
                    return False
                return standby.execute("SELECT count(*) FROM %s WHERE marker = %%s" % table,
                                       (marker,)).fetchone()[0] == 1
            assert _wait(seen), "row written on the primary never reached the standby"
            with pytest.raises(pg.errors.ReadOnlySqlTransaction):
                standby.execute("INSERT INTO %s VALUES ('nope', now())" % table)
    finally:
        with pg.connect(lab["APEX_PG_ADMIN_DSN"], dbname="postgres", autocommit=True) as primary:
            primary.execute("DROP TABLE IF EXISTS %s" % table)


def test_wal_archive_receives_segments(lab, pg):
    archive = Path(lab["APEX_PG_WAL_ARCHIVE"])
    with pg.connect(lab["APEX_PG_ADMIN_DSN"], dbname="postgres", autocommit=True) as conn:
        before = conn.execute("SELECT archived_count FROM pg_stat_archiver").fetchone()[0]
        conn.execute("CREATE TABLE IF NOT EXISTS lab_archive_probe (x int)")
        conn.execute("INSERT INTO lab_archive_probe VALUES (1)")  # so the switch has WAL to close
        # the segment just completed (pg_switch_wal returns its end + 1, which names it)
        walfile = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]

        assert _wait((archive / walfile).exists, 30), "%s never reached %s" % (walfile, archive)
        # cp creates the file a moment before the archiver records its success
        assert _wait(lambda: conn.execute("SELECT archived_count FROM pg_stat_archiver").fetchone()[0] > before, 30)
        failed = conn.execute("SELECT failed_count, last_failed_wal FROM pg_stat_archiver").fetchone()
        conn.execute("DROP TABLE lab_archive_probe")
    assert failed[0] == 0, failed


def test_redis_bgsave_writes_rdb(lab):
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(lab["APEX_REDIS_URL"])
    assert client.config_get("bind")["bind"] == "127.0.0.1"
    assert client.config_get("dir")["dir"] == str(Path(lab["APEX_REDIS_DIR"]).resolve())
    dump = Path(lab["APEX_REDIS_DIR"]) / "dump.rdb"
    client.set("lab:probe", uuid.uuid4().hex)
    saves_before = client.info("persistence")["rdb_saves"]
    started = time.time()

    def bgsave():
        try:
            return client.bgsave()
        except redis.ResponseError as exc:  # another test's BGSAVE is running: wait for it
            if "in progress" not in str(exc):
                raise
            return False
    assert _wait(bgsave, 30), "could not start BGSAVE"

    def saved():
        info = client.info("persistence")
        return info["rdb_saves"] > saves_before and not info["rdb_bgsave_in_progress"]
    assert _wait(saved, 30), "BGSAVE did not complete"
    assert client.info("persistence")["rdb_last_bgsave_status"] == "ok"
    assert dump.exists() and dump.stat().st_size > 0
    assert dump.stat().st_mtime >= started - 1
    client.delete("lab:probe")
    # requirepass is enforced (raw protocol: redis-py would retry a failed AUTH with backoff)
    with socket.create_connection(("127.0.0.1", int(lab["APEX_REDIS_PORT"])), timeout=5) as raw:
        raw.sendall(b"PING\r\nAUTH wrong\r\n")
        reply = b""
        while reply.count(b"\r\n") < 2:
            chunk = raw.recv(512)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"-NOAUTH"), reply
    assert b"-WRONGPASS" in reply, reply


def _aws(lab, service):
    boto3 = pytest.importorskip("boto3")
    return boto3.client(service, endpoint_url=lab["AWS_ENDPOINT_URL"], region_name=lab["AWS_DEFAULT_REGION"],
                        aws_access_key_id=lab["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=lab["AWS_SECRET_ACCESS_KEY"])


def test_s3_bucket_exists(lab):
    s3 = _aws(lab, "s3")
    assert lab["APEX_S3_BUCKET"] == "apex-backups"
    s3.head_bucket(Bucket=lab["APEX_S3_BUCKET"])
    key = "lab-probe/%s" % uuid.uuid4().hex
    s3.put_object(Bucket=lab["APEX_S3_BUCKET"], Key=key, Body=b"probe")
    assert s3.get_object(Bucket=lab["APEX_S3_BUCKET"], Key=key)["Body"].read() == b"probe"
    s3.delete_object(Bucket=lab["APEX_S3_BUCKET"], Key=key)


def test_route53_zone_and_record(lab):
    r53 = _aws(lab, "route53")
    zone = r53.get_hosted_zone(Id=lab["APEX_ROUTE53_ZONE_ID"])["HostedZone"]
    assert zone["Name"] == "apex.lab.test."
    records = r53.list_resource_record_sets(HostedZoneId=lab["APEX_ROUTE53_ZONE_ID"])["ResourceRecordSets"]
    by_name = {(r["Name"], r["Type"]): r for r in records}
    apex = by_name[("apex.apex.lab.test.", "CNAME")]
    assert apex["ResourceRecords"][0]["Value"] == "primary.apex.lab.test."
    assert ("secondary.apex.lab.test.", "A") in by_name


def test_rds_endpoint_answers(lab):
    rds = _aws(lab, "rds")
    assert "DBInstances" in rds.describe_db_instances()


def test_twin_serves_tls_from_the_lab_ca(lab):
    if not (ROOT / "tests" / "lab" / "twin" / "__main__.py").exists():
        pytest.fail("tests/lab/twin is missing: the lab has no Apex twin")
    import ssl
    import urllib.request
    ctx = ssl.create_default_context(cafile=lab["APEX_CA_FILE"])
    with urllib.request.urlopen(lab["APEX_API_URL"] + "/live", context=ctx, timeout=5) as resp:
        assert resp.status == 200
    port = int(lab["APEX_TWIN_PORT"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="apex.lab.test") as tls:
            cert = tls.getpeercert()
    sans = {value for kind, value in cert["subjectAltName"] if kind in ("DNS", "IP Address")}
    assert {"localhost", "apex.lab.test", "127.0.0.1"} <= sans


def test_schema_applied_by_the_twin(lab, pg):
    if not (ROOT / "tests" / "lab" / "twin" / "__main__.py").exists():
        pytest.fail("tests/lab/twin is missing: nobody applied the Apex schema")
    with pg.connect(lab["APEX_PG_DSN"]) as conn:
        tables = dict(conn.execute("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'"
                                   " AND tablename IN ('tasks', 'agents', 'events', '_sqlx_migrations')").fetchall())
        assert tables == {"tasks": "apex", "agents": "apex", "events": "apex", "_sqlx_migrations": "apex"}
        assert conn.execute("SELECT count(*) FROM _sqlx_migrations WHERE success").fetchone()[0] >= 3


def test_kubeconfig_reaches_both_clusters(lab):
    if not (ROOT / "tests" / "lab" / "kubesim" / "__main__.py").exists():
        pytest.fail("tests/lab/kubesim is missing: the lab has no Kubernetes")
    assert lab["KUBECONFIG"] == lab["K8S_AUTH_KUBECONFIG"]
    assert Path(lab["KUBECONFIG"]).exists()
    env = dict(os.environ, KUBECONFIG=lab["KUBECONFIG"])
    for context in ("apex-primary", "apex-secondary"):
        proc = subprocess.run(["kubectl", "--context", context, "get", "--raw", "/readyz"], capture_output=True,
                              text=True, env=env, timeout=30, check=False)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", (context, proc.stdout, proc.stderr)


def _prometheus(lab, path, **params):
    import urllib.parse
    import urllib.request
    url = "%s%s?%s" % (lab["APEX_PROMETHEUS_URL"], path, urllib.parse.urlencode(params))
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]


def test_prometheus_scrapes_the_twin_every_second(lab):
    """A real Prometheus: the twin's /metrics is a healthy HTTPS target (lab CA), and two
    queries a second apart see two different scrapes (1 s interval)."""
    targets = _wait(lambda: [t for t in _prometheus(lab, "/api/v1/targets")["activeTargets"]
                             if t["labels"]["job"] == "apex" and t["health"] == "up"])
    assert targets, _prometheus(lab, "/api/v1/targets")
    assert targets[0]["scrapeUrl"] == "https://127.0.0.1:%s/metrics" % lab["APEX_TWIN_PORT"]
    assert targets[0]["scrapeInterval"] == "1s"
    series = _prometheus(lab, "/api/v1/query", query='count_over_time(apex_build_info{track="stable"}[5s])')["result"]
    assert series and float(series[0]["value"][1]) >= 3, series
    config = _prometheus(lab, "/api/v1/status/config")["yaml"]
    assert "evaluation_interval: 1s" in config
    assert "%s/prometheus/rules/*.yml" % lab["APEX_LAB_DIR"] in config
    ams = _prometheus(lab, "/api/v1/alertmanagers")["activeAlertmanagers"]
    assert ams and ams[0]["url"].startswith(lab["APEX_ALERTMANAGER_URL"]), ams


def test_alertmanager_routes_to_the_eda_webhook(lab):
    import urllib.request
    with urllib.request.urlopen(lab["APEX_ALERTMANAGER_URL"] + "/api/v2/status", timeout=5) as resp:
        status = json.loads(resp.read())
    assert "http://127.0.0.1:%s/alerts" % lab["APEX_EDA_WEBHOOK_PORT"] in status["config"]["original"]
    assert status["cluster"]["status"] == "disabled"


def test_lab_rules_shorten_every_for(lab):
    sys.path.insert(0, str(ROOT / "tests" / "lab"))
    from services.prometheus import lab_rules
    text = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 5m\n    labels: {severity: page}\n"
    out = lab_rules(text, "2s")
    assert "    for: 2s\n" in out and "5m" not in out
    assert out.replace("2s", "5m") == text
