"""A fourth client: the kubernetes.core collection (Ansible's own k8s modules, on the
Python client's DynamicClient), as a peer the collection's modules are compared with."""
import json
import os
import subprocess

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - kubernetes.core.k8s:
        state: present
        apply: true
        wait: true
        wait_timeout: 60
        definition:
          apiVersion: apps/v1
          kind: Deployment
          metadata: {name: kc, namespace: NS}
          spec:
            replicas: 2
            selector: {matchLabels: {app: kc}}
            template:
              metadata: {labels: {app: kc}}
              spec: {containers: [{name: c, image: "apex/api:1.0.0"}]}
    - kubernetes.core.k8s_info:
        kind: Pod
        namespace: NS
        label_selectors: [app=kc]
        wait: true
        wait_condition: {type: Ready, status: "True"}
      register: pods
    - ansible.builtin.assert:
        that: pods.resources | length == 2
    - kubernetes.core.k8s_scale:
        kind: Deployment
        name: kc
        namespace: NS
        replicas: 3
        wait_timeout: 60
    - kubernetes.core.k8s:
        state: present
        server_side_apply: {field_manager: ansible}
        definition:
          apiVersion: v1
          kind: ConfigMap
          metadata: {name: kc-ssa, namespace: NS}
          data: {a: b}
    - kubernetes.core.k8s:
        state: present
        apply: true
        definition:
          apiVersion: v1
          kind: ConfigMap
          metadata: {name: kc-ssa, namespace: NS}
          data: {a: b}
      register: again
    - kubernetes.core.k8s:
        state: absent
        kind: Deployment
        name: kc
        namespace: NS
        wait: true
"""


def test_kubernetes_core_modules(kube, scratch, tmp_path):
    play = tmp_path / "play.yml"
    play.write_text(PLAY.replace("NS", scratch))
    env = dict(os.environ, K8S_AUTH_KUBECONFIG=kube.kubeconfig, K8S_AUTH_CONTEXT="apex-primary",
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    env.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.run(["ansible-playbook", str(play)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=str(tmp_path), check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    stats = result["stats"]["localhost"]
    assert stats["failures"] == 0 and stats["changed"] >= 4
    assert kube.kj("get", "configmap", "kc-ssa", "-n", scratch)["data"] == {"a": "b"}
    assert kube.kubectl("get", "deployment", "kc", "-n", scratch, check=False).returncode != 0
