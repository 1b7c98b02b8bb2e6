"""CertManager's REST paths against a scripted fake KubeClient: the error and retry branches the lab
never takes (409 on a status update, 404s, a broken or expired watch, a failed rollout)."""
import copy

import pytest

from ansible_collections.apex.ops.plugins.module_utils import cert_manager as cm
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline

CERT_PATH = "/apis/cert-manager.io/v1/namespaces/apex/certificates"


def certificate(rv="1", ready=True, issuing=False):
    conds = [{"type": "Ready", "status": "True" if ready else "False", "reason": "Ready", "message": "m"}]
    if issuing:
        conds.append({"type": "Issuing", "status": "True", "reason": "ManuallyTriggered", "message": "m"})
    return {"metadata": {"name": "apex-tls", "namespace": "apex", "resourceVersion": rv, "generation": 1},
            "spec": {"secretName": "apex-tls", "issuerRef": {"name": "lab-ca", "kind": "Issuer"}},
            "status": {"conditions": conds}}


class FakeClient(object):
    """Answers from ``objects`` (path -> object); ``errors`` (method, path) -> [exceptions to raise first]."""

    def __init__(self, objects=None, errors=None, watches=None):
        self.objects = objects or {}
        self.errors = errors or {}
        self.watches = list(watches or [])
        self.calls = []

    def _maybe_fail(self, method, path):
        queue = self.errors.get((method, path))
        if queue:
            raise queue.pop(0)

    def get(self, path, query=None):
        self.calls.append(("GET", path, None))
        self._maybe_fail("GET", path)
        if path not in self.objects:
            raise KubeApiError(404, "NotFound", "%s not found" % path)
        return copy.deepcopy(self.objects[path])

    def list(self, path, label_selector=None, field_selector=None, query=None):
        self.calls.append(("LIST", path, None))
        self._maybe_fail("LIST", path)
        return {"items": [copy.deepcopy(o) for p, o in self.objects.items() if p.startswith(path + "/")]}

    def put(self, path, body):
        self.calls.append(("PUT", path, body))
        self._maybe_fail("PUT", path)
        self.objects[path.rsplit("/status", 1)[0]] = body
        return body

    def post(self, path, body):
        self.calls.append(("POST", path, body))
        return body

    def delete(self, path):
        self.calls.append(("DELETE", path, None))
        self._maybe_fail("DELETE", path)
        if self.objects.pop(path, None) is None:
            raise KubeApiError(404, "NotFound", "%s not found" % path)
        return {}

    def merge_patch(self, path, patch):
        self.calls.append(("PATCH", path, patch))
        return {}

    def watch(self, path, resource_version=None, timeout_seconds=30, label_selector=None, field_selector=None):
        self.calls.append(("WATCH", path, resource_version))
        script = self.watches.pop(0) if self.watches else []
        for step in script:
            if isinstance(step, Exception):
                raise step
            if callable(step):
                step(self)
                continue
            yield step


def test_trigger_issuing_retries_a_conflict_on_a_fresh_read():
    client = FakeClient({CERT_PATH + "/apex-tls": certificate()},
                        errors={("PUT", CERT_PATH + "/apex-tls/status"): [KubeApiError(409, "Conflict", "stale")]})
    assert cm.CertManager(client).trigger_issuing("apex", "apex-tls") is True
    puts = [c for c in client.calls if c[0] == "PUT"]
    assert len(puts) == 2 and cm.condition_true(puts[-1][2], "Issuing")
    assert cm.condition(puts[-1][2], "Issuing")["reason"] == "ManuallyTriggered"
    assert [c[0] for c in client.calls].count("GET") == 2  # re-read after the conflict


def test_trigger_issuing_gives_up_after_repeated_conflicts_and_skips_when_issuing():
    conflicts = [KubeApiError(409, "Conflict", "stale") for dummy in range(5)]
    client = FakeClient({CERT_PATH + "/apex-tls": certificate()},
                        errors={("PUT", CERT_PATH + "/apex-tls/status"): conflicts})
    with pytest.raises(cm.CertManagerError, match="kept conflicting"):
        cm.CertManager(client).trigger_issuing("apex", "apex-tls")
    busy = FakeClient({CERT_PATH + "/apex-tls": certificate(issuing=True)})
    assert cm.CertManager(busy).trigger_issuing("apex", "apex-tls") is False
    assert not [c for c in busy.calls if c[0] == "PUT"]


