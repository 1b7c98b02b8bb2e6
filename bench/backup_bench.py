#!/usr/bin/env python3
"""Backup (and restore) of one seeded database, several ways, in one run.

Backup methods (each dumps the same database in custom format, -Fc):

1. ``bare``      ``pg_dump -Fc > /dev/null``: the physical limit on this machine (nothing stored);
   ``bare_pipe`` ``pg_dump -Fc | cat > /dev/null``: the same through a pipe (pg_dump behaves differently
                 when its output is seekable);
2. ``apex``      apex.ops.apex_backup state=backup: pg_dump streamed into an S3 multipart upload;
3. ``runbook``   the runbook's way: ``pg_dump -Fc -f file`` then boto3 ``upload_file`` (TransferManager);
4. ``community`` community.postgresql.postgresql_db state=dump (target .pgc) then amazon.aws.s3_object
                 mode=put, via ansible-playbook with the collections of the ``ansible`` PyPI package;
5. ``apex_playbook`` apex_backup through ansible-playbook too (same controller overhead as 4).

Restore methods (into a fresh database each time, dropped afterwards):

* ``restore_runbook``  download the object to a file (boto3), createdb, ``pg_restore -d`` the file;
* ``restore_apex``     apex_backup state=restore, jobs=1 (streamed into pg_restore, one transaction);
* ``restore_apex_j2``  apex_backup state=restore, jobs=2 (temp file, parallel pg_restore);
* ``restore_playbook`` the restore playbook (restore_manage_workloads=false: pre-flight, drain, restore,
                       row counts, ANALYZE, report) - the runbook's restore steps 3-5 done by the playbook.

For each: wall time, peak RSS of the whole process tree (sampled from /proc every 50 ms: the
module or playbook, its children - pg_dump included - not the S3 server), and peak temporary disk
(bytes under the method's own temp directory, sampled likewise). Methods run in a fresh process,
in order, after a warm-up dump (page cache hot for all).

    python3 bench/backup_bench.py --db apex_bench [--size-mb 1024] [--env .lab/env] [--json out.json]

``--size-mb`` seeds the database first with the twin's ``seed`` (PYTHONPATH=tests/lab) when it
is smaller. Objects are written under the prefix ``bench-<hex>`` and deleted afterwards.
"""
import argparse
import binascii
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def read_env(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            parts = shlex.split(value) if value else [""]
            env[key] = parts[0] if parts else ""
    return env


def tree_rss(root_pid):
    """Sum of VmRSS (bytes) of root_pid and all its descendants."""
    parents = {}
    rss = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                stat = handle.read()
            with open("/proc/%s/statm" % entry) as handle:
                pages = int(handle.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    members = {root_pid}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in members and pid not in members:
                members.add(pid)
                changed = True
    return sum(rss.get(pid, 0) for pid in members)


def dir_bytes(path):
    total = 0
    for base, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_blocks * 512
            except OSError:
                pass
    return total


def measure(argv, env, tmpdir, timeout=7200):
    """Run argv; sample tree RSS and tmpdir size; returns dict with wall, peaks, rc, output tail."""
    peak = {"rss": 0, "disk": 0}
    stop = threading.Event()
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(ROOT))

    def sample():
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], tree_rss(proc.pid))
            peak["disk"] = max(peak["disk"], dir_bytes(tmpdir))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate(timeout=timeout)
    wall = time.monotonic() - started
    stop.set()
    sampler.join()
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak["rss"] / MB, 1),
            "peak_tmp_disk_mb": round(peak["disk"] / MB, 1), "rc": proc.returncode,
            "stdout": out[-3000:], "stderr": err[-3000:]}


