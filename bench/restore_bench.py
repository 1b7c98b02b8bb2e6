#!/usr/bin/env python3
"""The restore playbook against the runbook's "Database Restore" steps, in one run, on the lab.

Three methods, one run each, each restoring the lab's database ``apex`` from the same backup
while the lab's Apex (the twin, driven by the Kubernetes simulator) is up and connected:

``runbook``         the runbook's steps as written, executed for real (bash, one step after the
                    other): ``aws s3 cp`` of the backup from the lab S3, ``kubectl scale`` api and
                    worker to 0, ``sleep 30``, ``psql -U postgres`` DROP/CREATE DATABASE,
                    ``pg_restore -U apex -d apex``, ``psql -U apex`` count, ``kubectl scale`` back
                    to 3 and 5, ``kubectl rollout status``, ``curl .../health | jq .``;
``runbook_nosleep`` the same without ``sleep 30``;
``playbook``        ``ansible-playbook playbooks/restore.yml`` with the role's defaults (only the
                    required ``restore_target_db``/``restore_confirm`` = apex, and the S3 prefix of
                    this run): pre-flight, scale to 0 recording counts, drain, safety backup,
                    restore, row counts, ANALYZE, scale back to the recorded counts, health check.

Where the runbook runs inside the cluster, the lab runs the same program on the controller:
``kubectl exec statefulset/postgresql -- psql ...`` is ``psql ...`` against the lab PostgreSQL
(passwords from a temporary PGPASSFILE, so the commands stay as written), ``kubectl cp`` is
``cp``, ``apex.yourdomain.com`` is the lab twin (``--cacert`` the lab CA).

Before each method the application is brought to the same state: api 3 / worker 5 ready,
``/health`` 200, and both components connected to ``apex`` (a task processed), so the drain
has real sessions to wait for. The backup (``apex_backup`` backup + verify of ``apex``) is taken
first, under the prefix ``bench-restore-<hex>``, deleted at the end with the safety backup.

Targets (exit 1 when missed): playbook <= 0.5 x runbook (as written) and <= 1.3 x
runbook_nosleep.

    python3 bench/restore_bench.py [--profile] [--json out.json]

``--profile`` runs the playbook with the ``ansible.posix.profile_tasks`` callback and prints
its per-task times (the callback itself costs a little).
"""
import argparse
import binascii
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_VS_RUNBOOK = 0.5
TARGET_VS_NOSLEEP = 1.3

RUNBOOK = r"""
set -euo pipefail
t0=$(date +%s.%N)
step() { local name=$1; shift; local s=$(date +%s.%N) rc=0; "$@" || rc=$?; local e=$(date +%s.%N)
  echo "STEP $name $(echo "$e - $s" | bc) $rc" >&2; return $rc; }
# the backup, from S3 (runbook "Backup Procedures": aws s3 cp ... ./apex_backup.dump)
step download aws s3 cp --quiet "s3://$BUCKET/$KEY" ./apex_backup.dump
# 1. Scale down applications to prevent writes
step scale_down_api kubectl scale deployment/apex-api --replicas=0 -n apex
step scale_down_worker kubectl scale deployment/apex-worker --replicas=0 -n apex
# 2. Wait for connections to drain
if [ "$SLEEP" = yes ]; then step sleep sleep 30; fi
# 3. Drop existing database and recreate
step drop psql -U postgres -c "DROP DATABASE apex;"
step create psql -U postgres -c "CREATE DATABASE apex OWNER apex;"
# 4. Restore from backup
step copy cp ./apex_backup.dump "$PODTMP/backup.dump"
# (as the application role it cannot create the lab's pg_stat_statements extension: pg_restore reports
# "errors ignored on restore" and exits 1; an operator reads that and goes on, so does this script)
step pg_restore pg_restore -U apex -d apex "$PODTMP/backup.dump" || true
# 5. Verify restore
step count psql -U apex -c "SELECT count(*) FROM tasks;"
# 6. Scale applications back up
step scale_up_api kubectl scale deployment/apex-api --replicas=3 -n apex
step scale_up_worker kubectl scale deployment/apex-worker --replicas=5 -n apex
# 7. Verify application health
step rollout kubectl rollout status deployment/apex-api -n apex
step health bash -c 'curl -s --cacert "$APEX_CA_FILE" "$APEX_API_URL/health" | jq . > "$PODTMP/health.json"'
"""


