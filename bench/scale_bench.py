#!/usr/bin/env python3
"""Scale apex-api and apex-worker together, with wait, three ways, on the same lab, in one run.

1. apex.ops.apex_scale: ONE playbook task (both targets in parallel, watch-based wait);
2. kubernetes.core.k8s_scale: TWO playbook tasks with wait (as shipped by the `ansible` package),
   with its default wait_sleep (5 s) and, for fairness, also with wait_sleep=1;
3. the runbook's kubectl: `kubectl scale` x2 then `kubectl rollout status` x2.

Each round scales up (api 3->6, worker 5->10) and is timed; the reset to the seeded counts between
rounds is not timed. For the playbooks it reports the wall time of ansible-playbook and, from the
ansible.posix.json callback, the time spent in the tasks themselves (without Ansible's start-up). Methods are interleaved round by round so drift affects all alike. Reports the
median wall time of each and its ratio to k8s_scale (default). The shared Deployments end at their
seeded values.

    python3 bench/scale_bench.py [--rounds 3] [--json out.json]
    python3 bench/scale_bench.py --info     (apex_info, one task, against k8s_info per kind)
    (reads .lab/env; KUBECONFIG/APEX_LAB_DIR in the environment override it)
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NS = "apex"
UP = {"apex-api": 6, "apex-worker": 10}
SEEDED = {"apex-api": 3, "apex-worker": 5}


def lab_env():
    lab_dir = Path(os.environ.get("APEX_LAB_DIR", ROOT / ".lab"))
    env = dict(os.environ)
    env_file = lab_dir / "env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            if line.startswith("export "):
                key, _, value = line[len("export "):].partition("=")
                parts = shlex.split(value) if value else [""]
                env.setdefault(key, parts[0] if parts else "")
    collections = lab_dir / "collections"
    link = collections / "ansible_collections" / "apex" / "ops"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(ROOT)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"  # per-task durations
    env.setdefault("ANSIBLE_FORCE_COLOR", "0")
    if not env.get("KUBECONFIG"):
        sys.exit("no KUBECONFIG: start the lab (make lab-up) or export KUBECONFIG")
    return env


PLAYBOOK_APEX = """---
- name: apex_scale, both targets in one task
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Scale api and worker, wait
      apex.ops.apex_scale:
        context: "{{ ctx }}"
        namespace: %(ns)s
        targets:
          - {name: apex-api, replicas: "{{ api }}"}
          - {name: apex-worker, replicas: "{{ worker }}"}
        wait: true
        wait_timeout: 120
""" % {"ns": NS}

PLAYBOOK_K8S_SCALE = """---
- name: kubernetes.core.k8s_scale, two tasks
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Scale api, wait
      kubernetes.core.k8s_scale:
        context: "{{ ctx }}"
        kind: Deployment
        name: apex-api
        namespace: %(ns)s
        replicas: "{{ api }}"
        wait: true
        wait_timeout: 120
        wait_sleep: "{{ sleep }}"
    - name: Scale worker, wait
      kubernetes.core.k8s_scale:
        context: "{{ ctx }}"
        kind: Deployment
        name: apex-worker
        namespace: %(ns)s
        replicas: "{{ worker }}"
        wait: true
        wait_timeout: 120
        wait_sleep: "{{ sleep }}"
""" % {"ns": NS}


TASK_SECONDS = {}


def _iso(stamp):
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


PLAYBOOK_APEX_INFO = """---
- name: apex_info, one task
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Everything about the namespace
      apex.ops.apex_info:
        context: "{{ ctx }}"
        namespace: %(ns)s
"""  % {"ns": NS}

PLAYBOOK_K8S_INFO = """---
- name: kubernetes.core.k8s_info, one task per kind
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: One kind
      kubernetes.core.k8s_info:
        context: "{{ ctx }}"
        api_version: "{{ item.v }}"
        kind: "{{ item.k }}"
        namespace: "{{ omit if item.k == 'Node' else '%(ns)s' }}"
      loop:
        - {v: apps/v1, k: Deployment}
        - {v: apps/v1, k: StatefulSet}
        - {v: v1, k: Pod}
        - {v: autoscaling/v2, k: HorizontalPodAutoscaler}
        - {v: v1, k: Node}
        - {v: v1, k: Event}
