#!/usr/bin/env python3
"""The region failover's RTO in the lab, with the pod-readiness share shown separately.

In a private lab (both PostgreSQL servers, the simulator's two clusters, both twins, moto's
Route53), ``--runs`` times: ``ansible-playbook playbooks/region_failover.yml`` (planned: the
primary answers, so fence, zero lag, promote, DNS, scale, verify), then ``lab.py
rebuild-standby``. The RTO is measured from outside the playbook: from its start to the first
healthy answer through the public name (a watcher resolves ``apex.`` in Route53 every 50 ms and
calls what it points at, the way the integration test does). The pod-readiness share is the
role's own ``pod_readiness_seconds`` (the DNS change done -> apex_scale saw every pod ready).

Target (exit 1 when missed): RTO - pod readiness <= 20 s, on the median run.

    python3 bench/failover_bench.py [--runs 3] [--json out.json]
"""
import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lab"))
from lab import private_lab  # noqa: E402

TARGET_BEYOND_PODS = 20.0


class PublicNameWatcher(threading.Thread):
    """Records when the public name first answers healthy from the secondary region."""

    def __init__(self, env):
        super().__init__(daemon=True)
        import boto3
        self.env = env
        self.r53 = boto3.client("route53", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                                aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        self.ctx = ssl.create_default_context(cafile=env["APEX_CA_FILE"])
        self.healthy_at = None
        self.stop = threading.Event()

    def target(self):
        sets = self.r53.list_resource_record_sets(HostedZoneId=self.env["APEX_ROUTE53_ZONE_ID"],
                                                  StartRecordName=self.env["APEX_ROUTE53_RECORD"],
                                                  StartRecordType="CNAME", MaxItems="1")["ResourceRecordSets"]
        return sets[0]["ResourceRecords"][0]["Value"] if sets else None

    def run(self):
        while not self.stop.is_set():
            if self.target() == "secondary.apex.lab.test.":
                try:
                    with urllib.request.urlopen(self.env["APEX_TWIN_SECONDARY_URL"] + "/health", context=self.ctx,
                                                timeout=2) as resp:
                        if resp.status == 200 and json.loads(resp.read()).get("status") == "healthy":
                            self.healthy_at = time.monotonic()
                            return
                except (OSError, ValueError):
                    pass
            self.stop.wait(0.05)


def one_run(env, report_dir):
    proc_env = dict(os.environ, **env)
    proc_env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    watcher = PublicNameWatcher(env)
    start = time.monotonic()
    watcher.start()
    proc = subprocess.run(["ansible-playbook", str(ROOT / "playbooks" / "region_failover.yml"), "-e",
                           json.dumps({"region_failover_confirm": "failover-to-secondary",
                                       "region_failover_report_dir": str(report_dir)})],
                          env=proc_env, cwd=str(ROOT), capture_output=True, text=True, timeout=900, check=False)
    ended = time.monotonic()
    watcher.stop.set()
    watcher.join(5)
    if proc.returncode != 0:
        raise SystemExit("the failover failed:\n%s" % proc.stdout[-4000:])
    report = json.loads(sorted(report_dir.glob("region_failover-*.json"))[-1].read_text())
    rto = (watcher.healthy_at or ended) - start
    pods = float(report["pod_readiness_seconds"])
    subprocess.run([sys.executable, str(ROOT / "tests" / "lab" / "lab.py"), "rebuild-standby"],
                   env=dict(os.environ, APEX_LAB_DIR=env["APEX_LAB_DIR"]), capture_output=True, check=True)
    return dict(rto_seconds=round(rto, 2), playbook_seconds=round(ended - start, 2), pod_readiness_seconds=pods,
                beyond_pod_readiness_seconds=round(rto - pods, 2), steps=report["timings"]["steps"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    runs = []
    with private_lab(skip=()) as env, tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            runs.append(one_run(env, Path(tmp) / str(i)))
            print("run %d: %s" % (i + 1, json.dumps(runs[-1])), flush=True)
    beyond = statistics.median(r["beyond_pod_readiness_seconds"] for r in runs)
    summary = dict(runs=runs, median_rto_seconds=statistics.median(r["rto_seconds"] for r in runs),
                   median_pod_readiness_seconds=statistics.median(r["pod_readiness_seconds"] for r in runs),
                   median_beyond_pod_readiness_seconds=beyond, target_beyond_pod_readiness_seconds=TARGET_BEYOND_PODS,
                   load_average=os.getloadavg()[0])
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0 if beyond <= TARGET_BEYOND_PODS else 1


if __name__ == "__main__":
    sys.exit(main())
