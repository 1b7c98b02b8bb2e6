"""apex_release against the lab: Helm v4 (helm-python-sdk) on the Kubernetes simulator, the
twin serving the version of the running image. The ``apex`` release is shared by the tests of
this module (they run in order: upgrade, idempotent re-run, a never-ready upgrade rolled back,
rollback to revision 1, facts); the check-mode, packaged-chart and sql tests use scratch namespaces."""
import json
import os
import subprocess
import sys

import psycopg
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CHART = os.path.join(ROOT, "tests", "lab", "charts", "apex")
# Small workloads for the scratch namespaces (the seeded apex namespace keeps 3 + 5 replicas).
SMALL = {"api": {"replicas": 1, "hpa": {"minReplicas": 1}}, "worker": {"replicas": 1, "hpa": {"enabled": False}}}

APEX = dict(chart=CHART, namespace="apex", context="apex-primary", timeout=120)


def test_install_adopts_the_running_apex(apex_release, kubectl, twin_version):
    assert apex_release["action"] in ("install", "none"), apex_release
    assert apex_release["release"]["status"] == "deployed"
    assert kubectl.helm_secrets("apex") == [apex_release["revision_after"]]
    # the chart's defaults are the seed: adopting changed no workload
    assert kubectl.image("apex") == "apex/api:1.0.0"
    assert twin_version.now()[0] == "1.0.0"


def test_upgrade_new_tag_is_served_and_rerun_changes_nothing(apex_release, run_module, kubectl, twin_version):
    before = kubectl.helm_secrets("apex")
    result = run_module("apex_release", set_values=["api.image.tag=1.1.0"], **APEX)
    assert not result.failed, result.get("msg")
    assert result["changed"] and result["action"] == "upgrade"
    assert result["revision_after"] == before[-1] + 1 == result["release"]["revision"]
    assert "Deployment/apex/apex-api" in result["plan"]["update"]
    # the seeded env vars from Secret apex-secrets (not in the chart) are kept by the merge: no difference
    assert "Deployment/apex/apex-worker" in result["plan"]["unchanged"]
    api = [w for w in result["workloads"] if w["name"] == "apex-api"][0]
    assert api["rollout"] == "complete" and api["images"] == {"api": "apex/api:1.1.0"}
    # the cluster and the twin, not the module, say what runs
    assert kubectl.image("apex") == "apex/api:1.1.0"
    assert twin_version("1.1.0") == ("1.1.0", "1.1.0")

    again = run_module("apex_release", set_values=["api.image.tag=1.1.0"], **APEX)
    assert not again.failed, again.get("msg")
    assert again["changed"] is False and again["action"] == "none"
    assert again["revision_after"] == result["revision_after"]
    assert kubectl.helm_secrets("apex") == before + [result["revision_after"]]  # no new revision


def test_never_ready_upgrade_returns_to_the_previous_revision(apex_release, run_module, kubectl, twin_version):
    good = run_module("apex_release", set_values=["api.image.tag=1.1.0"], **APEX)
    assert not good.failed, good.get("msg")
    revision = good["revision_after"]
    bad = run_module("apex_release", set_values=["api.image.tag=2.0.0-never-ready", "progressDeadlineSeconds=2"],
                     **APEX)
    assert bad.failed
    assert "not ready" in bad["helm_error"] and bad["rolled_back"] is True
    assert bad["revision_before"] == revision and bad["restored_revision"] == revision
    assert bad["failed_revision"] == revision + 1 and bad["returned_to_revision"] == revision + 2
    assert "rolled back to revision %d" % revision in bad["msg"]
    api = [w for w in bad["not_ready"] if w["name"] == "apex-api"][0]
    assert api["rollout"] == "failed" and "deadline" in api["message"]
    assert api["pods_not_ready"] and all("never-ready" in p["images"]["api"] for p in api["pods_not_ready"])
    # the release, the Deployment and the twin are back on the previous version
    facts = run_module("apex_release", state="facts", namespace="apex", context="apex-primary")
    assert facts["deployed"]["revision"] == revision + 2
    assert [r["status"] for r in facts["revisions"] if r["revision"] == revision + 1] == ["failed"]
    assert kubectl.image("apex") == "apex/api:1.1.0"
    kubectl.run("rollout", "status", "deployment/apex-api", "-n", "apex", "--timeout=60s")
    assert twin_version.now()[0] == "1.1.0"


