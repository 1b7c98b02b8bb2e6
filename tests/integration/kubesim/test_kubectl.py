"""kubectl (a client nobody here wrote) running the runbook's own commands against the
simulator, asserting the state after each. Runs in a scratch copy of the apex namespace."""
import base64
import json
import re
import time

CANARY = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: apex-api-canary
  namespace: {ns}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: apex-api
      track: canary
  template:
    metadata:
      labels:
        app: apex-api
        track: canary
    spec:
      containers:
      - name: api
        image: apex/api:{tag}
"""


def _deploy(kube, ns, name):
    return kube.kj("get", "deployment", name, "-n", ns)


def _rollout(kube, ns, name, timeout="60s"):
    return kube.kubectl("rollout", "status", "deployment/" + name, "-n", ns,
                        "--timeout=" + timeout)


def _pods(kube, ns, selector):
    return kube.kj("get", "pods", "-n", ns, "-l", selector)["items"]


def test_get_pods_wide_yaml_jsonpath(kube, scratch):
    out = kube.kubectl("get", "pods", "-n", scratch, "-o", "wide").stdout.splitlines()
    assert out[0].split()[:9] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
                                  "NOMINATED", "NODE"]
    rows = [l.split() for l in out[1:]]
    api_rows = [r for r in rows if r[0].startswith("apex-api-")]
    assert len(api_rows) == 3
    for r in api_rows:
        assert r[1] == "1/1" and r[2] == "Running" and r[3] == "0"
        assert r[5].startswith("10.244.") and r[6].startswith("node-")
    # the runbook's `awk '$4 > 0'`: no restarts anywhere
    assert not [r for r in rows if r[3] != "0"]
    yaml_out = kube.kubectl("get", "pods", "-n", scratch, "-l", "app=apex-api", "-o",
                            "yaml").stdout
    assert "kind: List" in yaml_out and "pod-template-hash" in yaml_out
    names = kube.kubectl("get", "pods", "-n", scratch, "-l", "app=apex-api", "-o",
                         "jsonpath={.items[*].metadata.name}").stdout.split()
    assert len(names) == 3 and all(n.startswith("apex-api-") for n in names)
    assert kube.kubectl("get", "pods", "-n", scratch, "--no-headers").stdout.count("\n") == 7


def test_get_hpa_nodes_events(kube, scratch):
    out = kube.kubectl("get", "hpa", "-n", scratch).stdout.splitlines()
    assert out[0].split() == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS",
                              "AGE"]
    api = next(l for l in out if l.startswith("apex-api "))
    assert "Deployment/apex-api" in api and "cpu: 70%/70%" in api
    assert api.split()[-4:-1] == ["3", "10", "3"]
    hpa_yaml = kube.kubectl("get", "hpa", "-n", scratch, "-o", "yaml").stdout
    assert "autoscaling/v2" in hpa_yaml and "currentMetrics" in hpa_yaml
    nodes = kube.kubectl("get", "nodes").stdout.splitlines()
    assert [n.split()[0] for n in nodes[1:]] == ["node-1", "node-2", "node-3"]
    assert all(n.split()[1].startswith("Ready") for n in nodes[1:])
    ev = kube.kubectl("get", "events", "-n", scratch, "--sort-by=.lastTimestamp").stdout
    lines = ev.splitlines()
    assert lines[0].split()[:4] == ["LAST", "SEEN", "TYPE", "REASON"]
    assert "ScalingReplicaSet" in ev and "Scheduled" in ev
    stamps = kube.kubectl("get", "events", "-n", scratch, "--sort-by=.lastTimestamp", "-o",
                          "jsonpath={.items[*].lastTimestamp}").stdout.split()
    assert stamps == sorted(stamps)


def test_scale_and_hpa_reverts_out_of_bounds(kube, scratch):
    kube.kubectl("scale", "deployment/apex-api", "--replicas=5", "-n", scratch)
    _rollout(kube, scratch, "apex-api")
    assert len(_pods(kube, scratch, "app=apex-api,!track")) == 5
    # outside the HPA's [3, 10]: the HPA undoes it, as in a real cluster
    kube.kubectl("scale", "deployment/apex-api", "--replicas=20", "-n", scratch)
    kube.wait("the HPA to bring apex-api back to 10", lambda: _deploy(
        kube, scratch, "apex-api")["spec"]["replicas"] == 10)
    _rollout(kube, scratch, "apex-api")
    desc = kube.kubectl("describe", "hpa", "apex-api", "-n", scratch).stdout
    assert "SuccessfulRescale" in desc and "above Spec.MaxReplicas" in desc
    kube.kubectl("scale", "deployment/apex-api", "--replicas=1", "-n", scratch)
    kube.wait("the HPA to bring apex-api up to its minimum", lambda: _deploy(
        kube, scratch, "apex-api")["spec"]["replicas"] == 3)
    _rollout(kube, scratch, "apex-api")


def test_patch_hpa(kube, scratch):
    kube.kubectl("patch", "hpa", "apex-api", "-n", scratch, "--patch",
                 '{"spec":{"minReplicas":5,"maxReplicas":30}}')
    hpa = kube.kj("get", "hpa", "apex-api", "-n", scratch)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (5, 30)
    kube.wait("the HPA to scale apex-api to the new minimum",
              lambda: _deploy(kube, scratch, "apex-api")["spec"]["replicas"] == 5)
    kube.kubectl("patch", "hpa", "apex-api", "-n", scratch, "--patch",
                 '{"spec":{"minReplicas":3,"maxReplicas":20}}')
    hpa = kube.kj("get", "hpa", "apex-api", "-n", scratch)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    kube.kubectl("scale", "deployment/apex-api", "--replicas=3", "-n", scratch)
    _rollout(kube, scratch, "apex-api")
    # the runbook's autoscaling/v1 field on a v2 object: dropped with a warning, as a real
    # API server does
    out = kube.kubectl("patch", "hpa", "apex-api", "-n", scratch, "--patch",
                       '{"spec":{"targetCPUUtilizationPercentage":60}}')
    assert 'unknown field "spec.targetCPUUtilizationPercentage"' in out.stderr
    hpa = kube.kj("get", "hpa", "apex-api", "-n", scratch)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    bad = kube.kubectl("patch", "hpa", "apex-api", "-n", scratch, "--patch",
                       '{"spec":{"minReplicas":40}}', check=False)
    assert bad.returncode != 0 and "Invalid" in bad.stderr
    assert kube.kj("get", "hpa", "apex-api", "-n", scratch)["spec"]["minReplicas"] == 3


def test_set_env_rollout_history_undo(kube, scratch):
    before = _deploy(kube, scratch, "apex-worker")
    rev0 = int(before["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
    kube.kubectl("set", "env", "deployment/apex-worker", "APEX__WORKER__CONCURRENCY=5", "-n",
                 scratch)
    _rollout(kube, scratch, "apex-worker")
    dep = _deploy(kube, scratch, "apex-worker")
    env = {e["name"]: e.get("value") for e in
           dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["APEX__WORKER__CONCURRENCY"] == "5"
    assert env["APEX__DATABASE__MAX_CONNECTIONS"] == "10"  # merged by name, not replaced
    assert int(dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) == rev0 + 1
    for pod in _pods(kube, scratch, "app=apex-worker"):
        penv = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert penv["APEX__WORKER__CONCURRENCY"] == "5"
    kube.kubectl("set", "env", "deployment/apex-worker",
                 "APEX__ROUTING__FORCE_PROVIDER=anthropic", "-n", scratch)
    _rollout(kube, scratch, "apex-worker")
    kube.kubectl("rollout", "restart", "deployment/apex-worker", "-n", scratch)
    _rollout(kube, scratch, "apex-worker")
    dep = _deploy(kube, scratch, "apex-worker")
    assert "kubectl.kubernetes.io/restartedAt" in dep["spec"]["template"]["metadata"][
        "annotations"]
    hist = kube.kubectl("rollout", "history", "deployment/apex-worker", "-n", scratch).stdout
    revs = [l.split()[0] for l in hist.splitlines()[2:] if l.strip()]
    assert revs == [str(rev0 + i) for i in range(4)]
    rs = kube.kj("get", "rs", "-n", scratch, "-l", "app=apex-worker")["items"]
    assert len(rs) == 4 and sum(r["spec"]["replicas"] for r in rs) == 2
    # undo to the first revision: the old ReplicaSet comes back with a new revision number
    kube.kubectl("rollout", "undo", "deployment/apex-worker", "-n", scratch,
                 "--to-revision=%d" % rev0)
    _rollout(kube, scratch, "apex-worker")
    dep = _deploy(kube, scratch, "apex-worker")
    env = {e["name"]: e.get("value") for e in
           dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["APEX__WORKER__CONCURRENCY"] == "2" and "APEX__ROUTING__FORCE_PROVIDER" not in env
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == str(rev0 + 4)
    assert len(kube.kj("get", "rs", "-n", scratch, "-l", "app=apex-worker")["items"]) == 4
    # plain undo: back to the previous one (the restart)
    kube.kubectl("rollout", "undo", "deployment/apex-worker", "-n", scratch)
    _rollout(kube, scratch, "apex-worker")
    dep = _deploy(kube, scratch, "apex-worker")
    assert "kubectl.kubernetes.io/restartedAt" in dep["spec"]["template"]["metadata"][
        "annotations"]


def test_set_image_rollout_respects_surge(kube, scratch):
    kube.kubectl("set", "image", "deployment/apex-api", "api=apex/api:1.1.0", "-n", scratch)
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pods = [p for p in _pods(kube, scratch, "app=apex-api,!track")
                if not p["metadata"].get("deletionTimestamp")]
        seen.append(len(pods))
        dep = _deploy(kube, scratch, "apex-api")
        st = dep.get("status", {})
        if st.get("updatedReplicas") == 3 and st.get("availableReplicas") == 3 and \
                st.get("replicas") == 3:
            break
        time.sleep(0.02)
    _rollout(kube, scratch, "apex-api")
    assert max(seen) <= 4  # maxSurge 1, maxUnavailable 0
    images = {p["spec"]["containers"][0]["image"] for p in _pods(kube, scratch, "app=apex-api")}
    assert images == {"apex/api:1.1.0"}


def test_apply_canary_then_delete(kube, scratch):
    out = kube.kubectl("apply", "-f", "-", input=CANARY.format(ns=scratch, tag="1.2.0"))
    assert "created" in out.stdout
    _rollout(kube, scratch, "apex-api-canary")
    pods = _pods(kube, scratch, "track=canary")
    assert len(pods) == 1 and pods[0]["spec"]["containers"][0]["image"] == "apex/api:1.2.0"
    out = kube.kubectl("apply", "-f", "-", input=CANARY.format(ns=scratch, tag="1.2.1"))
    assert "configured" in out.stdout
    _rollout(kube, scratch, "apex-api-canary")
    assert {p["spec"]["containers"][0]["image"] for p in _pods(kube, scratch, "track=canary")} \
        == {"apex/api:1.2.1"}
    out = kube.kubectl("apply", "-f", "-", input=CANARY.format(ns=scratch, tag="1.2.1"))
    assert "unchanged" in out.stdout
    kube.kubectl("delete", "deployment", "apex-api-canary", "-n", scratch)
    assert kube.kubectl("get", "deployment", "apex-api-canary", "-n", scratch,
                        check=False).returncode != 0
    kube.wait("the canary's pods to be garbage-collected",
              lambda: not _pods(kube, scratch, "track=canary"))
    assert not kube.kj("get", "rs", "-n", scratch, "-l", "track=canary")["items"]


def test_patch_resources_strategic(kube, scratch):
    kube.kubectl("patch", "deployment", "apex-api", "-n", scratch, "--patch", """
