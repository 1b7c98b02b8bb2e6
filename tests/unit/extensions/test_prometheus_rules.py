"""The alerting rules (extensions/prometheus/rules), their promtool unit tests, the Alertmanager
routing and the EDA rulebook agree with each other and with the runbook's six alerts."""
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "extensions" / "prometheus" / "rules" / "apex.yml"
RULE_TESTS = ROOT / "extensions" / "prometheus" / "tests" / "apex_test.yml"
ALERTMANAGER = ROOT / "extensions" / "prometheus" / "alertmanager" / "alertmanager.yml"
RULEBOOK = ROOT / "extensions" / "eda" / "rulebooks" / "apex_alerts.yml"

# The runbook's alerts and the response playbook of each (issue 14).
RESPONSES = {
    "ApexHighTaskFailureRate": "apex.ops.alert_task_failure",
    "ApexHighLatency": "apex.ops.alert_high_latency",
    "ApexResourceExhaustion": "apex.ops.alert_resource_exhaustion",
    "ApexDatabaseConnectionsHigh": "apex.ops.alert_db_connections",
    "ApexTaskQueueBacklog": "apex.ops.alert_queue_backlog",
    "ApexCircuitBreakerOpen": "apex.ops.alert_circuit_breaker",
}


def _rules():
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _run(argv):
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


def test_promtool_check_rules():
    result = _run(["promtool", "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    result = _run(["promtool", "test", "rules", str(RULE_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(tmp_path):
    # the same tests against rules with the queue threshold moved: promtool must say FAILED
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / "apex.yml").write_text(RULES.read_text().replace("max(apex_queue_depth) > 100",
                                                                           "max(apex_queue_depth) > 200"))
    (tmp_path / "tests" / "apex_test.yml").write_text(RULE_TESTS.read_text())
    result = _run(["promtool", "test", "rules", str(tmp_path / "tests" / "apex_test.yml")])
    assert result.returncode != 0 and "ApexTaskQueueBacklog" in result.stdout + result.stderr


def test_the_six_alerts_name_their_response_and_a_severity():
    rules = _rules()
    assert {r["alert"] for r in rules} == set(RESPONSES)
    for rule in rules:
        assert rule["annotations"]["runbook"] == RESPONSES[rule["alert"]], rule["alert"]
        assert rule["labels"]["severity"] in ("P1", "P2", "P3", "P4"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_runbook_durations():
    # "for 5 minutes" / "for 5+ minutes" / "sustained"; the breaker fires while it is open
    for rule in _rules():
        assert rule.get("for") == ("5m" if rule["alert"] != "ApexCircuitBreakerOpen" else None), rule["alert"]


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    fired, quiet = set(), set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == set(RESPONSES) and quiet == set(RESPONSES)


def test_alertmanager_config_is_valid():
    result = _run(["amtool", "check-config", str(ALERTMANAGER)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("labels, receivers", [
    (["alertname=ApexTaskQueueBacklog", "severity=P3"], "apex-eda,apex-chat"),
    (["alertname=ApexCircuitBreakerOpen", "severity=P2"], "apex-eda,apex-pager"),
    (["alertname=ApexResourceExhaustion", "severity=P3", "component=api"], "apex-eda,apex-chat"),
    (["alertname=NodeDown", "severity=P1"], "apex-pager"),
], ids=["backlog", "breaker", "resource", "not-apex"])
def test_alertmanager_routes_apex_alerts_to_eda_and_people(labels, receivers):
    result = _run(["amtool", "config", "routes", "test", "--config.file=%s" % ALERTMANAGER] + labels)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receivers


def test_rulebook_runs_the_annotated_response_of_each_alert():
    rulebook = yaml.safe_load(RULEBOOK.read_text())[0]
    assert list(rulebook["sources"][0])[1] == "apex.ops.alertmanager"
    runs = {}
    for rule in rulebook["rules"]:
        action = rule["action"]
        if "run_playbook" in action:
            assert 'event.alert.status == "firing"' in rule["condition"], rule["name"]
            runs[rule["name"]] = action["run_playbook"]
    assert {name: run["name"] for name, run in runs.items()} == RESPONSES


OFF = ("false", "none", "''", "{}")


def _handed_vars():
    rulebook = yaml.safe_load(RULEBOOK.read_text())[0]
    for rule in rulebook["rules"]:
        run = rule["action"].get("run_playbook")
        if run:
            yield run["name"].split(".")[-1], run.get("extra_vars", {})


def test_rulebook_actions_are_off_unless_switched_on():
    # every variable handed to a response that enables a change is an apex_eda_* switch, off by default
    switches = 0
    for role, extra_vars in _handed_vars():
        for key, value in extra_vars.items():
            if key in ("apex_report_dir", "alert_resource_exhaustion_component"):
                continue
            match = re.fullmatch(r"\{\{ (apex_eda_\w+) \| default\((.+)\) \}\}", value)
            assert match and match.group(2) in OFF, (role, key, value)
            switches += 1
    assert switches >= 11


# Every response the rulebook runs exists and declares each variable the rulebook hands it.
@pytest.mark.parametrize("role, extra_vars", list(_handed_vars()),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_rulebook_hands_each_response_only_variables_it_declares(role, extra_vars):
    spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert set(extra_vars) <= set(options), set(extra_vars) - set(options)
    assert (ROOT / "playbooks" / ("%s.yml" % role)).is_file()