def read_env(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            parts = shlex.split(value) if value else [""]
            env[key] = parts[0] if parts else ""
    return env


def dsn_params(dsn):
    return dict(part.split("=", 1) for part in shlex.split(dsn))


def run(argv, env, check=True, **kw):
    return subprocess.run(argv, env=env, cwd=str(ROOT), check=check, capture_output=True, text=True, **kw)


def module(env, **args):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    try:
        out = run([sys.executable, "-m", "ansible_collections.apex.ops.plugins.modules.apex_backup", handle.name],
                  env, check=False)
    finally:
        os.unlink(handle.name)
    result = json.loads(out.stdout)
    if result.get("failed"):
        raise SystemExit("apex_backup %s failed: %s" % (args.get("state"), result.get("msg")))
    return result


def wait(what, fn, timeout=60.0, interval=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise SystemExit("timed out waiting for %s (last: %r)" % (what, last))


class Lab:
    def __init__(self, env):
        self.env = env

    def sessions(self):
        import psycopg
        with psycopg.connect(self.env["APEX_PG_ADMIN_DSN"], dbname="postgres", autocommit=True) as conn:
            rows = conn.execute("SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = 'apex' "
                                "AND application_name IN ('apex-api', 'apex-worker') GROUP BY 1").fetchall()
        return dict({"apex-api": 0, "apex-worker": 0}, **dict(rows))

    def extensions(self):
        import psycopg
        with psycopg.connect(self.env["APEX_PG_ADMIN_DSN"], dbname="apex", autocommit=True) as conn:
            return [r[0] for r in conn.execute("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql'")]

    def create_extensions(self, names):
        """What the runbook's pg_restore as the application role could not put back (the lab's
        pg_stat_statements): recreated at the end so the lab is as before."""
        import psycopg
        with psycopg.connect(self.env["APEX_PG_ADMIN_DSN"], dbname="apex", autocommit=True) as conn:
            for name in names:
                conn.execute('CREATE EXTENSION IF NOT EXISTS "%s"' % name.replace('"', ''))

    def tasks(self):
        import psycopg
        with psycopg.connect(self.env["APEX_PG_ADMIN_DSN"], dbname="apex", autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM tasks").fetchone()[0]

    def api(self, method, path, body=None):
        import http.client
        import ssl
        from urllib.parse import urlsplit
        url = urlsplit(self.env["APEX_API_URL"])
        conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=10,
                                           context=ssl.create_default_context(cafile=self.env["APEX_CA_FILE"]))
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Content-Type": "application/json"} if body is not None else {})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        except (OSError, ValueError):
            return 0, None
        finally:
            conn.close()

    def replicas(self):
        out = run(["kubectl", "get", "deployment", "apex-api", "apex-worker", "-n", "apex", "-o", "json"], self.env)
        return {d["metadata"]["name"]: (d["spec"]["replicas"], d["status"].get("readyReplicas", 0))
                for d in json.loads(out.stdout)["items"]}

    def connected(self):
        """The application as in production: 3/5 ready, /health 200, both components in ``apex``."""
        wait("api 3 and worker 5 ready", lambda: self.replicas() == {"apex-api": (3, 3), "apex-worker": (5, 5)})
        wait("/health 200", lambda: self.api("GET", "/health")[0] == 200)
        status, doc = self.api("POST", "/api/v1/tasks", {"payload": {"sleep": 0, "bench": "restore"}})
        if status != 202:
            raise SystemExit("the twin refused a task: %s %r" % (status, doc))
        wait("sessions of apex-api and apex-worker", lambda: all(self.sessions().values()) and self.sessions())


def runbook(lab, env, work, bucket, key, sleep):
    podtmp = tempfile.mkdtemp(prefix="pod-", dir=work)
    renv = dict(env, BUCKET=bucket, KEY=key, SLEEP="yes" if sleep else "no", PODTMP=podtmp)
    renv.pop("PGDATABASE", None)  # psql -U postgres: the database named like the user, as in the pod
    renv.pop("PGUSER", None)
    renv.pop("PGPASSWORD", None)  # each role's password from the PGPASSFILE: the commands stay as written
    started = time.monotonic()
    proc = subprocess.run(["bash", "-c", RUNBOOK], env=renv, cwd=podtmp, capture_output=True, text=True)
    wall = time.monotonic() - started
    steps = {m.group(1): round(float(m.group(2)), 2) for m in re.finditer(r"^STEP (\S+) ([\d.]+) \d+$", proc.stderr, re.M)}
    rcs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^STEP (\S+) [\d.]+ (\d+)$", proc.stderr, re.M)}
    try:
        health = json.loads(Path(podtmp, "health.json").read_text() or "null")
    except (OSError, ValueError):
        health = None
    shutil.rmtree(podtmp, ignore_errors=True)
    if proc.returncode:
        raise SystemExit("the runbook failed (rc %d):\n%s\n%s"
                         % (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))
    errors = len(re.findall(r"^pg_restore: error", proc.stderr, re.M))
    return {"wall_s": round(wall, 2), "steps": steps, "pg_restore_rc": rcs.get("pg_restore"), "pg_restore_errors": errors,
            "health_status": (health or {}).get("status") if isinstance(health, dict) else health}


def playbook(env, prefix, work, profile):
    penv = dict(env, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), APEX_REPORT_DIR=os.path.join(work, "reports"))
    if profile:
        penv["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
        penv["PROFILE_TASKS_TASK_OUTPUT_LIMIT"] = "all"
    argv = ["ansible-playbook", str(ROOT / "playbooks" / "restore.yml"), "-e", json.dumps(dict(
        restore_target_db="apex", restore_confirm="apex", apex_s3_prefix=prefix))]
    started = time.monotonic()
    proc = subprocess.run(argv, env=penv, cwd=str(ROOT), capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode:
        raise SystemExit("the restore playbook failed (rc %d):\n%s\n%s"
                         % (proc.returncode, proc.stdout[-4000:], proc.stderr[-2000:]))
    reports = sorted(Path(work, "reports").glob("*restore*.json"))
    report = json.loads(reports[-1].read_text()) if reports else {}
    out = {"wall_s": round(wall, 2), "drain_s": (report.get("drain") or {}).get("waited_seconds"),
           "drain_terminated": len((report.get("drain") or {}).get("terminated") or []),
           "restore_s": report.get("restore_seconds"), "health": report.get("health")}
    if profile:
        out["profile"] = [line for line in proc.stdout.splitlines() if re.search(r" -+ \d+\.\d+s$", line)]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default=str(Path(os.environ.get("APEX_LAB_DIR", ROOT / ".lab")) / "env"))
    parser.add_argument("--methods", default="runbook,runbook_nosleep,playbook")
    parser.add_argument("--profile", action="store_true", help="per-task times of the playbook (profile_tasks)")
    parser.add_argument("--json", help="write the results here too")
    opts = parser.parse_args()

    env = dict(os.environ)
    env.update(read_env(opts.env))
    collections = Path(env.get("APEX_LAB_DIR", ROOT / ".lab")) / "collections"
    env["PYTHONPATH"] = os.pathsep.join([str(collections), env.get("PYTHONPATH", "")])
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    lab = Lab(env)
    bucket = env["APEX_S3_BUCKET"]
    prefix = "bench-restore-%s" % binascii.hexlify(os.urandom(3)).decode()
    work = tempfile.mkdtemp(prefix="apex-restore-bench-")
    # psql/pg_restore -U postgres / -U apex with the passwords of the lab, commands unchanged
    admin, app = dsn_params(env["APEX_PG_ADMIN_DSN"]), dsn_params(env["APEX_PG_DSN"])
    passfile = os.path.join(work, "pgpass")
    with open(os.open(passfile, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
        for p in (admin, app):
            handle.write("%s:%s:*:%s:%s\n" % (p["host"], p["port"], p["user"], p["password"]))
    env["PGPASSFILE"] = passfile
    env["PATH"] = os.pathsep.join([env.get("APEX_PG_BIN", "/usr/lib/postgresql/15/bin"), env["PATH"]])

    import boto3
    s3 = boto3.client("s3", endpoint_url=env.get("AWS_ENDPOINT_URL"), region_name=env.get("AWS_DEFAULT_REGION"),
                      aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
                      aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"))
    results = {"database": "apex", "host_cpus": os.cpu_count(), "prefix": prefix, "methods": {},
               "load_average_before": os.getloadavg()[0]}
    extensions = lab.extensions()
    try:
        lab.connected()
        backup = module(env, state="backup", db="apex", s3_prefix=prefix)["backup"]
        module(env, state="verify", db="apex", s3_prefix=prefix, backup_id=backup["backup_id"])
        results.update(backup_id=backup["backup_id"], dump_bytes=backup["size"],
                       rows={k: v for k, v in backup["row_counts"].items()})
        expected_tasks = backup["row_counts"].get("public.tasks")
        print("backup %s of apex: %d bytes, %s tasks" % (backup["backup_id"], backup["size"], expected_tasks),
              file=sys.stderr)
        for method in [m for m in opts.methods.split(",") if m]:
            lab.connected()
            print("%s ..." % method, file=sys.stderr)
            if method in ("runbook", "runbook_nosleep"):
                result = runbook(lab, env, work, bucket, backup["key"], sleep=method == "runbook")
            elif method == "playbook":
                result = playbook(env, prefix, work, opts.profile)
            else:
                raise SystemExit("unknown method %s" % method)
            result["tasks_after"] = lab.tasks()
            if expected_tasks is not None and result["tasks_after"] < expected_tasks:
                raise SystemExit("%s: apex has %s tasks, the backup %s"
                                 % (method, result["tasks_after"], expected_tasks))
            results["methods"][method] = result
            print("  %s" % json.dumps({k: v for k, v in result.items() if k != "profile"}), file=sys.stderr)
            for line in result.get("profile", []):
                print("    " + line, file=sys.stderr)
        lab.connected()
    finally:
        lab.create_extensions(extensions)
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
                for o in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})
        shutil.rmtree(work, ignore_errors=True)

    m = results["methods"]
    lines = ["| method | wall s | playbook / method | target |", "|---|---|---|---|"]
    verdicts = []
    for method, target in (("runbook", TARGET_VS_RUNBOOK), ("runbook_nosleep", TARGET_VS_NOSLEEP), ("playbook", None)):
        if method not in m:
            continue
        ratio = m["playbook"]["wall_s"] / m[method]["wall_s"] if "playbook" in m else None
        ok = ratio is not None and (target is None or ratio <= target)
        if target is not None and ratio is not None:
            verdicts.append(ok)
            results["ratio_vs_" + method] = round(ratio, 3)
        verdict = ("<= %.1f %s" % (target, "met" if ok else "MISSED")) if target else "-"
        lines.append("| %s | %.1f | %s | %s |" % (method, m[method]["wall_s"], "%.2f" % ratio if ratio else "-", verdict))
    results["load_average_after"] = os.getloadavg()[0]
    print("\nrestore of apex (%d-byte dump), %d CPUs, load average %.1f before, %.1f after (the playbook's many\n"
          "Python processes slow down more than the runbook's few C/Go programs on a busy machine)\n%s"
          % (results["dump_bytes"], os.cpu_count(), results["load_average_before"], results["load_average_after"],
             "\n".join(lines)))
    print("reproduce: python3 bench/restore_bench.py%s" % (" --profile" if opts.profile else ""))
    if opts.json:
        with open(opts.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0 if verdicts and all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
