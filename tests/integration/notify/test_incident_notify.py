"""incident_notify against the lab's webhook sink: the message arrives on the Slack and the JSON webhook with the
runbook's fields, a flaky webhook is retried until it answers, an unreachable one is reported without failing
(incident_notify_fail_on_error=false), and neither a secret fact nor a webhook URL reaches a message or the output."""
import json
import os
import urllib.request


def received(sink, prefix):
    with urllib.request.urlopen("%s/received?path=%s" % (sink, prefix), timeout=10) as response:
        return json.loads(response.read())


def test_incident_message_reaches_the_webhooks_with_retries(run_playbook, lab, tmp_path):
    sink = lab["APEX_WEBHOOK_SINK_URL"]
    prefix = "/itest-notify-%d-%s/" % (os.getpid(), tmp_path.name[-8:])
    unreachable = "http://127.0.0.1:9/hook/secret-path-xyz"
    res = run_playbook("playbooks/incident_notify.yml", {
        "incident_notify_message": "incident_initial", "incident_notify_severity": "P2",
        "incident_notify_title": "Task execution failing", "incident_notify_impact": "tasks are not processed",
        "incident_notify_summary": "workers crash-loop since 14:05", "incident_notify_actions": ["roll back to 1.4.1"],
        "incident_notify_facts": {"detection_time": "2026-12-02 14:07 UTC", "incident_commander": "@oncall",
                                  "next_update": "14:45 UTC", "admin_token": "tok-never-sent-123"},
        "incident_notify_webhooks": [{"url": sink + prefix + "slack", "kind": "slack"},
                                     {"url": sink + "/fail/2" + prefix + "statuspage", "kind": "json"},
                                     {"url": unreachable, "kind": "json"}],
        "incident_notify_fail_on_error": False, "apex_report_dir": str(tmp_path)}, verbosity=3)
    assert res.returncode == 0, res.stdout[-3000:]
    slack = received(sink, prefix)
    assert [e["status"] for e in slack] == [200]
    text = slack[0]["body"]["text"]
    for expected in ("*INCIDENT DECLARED*", "*Severity:* P2", "*Title:* Task execution failing",
                     "*Detection Time:* 2026-12-02 14:07 UTC", "*Incident Commander:* @oncall", "- [ ] roll back to 1.4.1"):
        assert expected in text
    flaky = received(sink, "/fail/2" + prefix)
    assert [e["status"] for e in flaky] == [503, 503, 200]  # retried until it answered
    body = flaky[-1]["body"]
    assert body["kind"] == "incident_initial" and body["severity"] == "P2" and body["fields"]["impact"] == "tasks are not processed"

    report = json.loads(sorted(tmp_path.glob("incident_notify-*.json"))[-1].read_text())
    assert report["status"] == "not delivered everywhere"
    outcomes = dict((d["target"], d) for d in report["deliveries"])
    assert outcomes["127.0.0.1:9 (json)"]["delivered"] is False and outcomes["127.0.0.1:9 (json)"]["attempts"] == 3
    assert [d["attempts"] for d in report["deliveries"] if d["delivered"]] == [1, 3]
    assert report["redacted_fields"] == ["admin_token"]
    # the secret fact reached no webhook and no report (the -vvv output echoes the task's own arguments)
    assert "tok-never-sent-123" not in json.dumps(slack + flaky) + json.dumps(report)
    # a webhook URL is a credential: not in the output, even at -vvv, nor in the report
    assert "secret-path-xyz" not in res.stdout + res.stderr + json.dumps(report)
