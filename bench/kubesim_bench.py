#!/usr/bin/env python3
"""Benchmark of the lab's Kubernetes simulator (tests/lab/kubesim), on a private instance.

  python3 bench/kubesim_bench.py [--pods 1000] [--samples 50]

Prints: watch event latency (write sent -> event received), LIST of N pods (HTTPS request to
parsed JSON; also kubectl's Table request and the typed Python client), and the time a
3-replica Deployment takes to roll out a new image with a 0.2 s pod-ready delay.
Targets (issue 3), enforced — the exit status is 1 when one is missed (or a wait times out):

* watch event latency: p95 of the samples < 50 ms;
* LIST of 1,000 pods (only checked with --pods >= 1000): median of 10 LISTs < 200 ms;
* 3-replica image rollout with a 0.2 s pod-ready delay, "about a second": each of the three
  rollouts <= 2.0 s (the ideal is three surge steps of 0.2 s plus controller passes).
"""
import argparse
import http.client
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.path.join(ROOT, "tests", "lab")


WATCH_P95_MS = 50.0
LIST_1000_MEDIAN_MS = 200.0
ROLLOUT_MAX_S = 2.0
WAIT_TIMEOUT_S = 30.0


def free_port(taken=()):
    """A port from lab.py's range (below the ephemeral range)."""
    if LAB not in sys.path:
        sys.path.insert(0, LAB)
    from lab import pick_port
    return pick_port(taken)


class Timeout(Exception):
    pass