spec:
  template:
    spec:
      containers:
      - name: api
        resources:
          limits:
            memory: 4Gi
            cpu: 4
          requests:
            memory: 2Gi
            cpu: 1""")
    _rollout(kube, scratch, "apex-api")
    c = _deploy(kube, scratch, "apex-api")["spec"]["template"]["spec"]["containers"]
    assert len(c) == 1 and c[0]["resources"]["limits"] == {"memory": "4Gi", "cpu": 4}
    assert c[0]["image"].startswith("apex/api:") and c[0]["env"]
    desc = kube.kubectl("describe", "deployment/apex-api", "-n", scratch).stdout
    # the pod template's resources as `kubectl describe` prints them
    assert re.search(r"Limits:\n\s+cpu:\s+4\n\s+memory:\s+4Gi\n", desc), desc
    assert re.search(r"Requests:\n\s+cpu:\s+1\n\s+memory:\s+2Gi\n", desc), desc


def test_logs_and_top(kube, scratch):
    logs = kube.kubectl("logs", "deployment/apex-api", "-n", scratch, "--since=10m").stdout
    assert "listening" in logs and "circuit_breaker" in logs
    wlogs = kube.kubectl("logs", "deployment/apex-worker", "-n", scratch).stdout
    assert "apex-worker version=" in wlogs
    top = kube.kubectl("top", "pods", "-n", scratch).stdout.splitlines()
    assert top[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert len(top) - 1 == len(kube.kj("get", "pods", "-n", scratch,
                                       "--field-selector=status.phase=Running")["items"])
    nodes = kube.kubectl("top", "nodes").stdout.splitlines()
    assert nodes[0].split()[:3] == ["NAME", "CPU(cores)", "CPU(%)"] and len(nodes) == 4
    kube.kubectl("top", "pods", "-n", scratch, "--sort-by=memory")


def test_describe(kube, scratch):
    d = kube.kubectl("describe", "deployment/apex-api", "-n", scratch).stdout
    assert "NewReplicaSet:" in d and "MinimumReplicasAvailable" in d
    h = kube.kubectl("describe", "hpa", "-n", scratch).stdout
    assert "Min replicas:" in h and "ScalingActive" in h
    n = kube.kubectl("describe", "node", "node-1").stdout
    assert "Allocatable:" in n and "Non-terminated Pods:" in n
    c = kube.kubectl("describe", "certificate", "apex-tls", "-n", scratch).stdout
    assert "Not After:" in c and "Certificate is up to date" in c
    cj = kube.kubectl("describe", "cronjob", "apex-db-backup", "-n", scratch).stdout
    assert "0 2 * * *" in cj
    assert "apex-db-backup" in kube.kubectl("get", "cronjob", "-n", scratch).stdout


def test_annotate_and_certificate_reissue(kube, scratch):
    out = kube.kubectl("get", "certificate", "-n", scratch).stdout.splitlines()
    assert out[0].split()[:3] == ["NAME", "READY", "SECRET"]
    assert out[1].split()[:3] == ["apex-tls", "True", "apex-tls"]

    def serial():
        sec = kube.kj("get", "secret", "apex-tls", "-n", scratch, check=False) \
            if kube.kubectl("get", "secret", "apex-tls", "-n", scratch,
                            check=False).returncode == 0 else None
        if not sec:
            return None
        from cryptography import x509
        return x509.load_pem_x509_certificate(base64.b64decode(sec["data"]["tls.crt"])) \
            .serial_number
    s1 = serial()
    kube.kubectl("delete", "secret", "apex-tls", "-n", scratch)
    s2 = kube.wait("cert-manager to re-issue the deleted secret", serial)
    assert s2 != s1
    cert = kube.kj("get", "certificate", "apex-tls", "-n", scratch)
    assert cert["status"]["revision"] >= 2
    assert "apex-tls-%d" % cert["status"]["revision"] in kube.kubectl(
        "get", "certificaterequest", "-n", scratch).stdout
    # the runbook's annotate: accepted (and, as in real cert-manager, not a renewal trigger)
    kube.kubectl("annotate", "certificate", "apex-tls", "-n", scratch,
                 'cert-manager.io/renew=true')
    assert kube.kj("get", "certificate", "apex-tls", "-n", scratch)["metadata"]["annotations"][
        "cert-manager.io/renew"] == "true"
    # what `cmctl renew` does: Issuing=True through the status subresource
    kube.kubectl("patch", "certificate", "apex-tls", "-n", scratch, "--subresource=status",
                 "--type=merge", "--patch", json.dumps({"status": {"conditions": [
                     {"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
                      "message": "Certificate re-issuance manually triggered"}]}}))
    s3 = kube.wait("a renewal", lambda: serial() not in (None, s2) and serial())
    assert s3 != s2
    cert = kube.kj("get", "certificate", "apex-tls", "-n", scratch)
    conds = {c["type"]: c["status"] for c in cert["status"]["conditions"]}
    assert conds.get("Ready") == "True" and "Issuing" not in conds


def test_create_secret_tls_apply(kube, scratch, tmp_path):
    from kubesim.pki import CA
    ca = CA.load_or_create(None, None, str(tmp_path / "ca"))
    cert_pem, key_pem = ca.issue(["apex.lab.test", "localhost"], [], "apex.lab.test",
                                 60 * 86400)[2:]
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    manifest = kube.kubectl("create", "secret", "tls", "apex-tls", "--cert", str(tmp_path / "c.pem"),
                            "--key", str(tmp_path / "k.pem"), "--namespace", scratch,
                            "--dry-run=client", "-o", "yaml").stdout
    out = kube.kubectl("apply", "-f", "-", input=manifest)
    assert "configured" in out.stdout
    sec = kube.kj("get", "secret", "apex-tls", "-n", scratch)
    assert base64.b64decode(sec["data"]["tls.crt"]) == cert_pem
    assert sec["type"] == "kubernetes.io/tls"
    kube.kubectl("rollout", "restart", "deployment/apex-api", "-n", scratch)
    _rollout(kube, scratch, "apex-api")


def test_cordon_drain_uncordon(kube, scratch):
    node = "node-2"
    kube.kubectl("cordon", node)
    try:
        assert "SchedulingDisabled" in kube.kubectl("get", "node", node).stdout
        sel = "kubesim-test=%s" % scratch
        out = kube.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
                           "--pod-selector", sel, "--timeout=90s", timeout=120)
        assert "drained" in out.stdout
        left = kube.kj("get", "pods", "-n", scratch, "--field-selector",
                       "spec.nodeName=%s" % node, "-l", sel)["items"]
        assert not left
        _rollout(kube, scratch, "apex-api")
        _rollout(kube, scratch, "apex-worker")
        for p in _pods(kube, scratch, sel):
            assert p["spec"]["nodeName"] != node
        ev = kube.kubectl("get", "events", "-n", "default", "--field-selector",
                          "involvedObject.name=%s" % node).stdout
        assert "NodeNotSchedulable" in ev
        # a PDB that allows no disruption blocks the drain, as on a real cluster
        kube.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "pg-block", "namespace": scratch},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "postgresql"}}}}))
        pg = kube.kj("get", "pod", "postgresql-0", "-n", scratch)["spec"]["nodeName"]
        kube.kubectl("cordon", pg)
        try:
            blocked = kube.kubectl("drain", pg, "--ignore-daemonsets", "--pod-selector",
                                   "kubesim-test=%s,app=postgresql" % scratch, "--timeout=3s",
                                   check=False, timeout=60)
            assert blocked.returncode != 0
            assert "disruption budget" in blocked.stderr
            assert kube.kj("get", "pod", "postgresql-0", "-n", scratch)["spec"]["nodeName"] == pg
        finally:
            kube.kubectl("uncordon", pg)
            kube.kubectl("delete", "pdb", "pg-block", "-n", scratch)
    finally:
        kube.kubectl("uncordon", node)
    assert "SchedulingDisabled" not in kube.kubectl("get", "node", node).stdout


def test_migration_job_logs(kube, scratch):
    job = """apiVersion: batch/v1