def test_rollback_to_a_named_revision(apex_release, run_module, kubectl, twin_version):
    first = apex_release["revision_after"]
    plan = run_module("apex_release", check_mode=True, diff=True, state="rolledback", revision=first,
                      namespace="apex", context="apex-primary")
    assert not plan.failed, plan.get("msg")
    assert plan["changed"] and plan["revision_after"] is None and plan["target_revision"] == first
    assert any("image: apex/api:1.0.0" in d["after"] for d in plan["diff"])
    assert kubectl.image("apex") == "apex/api:1.1.0"  # check mode changed nothing

    result = run_module("apex_release", state="rolledback", revision=first, namespace="apex",
                        context="apex-primary", timeout=120)
    assert not result.failed, result.get("msg")
    assert result["changed"] and result["target_revision"] == first
    assert result["revision_after"] == result["revision_before"] + 1
    assert all(w["rollout"] == "complete" for w in result["workloads"])
    assert kubectl.image("apex") == "apex/api:1.0.0"
    assert twin_version("1.0.0")[0] == "1.0.0"

    again = run_module("apex_release", state="rolledback", revision=first, namespace="apex",
                       context="apex-primary")
    assert not again.failed and again["changed"] is False
    assert again["revision_after"] == result["revision_after"]


def test_facts_list_every_revision(apex_release, run_module, kubectl):
    facts = run_module("apex_release", state="facts", namespace="apex", context="apex-primary")
    assert not facts.failed and facts["changed"] is False and facts["exists"] is True
    revisions = facts["revisions"]
    assert [r["revision"] for r in revisions] == kubectl.helm_secrets("apex")
    assert revisions[0]["description"] == "Install complete"
    assert any(r["status"] == "failed" for r in revisions)
    assert revisions[-1]["status"] == "deployed"
    assert revisions[-1]["description"] == "Rollback to %d" % revisions[0]["revision"]
    for rev in revisions:
        assert rev["chart"] == "apex-0.1.0" and rev["app_version"] == "1.0.0" and rev["first_deployed"]
    deployed = facts["deployed"]
    assert deployed["manifest_digest"].startswith("sha256:")
    assert "Deployment/apex/apex-api" in deployed["objects"]
    assert deployed["values"] == {}  # revision 1 was installed with the chart defaults
    none = run_module("apex_release", state="facts", name="no-such-release", namespace="apex", context="apex-primary")
    assert not none.failed and none["exists"] is False


def _package(tmp_path):
    script = "import helm_python, sys; print(helm_python.package(sys.argv[1], destination=sys.argv[2]))"
    proc = subprocess.run([sys.executable, "-c", script, CHART, str(tmp_path)], capture_output=True, text=True,
                          check=True, timeout=60)
    tgz = [p for p in os.listdir(str(tmp_path)) if p.endswith(".tgz")]
    assert tgz, proc.stdout + proc.stderr
    return str(tmp_path / tgz[0])


