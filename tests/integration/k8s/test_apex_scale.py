"""apex_scale against the lab simulator: the cluster's state is what is asserted."""
import json

import pytest

from k8s_lab import NS, SEEDED, STATE_CM

CTX = dict(context="apex-primary", namespace=NS)


def test_scales_two_targets_in_parallel_and_waits_until_ready(run_module, kube):
    result = run_module("apex_scale", targets=[{"name": "apex-api", "replicas": 5},
                                               {"name": "apex-worker", "replicas": 8}], wait_timeout=60, **CTX)
    assert not result.failed, result.get("msg")
    assert result["changed"]
    for name, want in (("apex-api", 5), ("apex-worker", 8)):
        d = kube.deployment(name)
        assert d.spec.replicas == want and d.status.ready_replicas == want, name
    by_key = dict((t["key"], t) for t in result["targets"])
    assert by_key["Deployment/apex-api"]["before"]["replicas"] == 3
    assert by_key["Deployment/apex-worker"]["after"]["replicas"] == 8
    assert all(t["timings"]["wait_seconds"] >= 0 and t["observed"]["ready"] == t["after"]["replicas"]
               for t in result["targets"])
    # parallel: every target started before any finished
    starts = [t["timings"]["start_offset_seconds"] for t in result["targets"]]
    ends = [t["timings"]["start_offset_seconds"] + t["timings"]["total_seconds"] for t in result["targets"]]
    assert max(starts) < min(ends), result["targets"]


def test_idempotent_second_run_changes_nothing(run_module, kube):
    assert run_module("apex_scale", names=["apex-api"], replicas=4, **CTX)["changed"]
    again = run_module("apex_scale", names=["apex-api"], replicas=4, **CTX)
    assert not again.failed and not again["changed"]
    assert kube.replicas("apex-api") == 4


def test_relative_change_with_precondition(run_module, kube):
    result = run_module("apex_scale", names=["apex-worker"], replicas_delta="+2", current_replicas=5, **CTX)
    assert not result.failed, result.get("msg")
    assert kube.replicas("apex-worker") == 7
    result = run_module("apex_scale", names=["apex-worker"], replicas_delta=-1, **CTX)
    assert kube.replicas("apex-worker") == 6


def test_wrong_current_replicas_fails_clearly_and_changes_nothing(run_module, kube):
    result = run_module("apex_scale", names=["apex-api", "apex-worker"], replicas=6, current_replicas=4, **CTX)
    assert result.failed
    assert "precondition failed: it has 3 replicas, current_replicas expected 4" in result["msg"]
    assert kube.state() == SEEDED


def test_check_mode_and_diff_change_nothing(run_module, kube):
    result = run_module("apex_scale", check_mode=True, diff=True, names=["apex-api"], replicas=7, **CTX)
    assert not result.failed and result["changed"]
    assert result["diff"]["before"]["Deployment/apex-api"]["replicas"] == 3
    assert result["diff"]["after"]["Deployment/apex-api"]["replicas"] == 7
    assert kube.state() == SEEDED


def test_hpa_fighting_a_manual_scale_is_refused(run_module, kube):
    result = run_module("apex_scale", names=["apex-api"], replicas=15, **CTX)
    assert result.failed
    msg = result["msg"]
    assert "refusing to scale to 15" in msg and "[3, 10]" in msg and "hpa_adjust" in msg
    assert kube.state() == SEEDED


def test_hpa_adjust_moves_the_bound_and_the_hpa_keeps_it(run_module, kube):
    result = run_module("apex_scale", names=["apex-api"], replicas=12, hpa_adjust=True, **CTX)
    assert not result.failed, result.get("msg")
    assert kube.hpa_bounds("apex-api")[:2] == (3, 12)
    d = kube.deployment("apex-api")
    assert d.spec.replicas == 12 and d.status.ready_replicas == 12


def test_hpa_settings_and_the_hpa_moves_replicas_into_new_bounds(run_module, kube):
    result = run_module("apex_scale", names=["apex-api"], hpa_min_replicas=4, hpa_max_replicas=20,
                        hpa_target_cpu=60, wait_timeout=60, **CTX)
    assert not result.failed, result.get("msg")
    assert kube.hpa_bounds("apex-api") == (4, 20, 60)
    # the HPA (not apex_scale) brings the workload to the new minimum; the module waited for it
    assert result["targets"][0]["after"]["replicas"] == 4
    d = kube.deployment("apex-api")
    assert d.spec.replicas == 4 and d.status.ready_replicas == 4


