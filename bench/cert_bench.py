#!/usr/bin/env python3
"""What an on-call engineer needs to know about the Apex certificate, three ways, in one run.

1. apex.ops.apex_cert state=facts: ONE task (the Certificate's conditions and dates, the
   certificate in its Secret with key match, the live endpoint with verification; judged
   against 30/7 days);
2. the same task from another revision of this collection (``--baseline-rev``, e.g. the
   revision before apex_cert moved from the official kubernetes client to the lean REST client);
3. the anchors' way to the same facts: kubernetes.core.k8s_info (Certificate),
   kubernetes.core.k8s_info (Secret), community.crypto.x509_certificate_info (the Secret's
   certificate) and community.crypto.get_certificate (the endpoint): four tasks.

Methods are interleaved round by round. Reports the median wall time of ansible-playbook and the
median time spent in the tasks (ansible.posix.json callback), and the ratios to apex_cert.

    python3 bench/cert_bench.py [--rounds 5] [--baseline-rev d42ecbd] [--json out.json]
    (reads .lab/env; needs the lab: make lab-up)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale_bench import ROOT, TASK_SECONDS, lab_env, run  # noqa: E402  (shared bench plumbing)

NS = "apex"

PLAYBOOK_APEX = """---
- name: apex_cert facts, one task
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Certificate, Secret and endpoint
      apex.ops.apex_cert:
        context: "{{ ctx }}"
        namespace: %(ns)s
        name: apex-tls
        endpoint: "{{ endpoint }}"
        hostname: "{{ hostname }}"
        tls_ca_file: "{{ ca }}"
""" % {"ns": NS}

PLAYBOOK_ANCHORS = """---
- name: kubernetes.core + community.crypto, four tasks
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: The Certificate
      kubernetes.core.k8s_info:
        context: "{{ ctx }}"
        api_version: cert-manager.io/v1
        kind: Certificate
        namespace: %(ns)s
        name: apex-tls
    - name: The Secret
      kubernetes.core.k8s_info:
        context: "{{ ctx }}"
        kind: Secret
        namespace: %(ns)s
        name: apex-tls
      register: secret
      no_log: true
    - name: The certificate in the Secret
      community.crypto.x509_certificate_info:
        content: "{{ secret.resources[0].data['tls.crt'] | b64decode }}"
    - name: The endpoint
      community.crypto.get_certificate:
        host: "{{ endpoint | urlsplit('hostname') }}"
        port: "{{ endpoint | urlsplit('port') }}"
        server_name: "{{ hostname }}"
        ca_cert: "{{ ca }}"
""" % {"ns": NS}


def baseline_collection(rev, tmp):
    """This collection at ``rev``, exported (git archive) into a collections path of its own."""
    target = tmp / "baseline" / "ansible_collections" / "apex" / "ops"
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return tmp / "baseline"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--context", default="apex-primary")
    parser.add_argument("--baseline-rev", help="also time apex_cert of this git revision")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    env = lab_env()
    tmp = Path(tempfile.mkdtemp(prefix="apex-cert-bench-"))
    (tmp / "apex.yml").write_text(PLAYBOOK_APEX)
    (tmp / "anchors.yml").write_text(PLAYBOOK_ANCHORS)
    extra = ["-e", json.dumps({"ctx": args.context, "endpoint": env["APEX_API_URL"],
                               "hostname": env.get("APEX_API_HOSTNAME", "localhost"), "ca": env["APEX_CA_FILE"]})]
    methods = [("apex_cert (1 task)", env, "apex.yml")]
    if args.baseline_rev:
        base_env = dict(env, ANSIBLE_COLLECTIONS_PATH=str(baseline_collection(args.baseline_rev, tmp)))
        methods.append(("apex_cert @ %s (1 task)" % args.baseline_rev, base_env, "apex.yml"))
    methods.append(("k8s_info x2 + x509_certificate_info + get_certificate (4 tasks)", env, "anchors.yml"))
    walls = dict((label, []) for label, dummy, dummy2 in methods)
    for label, menv, book in methods:  # warm-up: first runs pay for cold caches
        run(["ansible-playbook", str(tmp / book)] + extra, menv)
    for dummy in range(args.rounds):
        for label, menv, book in methods:
            walls[label].append(run(["ansible-playbook", str(tmp / book)] + extra, menv, label))
    first = methods[0][0]
    results = {}
    for label, dummy, dummy2 in methods:
        wall, task = statistics.median(walls[label]), statistics.median(TASK_SECONDS[label])
        results[label] = dict(wall_seconds=round(wall, 3), task_seconds=round(task, 3),
                              task_ratio_to_apex_cert=round(task / statistics.median(TASK_SECONDS[first]), 2))
        print("%-66s wall %.2fs  tasks %.2fs  (tasks x%.2f of apex_cert)" % (
            label, wall, task, results[label]["task_ratio_to_apex_cert"]))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(rounds=args.rounds, results=results), indent=1))


if __name__ == "__main__":
    main()
