#!/usr/bin/env python3
"""The deploy playbook against Helm's bare upgrade call, in one run, on the lab.

``kubernetes.core.helm`` cannot run here (it drives the ``helm`` binary, which this workplace
cannot install), so the baseline is what it would wrap: the Helm v4 SDK's own upgrade
(``helm-python-sdk``, ``Config.upgrade(..., wait="watcher", rollback_on_failure=True)``), one
Python process per upgrade, nothing verified beyond Helm's wait.

Two methods, each a real upgrade of the lab's release ``apex`` (namespace ``apex``, the twin
serves it) between 1.1.0 and 1.0.0, alternating, in interleaved rounds:

``sdk``       ``python3 -c 'helm_python.Config(...).upgrade(chart, "apex", values, wait=..., ...)'``;
``playbook``  ``ansible-playbook playbooks/deploy.yml -e deploy_chart=... -e deploy_version=V``: pre-flight
              (health, pods, release state), the plan (a server-side dry run diffed per object),
              the atomic upgrade, both rollouts read back, the smoke test of ``/health`` and ``/ready``
              serving the new version, the journal and the report.

Before the rounds the release is installed over the seeded objects (revision 1); afterwards it is
put back at 1.0.0 with the chart's values and Helm's release Secrets are deleted, as the release
tests leave the lab. Medians and the ratio are printed; there is no target (the playbook verifies
more than the bare call: the ratio is the price of the checks, shown so it stays visible).

    python3 bench/deploy_bench.py [--rounds 3] [--json out.json]
    (reads .lab/env; needs the lab: make lab-up)
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

from scale_bench import ROOT, lab_env  # noqa: E402  (shared bench plumbing)

CHART = ROOT / "tests" / "lab" / "charts" / "apex"
VERSIONS = ("1.1.0", "1.0.0")

SDK_UPGRADE = r"""
import json, sys
import helm_python as helm
args = json.loads(sys.argv[1])
cfg = helm.Config(kubeconfig_path=args["kubeconfig"], kube_context=args["context"], namespace="apex")
if args["op"] == "install":
    cfg.install(args["chart"], "apex", None, wait="watcher", timeout=120)
else:
    tag = args.get("version")
    values = {"api": {"image": {"tag": tag}}, "worker": {"image": {"tag": tag}}} if tag else args["values"]
    cfg.upgrade(args["chart"], "apex", values, wait="watcher", timeout=120, rollback_on_failure=True)
"""


def sdk(env, **args):
    args.setdefault("chart", str(CHART))
    args.update(kubeconfig=env["KUBECONFIG"], context=env.get("K8S_AUTH_CONTEXT") or "apex-primary")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SDK_UPGRADE, json.dumps(args)], env=env, capture_output=True,
                          text=True, check=False, timeout=300)
    if proc.returncode:
        sys.exit("helm SDK %s failed: %s" % (args["op"], proc.stderr[-2000:]))
    return time.monotonic() - started


def playbook(env, version, report_dir):
    argv = ["ansible-playbook", "-i", "inventories/lab", "playbooks/deploy.yml", "-e",
            json.dumps({"deploy_chart": str(CHART), "deploy_version": version, "deploy_report_dir": report_dir})]
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, cwd=str(ROOT), capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode:
        sys.exit("deploy %s failed:\n%s" % (version, proc.stdout[-4000:]))
    return time.monotonic() - started


def kubectl(env, *args):
    return subprocess.run(["kubectl", "--context", env.get("K8S_AUTH_CONTEXT") or "apex-primary"] + list(args),
                          env=env, capture_output=True, text=True, check=False, timeout=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    opts = parser.parse_args()
    env = lab_env()
    env.pop("ANSIBLE_STDOUT_CALLBACK")  # the default output: read only when a deploy fails
    report_dir = str(ROOT / ".lab" / "bench-deploy-reports")
    if json.loads(kubectl(env, "get", "secrets", "-n", "apex", "-l", "owner=helm,name=apex", "-o", "json").stdout or
                  '{"items": []}')["items"]:
        sys.exit("namespace apex already has a Helm release apex: this bench installs its own (uninstall it first)")
    times = dict(sdk=[], playbook=[])
    sdk(env, op="install")
    try:
        for round_no in range(opts.rounds):
            # each method does a real upgrade: 1.1.0 then back to 1.0.0, the order alternating per round
            order = ("sdk", "playbook") if round_no % 2 == 0 else ("playbook", "sdk")
            for method in order:
                for version in VERSIONS:
                    if method == "sdk":
                        times["sdk"].append(sdk(env, op="upgrade", version=version))
                    else:
                        times["playbook"].append(playbook(env, version, report_dir))
            print("round %d: sdk %s  playbook %s" % (round_no + 1, ["%.2f" % t for t in times["sdk"][-2:]],
                                                     ["%.2f" % t for t in times["playbook"][-2:]]))
    finally:
        with open(CHART / "values.yaml") as handle:
            import yaml  # PyYAML comes with ansible-core

            values = yaml.safe_load(handle)
        sdk(env, op="upgrade", values=values)
        kubectl(env, "delete", "secrets", "-n", "apex", "-l", "owner=helm,name=apex")
        kubectl(env, "delete", "configmap", "-n", "apex", "apex-ops-journal", "--ignore-not-found")
    medians = dict((method, statistics.median(values)) for method, values in times.items())
    ratio = medians["playbook"] / medians["sdk"]
    print("\nmedian of %d upgrades each (seconds):" % len(times["sdk"]))
    print("  helm SDK bare upgrade (wait)          %6.2f" % medians["sdk"])
    print("  deploy playbook (plan, upgrade, smoke) %6.2f" % medians["playbook"])
    print("  ratio playbook / bare upgrade          %6.2f" % ratio)
    if opts.json:
        with open(opts.json, "w") as handle:
            json.dump(dict(times=times, medians=medians, ratio=ratio), handle, indent=2)


if __name__ == "__main__":
    main()