def test_missing_deployment_is_a_clear_error_and_nothing_changes(run_module, kube):
    result = run_module("apex_scale", names=["apex-api", "apex-nope"], replicas=4, **CTX)
    assert result.failed
    assert "Deployment apex-nope not found in namespace apex" in result["msg"]
    assert "apex-api" in result["msg"] and "Nothing was changed" in result["msg"]
    assert kube.state() == SEEDED


def test_bad_token_is_a_clear_error_and_never_echoed(run_module, kube):
    bad = "not-the-token-0123456789"
    result = run_module("apex_scale", names=["apex-api"], replicas=4, api_key=bad, **CTX)
    assert result.failed
    assert "401" in result["msg"] and "rejected the credentials" in result["msg"]
    assert bad not in result["_stdout"] and bad not in result["_stderr"]
    assert kube.state() == SEEDED


def test_bad_kubeconfig_is_a_clear_error(run_module, kube, tmp_path):
    result = run_module("apex_scale", names=["apex-api"], replicas=4, kubeconfig=str(tmp_path / "missing"),
                        namespace=NS)
    assert result.failed and "does not exist" in result["msg"]
    result = run_module("apex_scale", names=["apex-api"], replicas=4, context="apex-tertiary", namespace=NS)
    assert result.failed and "context 'apex-tertiary' is not in kubeconfig" in result["msg"]
    assert kube.state() == SEEDED


def test_token_never_in_output(run_module, kube_token):
    result = run_module("apex_scale", names=["apex-api"], replicas=3, api_key=kube_token, **CTX)
    assert not result.failed, result.get("msg")
    assert kube_token not in result["_stdout"] and kube_token not in result["_stderr"]


def test_never_ready_target_times_out_with_reasons_and_is_rolled_back(run_module, kube, scratch_deployment):
    scratch_deployment("apex-ops-test-never", "apex/api:never-ready")
    result = run_module("apex_scale", names=["apex-ops-test-never", "apex-api"], replicas=2, hpa_adjust=True,
                        wait_timeout=3, **CTX)
    assert result.failed
    msg = result["msg"]
    assert "Deployment/apex-ops-test-never: ready 0/2" in msg, msg
    assert "not ready:" in msg and "apex-ops-test-never-" in msg  # the pods, by name, with why
    assert "Readiness probe failed" in msg
    assert "Rolled back" in msg
    detail = [t for t in result["last_state"]["targets"] if t["key"] == "Deployment/apex-ops-test-never"][0]
    assert detail["wait_failure"]["pods_not_ready"]
    # the cluster is as it was: the test deployment back at 1, apex-api and its HPA untouched
    assert kube.replicas("apex-ops-test-never") == 1
    assert kube.state() == SEEDED


def test_save_and_restore_exactly(run_module, kube, seeded_cpu):
    saved_before = kube.state(with_cpu=True)
    assert all(cpu is not None for cpu in seeded_cpu.values()), seeded_cpu
    event_cpu = dict((name, cpu + 11) for name, cpu in seeded_cpu.items())
    start = run_module("apex_scale", save_state=True, state_name="it-event", hpa_adjust=True, targets=[
        {"name": "apex-worker", "replicas": 20, "hpa_max_replicas": 100, "hpa_target_cpu": event_cpu["apex-worker"]},
        {"name": "apex-api", "hpa_max_replicas": 50, "hpa_target_cpu": event_cpu["apex-api"]}], wait_timeout=60, **CTX)
    assert not start.failed, start.get("msg")
    assert start["state"]["action"] == "saved"
    assert kube.replicas("apex-worker") == 20 and kube.hpa_bounds("apex-worker")[1:] == (100, event_cpu["apex-worker"])
    assert kube.hpa_bounds("apex-api")[1:] == (50, event_cpu["apex-api"])
    cm = kube.core.read_namespaced_config_map(STATE_CM, NS)
    record = json.loads(cm.data["it-event"])
    assert {t["name"]: t["replicas"] for t in record["targets"]} == {"apex-worker": 5, "apex-api": 3}
    assert {t["name"]: t["hpa_bounds"]["target_cpu"] for t in record["targets"]} == seeded_cpu
    # a second start keeps the pre-event record
    again = run_module("apex_scale", save_state=True, state_name="it-event", hpa_adjust=True, targets=[
        {"name": "apex-worker", "replicas": 20, "hpa_max_replicas": 100},
        {"name": "apex-api", "hpa_max_replicas": 50}], **CTX)
    assert again["state"]["action"] == "kept" and not again["changed"]
    # things drift during the event
    kube.apps.patch_namespaced_deployment_scale("apex-api", NS, {"spec": {"replicas": 6}})
    end = run_module("apex_scale", restore_state=True, state_name="it-event", wait_timeout=60, **CTX)
    assert not end.failed, end.get("msg")
    # replicas, min, max and the target CPU are all back
    assert kube.state(with_cpu=True) == saved_before
    assert kube.state() == SEEDED
    assert kube.deployment("apex-worker").status.ready_replicas == 5
    end2 = run_module("apex_scale", restore_state=True, state_name="it-event", **CTX)
    assert not end2.failed and not end2["changed"]