def test_check_mode_plans_against_live_objects_and_masks_secrets(run_module, scratch_namespace, kubectl, tmp_path):
    ns = scratch_namespace()
    package = _package(tmp_path)
    # credentials come in a values file: the module's own arguments are echoed in its invocation
    first, second = tmp_path / "secrets-1.yaml", tmp_path / "secrets-2.yaml"
    first.write_text(json.dumps({"secrets": {"DB_PASSWORD": "first-S3cret-value"}}))
    second.write_text(json.dumps({"secrets": {"DB_PASSWORD": "second-S3cret-value", "API_TOKEN": "tok-S3cret-value"}}))
    installed = run_module("apex_release", chart=package, namespace=ns, context="apex-primary", values=SMALL,
                           values_files=[str(first)], timeout=60)
    assert not installed.failed, installed.get("msg")
    assert installed["chart_source"] == "package" and installed["action"] == "install"
    assert "Secret/%s/apex-release-secrets" % ns in installed["plan"]["create"]

    plan = run_module("apex_release", check_mode=True, diff=True, chart=package, namespace=ns,
                      context="apex-primary", values=SMALL, values_files=[str(second)],
                      set_values=["api.image.tag=1.1.0"])
    assert not plan.failed, plan.get("msg")
    assert plan["changed"] and plan["action"] == "upgrade" and plan["revision_after"] is None
    assert sorted(plan["plan"]["update"]) == sorted(["ConfigMap/%s/apex-config" % ns, "Deployment/%s/apex-api" % ns,
                                                     "Secret/%s/apex-release-secrets" % ns])
    by_key = dict((d["after_header"].split(" ")[0], d) for d in plan["diff"])
    api = by_key["Deployment/%s/apex-api" % ns]
    assert "image: apex/api:1.0.0" in api["before"] and "image: apex/api:1.1.0" in api["after"]
    assert "status" not in api["before"]  # live-only fields are not a difference
    secret = by_key["Secret/%s/apex-release-secrets" % ns]
    assert "DB_PASSWORD: <masked>" in secret["before"]
    assert "DB_PASSWORD: <masked, changed>" in secret["after"] and "API_TOKEN: <masked>" in secret["after"]
    for leak in ("first-S3cret-value", "second-S3cret-value", "tok-S3cret-value"):
        for text in (plan["_stdout"], plan["_stderr"], installed["_stdout"]):
            assert leak not in text
    import base64
    for leak in ("first-S3cret-value", "second-S3cret-value"):
        assert base64.b64encode(leak.encode()).decode() not in plan["_stdout"]
    # nothing was applied
    assert kubectl.image(ns) == "apex/api:1.0.0"
    assert kubectl.helm_secrets(ns) == [1]


def test_sql_storage_driver(run_module, scratch_namespace, kubectl, lab):
    ns = scratch_namespace()
    dsn = lab["HELM_DRIVER_SQL_CONNECTION_STRING"]
    # the option, not the environment: the module hands it to its Helm worker at start
    no_env = {"HELM_DRIVER_SQL_CONNECTION_STRING": ""}
    common = dict(chart=CHART, namespace=ns, context="apex-primary", storage_driver="sql", timeout=60, env=no_env,
                  sql_connection_string=dsn)
    try:
        first = run_module("apex_release", values=SMALL, **common)
        assert not first.failed, first.get("msg")
        second = run_module("apex_release", values=SMALL, set_values=["api.image.tag=1.1.0"], **common)
        assert not second.failed, second.get("msg")
        assert second["revision_after"] == 2 and kubectl.image(ns) == "apex/api:1.1.0"
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT key, owner FROM releases_v1 WHERE namespace = %s ORDER BY key",
                                (ns,)).fetchall()
        assert rows == [("sh.helm.release.v1.apex.v1", "helm"), ("sh.helm.release.v1.apex.v2", "helm")]
        assert kubectl.helm_secrets(ns) == []  # nothing in the namespace's Secrets
        facts = run_module("apex_release", state="facts", namespace=ns, context="apex-primary",
                           storage_driver="sql", env={"HELM_DRIVER_SQL_CONNECTION_STRING": dsn})
        assert [r["revision"] for r in facts["revisions"]] == [1, 2]
        for text in (first["_stdout"], second["_stdout"], facts["_stdout"]):
            assert dsn not in text and "password=" not in text
        missing = run_module("apex_release", state="facts", namespace=ns, context="apex-primary",
                             storage_driver="sql", env=no_env)
        assert missing.failed and "sql_connection_string" in missing["msg"]
    finally:
        with psycopg.connect(dsn) as conn:
            conn.execute("DELETE FROM releases_v1 WHERE namespace = %s", (ns,))
