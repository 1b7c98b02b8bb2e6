"""apex_rollout against the lab: the Deployments' templates, ReplicaSets and pods as the official client
reads them, and what the Apex twin serves (it follows the ready ReplicaSet's image and env)."""
import threading

WORKER_CONCURRENCY = "APEX__WORKER__CONCURRENCY"


def test_env_change_reaches_the_twin_is_idempotent_and_undone(rollout, cluster, twin):
    before = cluster.revision("apex-worker")
    result = rollout(dict(names=["apex-worker"], env={WORKER_CONCURRENCY: 5}, wait_timeout=60))
    assert not result.failed, result.get("msg")
    target = result["targets"][0]
    assert result["changed"] and target["outcome"] == "complete"
    assert target["before"] == {"containers": {"worker": {"env": {WORKER_CONCURRENCY: "2"}}}}
    assert cluster.env("apex-worker")[WORKER_CONCURRENCY] == "5"
    assert cluster.revision("apex-worker") == before + 1 == target["revision_after"]
    assert cluster.raw("apex-worker")["metadata"]["annotations"]["kubernetes.io/change-cause"] == \
        "apex.ops apex_rollout: env %s on worker: 2 -> 5" % WORKER_CONCURRENCY
    twin.wait_for("worker concurrency 5", lambda h: h["worker"]["concurrency"] == 5)

    again = rollout(dict(names=["apex-worker"], env={WORKER_CONCURRENCY: "5"}))
    assert not again.failed and not again["changed"] and cluster.revision("apex-worker") == before + 1

    facts = rollout(dict(names=["apex-worker"], state="facts"))
    latest = facts["targets"][0]["history"][-1]
    assert latest["current"] and latest["env_changes"] == [
        dict(container="worker", name=WORKER_CONCURRENCY, before="2", after="5")]

    undo = rollout(dict(names=["apex-worker"], undo=True, wait_timeout=60))
    assert not undo.failed, undo.get("msg")
    assert undo["targets"][0]["undo_to"] == before
    assert cluster.env("apex-worker")[WORKER_CONCURRENCY] == "2"
    twin.wait_for("worker concurrency 2", lambda h: h["worker"]["concurrency"] == 2)


def test_an_image_that_never_gets_ready_is_put_back_and_the_twin_keeps_serving(rollout, cluster, twin):
    seen, stop = [], threading.Event()

    def probe():
        while not stop.is_set():
            seen.append(twin.health().get("version"))
            stop.wait(0.1)
    thread = threading.Thread(target=probe)
    thread.start()
    try:
        result = rollout(dict(names=["apex-api"], image="apex/api:1.1.0-never-ready", wait_timeout=4))
    finally:
        stop.set()
        thread.join()
    assert result.failed
    assert "timed out after 4s waiting for the rollout of Deployment apex/apex-api" in result["msg"]
    assert "Readiness probe failed" in result["msg"]  # the pod that was not ready, with why
    failure = result["last_state"]["targets"][0]["wait_failure"]
    assert failure["outcome"] == "timeout" and failure["pods_not_ready"]
    assert result["last_state"]["rolled_back"] == [
        "Deployment/apex/apex-api -> pod template as before this call, rolled out"]
    assert cluster.image("apex-api") == "apex/api:1.0.0"
    assert "kubernetes.io/change-cause" not in (cluster.raw("apex-api")["metadata"].get("annotations") or {})
    assert seen and set(seen) == {"1.0.0"}, "the twin stopped serving 1.0.0 during the failed rollout: %s" % set(seen)
    assert twin.health()["status"] == "healthy"


def test_restart_replaces_the_pods_of_both_targets_at_once(rollout, cluster):
    pods = dict((name, set(cluster.pods(name))) for name in ("apex-api", "apex-worker"))
    result = rollout(dict(names=["apex-api", "apex-worker"], restart=True, wait_timeout=60))
    assert not result.failed, result.get("msg")
    assert [t["outcome"] for t in result["targets"]] == ["complete", "complete"]
    for name in pods:
        now = set(cluster.pods(name))
        assert now and not (now & pods[name]), "%s kept pods %s" % (name, now & pods[name])


def test_check_mode_plans_and_changes_nothing(rollout, cluster):
    revision = cluster.revision("apex-api")
    result = rollout(dict(names=["apex-api"], container="api", resources={
        "limits": {"memory": "4Gi", "cpu": "4"}, "requests": {"memory": "2Gi", "cpu": "1"}}), check_mode=True, diff=True)
    assert not result.failed and result["changed"]
    assert result["diff"]["after"]["Deployment/apex/apex-api"]["containers"]["api"]["resources"]["limits"]["memory"] == "4Gi"
    assert cluster.revision("apex-api") == revision
    assert "4Gi" not in str(cluster.template("apex-api"))


def test_resources_then_undo_to_a_given_revision(rollout, cluster):
    first = cluster.revision("apex-api")
    result = rollout(dict(names=["apex-api"], container="api",
                          resources={"limits": {"memory": "4Gi", "cpu": "4"}, "requests": {"memory": "2Gi", "cpu": "1"}}))
    assert not result.failed, result.get("msg")
    assert cluster.template("apex-api")["spec"]["containers"][0]["resources"]["limits"] == {"memory": "4Gi", "cpu": "4"}
    again = rollout(dict(names=["apex-api"], container="api", resources={"limits": {"memory": "4096Mi"}}))
    assert not again["changed"]
    undo = rollout(dict(names=["apex-api"], to_revision=first))
    assert not undo.failed and undo["changed"], undo.get("msg")
    assert "4Gi" not in str(cluster.template("apex-api"))
    same = rollout(dict(names=["apex-api"], to_revision=first))
    assert not same["changed"]


def test_paused_changes_roll_only_when_resumed(rollout, cluster, twin):
    pods = set(cluster.pods("apex-api"))
    paused = rollout(dict(names=["apex-api"], paused=True, image="apex/api:1.0.1"))
    assert not paused.failed and paused["changed"], paused.get("msg")
    assert cluster.raw("apex-api")["spec"]["paused"] is True and set(cluster.pods("apex-api")) == pods
    assert twin.health()["version"] == "1.0.0"
    resumed = rollout(dict(names=["apex-api"], paused=False, wait_timeout=60))
    assert not resumed.failed and resumed["targets"][0]["outcome"] == "complete", resumed.get("msg")
    twin.wait_for("version 1.0.1", lambda h: h["version"] == "1.0.1")


def test_refusals_change_nothing(rollout, cluster):
    revision = cluster.revision("apex-worker")
    typo = rollout(dict(names=["apex-worker"], env={"APEX_WORKER_CONCURRENCY": 5}))
    assert typo.failed and "APEX__SECTION__KEY" in typo["msg"]
    missing = rollout(dict(names=["apex-worker", "apex-nope"], restart=True))
    assert missing.failed and "Deployment apex-nope" in missing["msg"]
    assert cluster.revision("apex-worker") == revision