def test_restore_without_saved_state_is_a_clear_error(run_module, kube):
    result = run_module("apex_scale", restore_state=True, state_name="never-saved", **CTX)
    assert result.failed and "no saved scale state 'never-saved'" in result["msg"]
    assert kube.state() == SEEDED


def test_label_selector_targets(run_module, kube):
    labels = kube.deployment("apex-api").metadata.labels
    key = "app" if "app" in labels else sorted(labels)[0]
    result = run_module("apex_scale", label_selectors=["%s=%s" % (key, labels[key])], replicas=4, **CTX)
    assert not result.failed, result.get("msg")
    assert "Deployment/apex-api" in [t["key"] for t in result["targets"]]
    assert kube.replicas("apex-api") == 4


@pytest.mark.parametrize("args,match", [
    (dict(names=["apex-api"], replicas=3, replicas_delta=1), "mutually exclusive"),
    (dict(names=["apex-api"], replicas_delta="two"), "signed whole number"),
    (dict(restore_state=True, names=["apex-api"]), "cannot be combined"),
    (dict(names=["apex-api"], hpa_min_replicas=12), "would exceed maxReplicas"),
])
def test_bad_input_is_refused(run_module, kube, args, match):
    args.update(CTX)
    result = run_module("apex_scale", **args)
    assert result.failed and match in result["msg"]
    assert kube.state() == SEEDED


def test_statefulset_target(run_module, kube):
    sts = kube.apps.read_namespaced_stateful_set("redis", NS)
    before = sts.spec.replicas
    try:
        result = run_module("apex_scale", names=["statefulset/redis"], replicas=before + 1, wait_timeout=60, **CTX)
        assert not result.failed, result.get("msg")
        sts = kube.apps.read_namespaced_stateful_set("redis", NS)
        assert sts.spec.replicas == before + 1 and sts.status.ready_replicas == before + 1
    finally:
        kube.apps.patch_namespaced_stateful_set_scale("redis", NS, {"spec": {"replicas": before}})


def test_secondary_region_failover_scale_and_back_to_zero(run_module, kubeconfig):
    """Runbook failover step 4 on the warm standby (workloads at 0, HPAs disabled there), then back to 0."""
    from k8s_lab import Kube

    secondary = Kube(kubeconfig, context="apex-secondary")
    assert secondary.replicas("apex-api") == 0 and secondary.replicas("apex-worker") == 0
    try:
        up = run_module("apex_scale", context="apex-secondary", namespace=NS, wait_timeout=60,
                        targets=[{"name": "apex-api", "replicas": 5}, {"name": "apex-worker", "replicas": 10}])
        assert not up.failed, up.get("msg")
        assert secondary.deployment("apex-api").status.ready_replicas == 5
        assert secondary.deployment("apex-worker").status.ready_replicas == 10
        # the HPAs govern them now: 0 would take the region down again, so it needs allow_zero
        refused = run_module("apex_scale", context="apex-secondary", namespace=NS, names=["apex-api", "apex-worker"],
                             replicas=0, wait_timeout=60)
        assert refused.failed and "refusing to scale to 0 replicas" in refused["msg"] and "allow_zero" in refused["msg"]
        assert secondary.replicas("apex-api") == 5 and secondary.replicas("apex-worker") == 10
        down = run_module("apex_scale", context="apex-secondary", namespace=NS, names=["apex-api", "apex-worker"],
                          replicas=0, allow_zero=True, wait_timeout=60)
        assert not down.failed, down.get("msg")
        assert any("does not autoscale a workload at zero" in n for n in down["targets"][0]["notes"])
        assert secondary.replicas("apex-api") == 0 and secondary.replicas("apex-worker") == 0
    finally:
        for name in ("apex-api", "apex-worker"):
            secondary.apps.patch_namespaced_deployment_scale(name, NS, {"spec": {"replicas": 0}})


