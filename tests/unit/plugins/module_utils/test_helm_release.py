"""apex_release's decisions that need no cluster: values merging, no-op upgrades, chart sources,
failure reports, the Helm worker's environment (credentials never in argv)."""
import io
import json

import pytest

from ansible_collections.apex.ops.plugins.module_utils import helm_client, helm_worker
from ansible_collections.apex.ops.plugins.module_utils import helm_release as hr


def test_merge_values_in_helm_order():
    files = {"a.yaml": {"api": {"image": {"tag": "1.0.0", "repository": "r"}}, "x": 1}, "b.yaml": {"x": 2}, "empty": None}
    merged = hr.merge_values(["a.yaml", "empty", "b.yaml"], {"api": {"replicas": 2}}, ["api.image.tag=1.1.0"],
                             parse_set=lambda e: {"api": {"image": {"tag": e.split("=")[1]}}}, read=files.get)
    assert merged == {"api": {"image": {"tag": "1.1.0", "repository": "r"}, "replicas": 2}, "x": 2}


def test_values_file_must_be_a_mapping():
    with pytest.raises(hr.ReleaseError, match="not a YAML mapping"):
        hr.merge_values(["l.yaml"], read=lambda path: [1, 2])


def test_read_values_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [")
    with pytest.raises(hr.ReleaseError, match="not valid YAML"):
        hr.merge_values([str(bad)])
    with pytest.raises(hr.ReleaseError, match="cannot read"):
        hr.merge_values([str(tmp_path / "missing.yaml")])


def test_chart_source(tmp_path):
    assert hr.chart_source("oci://r.example/charts/apex") == ("oci", "oci://r.example/charts/apex")
    (tmp_path / "c").mkdir()
    with pytest.raises(hr.ReleaseError, match="no Chart.yaml"):
        hr.chart_source(str(tmp_path / "c"))
    (tmp_path / "c" / "Chart.yaml").write_text("name: c")
    assert hr.chart_source(str(tmp_path / "c")) == ("directory", str(tmp_path / "c"))
    (tmp_path / "c-0.1.0.tgz").write_bytes(b"")
    assert hr.chart_source(str(tmp_path / "c-0.1.0.tgz"))[0] == "package"
    with pytest.raises(hr.ReleaseError, match="neither"):
        hr.chart_source(str(tmp_path / "nothing"))


def test_deployed_entry():
    history = [{"revision": 1, "status": "superseded"}, {"revision": 2, "status": "deployed"},
               {"revision": 3, "status": "failed"}]
    assert hr.deployed_entry(history)["revision"] == 2
    assert hr.deployed_entry([{"revision": 1, "status": "failed"}]) is None


def test_is_noop():
    summary = {"chart_name": "apex", "chart_version": "0.1.0", "app_version": "1.0.0", "manifest": "m"}
    current = {"summary": summary, "config": {"a": 1}}
    assert hr.is_noop(current, dict(summary), {"a": 1})
    assert not hr.is_noop(current, dict(summary), {"a": 2})
    assert not hr.is_noop(current, dict(summary, manifest="m2"), {"a": 1})
    assert not hr.is_noop(current, dict(summary, chart_version="0.2.0"), {"a": 1})
    assert hr.is_noop({"summary": summary}, dict(summary), {})


def _deployment(image, ready=1, deadline=False):
    conditions = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                   "message": "timed out"}] if deadline else []
    return {"metadata": {"name": "apex-api", "generation": 2},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "apex-api"}},
                     "template": {"spec": {"containers": [{"name": "api", "image": image}]}}},
            "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": ready,
                       "availableReplicas": ready, "conditions": conditions}}


