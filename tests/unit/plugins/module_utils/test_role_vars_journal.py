"""Unit tests of the unknown-variable check (role_vars), the journal store and messages, and the
controller-side fallbacks (common_args.with_fallbacks). No services needed."""
import json

import pytest

from ansible_collections.apex.ops.plugins.module_utils import journal, role_vars
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC, with_fallbacks
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError

SCALE_DECLARED = {"scale_component", "scale_replicas", "scale_api_replicas", "scale_worker_replicas",
                  "scale_replicas_delta", "scale_namespace"}
SIBLINGS = {"scale_", "scale_event_", "restore_", "backup_", "backup_prune_"}


def test_typo_is_unknown_with_the_closest_declared_name():
    unknown = role_vars.unknown_vars("scale_", ["scale_componet", "scale_replicas", "hostvars"], SCALE_DECLARED,
                                     sibling_prefixes=SIBLINGS)
    assert unknown == [("scale_componet", "scale_component")]


def test_internal_names_and_longer_sibling_prefixes_are_not_unknown():
    names = ["scale_started", "scale_event_name", "scale_event_bogus", "scale_x"]
    unknown = role_vars.unknown_vars("scale_", names, SCALE_DECLARED, internal={"scale_started"},
                                     sibling_prefixes=SIBLINGS)
    assert [name for name, _hint in unknown] == ["scale_x"]  # scale_event_* is the scale_event role's business


def test_backup_prune_variables_are_not_the_backup_roles():
    assert role_vars.unknown_vars("backup_", ["backup_prune_keep_last"], {"backup_databases"},
                                  sibling_prefixes=SIBLINGS) == []


def test_a_sibling_roles_artifact_key_is_not_unknown():
    # an AWX workflow passes backup_verify's set_stats artifact (key: its role name) to the next node
    names = ["backup_verify", "backup_prune", "backup_verifyy"]
    unknown = role_vars.unknown_vars("backup_", names, {"backup_databases"},
                                     sibling_prefixes=SIBLINGS | {"backup_verify_"})
    assert [name for name, _hint in unknown] == ["backup_verifyy"]


def test_no_suggestion_when_nothing_is_close():
    assert role_vars.unknown_vars("scale_", ["scale_zzzzzzzzzzzzzz"], SCALE_DECLARED) == [("scale_zzzzzzzzzzzzzz", None)]


@pytest.mark.parametrize("value,empty", [("", True), ("  ", True), (None, True), ([], True), ({}, True),
                                         ("apex", False), (["x"], False), (0, False), (False, False)])
def test_is_empty(value, empty):
    assert role_vars.is_empty(value) is empty


def test_check_names_every_fault_in_one_message():
    with pytest.raises(role_vars.RoleVarsError) as err:
        role_vars.check("apex.ops.db_connections", ["db_connections_application_name", "db_connections_database"],
                        {"db_connections_database": ""}, {"db_connections_application_names", "db_connections_database"},
                        scope_names=["db_connections_database"])
    msg = str(err.value)
    assert "db_connections_application_name (did you mean db_connections_application_names?)" in msg
    assert "empty scope: db_connections_database" in msg
    assert "roles/db_connections/meta/argument_specs.yml" in msg


def test_check_passes_clean_input():
    role_vars.check("scale", ["scale_component"], {}, SCALE_DECLARED)


def test_with_fallbacks_environment_then_default():
    params = with_fallbacks(K8S_ARGSPEC, {"context": "apex-secondary", "verify_ssl": "false"},
                            environ={"KUBECONFIG": "/tmp/kc", "K8S_AUTH_CONTEXT": "ignored"})
    assert params["kubeconfig"] == "/tmp/kc" and params["context"] == "apex-secondary"
    assert params["namespace"] == "apex" and params["validate_certs"] is False


class FakeClient(object):
    """A ConfigMap API of one namespace in memory, with resourceVersion conflicts."""

    def __init__(self):
        self.objects = {}
        self.version = 0

    def _name(self, path):
        return path.rsplit("/", 1)[1]

    def get(self, path):
        if self._name(path) not in self.objects:
            raise KubeApiError(404, "NotFound", "not found")
        return json.loads(json.dumps(self.objects[self._name(path)]))

    def post(self, path, body):
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        self.objects[body["metadata"]["name"]] = body
        return body

    def put(self, path, body):
        current = self.objects[self._name(path)]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise KubeApiError(409, "Conflict", "changed")
        return self.post(path, body)

    def request(self, method, path, body=None, **kwargs):
        assert method == "DELETE"
        del self.objects[self._name(path)]


def record(run_id="restore-1", **extra):
    data = dict(run_id=run_id, procedure="restore", phase="workloads", started="t0", updated="t0",
                holder=dict(user="oncall", host="ctl", pid=42, awx_job_id="77"),
                undo=[dict(action="scale_restore", state_name="restore-apex-1")])
    data.update(extra)
    return data


def test_journal_write_update_clear():
    store = journal.JournalStore(FakeClient(), "apex")
    assert store.read() is None
    assert store.write(record())[0] is True
    assert store.write(record(phase="restore", started="later"))[0] is True
    current = store.read()
    assert current["phase"] == "restore" and current["started"] == "t0"  # the start is kept
    assert store.clear("restore-1") == (True, current)
    assert store.read() is None and store.clear("restore-1") == (False, None)


def test_journal_refuses_another_runs_record_and_keeps_it():
    store = journal.JournalStore(FakeClient(), "apex")
    store.write(record())
    with pytest.raises(journal.JournalBusy) as err:
        store.write(record(run_id="scale-event-2"))
    assert "restore-1" in str(err.value)
    with pytest.raises(journal.JournalBusy):
        store.clear("scale-event-2")
    assert store.read()["run_id"] == "restore-1"


def test_journal_check_mode_writes_nothing():
    store = journal.JournalStore(FakeClient(), "apex")
    assert store.write(record(), check_mode=True) == (True, None)
    assert store.read() is None


def test_describe_says_what_is_left_and_the_command():
    text = journal.describe(record(undo=[dict(action="scale_restore", state_name="s1"),
                                         dict(action="database_rollback", target_db="apex")]))
    assert "AWX job 77" in text and "oncall@ctl" in text
    # last step first: the database before the scale-back
    assert text.index("database 'apex'") < text.index("saved scale state 's1'")
    assert text.endswith("ansible-playbook apex.ops.recover -e recover_confirm=restore-1")


def test_describe_a_deploys_release_rollback():
    record = {"procedure": "deploy", "run_id": "deploy-1", "phase": "upgrade",
              "undo": [{"action": "release_rollback", "release": "apex", "revision": 4, "namespace": "apex"}]}
    text = journal.describe(record)
    assert "1. roll Helm release 'apex' back to revision 4" in text
    assert "recover_confirm=deploy-1" in text


def test_holder_alive():
    import os
    import socket

    assert journal.holder_alive(dict(holder=dict(host=socket.gethostname(), pid=os.getpid()))) is True
    assert journal.holder_alive(dict(holder=dict(host="another-host", pid=os.getpid()))) is None
    assert journal.holder_alive(dict(holder=dict(host=socket.gethostname(), pid=2 ** 22 + 12345))) is False
