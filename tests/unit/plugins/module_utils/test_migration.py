"""Unit tests of the migration Job: migration_plan (the Job from the API Deployment, pure), k8s_job (outcome,
log tail redaction), migration_runner with a fake API (complete -> deleted with its pods, failed -> kept and
reported with conditions and log, timeout, check mode, a running Job refused) and db_facts.migration_problems."""
import copy
from datetime import datetime, timezone

import pytest
from k8s_fixtures import deployment

from ansible_collections.apex.ops.plugins.module_utils import db_facts, k8s_job, migration_plan, migration_runner
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError
from ansible_collections.apex.ops.plugins.module_utils.migration_plan import MigrationError

NOW = datetime(2026, 12, 2, 13, 36, 17, 123456, tzinfo=timezone.utc)
SECRET_URL = {"secretKeyRef": {"name": "apex-secrets", "key": "database-url"}}


def api(env=None, containers=None, **pod_spec):
    d = deployment("apex-api", 3, image="apex/api:1.0.0")
    container = d["spec"]["template"]["spec"]["containers"][0]
    container["name"] = "api"
    container["env"] = env if env is not None else [
        {"name": "APEX__MAINTENANCE_MODE", "value": "false"},
        {"name": "APEX__DATABASE__URL", "valueFrom": SECRET_URL}]
    if containers is not None:
        d["spec"]["template"]["spec"]["containers"] = containers
    d["spec"]["template"]["spec"].update(pod_spec)
    return d


def env_of(manifest):
    return dict((e["name"], e.get("value", e.get("valueFrom"))) for e in
                manifest["spec"]["template"]["spec"]["containers"][0]["env"])


# --------------------------------------------------------------------------- planning


def test_the_job_runs_the_api_image_with_its_env_and_database_url_from_its_secret_reference():
    manifest, plan = migration_plan.job_manifest(api(), "apex", migration_plan.job_name(NOW))
    assert manifest["metadata"]["name"] == "apex-migration-20261202133617-123456"
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "apex/api:1.0.0" and container["command"] == ["./apex-migrate", "up"]
    assert pod["restartPolicy"] == "Never" and manifest["spec"]["backoffLimit"] == 1
    assert env_of(manifest) == {"APEX__MAINTENANCE_MODE": "false", "APEX__DATABASE__URL": SECRET_URL,
                                "DATABASE_URL": SECRET_URL}
    assert plan["image_source"] == "Deployment apex-api container api"
    assert "APEX__DATABASE__URL" in plan["database_url_source"]
    assert plan["env"]["DATABASE_URL"] == "<secretKeyRef apex-secrets/database-url>"
    labels = manifest["metadata"]["labels"]
    assert migration_plan.MIGRATION_SELECTOR == "app.kubernetes.io/managed-by=apex.ops,app.kubernetes.io/name=apex-migration"
    assert all(labels[k] == v for k, v in migration_plan.MIGRATION_LABELS.items())


def test_the_database_url_sources_in_order():
    own = {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "own", "key": "url"}}}
    manifest, plan = migration_plan.job_manifest(api(env=[own, {"name": "APEX__DATABASE__URL", "valueFrom": SECRET_URL}]),
                                                 "apex", "apex-migration-x")
    assert env_of(manifest)["DATABASE_URL"] == own["valueFrom"]
    assert [e["name"] for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]].count("DATABASE_URL") == 1
    manifest, plan = migration_plan.job_manifest(api(), "apex", "apex-migration-x",
                                                 database_url_secret={"name": "bad", "key": "database-url"})
    assert env_of(manifest)["DATABASE_URL"] == {"secretKeyRef": {"name": "bad", "key": "database-url"}}
    assert "database_url_secret" in plan["database_url_source"]
    manifest, plan = migration_plan.job_manifest(api(env=[]), "apex", "apex-migration-x")
    assert env_of(manifest)["DATABASE_URL"] == SECRET_URL and "runbook" in plan["database_url_source"]
    with pytest.raises(MigrationError, match="name and key"):
        migration_plan.job_manifest(api(), "apex", "apex-migration-x", database_url_secret={"name": "x"})