""" % {"ns": NS}


def info_bench(env, ctx, rounds, tmp):
    """apex_info (one task) against k8s_info (one task per kind, six kinds): wall and task time."""
    (tmp / "info.yml").write_text(PLAYBOOK_APEX_INFO)
    (tmp / "k8s_info.yml").write_text(PLAYBOOK_K8S_INFO)
    extra = ["-e", json.dumps({"ctx": ctx})]
    labels = ["apex_info (1 task, 8 concurrent lists)", "k8s_info (6 kinds, one after another)"]
    walls = dict((label, []) for label in labels)
    for dummy in range(rounds):
        walls[labels[0]].append(run(["ansible-playbook", str(tmp / "info.yml")] + extra, env, labels[0]))
        walls[labels[1]].append(run(["ansible-playbook", str(tmp / "k8s_info.yml")] + extra, env, labels[1]))
    for label in labels:
        print("%-40s wall %.2fs  tasks %.2fs" % (label, statistics.median(walls[label]),
                                                 statistics.median(TASK_SECONDS[label])))


def run(cmd, env, label=None):
    """Wall time of a command; for playbooks (json callback) also the sum of task durations."""
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit("command failed: %s\n%s\n%s" % (" ".join(cmd), proc.stdout[-3000:], proc.stderr[-3000:]))
    if label and cmd[0] == "ansible-playbook":
        doc = json.loads(proc.stdout)
        tasks = [t for play in doc["plays"] for t in play["tasks"]]
        TASK_SECONDS.setdefault(label, []).append(sum(
            (_iso(t["task"]["duration"]["end"]) - _iso(t["task"]["duration"]["start"])).total_seconds() for t in tasks))
    return elapsed


def kubectl(env, ctx, *args):
    return ["kubectl", "--context", ctx, "-n", NS] + list(args)


def reset(env, ctx):
    """Back to the seeded counts and settled (not timed)."""
    for name, replicas in SEEDED.items():
        run(kubectl(env, ctx, "scale", "deployment/%s" % name, "--replicas=%d" % replicas), env)
    for name in SEEDED:
        run(kubectl(env, ctx, "rollout", "status", "deployment/%s" % name, "--timeout=120s"), env)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--context", default="apex-primary")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--info", action="store_true", help="instead: apex_info against k8s_info per kind")
    args = parser.parse_args()
    env = lab_env()
    tmp = Path(tempfile.mkdtemp(prefix="apex-scale-bench-"))
    if args.info:
        info_bench(env, args.context, args.rounds, tmp)
        return 0
    (tmp / "apex.yml").write_text(PLAYBOOK_APEX)
    (tmp / "k8s.yml").write_text(PLAYBOOK_K8S_SCALE)
    extra = ["-e", json.dumps({"ctx": args.context, "api": UP["apex-api"], "worker": UP["apex-worker"]})]
    names = ["apex_scale (1 task, parallel)", "k8s_scale (2 tasks, wait_sleep 5 default)",
             "k8s_scale (2 tasks, wait_sleep 1)", "kubectl scale + rollout status x2"]
    methods = {
        names[0]: lambda: run(["ansible-playbook", str(tmp / "apex.yml")] + extra, env, names[0]),
        names[1]: lambda: run(["ansible-playbook", str(tmp / "k8s.yml")] + extra + ["-e", "sleep=5"], env, names[1]),
        names[2]: lambda: run(["ansible-playbook", str(tmp / "k8s.yml")] + extra + ["-e", "sleep=1"], env, names[2]),
        names[3]: lambda: sum(
            [run(kubectl(env, args.context, "scale", "deployment/%s" % n, "--replicas=%d" % r), env)
             for n, r in UP.items()]
            + [run(kubectl(env, args.context, "rollout", "status", "deployment/%s" % n, "--timeout=120s"), env)
               for n in UP]),
    }
    times = dict((name, []) for name in methods)
    try:
        reset(env, args.context)
        for round_no in range(args.rounds):
            for name, method in methods.items():
                times[name].append(method())
                reset(env, args.context)
            print("round %d: %s" % (round_no + 1, ", ".join("%s %.2fs" % (n.split(" ")[0], t[-1]) for n, t in times.items())),
                  file=sys.stderr)
    finally:
        reset(env, args.context)
    base = statistics.median(times["k8s_scale (2 tasks, wait_sleep 5 default)"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        row = dict(method=name, median_seconds=round(median, 3), runs=[round(v, 3) for v in values],
                   ratio_to_k8s_scale=round(median / base, 3))
        if name in TASK_SECONDS:
            row["median_task_seconds"] = round(statistics.median(TASK_SECONDS[name]), 3)
        rows.append(row)
    task_base = rows[1]["median_task_seconds"]
    for row in rows:
        if "median_task_seconds" in row:
            row["task_ratio_to_k8s_scale"] = round(row["median_task_seconds"] / task_base, 3)
    apex = rows[0]["median_seconds"]
    for row in rows:
        row["ratio_apex_to_this"] = round(apex / row["median_seconds"], 3)
    print("%-44s %9s %12s %11s %12s  %s" % ("method (api 3->6 + worker 5->10, wait)", "median s", "vs k8s_scale",
                                            "tasks s", "tasks vs k8s", "runs (wall s)"))
    for row in rows:
        tasks = ("%11.2f %11.2fx" % (row["median_task_seconds"], row["task_ratio_to_k8s_scale"])) \
            if "median_task_seconds" in row else "%11s %12s" % ("-", "-")
        print("%-44s %9.2f %11.2fx %s  %s" % (row["method"], row["median_seconds"], row["ratio_to_k8s_scale"],
                                              tasks, row["runs"]))
    target = rows[0]["ratio_to_k8s_scale"] <= 0.6
    print("target apex_scale <= 0.6x k8s_scale (default): %s" % ("met" if target else "NOT met"))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(rounds=args.rounds, results=rows, target_met=target), indent=2))
    return 0 if target else 1


if __name__ == "__main__":
    sys.exit(main())
