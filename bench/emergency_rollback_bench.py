#!/usr/bin/env python3
"""The emergency_rollback playbook against the runbook's emergency-rollback.sh, in one run, on the lab.

Three methods, interleaved over ``--rounds`` rounds, each rolling back both ``apex-api`` and
``apex-worker`` (component ``all``) of the lab's primary cluster while the lab's Apex (the twin,
driven by the Kubernetes simulator) serves:

``script``          the runbook's emergency-rollback.sh **as written** (bash): ``kubectl rollout undo``
                    api, then worker, ``kubectl rollout status`` api, then worker (300 s each),
                    ``sleep 10``, ``curl -s .../health | jq .``. The only change is the health URL
                    (the lab twin; its CA through ``CURL_CA_BUNDLE``, so the curl line stays as written);
``script_nosleep``  the same script without its ``sleep 10`` line;
``playbook``        ``ansible-playbook playbooks/emergency_rollback.yml`` with the role's defaults
                    (component all, previous revision): pre-flight, both undone in one apex_rollout call
                    and waited for under one deadline, ``/health`` polled until 200.

Before every method the round breaks both Deployments the same way, untimed:
``kubectl set image deployment/apex-api api=apex/api:1.1.0-errors`` (the twin then fails half its
answers) and ``kubectl set env deployment/apex-worker APEX__WORKER__CONCURRENCY=7``, waits for both
rollouts and for the twin to serve the broken version. After every method the bench checks, untimed,
that both pod templates are back (image ``apex/api:1.0.0``, concurrency ``2``) and ``/health`` answers
200 with version 1.0.0: a method that did not really roll back fails the bench.

Prints each method's wall times, medians, and the playbook's ratio to each script; exits 1 when the
playbook's median is above 1.5 x the script's without its sleep (the target).

    python3 bench/emergency_rollback_bench.py [--rounds 3] [--json out.json]
"""
import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from restore_bench import read_env, wait  # noqa: E402  (shared bench plumbing)

ROOT = Path(__file__).resolve().parents[1]
TARGET_VS_NOSLEEP = 1.5
BAD_API_IMAGE = "apex/api:1.1.0-errors"
GOOD_API_IMAGE = "apex/api:1.0.0"
CONCURRENCY = "APEX__WORKER__CONCURRENCY"

# The runbook's "Emergency Rollback Script", verbatim but for the health URL (HEALTH_URL below).
SCRIPT = r"""#!/bin/bash
# emergency-rollback.sh
# Usage: ./emergency-rollback.sh [component] [revision]

COMPONENT=${1:-"all"}
REVISION=${2:-""}

echo "Starting emergency rollback for: $COMPONENT"

if [[ "$COMPONENT" == "all" || "$COMPONENT" == "api" ]]; then
    echo "Rolling back apex-api..."
    if [[ -n "$REVISION" ]]; then
        kubectl rollout undo deployment/apex-api -n apex --to-revision=$REVISION
    else
        kubectl rollout undo deployment/apex-api -n apex
    fi
fi

if [[ "$COMPONENT" == "all" || "$COMPONENT" == "worker" ]]; then
    echo "Rolling back apex-worker..."
    if [[ -n "$REVISION" ]]; then
        kubectl rollout undo deployment/apex-worker -n apex --to-revision=$REVISION
    else
        kubectl rollout undo deployment/apex-worker -n apex
    fi
fi

# Wait for rollouts to complete
kubectl rollout status deployment/apex-api -n apex --timeout=300s
kubectl rollout status deployment/apex-worker -n apex --timeout=300s

# Verify health
echo "Verifying health..."
sleep 10
curl -s https://apex.yourdomain.com/health | jq .

echo "Rollback complete!"
"""


def run(argv, env, check=True, **kw):
    return subprocess.run(argv, env=env, cwd=str(ROOT), check=check, capture_output=True, text=True, **kw)


class Lab(object):
    def __init__(self, env):
        self.env = env
        self.context = ssl.create_default_context(cafile=env["APEX_CA_FILE"])

    def health(self):
        try:
            with urllib.request.urlopen(self.env["APEX_API_URL"] + "/health", context=self.context, timeout=5) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (OSError, ValueError):
            return 0, None

    def kubectl(self, *args):
        return run(["kubectl", "-n", "apex"] + list(args), self.env)

    def templates(self):
        out = json.loads(self.kubectl("get", "deployment", "apex-api", "apex-worker", "-o", "json").stdout)
        seen = {}
        for d in out["items"]:
            container = d["spec"]["template"]["spec"]["containers"][0]
            env = dict((e["name"], e.get("value")) for e in container.get("env") or [])
            seen[d["metadata"]["name"]] = (container["image"], env.get(CONCURRENCY))
        return seen

    def settled(self):
        for name in ("apex-api", "apex-worker"):
            self.kubectl("rollout", "status", "deployment/" + name, "--timeout=120s")

    def break_both(self):
        """The bad release the round undoes: an API image that fails half its answers, a worker setting."""
        self.kubectl("set", "image", "deployment/apex-api", "api=" + BAD_API_IMAGE)
        self.kubectl("set", "env", "deployment/apex-worker", "%s=7" % CONCURRENCY)
        self.settled()
        wait("the twin serving the broken version",
             lambda: (self.health()[1] or {}).get("version") == BAD_API_IMAGE.split(":")[1], timeout=90.0)

    def serving_good_version(self):
        status, doc = self.health()
        return status == 200 and (doc or {}).get("version") == GOOD_API_IMAGE.split(":")[1]

    def check_rolled_back(self, method):
        templates = self.templates()
        if templates["apex-api"][0] != GOOD_API_IMAGE or templates["apex-worker"][1] != "2":
            raise SystemExit("%s did not roll back: %r" % (method, templates))
        self.settled()
        wait("/health 200 with version 1.0.0 after %s" % method, self.serving_good_version, timeout=90.0)