def test_a_given_image_pod_identity_and_env_from_are_carried():
    deploy = api(serviceAccountName="apex", imagePullSecrets=[{"name": "registry"}])
    deploy["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "apex-config"}}]
    manifest, plan = migration_plan.job_manifest(deploy, "apex", "apex-migration-x", image="apex/api:1.1.0",
                                                 args=["--verbose"], backoff_limit=0, run_id="db_migrate-1")
    pod = manifest["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "apex/api:1.1.0" and plan["image_source"] == "given"
    assert pod["containers"][0]["args"] == ["--verbose"] and manifest["spec"]["backoffLimit"] == 0
    assert pod["serviceAccountName"] == "apex" and pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["containers"][0]["envFrom"] == [{"configMapRef": {"name": "apex-config"}}]
    assert manifest["metadata"]["labels"]["apex.ops/run-id"] == "db_migrate-1"


def test_credential_values_are_masked_in_the_plan():
    manifest, plan = migration_plan.job_manifest(
        api(env=[{"name": "APEX__PROVIDER__API_KEY", "value": "sk-live-123456"}]), "apex", "apex-migration-x")
    assert "sk-live-123456" not in str(plan)
    assert env_of(manifest)["APEX__PROVIDER__API_KEY"] == "sk-live-123456"  # the Job itself gets the value


def test_refusals():
    two = [{"name": "sidecar", "image": "proxy"}, {"name": "app", "image": "apex/api:1"}]
    with pytest.raises(MigrationError, match="name the API container"):
        migration_plan.job_manifest(api(containers=two), "apex", "apex-migration-x")
    with pytest.raises(MigrationError, match="no container 'web'"):
        migration_plan.job_manifest(api(), "apex", "apex-migration-x", container="web")
    with pytest.raises(MigrationError, match="command is empty"):
        migration_plan.job_manifest(api(), "apex", "apex-migration-x", command=[])
    manifest, dummy = migration_plan.job_manifest(api(containers=two + [{"name": "api", "image": "apex/api:2"}]),
                                                  "apex", "apex-migration-x")
    assert manifest["spec"]["template"]["spec"]["containers"][0]["image"] == "apex/api:2"


# --------------------------------------------------------------------------- judging Jobs and logs


def job(name, conditions=(), failed=0, succeeded=0, active=0):
    return {"metadata": {"name": name, "namespace": "apex", "uid": "uid-" + name, "resourceVersion": "1",
                         "labels": dict(migration_plan.MIGRATION_LABELS)},
            "spec": {"backoffLimit": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "uid-" + name}}},
            "status": {"conditions": [dict(type=t, status="True", reason=r, message=m) for t, r, m in conditions],
                       "failed": failed, "succeeded": succeeded, "active": active}}