kind: Job
metadata:
  name: apex-migration-test
  namespace: {ns}
spec:
  template:
    spec:
      containers:
      - name: migration
        image: apex/api:latest
        command: ["./apex-migrate", "up"]
        env:
        - name: DATABASE_URL
          valueFrom:
            secretKeyRef:
              name: apex-secrets
              key: database-url
      restartPolicy: Never
  backoffLimit: 1
""".format(ns=scratch)
    kube.kubectl("apply", "-f", "-", input=job)
    kube.kubectl("wait", "--for=condition=complete", "job/apex-migration-test", "-n", scratch,
                 "--timeout=90s", timeout=120)
    logs = kube.kubectl("logs", "job/apex-migration-test", "-n", scratch).stdout
    # the twin's real `apex-migrate up` output (JSON summary of applied migrations)
    assert '"applied"' in logs and "listening" not in logs
    assert "1/1" in kube.kubectl("get", "job", "apex-migration-test", "-n", scratch).stdout


MIGRATION_JOB = """apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  namespace: {ns}
spec:
  backoffLimit: {backoff}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migration
        image: apex/api:1.0.0
        command: {command}
        args: {args}
        env:
        - name: DATABASE_URL
          valueFrom:
            secretKeyRef:
              name: {secret}
              key: database-url