def script(env, work, sleep):
    text = SCRIPT.replace("https://apex.yourdomain.com/health", env["APEX_API_URL"] + "/health")
    if not sleep:
        text = text.replace("sleep 10\n", "")
    path = Path(work, "emergency-rollback%s.sh" % ("" if sleep else "-nosleep"))
    path.write_text(text)
    path.chmod(0o755)
    senv = dict(env, CURL_CA_BUNDLE=env["APEX_CA_FILE"])
    started = time.monotonic()
    proc = subprocess.run([str(path)], env=senv, cwd=work, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if proc.returncode:
        raise SystemExit("the script failed (rc %d):\n%s\n%s" % (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))
    return wall, proc.stdout


def playbook(env, work):
    penv = dict(env, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    argv = ["ansible-playbook", str(ROOT / "playbooks" / "emergency_rollback.yml"), "-e",
            json.dumps({"emergency_rollback_component": "all", "apex_report_dir": os.path.join(work, "reports")})]
    started = time.monotonic()
    proc = subprocess.run(argv, env=penv, cwd=str(ROOT), capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if proc.returncode:
        raise SystemExit("the playbook failed (rc %d):\n%s\n%s" % (proc.returncode, proc.stdout[-4000:], proc.stderr[-2000:]))
    return wall, proc.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default=str(Path(os.environ.get("APEX_LAB_DIR", ROOT / ".lab")) / "env"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the results here too")
    opts = parser.parse_args()

    env = dict(os.environ)
    env.update(read_env(opts.env))
    env["ANSIBLE_COLLECTIONS_PATH"] = str(Path(env.get("APEX_LAB_DIR", ROOT / ".lab")) / "collections")
    lab = Lab(env)
    if lab.templates() != {"apex-api": (GOOD_API_IMAGE, None), "apex-worker": ("apex/worker:1.0.0", "2")}:
        raise SystemExit("apex-api/apex-worker are not as seeded (%r): restart kubesim" % lab.templates())
    work = tempfile.mkdtemp(prefix="apex-rollback-bench-")
    methods = ["script", "script_nosleep", "playbook"]
    walls = dict((m, []) for m in methods)
    results = {"host_cpus": os.cpu_count(), "rounds": opts.rounds, "load_average_before": os.getloadavg()[0]}
    for round_no in range(opts.rounds):
        # rotate the order so no method always runs first in a round
        order = methods[round_no % 3:] + methods[:round_no % 3]
        for method in order:
            lab.break_both()
            if method == "playbook":
                wall, dummy = playbook(env, work)
            else:
                wall, dummy = script(env, work, sleep=method == "script")
            lab.check_rolled_back(method)
            walls[method].append(round(wall, 3))
            print("round %d %-15s %.2f s" % (round_no + 1, method, wall), file=sys.stderr)
    results["load_average_after"] = os.getloadavg()[0]
    medians = dict((m, statistics.median(walls[m])) for m in methods)
    results.update(walls=walls, medians=medians,
                   ratio_vs_script=round(medians["playbook"] / medians["script"], 3),
                   ratio_vs_script_nosleep=round(medians["playbook"] / medians["script_nosleep"], 3))
    met = results["ratio_vs_script_nosleep"] <= TARGET_VS_NOSLEEP
    lines = ["| method | walls s | median s | playbook / method | target |", "|---|---|---|---|---|"]
    for method, target in (("script", None), ("script_nosleep", TARGET_VS_NOSLEEP), ("playbook", None)):
        ratio = medians["playbook"] / medians[method]
        verdict = ("<= %.1f %s" % (target, "met" if met else "MISSED")) if target else "-"
        lines.append("| %s | %s | %.2f | %.2f | %s |" % (method, " ".join("%.2f" % w for w in walls[method]),
                                                         medians[method], ratio, verdict))
    print("\nemergency rollback of apex-api + apex-worker, %d rounds, %d CPUs, load average %.1f before, %.1f after\n%s"
          % (opts.rounds, os.cpu_count(), results["load_average_before"], results["load_average_after"], "\n".join(lines)))
    print("reproduce: python3 bench/emergency_rollback_bench.py --rounds %d" % opts.rounds)
    if opts.json:
        with open(opts.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
