"""``.lab/env`` (shell) and ``.lab/env.json``: every connection setting of the lab, and the
environment the long-running services get."""
import json
import os
import shlex

from .moto import AWS_REGION, DNS_RECORD, DNS_ZONE, S3_BUCKET
from .postgres import PG_BIN, REPLICATION_ROLE
from .state import LAB_PY_DIR, load_json, write_private


def lab_env(state):
    s, p = state.secrets, state.ports
    zone = (load_json(state.moto_dir / "state.json") or {}).get("zone_id", "")

    def dsn(port, user, password, db, extra=""):
        return "host=127.0.0.1 port=%d user=%s password=%s dbname=%s%s" % (port, user, password, db, extra)
    kubeconfig = str(state.kube_dir / "kubeconfig")
    env = {
        "APEX_LAB_DIR": str(state.dir),
        "PGHOST": "127.0.0.1",
        "PGPORT": str(p["pg_primary"]),
        "PGUSER": "postgres",
        "PGPASSWORD": s["postgres_password"],
        "PGDATABASE": "apex",
        "APEX_PG_DSN": dsn(p["pg_primary"], "apex", s["apex_password"], "apex"),
        "APEX_PG_ADMIN_DSN": dsn(p["pg_primary"], "postgres", s["postgres_password"], "apex"),
        "APEX_PG_STANDBY_PORT": str(p["pg_standby"]),
        "APEX_PG_STANDBY_DSN": dsn(p["pg_standby"], "postgres", s["postgres_password"], "apex"),
        "APEX_PG_APP_USER": "apex",
        "APEX_PG_APP_PASSWORD": s["apex_password"],
        "APEX_PG_REPLICATION_USER": REPLICATION_ROLE,
        "APEX_PG_REPLICATION_PASSWORD": s["replication_password"],
        "APEX_PG_WAL_ARCHIVE": str(state.wal_archive),
        "APEX_PG_STANDBY_WAL_ARCHIVE": str(state.wal_archive_standby),
        "APEX_PG_BIN": str(PG_BIN),
        "APEX_PG_PRIMARY_DATA": str(state.pg_primary),
        "APEX_PG_STANDBY_DATA": str(state.pg_standby),
        "APEX_PG_SOCKET_DIR": str(state.pg_run),
        "APEX_REDIS_HOST": "127.0.0.1",
        "APEX_REDIS_PORT": str(p["redis"]),
        "APEX_REDIS_PASSWORD": s["redis_password"],
        "APEX_REDIS_URL": "redis://:%s@127.0.0.1:%d/0" % (s["redis_password"], p["redis"]),
        "APEX_REDIS_DIR": str(state.redis_dir),
        "AWS_ENDPOINT_URL": "http://127.0.0.1:%d" % p["moto"],
        "AWS_ACCESS_KEY_ID": s["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": s["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": AWS_REGION,
        "AWS_REGION": AWS_REGION,
        "APEX_S3_BUCKET": S3_BUCKET,
        "APEX_ROUTE53_ZONE_ID": zone,
        "APEX_ROUTE53_ZONE": DNS_ZONE,
        "APEX_ROUTE53_RECORD": DNS_RECORD,
        "APEX_CA_FILE": str(state.ca_dir / "ca.crt"),
        "APEX_CA_KEY": str(state.ca_dir / "ca.key"),
        "APEX_API_URL": "https://localhost:%d" % p["twin"],
        "APEX_API_HOSTNAME": "localhost",
        "APEX_ADMIN_TOKEN": s["admin_token"],
        # the lab's fake LLM provider status pages, served by the twin: <url>/<provider>
        "APEX_PROVIDER_STATUS_URL": "https://localhost:%d/status" % p["twin"],
        "APEX_TWIN_PORT": str(p["twin"]),
        "APEX_TWIN_CERT": str(state.twin_dir / "tls.crt"),
        "APEX_TWIN_KEY": str(state.twin_dir / "tls.key"),
        "APEX_TWIN_STATE": str(state.twin_dir / "desired.json"),
        # the secondary region's Apex: the standby database (as role apex), Redis db 1 (its own)
        "APEX_TWIN_SECONDARY_URL": "https://localhost:%d" % p["twin_secondary"],
        "APEX_TWIN_SECONDARY_PORT": str(p["twin_secondary"]),
        "APEX_TWIN_SECONDARY_STATE": str(state.twin_secondary_dir / "desired.json"),
        "APEX_PG_STANDBY_APP_DSN": dsn(p["pg_standby"], "apex", s["apex_password"], "apex"),
        "APEX_KUBE_PRIMARY_PORT": str(p["kube_primary"]),
        "APEX_KUBE_SECONDARY_PORT": str(p["kube_secondary"]),
        "HELM_DRIVER_SQL_CONNECTION_STRING": dsn(p["pg_primary"], "apex", s["apex_password"], "helm",
                                                 " sslmode=disable"),
        "ANSIBLE_COLLECTIONS_PATH": str(state.dir / "collections"),
        "APEX_PROMETHEUS_URL": "http://127.0.0.1:%d" % p["prometheus"],
        "APEX_ALERTMANAGER_URL": "http://127.0.0.1:%d" % p["alertmanager"],
        "APEX_EDA_WEBHOOK_PORT": str(p["eda_webhook"]),
        "APEX_EXPORTER_URL": "http://127.0.0.1:%d" % p["exporter"],
        "APEX_WEBHOOK_SINK_URL": "http://127.0.0.1:%d" % p["webhook_sink"],
    }
    if (LAB_PY_DIR / "kubesim" / "__main__.py").exists():
        env["KUBECONFIG"] = kubeconfig
        env["K8S_AUTH_KUBECONFIG"] = kubeconfig
    return env


def write_env(state):
    env = lab_env(state)
    text = "# apex.ops lab environment, written by tests/lab/lab.py up. Source it: . %s\n" % state.env_file
    text += "".join("export %s=%s\n" % (k, shlex.quote(v)) for k, v in env.items())
    js = json.dumps(env, indent=2) + "\n"
    for path, content in ((state.env_file, text), (state.env_json, js)):
        try:
            same = path.read_text() == content and (path.stat().st_mode & 0o777) == 0o600
        except OSError:
            same = False
        if not same:
            write_private(path, content)


def child_env(state, extra=None):
    """Environment of the long-running services: the caller's, minus anything that would
    configure a service behind the lab's back (`up` is often run from inside a test process
    with its own APEX_*/PG*/AWS_* overrides), plus the lab's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("APEX_", "PG", "AWS_", "K8S_", "KUBE", "HELM_", "REDIS", "PYTHON"))
           or k.startswith("KUBESIM_")}  # the simulator's timing knobs (docs/lab.md)
    env.update(lab_env(state))
    env["PYTHONPATH"] = str(LAB_PY_DIR)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env
