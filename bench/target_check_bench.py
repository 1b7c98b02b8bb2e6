"""Cost of the shared target check play (playbooks/_target_check.yml), against a baseline in the
same run: the same trivial play with and without the imported check, interleaved, medians.

    python3 bench/target_check_bench.py [rounds]
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAY = """---
- name: Baseline
  hosts: apex_control
  gather_facts: false
  tasks:
    - name: Nothing
      ansible.builtin.meta: noop
"""
CHECK = """---
- name: Check
  ansible.builtin.import_playbook: %s
""" % (ROOT / "playbooks" / "_target_check.yml")


def main(rounds=11):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    with tempfile.TemporaryDirectory() as tmp:
        base, with_check = Path(tmp) / "base.yml", Path(tmp) / "with.yml"
        base.write_text(PLAY)
        with_check.write_text(CHECK + PLAY[4:])
        times = {"base": [], "with": []}
        for dummy in range(rounds):
            for name, path in (("base", base), ("with", with_check)):
                start = time.monotonic()
                subprocess.run(["ansible-playbook", str(path)], cwd=str(ROOT), env=env, check=True, capture_output=True)
                times[name].append(time.monotonic() - start)
    base_m, with_m = statistics.median(times["base"]), statistics.median(times["with"])
    print("ansible-playbook, %d interleaved rounds: baseline median %.3f s, with the target check %.3f s "
          "(+%.3f s, ratio %.2f)" % (rounds, base_m, with_m, with_m - base_m, with_m / base_m))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 11)
