#!/usr/bin/env python3
"""The daily health check, today's way against the way before, on the same lab, in one run.

1. new: playbooks/health_check.yml as it is in this checkout (one apex_health task: every gather
   at once in one module run, judged in Python, then apex_report);
2. baseline: the health_check role of commit BASELINE (five module tasks one after another, the
   API probed by a three-item `uri` loop, judgments in Jinja), extracted with `git archive` into a
   temporary roles directory and run by the same kind of playbook;
3. empty: a playbook with one no-op task on the same hosts (Ansible's own start-up cost).

The three are interleaved round by round so load on the machine affects all alike; it reports
the median wall time of each, the ratio new/baseline, and both without the empty playbook's cost.
Both health checks must pass (exit 0) on a healthy lab; reports go to a temporary directory.

    python3 bench/health_check_bench.py [--rounds 7] [--json out.json]
    (reads .lab/env; needs the git history of the checkout for the baseline)
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import scale_bench  # noqa: E402  (shared bench plumbing: lab_env)

ROOT = Path(__file__).resolve().parents[1]
# the last commit with the sequential health_check role (main before wip/health)
BASELINE = "58f76ef6825d2559d7bc640496976a1e0205caaa"

TARGET_CHECK = """---
- name: Apex target hosts check
  ansible.builtin.import_playbook: %s
""" % (ROOT / "playbooks" / "_target_check.yml")
BASELINE_PLAY = TARGET_CHECK + """
- name: Apex daily health check (baseline)
  hosts: apex_control
  gather_facts: false
  roles:
    - role: health_check
"""
EMPTY_PLAY = """---
- name: Empty
  hosts: apex_control
  gather_facts: false
  tasks:
    - name: Nothing
      ansible.builtin.meta: noop
"""


def lab_env(report_dir):
    env = scale_bench.lab_env()
    env.pop("ANSIBLE_STDOUT_CALLBACK")  # timed as users run it, with the default output
    env["APEX_REPORT_DIR"] = str(report_dir)
    return env


def extract_baseline(into):
    """The baseline role, from git, as <into>/roles/health_check."""
    roles = Path(into) / "roles"
    roles.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE, "roles/health_check"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return roles


def timed(argv, env):
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=str(ROOT), env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit("%s failed (%s):\n%s%s" % (" ".join(argv), proc.returncode, proc.stdout[-3000:], proc.stderr[-2000:]))
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", help="write the timings here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="health-bench-") as tmp:
        env = lab_env(Path(tmp) / "reports")
        roles = extract_baseline(tmp)
        baseline_play, empty_play = Path(tmp) / "baseline.yml", Path(tmp) / "empty.yml"
        baseline_play.write_text(BASELINE_PLAY)
        empty_play.write_text(EMPTY_PLAY)
        runs = {
            "new": ["ansible-playbook", str(ROOT / "playbooks" / "health_check.yml")],
            "baseline": ["ansible-playbook", str(baseline_play)],
            "empty": ["ansible-playbook", str(empty_play)],
        }
        base_env = dict(env, ANSIBLE_ROLES_PATH=str(roles))
        times = dict((name, []) for name in runs)
        for dummy in range(args.rounds):
            for name, argv in runs.items():
                times[name].append(timed(argv, base_env if name == "baseline" else env))
    med = dict((name, statistics.median(values)) for name, values in times.items())
    new_net, base_net = med["new"] - med["empty"], med["baseline"] - med["empty"]
    print("health check, %d interleaved rounds (median wall time of ansible-playbook):" % args.rounds)
    print("  baseline (%s, sequential): %.2f s" % (BASELINE[:7], med["baseline"]))
    print("  new (apex_health, concurrent):     %.2f s" % med["new"])
    print("  empty playbook:                    %.2f s" % med["empty"])
    print("  ratio new/baseline %.2f (%.1fx faster); without the empty playbook's cost %.2f s vs %.2f s (ratio %.2f)"
          % (med["new"] / med["baseline"], med["baseline"] / med["new"], new_net, base_net, new_net / base_net))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(rounds=args.rounds, times=times, median=med), indent=2))


if __name__ == "__main__":
    main()