def test_zero_under_an_hpa_is_refused_without_allow_zero(run_module, kube):
    for args in ({"replicas": 0}, {"replicas_delta": -3}, {"replicas": 0, "hpa_adjust": True}):
        result = run_module("apex_scale", names=["apex-api"], **dict(CTX, **args))
        assert result.failed, args
        assert "refusing to scale to 0 replicas" in result["msg"] and "allow_zero: true" in result["msg"]
        assert kube.state() == SEEDED
        assert kube.deployment("apex-api").status.ready_replicas == 3


def test_restart_rollback_says_the_restart_cannot_be_undone(run_module, kube, scratch_deployment):
    scratch_deployment("apex-it-never-ready", "apex/api:never-ready", replicas=1)
    kube.settle("apex-worker", 5)
    result = run_module("apex_scale", wait_timeout=3, targets=[
        {"name": "apex-it-never-ready", "replicas": 2}, {"name": "apex-worker", "restart": True}], **CTX)
    assert result.failed
    rolled_back = result["last_state"]["rolled_back"]
    assert "Deployment/apex-it-never-ready -> 1 replicas" in rolled_back, rolled_back
    assert "Deployment/apex-worker: the rolling restart cannot be undone (its pods were already replaced)" \
        in rolled_back, rolled_back
    assert kube.replicas("apex-it-never-ready") == 1 and kube.replicas("apex-worker") == 5
    kube.settle("apex-worker", 5)


def test_two_restarts_within_one_second_both_roll(run_module, kube):
    """kubectl's whole-second restartedAt stamp makes the second of two quick restarts a no-op;
    apex_scale's stamp must not: each run leaves a new pod template (a new ReplicaSet revision)."""
    revisions, stamps = [], []
    for dummy in range(2):
        result = run_module("apex_scale", names=["apex-worker"], restart=True, wait=False, **CTX)
        assert not result.failed and result["changed"], result.get("msg")
        dep = kube.deployment("apex-worker")
        stamps.append(dep.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"])
        revisions.append(dep.metadata.generation)
    assert stamps[0] != stamps[1] and revisions[1] > revisions[0], (stamps, revisions)
    kube.settle("apex-worker", kube.replicas("apex-worker"))


def test_hpa_moving_replicas_during_the_wait_is_followed_not_fought(run_module, kube, scratch_deployment):
    """A real HPA (the simulator's controller, 1 s sync) moves the replicas while apex_scale waits for
    its own count: the module follows, reports the move, succeeds, and never writes its count again.

    The new pods take 4 s to become Ready (readinessProbe.initialDelaySeconds); as soon as apex_scale
    has written 3 replicas, the CPU load doubles and the HPA goes to 6 within its next sync."""
    import threading
    import time

    name = "apex-ops-test-hpa-move"
    scratch_deployment(name, "apex/api:1.0.0", replicas=1)
    kube.apps.patch_namespaced_deployment(name, "apex", {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                                            "initialDelaySeconds": 4}}]}}}})
    kube.settle(name, 1)
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": name, "namespace": "apex",
                        "annotations": {"kubesim.apex.dev/cpu-utilization": "50"}},  # on target
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": 1, "maxReplicas": 6,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                        "type": "Utilization", "averageUtilization": 50}}}]}}
    kube.hpa_api.create_namespaced_horizontal_pod_autoscaler("apex", hpa)
    raised = []

    def load_doubles_once_scaled():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if kube.replicas(name) == 3:
                kube.hpa_api.patch_namespaced_horizontal_pod_autoscaler(name, "apex", {"metadata": {
                    "annotations": {"kubesim.apex.dev/cpu-utilization": "100"}}})
                raised.append(time.monotonic())
                return
            time.sleep(0.05)

    loader = threading.Thread(target=load_doubles_once_scaled, daemon=True)
    loader.start()
    try:
        result = run_module("apex_scale", names=[name], replicas=3, wait_timeout=90, **CTX)
        loader.join(5)
        assert raised, "the test never saw 3 replicas written"
        assert not result.failed, result.get("msg")
        target = result["targets"][0]
        assert target["after"]["replicas"] == 3 and target["observed"]["desired"] == 6, target
        assert target["observed"]["ready"] == 6
        assert any("changed to 6 during the wait" in note for note in target["notes"]), target["notes"]
        assert kube.settle(name, 6).spec.replicas == 6
    finally:
        kube.hpa_api.delete_namespaced_horizontal_pod_autoscaler(name, "apex")