def test_delete_secret_404_is_false_and_other_errors_raise():
    client = FakeClient({"/api/v1/namespaces/apex/secrets/apex-tls": {"metadata": {}}})
    manager = cm.CertManager(client)
    assert manager.delete_secret("apex", "apex-tls") is True
    assert manager.delete_secret("apex", "apex-tls") is False
    client.errors[("DELETE", "/api/v1/namespaces/apex/secrets/x")] = [KubeApiError(403, "Forbidden", "no")]
    with pytest.raises(KubeApiError):
        manager.delete_secret("apex", "x")


def test_put_tls_secret_keeps_metadata_and_resource_version():
    existing = {"type": "kubernetes.io/tls", "metadata": {
        "name": "apex-tls", "namespace": "apex", "resourceVersion": "42", "labels": {"a": "b"},
        "annotations": {"cert-manager.io/certificate-name": "apex-tls"}}}
    client = FakeClient()
    cm.CertManager(client).put_tls_secret("apex", "apex-tls", b"CERT", b"KEY", existing=existing)
    method, path, body = client.calls[-1]
    assert method == "PUT" and path == "/api/v1/namespaces/apex/secrets/apex-tls"
    assert body["metadata"]["resourceVersion"] == "42" and body["metadata"]["labels"] == {"a": "b"}
    assert body["metadata"]["annotations"] == existing["metadata"]["annotations"]
    assert body["data"] == {"tls.crt": "Q0VSVA==", "tls.key": "S0VZ"}
    cm.CertManager(client).put_tls_secret("apex", "new-tls", b"C", b"K")
    method, path, body = client.calls[-1]
    assert method == "POST" and path == "/api/v1/namespaces/apex/secrets" and "resourceVersion" not in body["metadata"]


def test_issuer_ready_judges_issuer_and_clusterissuer():
    base = "/apis/cert-manager.io/v1"
    client = FakeClient({
        base + "/namespaces/apex/issuers/lab-ca": {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        base + "/clusterissuers/le": {"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "ErrRegisterACMEAccount", "message": "no"}]}}})
    manager = cm.CertManager(client)
    assert manager.issuer_ready("apex", {"name": "lab-ca", "kind": "Issuer"})[0] is True
    ready, why = manager.issuer_ready("apex", {"name": "le", "kind": "ClusterIssuer"})
    assert ready is False and "ErrRegisterACMEAccount" in why
    assert manager.issuer_ready("apex", {"name": "gone"}) == (False, "Issuer gone does not exist")
    assert manager.issuer_ready("apex", {"name": "x", "group": "awspca.cert-manager.io"})[0] is True


def test_wait_for_issuance_survives_a_broken_stream_and_an_expired_version():
    secret_path = "/api/v1/namespaces/apex/secrets/apex-tls"
    client = FakeClient({CERT_PATH + "/apex-tls": certificate(issuing=True)})

    def issue(c):
        c.objects[secret_path] = {"metadata": {"name": "apex-tls"}, "data": {}}  # no tls.crt yet: not issued
        c.objects[CERT_PATH + "/apex-tls"] = certificate(rv="3")

    client.watches = [
        [ConnectionResetError(104, "Connection reset by peer")],        # transport error: relist
        [KubeApiError(500, "InternalError", "etcd leader changed")],   # stream breaks: relist
        [KubeApiError(410, "Gone", "too old resource version")],     # version expired: relist
        [issue, ("MODIFIED", certificate(rv="3"))],
    ]
    manager = cm.CertManager(client)
    with pytest.raises(cm.CertManagerError, match="timed out after 1s"):
        # Ready and not Issuing, but the Secret never gets a certificate: the wait keeps reading it
        manager.wait_for_issuance("apex", "apex-tls", "apex-tls", "OLD", Deadline(1))
    assert [c[0] for c in client.calls].count("WATCH") >= 4


def test_wait_rollout_fails_fast_on_progress_deadline_and_reports_state():
    path = "/apis/apps/v1/namespaces/ingress-nginx/deployments/ingress-nginx-controller"
    stuck = {"metadata": {"name": "ingress-nginx-controller", "generation": 2, "resourceVersion": "9"},
             "spec": {"replicas": 1},
             "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1,
                        "conditions": [{"type": "Progressing", "status": "False",
                                        "reason": "ProgressDeadlineExceeded", "message": "too slow"}]}}
    client = FakeClient({path: stuck})
    with pytest.raises(cm.CertManagerError, match="rollout of Deployment ingress-nginx/ingress-nginx-controller "
                                                  "failed: progress deadline exceeded") as info:
        cm.CertManager(client).wait_rollout("ingress-nginx", "ingress-nginx-controller", Deadline(30))
    assert info.value.last_state["rollout"]["state"] == "failed"
    assert not [c for c in client.calls if c[0] == "WATCH"], "a failed rollout is judged from the first read"