def test_workload_report():
    images = {"api": "apex/api:1.1.0"}
    ok = hr.workload_report("Deployment", "apex-api", _deployment("apex/api:1.1.0"), images)
    assert ok["ready"] and ok["rollout"] == "complete"
    stale = hr.workload_report("Deployment", "apex-api", _deployment("apex/api:1.0.0"), images)
    assert not stale["ready"]  # rolled out, but not what the manifest says
    pod = {"metadata": {"name": "apex-api-x"}, "spec": {"containers": [{"name": "api", "image": "apex/api:bad"}]},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False",
                                                          "reason": "ContainersNotReady"}]}}
    failed = hr.workload_report("Deployment", "apex-api", _deployment("apex/api:bad", ready=0, deadline=True),
                                {"api": "apex/api:bad"}, [pod])
    assert failed["rollout"] == "failed" and not failed["ready"]
    assert failed["pods_not_ready"] == [{"name": "apex-api-x", "reason": "ContainersNotReady",
                                         "images": {"api": "apex/api:bad"}}]
    assert hr.workload_report("Deployment", "gone", None, images)["rollout"] == "missing"


def test_workload_targets():
    objs = [{"kind": "ConfigMap", "metadata": {"name": "c"}},
            {"kind": "Deployment", "metadata": {"name": "d"},
             "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "i:1"}]}}}}]
    assert hr.workload_targets(objs, "apex") == [("Deployment", "apex", "d", {"api": "i:1"})]


def test_worker_environment_carries_the_sql_connection_string_not_argv():
    params = dict(namespace="apex", storage_driver="sql", sql_connection_string="host=db password=pw")
    env = helm_client.worker_environment(params, environ={"HELM_DRIVER_SQL_CONNECTION_STRING": "other"})
    assert env["HELM_DRIVER_SQL_CONNECTION_STRING"] == "host=db password=pw"
    assert "password" not in json.dumps(helm_client.config_kwargs(params))
    with pytest.raises(ValueError, match="sql_connection_string"):
        helm_client.worker_environment(dict(params, sql_connection_string=None), environ={})
    env = helm_client.worker_environment(dict(namespace="apex", storage_driver="secret"),
                                         environ={"HELM_DRIVER_SQL_CONNECTION_STRING": "x"})
    assert "HELM_DRIVER_SQL_CONNECTION_STRING" not in env


def test_config_kwargs():
    kwargs = helm_client.config_kwargs(dict(namespace="apex", kubeconfig="/k", context="c", host="https://h",
                                            api_key="t", ca_cert="/ca", validate_certs=False, storage_driver=None))
    assert kwargs == dict(namespace="apex", storage_driver="secret", kubeconfig_path="/k", kube_context="c",
                          kube_apiserver="https://h", kube_token="t", kube_ca_file="/ca",
                          kube_insecure_skip_tls_verify=True)


def test_requirement_names_the_pip_package():
    assert helm_client.REQUIREMENT[0] == "helm-python-sdk"


class FakeHelm(object):
    class Config(object):
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def history(self, name):
            if name == "missing":
                raise LookupError("release: not found")
            return [{"revision": 1}]

    @staticmethod
    def parse_set_string(expression):
        return {"parsed": expression}


def test_worker_serves_whitelisted_operations_only():
    requests = io.StringIO("\n".join(json.dumps(line) for line in [
        {"namespace": "apex"}, {"op": "history", "args": {"name": "apex"}}, {"op": "history", "args": {"name": "missing"}},
        {"op": "parse_set", "args": {"expression": "a=1"}}, {"op": "__init__", "args": {}}]) + "\n")
    answers = io.StringIO()
    helm_worker.serve(requests, answers, FakeHelm)
    lines = [json.loads(line) for line in answers.getvalue().splitlines()]
    assert lines[0] == {"result": [{"revision": 1}]}
    assert lines[1] == {"error": {"type": "LookupError", "message": "release: not found"}}
    assert lines[2] == {"result": {"parsed": "a=1"}}
    assert lines[3]["error"]["type"] == "ValueError"


def test_collections_root_for_a_directory_and_a_module_payload():
    assert helm_client.collections_root("/c/ansible_collections/apex/ops/plugins/module_utils/helm_worker.py") == "/c"
    zipped = "/tmp/ansible_x/payload.zip/ansible_collections/apex/ops/plugins/module_utils/helm_worker.py"
    assert helm_client.collections_root(zipped) == "/tmp/ansible_x/payload.zip"