"""


def test_migration_job_passes_its_arguments(kube, scratch):
    """`apex-migrate status` runs status (not up): its JSON lists the migrations."""
    kube.kubectl("apply", "-f", "-", input=MIGRATION_JOB.format(
        name="migrate-status", ns=scratch, backoff=0, command='["apex-migrate"]',
        args='["status"]', secret="apex-secrets"))
    try:
        kube.kubectl("wait", "--for=condition=complete", "job/migrate-status", "-n", scratch,
                     "--timeout=90s", timeout=120)
        logs = kube.kubectl("logs", "job/migrate-status", "-n", scratch).stdout
        status = json.loads(logs[logs.index("{"):])
        assert status["migrations"] and all(m["state"] == "applied"
                                            for m in status["migrations"]), status
        assert '"applied":' not in logs  # `up` prints {"applied": [...], "changed": ...}
    finally:
        kube.kubectl("delete", "job", "migrate-status", "-n", scratch, check=False)


def test_migration_job_fails_with_a_bad_database_url(kube, scratch):
    """A wrong password in DATABASE_URL: each pod fails, the Job ends Failed after its backoff."""
    good = base64.b64decode(kube.kj("get", "secret", "apex-secrets", "-n", scratch)
                            ["data"]["database-url"]).decode()
    host_port = good.rsplit("@", 1)[1]
    bad_url = "postgresql://apex:not-the-password@" + host_port
    kube.kubectl("create", "secret", "generic", "bad-db", "-n", scratch,
                 "--from-literal=database-url=" + bad_url)
    try:
        kube.kubectl("apply", "-f", "-", input=MIGRATION_JOB.format(
            name="migrate-bad", ns=scratch, backoff=1, command='["./apex-migrate"]',
            args='["up"]', secret="bad-db"))
        kube.kubectl("wait", "--for=condition=failed", "job/migrate-bad", "-n", scratch,
                     "--timeout=90s", timeout=120)
        job = kube.kj("get", "job", "migrate-bad", "-n", scratch)
        assert job["status"]["failed"] == 2 and not job["status"].get("succeeded")
        failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
        assert failed["status"] == "True" and failed["reason"] == "BackoffLimitExceeded"
        pods = _pods(kube, scratch, "job-name=migrate-bad")
        assert len(pods) == 2 and all(p["status"]["phase"] == "Failed" for p in pods)
        for pod in pods:
            term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
            assert term["exitCode"] != 0
            log = kube.kubectl("logs", pod["metadata"]["name"], "-n", scratch).stdout
            assert "password authentication failed" in log, log
    finally:
        kube.kubectl("delete", "job", "migrate-bad", "-n", scratch, check=False)
        kube.kubectl("delete", "secret", "bad-db", "-n", scratch, check=False)


def test_never_ready_image_stalls(kube, scratch):
    kube.kubectl("patch", "deployment", "apex-api", "-n", scratch, "--patch",
                 '{"spec":{"progressDeadlineSeconds":2}}')
    kube.kubectl("set", "image", "deployment/apex-api", "api=apex/api:9.9.9-never-ready", "-n",
                 scratch)
    proc = kube.kubectl("rollout", "status", "deployment/apex-api", "-n", scratch,
                        "--timeout=30s", check=False)
    assert proc.returncode != 0 and "exceeded its progress deadline" in proc.stderr
    dep = _deploy(kube, scratch, "apex-api")
    prog = next(c for c in dep["status"]["conditions"] if c["type"] == "Progressing")
    assert prog["status"] == "False" and prog["reason"] == "ProgressDeadlineExceeded"
    # the old pods kept serving (maxUnavailable 0)
    assert dep["status"]["availableReplicas"] == 3
    kube.kubectl("rollout", "undo", "deployment/apex-api", "-n", scratch)
    _rollout(kube, scratch, "apex-api")


def test_crashloop_restarts_climb(kube, scratch):
    # generated client-side and applied, as the runbook does for secrets (a direct
    # `kubectl create deployment`, a protobuf body, is covered by test_create_generators_protobuf)
    manifest = kube.kubectl("create", "deployment", "crashy", "--image=apex/api:1.3.0-crashloop",
                            "-n", scratch, "--dry-run=client", "-o", "yaml").stdout
    kube.kubectl("apply", "-f", "-", input=manifest)

    def restarts():
        pods = _pods(kube, scratch, "app=crashy")
        return pods and pods[0]["status"].get("containerStatuses", [{}])[0].get(
            "restartCount", 0) >= 2 and pods[0]
    pod = kube.wait("restartCount to climb", restarts, timeout=30)
    cs = pod["status"]["containerStatuses"][0]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    out = kube.kubectl("get", "pods", "-n", scratch, "-l", "app=crashy").stdout
    assert "CrashLoopBackOff" in out
    prev = kube.kubectl("logs", "deployment/crashy", "-n", scratch, "--previous").stdout
    assert "panic" in prev
    kube.kubectl("delete", "deployment", "crashy", "-n", scratch)


def test_secondary_is_warm_standby(kube):
    out = kube.kubectl("get", "deploy", "-n", "apex", context="apex-secondary").stdout
    rows = {l.split()[0]: l.split() for l in out.splitlines()[1:]}
    assert rows["apex-api"][1] == "0/0" and rows["apex-worker"][1] == "0/0"
    hpa = kube.kj("get", "hpa", "apex-api", "-n", "apex", context="apex-secondary")
    active = next(c for c in hpa["status"]["conditions"] if c["type"] == "ScalingActive")
    assert active["status"] == "False" and active["reason"] == "ScalingDisabled"
    sts = kube.kubectl("get", "sts", "-n", "apex", context="apex-secondary").stdout
    assert "postgresql   1/1" in sts
    # the runbook's failover: scale the standby up; its HPA takes over from there
    sec = {"context": "apex-secondary"}
    kube.kubectl("scale", "deployment/apex-api", "--replicas=5", "-n", "apex", **sec)
    try:
        kube.kubectl("rollout", "status", "deployment/apex-api", "-n", "apex", "--timeout=60s",
                     **sec)

        def active():
            h = kube.kj("get", "hpa", "apex-api", "-n", "apex", **sec)
            c = {x["type"]: x for x in h["status"]["conditions"]}
            # currentReplicas is what the HPA saw at its last sync, which may have run between the
            # scale and the new pods: wait for a sync that sees them
            return c["ScalingActive"]["status"] == "True" and h["status"].get("currentReplicas") == 5 and h
        hpa = kube.wait("the standby's HPA to become active", active)
        assert hpa["status"]["currentReplicas"] == 5
    finally:
        kube.kubectl("scale", "deployment/apex-api", "--replicas=0", "-n", "apex", **sec)
    kube.wait("the standby back at zero", lambda: not kube.kj(
        "get", "pods", "-n", "apex", "-l", "app=apex-api", **sec)["items"])


def test_create_generators_protobuf(kube, scratch):
    """kubectl's typed clientset sends protobuf (client-go >= 1.31)."""
    ns = scratch + "-pb"
    kube.kubectl("create", "namespace", ns)
    try:
        assert kube.kj("get", "namespace", ns)["status"]["phase"] == "Active"
        kube.kubectl("create", "deployment", "web", "--image=apex/api:1.0.0", "--replicas=2",
                     "-n", ns)
        kube.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
        dep = kube.kj("get", "deployment", "web", "-n", ns)
        assert dep["spec"]["replicas"] == 2 and dep["spec"]["selector"] == {
            "matchLabels": {"app": "web"}}
        kube.kubectl("create", "secret", "generic", "s1", "--from-literal=a=b", "-n", ns)
        assert base64.b64decode(kube.kj("get", "secret", "s1", "-n", ns)["data"]["a"]) == b"b"
        kube.kubectl("create", "configmap", "c1", "--from-literal=x=y", "-n", ns)
        assert kube.kj("get", "configmap", "c1", "-n", ns)["data"] == {"x": "y"}
        # the runbook's manual backup trigger: a Job from the CronJob's template
        kube.kubectl("create", "job", "--from=cronjob/apex-db-backup", "manual-backup", "-n",
                     scratch)
        job = kube.kj("get", "job", "manual-backup", "-n", scratch)
        c = job["spec"]["template"]["spec"]["containers"][0]
        assert c["image"] == "postgres:15.8" and c["command"][0] == "/bin/sh"
        assert c["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "apex-secrets",
                                                            "key": "database-url"}
        assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
        kube.kubectl("wait", "--for=condition=complete", "job/manual-backup", "-n", scratch,
                     "--timeout=60s")
        cj = kube.kj("get", "cronjob", "apex-db-backup", "-n", scratch)
        assert cj["status"].get("lastSuccessfulTime")
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_statefulset_rollout_restart_undo_and_scale(kube, scratch):
    kube.kubectl("set", "image", "statefulset/postgresql", "postgresql=postgres:15.9", "-n",
                 scratch)
    kube.kubectl("rollout", "status", "statefulset/postgresql", "-n", scratch, "--timeout=60s")
    assert kube.kj("get", "pod", "postgresql-0", "-n", scratch)["spec"]["containers"][0][
        "image"] == "postgres:15.9"
    kube.kubectl("rollout", "undo", "statefulset/postgresql", "-n", scratch)
    kube.kubectl("rollout", "status", "statefulset/postgresql", "-n", scratch, "--timeout=60s")
    assert kube.kj("get", "pod", "postgresql-0", "-n", scratch)["spec"]["containers"][0][
        "image"] == "postgres:15.8"
    hist = kube.kubectl("rollout", "history", "statefulset/postgresql", "-n", scratch).stdout
    assert [l.split()[0] for l in hist.splitlines()[2:] if l.strip()] == ["2", "3"]
    uid = kube.kj("get", "pod", "postgresql-0", "-n", scratch)["metadata"]["uid"]
    kube.kubectl("rollout", "restart", "statefulset/postgresql", "-n", scratch)
    kube.kubectl("rollout", "status", "statefulset/postgresql", "-n", scratch, "--timeout=60s")
    assert kube.kj("get", "pod", "postgresql-0", "-n", scratch)["metadata"]["uid"] != uid
    # the runbook's restore procedure: scale the database to 0 and back
    kube.kubectl("scale", "statefulset/postgresql", "--replicas=0", "-n", scratch)
    kube.wait("postgresql-0 to go", lambda: kube.kubectl(
        "get", "pod", "postgresql-0", "-n", scratch, check=False).returncode != 0)
    kube.kubectl("scale", "statefulset/postgresql", "--replicas=1", "-n", scratch)
    kube.kubectl("rollout", "status", "statefulset/postgresql", "-n", scratch, "--timeout=60s")
    assert "1/1" in kube.kubectl("get", "statefulset", "postgresql", "-n", scratch).stdout