def wait_until(pred, timeout, what, interval=0.01):
    """Poll ``pred`` until true; a monotonic deadline, Timeout after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise Timeout("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class Conn:
    def __init__(self, port, token, ca):
        self.port, self.token = port, token
        self.ctx = ssl.create_default_context(cafile=ca)
        self.c = http.client.HTTPSConnection("127.0.0.1", port, context=self.ctx, timeout=30)

    def req(self, method, path, body=None, ctype="application/json", accept="application/json"):
        data = json.dumps(body).encode() if body is not None else None
        self.c.request(method, path, body=data, headers={
            "Authorization": "Bearer " + self.token, "Content-Type": ctype, "Accept": accept})
        resp = self.c.getresponse()
        raw = resp.read()
        if resp.status >= 300:
            raise RuntimeError("%s %s -> %d %s" % (method, path, resp.status, raw[:300]))
        return json.loads(raw) if raw else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=50)
    args = ap.parse_args()
    lab = tempfile.mkdtemp(prefix="kubesim-bench-")
    p1 = free_port()
    p2 = free_port({p1})
    misses = []
    proc = subprocess.Popen([sys.executable, "-m", "kubesim", "serve", "--lab-dir", lab,
                             "--primary-port", str(p1), "--secondary-port", str(p2),
                             "--pod-ready-delay", "0.2"],
                            env=dict(os.environ, PYTHONPATH=LAB, APEX_TWIN_STATE=""),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        proc.stdout.readline()  # the "ready" line
        startup = time.monotonic() - t0
        tokens = json.load(open(os.path.join(lab, "kube", "tokens.json")))
        ca = os.path.join(lab, "kube", "ca.crt")
        if os.environ.get("APEX_CA_FILE"):
            ca = os.environ["APEX_CA_FILE"]
        api = Conn(p1, tokens["primary"], ca)
        for ns in ("bench", "bench-list", "bench-roll"):
            api.req("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        print("startup (both clusters seeded and settled): %.2f s" % startup)

        # ---- watch latency
        api.req("POST", "/api/v1/namespaces/bench/configmaps", {"metadata": {"name": "w"}})
        rv = api.req("GET", "/api/v1/namespaces/bench/configmaps")["metadata"]["resourceVersion"]
        wctx = ssl.create_default_context(cafile=ca)
        wsock = http.client.HTTPSConnection("127.0.0.1", p1, context=wctx, timeout=30)
        wsock.request("GET", "/api/v1/namespaces/bench/configmaps?watch=1&resourceVersion=%s"
                      % rv, headers={"Authorization": "Bearer " + tokens["primary"]})
        wresp = wsock.getresponse()
        lat = []
        for i in range(args.samples):
            t = time.perf_counter()
            api.req("PATCH", "/api/v1/namespaces/bench/configmaps/w", {"data": {"i": str(i)}},
                    ctype="application/merge-patch+json")
            ev = json.loads(wresp.readline())
            while ev["object"].get("data", {}).get("i") != str(i):
                ev = json.loads(wresp.readline())
            lat.append((time.perf_counter() - t) * 1000)
        lat.sort()
        p95 = lat[max(0, int(len(lat) * 0.95) - 1)]
        print("watch latency (PATCH sent -> event received, %d samples): median %.1f ms, "
              "p95 %.1f ms, max %.1f ms" % (len(lat), statistics.median(lat), p95, lat[-1]))
        if p95 >= WATCH_P95_MS:
            misses.append("watch latency p95 %.1f ms >= %.0f ms" % (p95, WATCH_P95_MS))

        # ---- list N pods
        t = time.perf_counter()
        for i in range(args.pods):
            api.req("POST", "/api/v1/namespaces/bench-list/pods", {
                "metadata": {"name": "p%04d" % i, "labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "bench:1"}]}})
        create_s = time.perf_counter() - t

        def all_running():
            items = api.req("GET", "/api/v1/namespaces/bench-list/pods?fieldSelector="
                                   "status.phase%3DRunning")["items"]
            return len(items) == args.pods
        wait_until(all_running, 120, "%d pods Running" % args.pods, interval=0.2)
        settle_s = time.perf_counter() - t
        times = []
        for _ in range(10):
            t = time.perf_counter()
            body = api.req("GET", "/api/v1/namespaces/bench-list/pods")
            times.append((time.perf_counter() - t) * 1000)
            assert len(body["items"]) == args.pods
        size = len(json.dumps(body))
        times.sort()
        print("create %d pods: %.2f s (%.1f ms/pod); all Running after %.2f s" % (
            args.pods, create_s, create_s * 1000 / args.pods, settle_s))
        print("LIST %d pods (%.1f MB JSON, HTTPS, parsed): median %.0f ms, min %.0f ms, max %.0f ms"
              % (args.pods, size / 1e6, statistics.median(times), times[0], times[-1]))
        if args.pods >= 1000 and statistics.median(times) >= LIST_1000_MEDIAN_MS:
            misses.append("LIST %d pods median %.0f ms >= %.0f ms" % (
                args.pods, statistics.median(times), LIST_1000_MEDIAN_MS))
        t = time.perf_counter()
        api.req("GET", "/api/v1/namespaces/bench-list/pods",
                accept="application/json;as=Table;v=v1;g=meta.k8s.io")
        print("LIST %d pods as Table (what kubectl get asks for): %.0f ms" % (
            args.pods, (time.perf_counter() - t) * 1000))
        kc = os.path.join(lab, "kube", "kubeconfig")
        t = time.perf_counter()
        out = subprocess.run(["kubectl", "--kubeconfig", kc, "get", "pods", "-n", "bench-list",
                              "--no-headers"], capture_output=True, text=True)
        print("kubectl get pods (%d rows, whole process): %.0f ms" % (
            out.stdout.count("\n"), (time.perf_counter() - t) * 1000))
        try:
            from kubernetes import client, config
            cli = config.new_client_from_config(config_file=kc)
            t = time.perf_counter()
            n = len(client.CoreV1Api(cli).list_namespaced_pod("bench-list").items)
            print("python client list_namespaced_pod (%d, incl. model deserialisation): %.0f ms"
                  % (n, (time.perf_counter() - t) * 1000))
        except ImportError:
            pass

        # ---- rollout
        dep = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "roll"},
               "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "roll"}},
                        "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                        "template": {"metadata": {"labels": {"app": "roll"}},
                                     "spec": {"containers": [{"name": "c",
                                                              "image": "apex/api:1.0.0"}]}}}}

        def complete(gen):
            d = api.req("GET", "/apis/apps/v1/namespaces/bench-roll/deployments/roll")
            s = d.get("status", {})
            return d["metadata"]["generation"] == gen and s.get("observedGeneration") == gen and \
                s.get("updatedReplicas") == 3 and s.get("availableReplicas") == 3 and \
                s.get("replicas") == 3
        t = time.perf_counter()
        api.req("POST", "/apis/apps/v1/namespaces/bench-roll/deployments", dep)
        wait_until(lambda: complete(1), WAIT_TIMEOUT_S, "the new Deployment to be available")
        create_roll = time.perf_counter() - t
        results = []
        for i, tag in enumerate(("1.1.0", "1.2.0", "1.3.0")):
            t = time.perf_counter()
            api.req("PATCH", "/apis/apps/v1/namespaces/bench-roll/deployments/roll",
                    {"spec": {"template": {"spec": {"containers": [
                        {"name": "c", "image": "apex/api:" + tag}]}}}},
                    ctype="application/strategic-merge-patch+json")
            wait_until(lambda: complete(i + 2), WAIT_TIMEOUT_S, "rollout of " + tag)
            results.append(time.perf_counter() - t)
        print("3-replica Deployment, pod-ready delay 0.2 s: create -> available %.2f s; "
              "image rollout (maxSurge 1, maxUnavailable 0) %s s"
              % (create_roll, " / ".join("%.2f" % r for r in results)))
        slow = [r for r in results if r > ROLLOUT_MAX_S]
        if slow:
            misses.append("rollout %s s > %.1f s" % (
                " / ".join("%.2f" % r for r in slow), ROLLOUT_MAX_S))
    except Timeout as exc:
        misses.append(str(exc))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(lab, ignore_errors=True)
    if misses:
        print("TARGETS MISSED: " + "; ".join(misses))
        return 1
    print("targets met: watch p95 < %.0f ms, LIST 1,000 pods median < %.0f ms, rollout <= %.1f s"
          % (WATCH_P95_MS, LIST_1000_MEDIAN_MS, ROLLOUT_MAX_S))
    return 0


if __name__ == "__main__":
    sys.exit(main())