def module_args_file(args, tmp):
    path = os.path.join(tmp, "args-%s.json" % binascii.hexlify(os.urandom(3)).decode())
    with open(path, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    return path


def db_size_mb(env, db):
    out = subprocess.run(["psql", "-Atc", "SELECT pg_database_size(%s)" % _lit(db)], env=env, capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip()) / MB


def _lit(text):
    return "'" + text.replace("'", "''") + "'"


def ensure_seeded(env, db, size_mb):
    exists = subprocess.run(["psql", "-Atc", "SELECT 1 FROM pg_database WHERE datname = %s" % _lit(db)], env=env,
                            capture_output=True, text=True, check=True).stdout.strip()
    dsn = "host=%s port=%s user=%s password=%s dbname=%s" % (env["PGHOST"], env["PGPORT"], env["PGUSER"],
                                                              env["PGPASSWORD"], db)
    tenv = dict(env, PYTHONPATH=str(ROOT / "tests" / "lab"))
    if not exists:
        subprocess.run(["createdb", db], env=env, check=True)
        subprocess.run([sys.executable, "-m", "twin", "migrate", "up", "--dsn", dsn], env=tenv, check=True,
                       capture_output=True)
    if db_size_mb(env, db) < size_mb * 0.98:
        print("seeding %s to %d MB ..." % (db, size_mb), file=sys.stderr)
        subprocess.run([sys.executable, "-m", "twin", "seed", "--size-mb", str(size_mb), "--dsn", dsn, "--quiet"],
                       env=tenv, check=True)
        subprocess.run(["psql", "-qc", "VACUUM ANALYZE", db], env=env, check=True)


COMMUNITY_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  connection: local
  tasks:
    - community.postgresql.postgresql_db:
        name: "{{ db }}"
        state: dump
        target: "{{ target }}"
        login_host: "{{ lookup('env', 'PGHOST') }}"
        login_port: "{{ lookup('env', 'PGPORT') }}"
        login_user: "{{ lookup('env', 'PGUSER') }}"
        login_password: "{{ lookup('env', 'PGPASSWORD') }}"
    - amazon.aws.s3_object:
        mode: put
        bucket: "{{ bucket }}"
        object: "{{ key }}"
        src: "{{ target }}"
        endpoint_url: "{{ lookup('env', 'AWS_ENDPOINT_URL') }}"
        region: "{{ lookup('env', 'AWS_DEFAULT_REGION') }}"
"""

APEX_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  connection: local
  tasks:
    - apex.ops.apex_backup:
        state: backup
        db: "{{ db }}"
        s3_prefix: "{{ prefix }}"
"""

RUNBOOK_UPLOAD = r"""
import os, sys, boto3
path, bucket, key = sys.argv[1:4]
boto3.client("s3").upload_file(path, bucket, key)
"""

RUNBOOK_DOWNLOAD = r"""
import os, sys, boto3
bucket, key, path = sys.argv[1:4]
boto3.client("s3").download_file(bucket, key, path)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="apex_bench")
    parser.add_argument("--size-mb", type=int, default=0, help="seed the database to this size first")
    parser.add_argument("--env", default=str(Path(os.environ.get("APEX_LAB_DIR", ROOT / ".lab")) / "env"))
    parser.add_argument("--methods", default="bare,bare_pipe,apex,runbook,community,apex_playbook")
    parser.add_argument("--restore", default="restore_runbook,restore_apex,restore_apex_j2,restore_playbook",
                        help="restore methods ('' to skip)")
    parser.add_argument("--part-size-mb", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1,
                        help="backup rounds, methods interleaved round by round; the median wall time is reported")
    parser.add_argument("--json", help="write the results here too")
    opts = parser.parse_args()

    env = dict(os.environ)
    env.update(read_env(opts.env))
    collections = Path(env.get("APEX_LAB_DIR", ROOT / ".lab")) / "collections"
    if not (collections / "ansible_collections" / "apex" / "ops").exists():
        collections = ROOT / ".lab" / "collections"
    bucket = env["APEX_S3_BUCKET"]
    prefix = "bench-%s" % binascii.hexlify(os.urandom(3)).decode()
    if opts.size_mb:
        ensure_seeded(env, opts.db, opts.size_mb)
    size_mb = db_size_mb(env, opts.db)
    pg_bin = env.get("APEX_PG_BIN", "/usr/lib/postgresql/15/bin")
    pg_dump = os.path.join(pg_bin, "pg_dump")
    print("database %s: %.0f MB; prefix %s" % (opts.db, size_mb, prefix), file=sys.stderr)

    import boto3
    s3 = boto3.client("s3", endpoint_url=env.get("AWS_ENDPOINT_URL"), region_name=env.get("AWS_DEFAULT_REGION"),
                      aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"), aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"))

    def clean_prefix(keep=()):
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for o in page.get("Contents", []) if o["Key"] not in keep]
        for start in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})

    work = tempfile.mkdtemp(prefix="apex-backup-bench-")
    results = {"database": opts.db, "db_size_mb": round(size_mb, 1), "host_cpus": os.cpu_count(),
               "part_size_mb": opts.part_size_mb, "methods": {}}
    menv = dict(env)
    menv["PYTHONPATH"] = os.pathsep.join([str(collections), env.get("PYTHONPATH", "")])
    menv["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    # the ansible package's own collections (community.postgresql, amazon.aws), not ./.lab/collections
    cenv = dict(env)
    cenv.pop("ANSIBLE_COLLECTIONS_PATH", None)
    cenv["ANSIBLE_CONFIG"] = os.path.join(work, "ansible.cfg")
    with open(cenv["ANSIBLE_CONFIG"], "w") as handle:
        handle.write("[defaults]\ninterpreter_python = auto_silent\nretry_files_enabled = false\n")
    aenv = dict(cenv, ANSIBLE_COLLECTIONS_PATH=str(collections))
    playbooks = {}
    for name, text in (("community", COMMUNITY_PLAYBOOK), ("apex", APEX_PLAYBOOK)):
        playbooks[name] = os.path.join(work, "%s.yml" % name)
        with open(playbooks[name], "w") as handle:
            handle.write(text)
    scripts = {}
    for name, text in (("upload", RUNBOOK_UPLOAD), ("download", RUNBOOK_DOWNLOAD)):
        scripts[name] = os.path.join(work, "%s.py" % name)
        with open(scripts[name], "w") as handle:
            handle.write(text)

    # warm-up: page cache hot for everyone
    subprocess.run([pg_dump, "-Fc", opts.db], env=env, check=True, stdout=subprocess.DEVNULL)
    apex_key = None
    try:
        runs = {}
        for round_no, method in [(r, m) for r in range(opts.rounds) for m in opts.methods.split(",") if m]:
            tmp = tempfile.mkdtemp(prefix="%s-" % method, dir=work)
            renv = dict(menv if method in ("apex",) else aenv if method == "apex_playbook" else
                        cenv if method == "community" else env, TMPDIR=tmp)
            key = "%s/%s/%s.dump" % (prefix, method, opts.db)
            if method == "bare":
                argv = ["bash", "-c", 'exec "$0" -Fc "$1" > /dev/null', pg_dump, opts.db]
            elif method == "bare_pipe":
                argv = ["bash", "-c", '"$0" -Fc "$1" | cat > /dev/null', pg_dump, opts.db]
            elif method == "apex":
                args = module_args_file(dict(state="backup", db=opts.db, s3_prefix=prefix,
                                             part_size_mb=opts.part_size_mb), work)
                argv = [sys.executable, "-m", "ansible_collections.apex.ops.plugins.modules.apex_backup", args]
            elif method == "runbook":
                target = os.path.join(tmp, "backup.dump")
                argv = ["bash", "-c", '"$0" -Fc -f "$1" "$2" && exec "$3" "$4" "$1" "$5" "$6"', pg_dump, target, opts.db,
                        sys.executable, scripts["upload"], bucket, key]
            elif method == "community":
                argv = ["ansible-playbook", playbooks["community"], "-e", json.dumps(
                    dict(db=opts.db, target=os.path.join(tmp, "backup.pgc"), bucket=bucket, key=key))]
            elif method == "apex_playbook":
                argv = ["ansible-playbook", playbooks["apex"], "-e", json.dumps(dict(db=opts.db, prefix=prefix + "/pb"))]
            else:
                raise SystemExit("unknown method %s" % method)
            print("backup round %d: %s ..." % (round_no + 1, method), file=sys.stderr)
            result = measure(argv, renv, tmp)
            if method == "apex" and result["rc"] == 0 and apex_key is None:
                manifest = json.loads(result["stdout"])["backup"]
                result["dump_mb"] = round(manifest["size"] / MB, 1)
                apex_key = manifest
            if result["rc"] != 0:
                print("  FAILED rc=%s\n%s\n%s" % (result["rc"], result["stdout"][-1500:], result["stderr"][-1500:]),
                      file=sys.stderr)
            result.pop("stdout")
            result.pop("stderr")
            shutil.rmtree(tmp, ignore_errors=True)
            runs.setdefault(method, []).append(result)
            print("  %s" % json.dumps(result), file=sys.stderr)
            # free the S3 server's memory between runs; keep the one backup the restores use
            clean_prefix(keep=(apex_key["key"], apex_key["key"].replace(".dump", ".manifest.json")) if apex_key else ())
        for method, rounds in runs.items():
            walls = sorted(r["wall_s"] for r in rounds)
            merged = dict(rounds[0])
            middle = len(walls) // 2
            median = walls[middle] if len(walls) % 2 else round((walls[middle - 1] + walls[middle]) / 2, 2)
            merged.update(wall_s=median, walls=walls, peak_rss_mb=max(r["peak_rss_mb"] for r in rounds),
                          peak_tmp_disk_mb=max(r["peak_tmp_disk_mb"] for r in rounds),
                          rc=max(r["rc"] for r in rounds))
            results["methods"][method] = merged
        restore_methods = [m for m in opts.restore.split(",") if m] if apex_key else []
        for method in restore_methods:
            tmp = tempfile.mkdtemp(prefix="%s-" % method, dir=work)
            target_db = "apex_bench_restore_%s" % binascii.hexlify(os.urandom(2)).decode()
            renv = dict(menv, TMPDIR=tmp)
            if method == "restore_runbook":
                path = os.path.join(tmp, "backup.dump")
                argv = ["bash", "-c", '"$0" "$1" "$2" "$3" "$4" && createdb "$5" && exec "$6"/pg_restore -d "$5" "$4"',
                        sys.executable, scripts["download"], bucket, apex_key["key"], path, target_db, pg_bin]
            elif method == "restore_playbook":
                renv.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), APEX_REPORT_DIR=os.path.join(work, "reports"))
                argv = ["ansible-playbook", str(ROOT / "playbooks" / "restore.yml"), "-i",
                        str(ROOT / "inventories" / "lab" / "hosts.yml"), "-e", json.dumps(dict(
                            apex_s3_prefix=prefix, restore_source_db=opts.db, restore_target_db=target_db,
                            restore_confirm=target_db, restore_backup_id=apex_key["backup_id"], restore_force=True,
                            restore_manage_workloads=False))]
            else:
                args = module_args_file(dict(state="restore", db=opts.db, s3_prefix=prefix, target_db=target_db,
                                             confirm=target_db, backup_id=apex_key["backup_id"], force=True,
                                             jobs=2 if method.endswith("_j2") else 1, temp_dir=tmp, analyze=False),
                                        work)
                argv = [sys.executable, "-m", "ansible_collections.apex.ops.plugins.modules.apex_backup", args]
            print("restore: %s ..." % method, file=sys.stderr)
            result = measure(argv, renv, tmp)
            if result["rc"] != 0:
                print("  FAILED rc=%s\n%s\n%s" % (result["rc"], result["stdout"][-1500:], result["stderr"][-1500:]),
                      file=sys.stderr)
            result.pop("stdout")
            result.pop("stderr")
            subprocess.run(["dropdb", "--if-exists", target_db], env=env, check=False)
            shutil.rmtree(tmp, ignore_errors=True)
            results["methods"][method] = result
            print("  %s" % json.dumps(result), file=sys.stderr)
    finally:
        clean_prefix()
        shutil.rmtree(work, ignore_errors=True)

    bare = results["methods"].get("bare", {}).get("wall_s")
    lines = ["| method | wall s | vs bare pg_dump | peak RSS MB (tree) | peak temp disk MB |", "|---|---|---|---|---|"]
    for method, r in results["methods"].items():
        ratio = ("%.0f%%" % (100.0 * bare / r["wall_s"])) if bare and not method.startswith("restore") else "-"
        r["throughput_vs_bare"] = ratio
        lines.append("| %s%s | %.1f | %s | %.0f | %.0f |" % (method, "" if r["rc"] == 0 else " (FAILED)", r["wall_s"], ratio,
                                                           r["peak_rss_mb"], r["peak_tmp_disk_mb"]))
    table = "\n".join(lines)
    print("\ndatabase %s, %.0f MB, %d CPUs\n%s" % (opts.db, size_mb, os.cpu_count(), table))
    if opts.json:
        with open(opts.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