def test_auth_can_i_whoami_cluster_info(kube):
    assert kube.kubectl("auth", "can-i", "patch", "deployments", "-n", "apex").stdout.strip() \
        == "yes"
    assert "kubesim-admin-primary" in kube.kubectl("auth", "whoami").stdout
    assert "is running at https://127.0.0.1:" in kube.kubectl("cluster-info").stdout
    assert "Server Version: v1.32.4" in kube.kubectl("version").stdout


STRICT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: strict-check
  namespace: {ns}
spec:
  {replicas_key}: 2
  selector:
    matchLabels: {{app: strict-check}}
  template:
    metadata:
      labels: {{app: strict-check}}
    spec:
      containers:
      - name: c
        image: apex/api:1.0.0
"""


def test_strict_field_validation(kube, scratch):
    """kubectl >= 1.27 sends fieldValidation=Strict: an unknown field is refused, not stored."""
    bad = STRICT.format(ns=scratch, replicas_key="replcas")
    proc = kube.kubectl("apply", "-f", "-", input=bad, check=False)
    assert proc.returncode != 0
    assert ('Error from server (BadRequest): error when creating "STDIN": Deployment in version '
            '"v1" cannot be handled as a Deployment: strict decoding error: unknown field '
            '"spec.replcas"') in proc.stderr, proc.stderr
    assert kube.kubectl("get", "deployment", "strict-check", "-n", scratch,
                        check=False).returncode != 0  # nothing was created
    proc = kube.kubectl("replace", "-f", "-", input=bad, check=False)  # PUT: same refusal
    assert proc.returncode != 0 and "strict decoding error" in proc.stderr
    # the correct manifest applies
    kube.kubectl("apply", "-f", "-", input=STRICT.format(ns=scratch, replicas_key="replicas"))
    dep = kube.kj("get", "deployment", "strict-check", "-n", scratch)
    assert dep["spec"]["replicas"] == 2 and "replcas" not in dep["spec"]
    # on the existing object (a client-side-apply patch): 422 with the patch quoted
    proc = kube.kubectl("apply", "-f", "-", input=bad, check=False)
    assert proc.returncode != 0
    assert 'strict decoding error: unknown field "spec.replcas"' in proc.stderr, proc.stderr
    assert "patch: Invalid value:" in proc.stderr
    assert kube.kj("get", "deployment", "strict-check", "-n", scratch)["spec"]["replicas"] == 2
    # server-side apply refuses it too
    proc = kube.kubectl("apply", "--server-side", "-f", "-", input=bad, check=False)
    assert proc.returncode != 0 and ".spec.replcas: field not declared in schema" in proc.stderr
    # Warn: accepted, the field dropped, a warning printed
    proc = kube.kubectl("apply", "--validate=warn", "-f", "-", input=bad)
    assert 'Warning: unknown field "spec.replcas"' in proc.stderr, proc.stderr
    dep = kube.kj("get", "deployment", "strict-check", "-n", scratch)
    assert "replcas" not in dep["spec"]
    kube.kubectl("delete", "deployment", "strict-check", "-n", scratch)