FAILED = (("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
          ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"))
COMPLETE = (("SuccessCriteriaMet", "CompletionsReached", "done"), ("Complete", "CompletionsReached", "done"))


def test_job_outcome_reads_the_complete_and_failed_conditions():
    assert k8s_job.job_outcome(job("a")) == "running"
    assert k8s_job.job_outcome(job("a", (("FailureTarget", "BackoffLimitExceeded", ""),))) == "running"
    assert k8s_job.job_outcome(job("a", FAILED, failed=2)) == "failed"
    assert k8s_job.job_outcome(job("a", COMPLETE, succeeded=1)) == "complete"
    status = k8s_job.job_status(job("a", FAILED, failed=2))
    assert status["reason"] == "BackoffLimitExceeded" and status["failed"] == 2 and len(status["conditions"]) == 2


def test_log_tail_is_redacted():
    text = "start\n\nconnecting to postgresql://apex:s3cret-pw@db:5432/apex\nhost=db password=s3cret-pw\nFATAL: x\n"
    lines = k8s_job.tail_lines(text, 3)
    assert lines[-1] == "FATAL: x" and len(lines) == 3
    assert "s3cret-pw" not in " ".join(lines)


# --------------------------------------------------------------------------- running, with a fake API


class FakeClock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(seconds, 0.01)


POD = {"metadata": {"name": "apex-migration-x-abcde", "creationTimestamp": "2026-12-02T13:36:18Z"},
       "status": {"phase": "Failed", "containerStatuses": [
           {"name": "migration", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}}
LOG = ("Traceback (most recent call last):\n    ^^^^^^^^\n"
       "psycopg.OperationalError: connection to postgresql://apex:wrong-pw@127.0.0.1:5432/apex failed: "
       "FATAL:  password authentication failed for user \"apex\"\n")


class FakeApi(object):
    """The API as the migration sees it: the Deployment, Jobs (their status scripted per read), pods, logs."""

    def __init__(self, outcomes, existing=(), clock=None):
        self.outcomes = list(outcomes)  # the created Job's status at successive reads
        self.jobs = dict((j["metadata"]["name"], j) for j in existing)
        self.created, self.deleted = [], []
        self.clock = clock

    def get(self, path, query=None):
        if path.endswith("/deployments/apex-api"):
            return api()
        name = path.rsplit("/", 1)[1]
        if name not in self.jobs:
            raise KubeApiError(404, "NotFound", "not found")
        obj = self.jobs[name]
        if name in self.created and self.outcomes:
            conditions, counts = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
            obj = job(name, conditions, **counts)
        return obj

    def list(self, path, label_selector=None, field_selector=None, query=None):
        if path.endswith("/jobs"):
            return {"items": list(self.jobs.values())}
        assert label_selector.startswith("batch.kubernetes.io/controller-uid=")
        return {"items": [POD]}

    def post(self, path, body):
        name = body["metadata"]["name"]
        self.created.append(name)
        self.jobs[name] = body
        return body

    def watch(self, path, resource_version=None, timeout_seconds=30, label_selector=None, field_selector=None):
        return iter(())  # a stream that ends at once: the wait lists again

    def get_text(self, path, query=None):
        assert path.endswith("/pods/apex-migration-x-abcde/log") and query["container"] == "migration"
        return LOG

    def request(self, method, path, query=None, body=None, content_type=None, timeout=None):
        assert method == "DELETE"
        self.deleted.append((path.rsplit("/", 1)[1], query["propagationPolicy"]))
        return {}


PARAMS = dict(deployment="apex-api", name="apex-migration-x", wait_timeout=60, log_lines=20, delete_on_success=True,
              propagation="Background", backoff_limit=1)


def run(fake, clock=None, check_mode=False, **params):
    clock = clock or FakeClock()
    return migration_runner.run(fake, "apex", dict(PARAMS, **params), check_mode, now=NOW, sleep=clock.sleep, clock=clock)


def test_a_complete_job_is_deleted_with_its_pods():
    fake = FakeApi([((), dict(active=1)), (COMPLETE, dict(succeeded=1))])
    result = run(fake)
    assert result["outcome"] == "complete" and result["deleted"] is True
    assert fake.deleted == [("apex-migration-x", "Background")]
    assert result["pods"][0]["exit_code"] == 1  # (the fake's pod) read, not assumed


def test_a_failed_job_is_kept_and_reported_with_conditions_and_the_log_redacted():
    fake = FakeApi([((), dict(active=1)), (FAILED, dict(failed=2))])
    with pytest.raises(MigrationError) as raised:
        run(fake)
    message, last = str(raised.value), raised.value.last_state
    assert fake.deleted == []
    assert "apex-migration-x failed (BackoffLimitExceeded" in message and "kept for inspection" in message
    assert "password authentication failed" in message and "^^^^" not in message
    assert "wrong-pw" not in message and "wrong-pw" not in str(last)
    assert last["job"] == "apex-migration-x" and last["kept"] is True
    assert [c["type"] for c in last["status"]["conditions"]] == ["FailureTarget", "Failed"]
    assert last["pods"] == [dict(name="apex-migration-x-abcde", phase="Failed", exit_code=1, reason="Error")]


def test_a_job_still_running_at_the_deadline_is_kept():
    clock = FakeClock()
    fake = FakeApi([((), dict(active=1))])
    with pytest.raises(MigrationError, match="did not finish within 5s") as raised:
        run(fake, clock=clock, wait_timeout=5)
    assert fake.deleted == [] and raised.value.last_state["kept"] is True
    assert 5.0 <= clock.now - 100.0 < 7.0


def test_check_mode_creates_nothing():
    fake = FakeApi([(COMPLETE, dict(succeeded=1))])
    result = run(fake, check_mode=True)
    assert result["outcome"] == "planned" and result["changed"] and fake.created == []
    assert result["job"]["image"] == "apex/api:1.0.0"


def test_another_running_migration_is_refused():
    fake = FakeApi([(COMPLETE, dict(succeeded=1))], existing=[job("apex-migration-old", active=1)])
    with pytest.raises(MigrationError, match="apex-migration-old"):
        run(fake)
    assert fake.created == []


def test_absent_deletes_finished_jobs_never_a_running_one():
    fake = FakeApi([], existing=[job("apex-migration-a", FAILED, failed=2), job("apex-migration-b", active=1)])
    result = migration_runner.absent(fake, "apex", dict(propagation="Foreground"), check_mode=False)
    assert result["deleted"] == ["apex-migration-a"] and result["still_running"] == ["apex-migration-b"]
    assert fake.deleted == [("apex-migration-a", "Foreground")]
    with pytest.raises(MigrationError, match="still running"):
        migration_runner.absent(fake, "apex", dict(name="apex-migration-b"), check_mode=False)
    with pytest.raises(MigrationError, match="not a migration Job"):
        migration_runner.absent(fake, "apex", dict(name="apex-api"), check_mode=False)


# --------------------------------------------------------------------------- _sqlx_migrations


def test_migration_problems():
    good = dict(present=True, count=3, latest_version=20240101000003, failed=[])
    assert db_facts.migration_problems(good) == []
    assert db_facts.migration_problems(good, "20240101000003") == []
    assert db_facts.migration_problems(good, 20240101000004) == ["latest migration is 20240101000003, expected 20240101000004"]
    dirty = dict(copy.deepcopy(good), failed=[dict(version=20240101000003, description="create events")])
    assert "20240101000003 (create events) is recorded as failed" in db_facts.migration_problems(dirty)[0]
    assert "does not exist" in db_facts.migration_problems(dict(present=False))[0]
    with pytest.raises(ValueError, match="expected_version"):
        db_facts.migration_problems(good, "v3")
