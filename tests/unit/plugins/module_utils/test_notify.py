"""Unit tests of the runbook's messages (notify_messages) and their delivery with retries (webhook_delivery)."""
import pytest

from ansible_collections.apex.ops.plugins.module_utils import notify_messages as nm
from ansible_collections.apex.ops.plugins.module_utils import webhook_delivery as wd


def test_initial_incident_follows_the_runbook_template():
    msg = nm.render("incident_initial", dict(severity="1", title="API down", impact="every request 503",
                                             detection_time="2026-12-02 14:07 UTC", incident_commander="@oncall",
                                             summary="ingress has no endpoints", actions=["roll back", "scale api"],
                                             next_update="14:30 UTC", channel="#incident-20261202-api"))
    lines = msg.text.split("\n")
    assert lines[0] == ":rotating_light: *INCIDENT DECLARED* :rotating_light:"
    for expected in ("*Severity:* P1", "*Title:* API down", "*Impact:* every request 503",
                     "*Detection Time:* 2026-12-02 14:07 UTC", "*Incident Commander:* @oncall",
                     "*Current Status:* ingress has no endpoints", "- [ ] roll back", "*Next Update:* 14:30 UTC",
                     "*Incident Channel:* #incident-20261202-api"):
        assert expected in lines, expected
    payload = msg.json_payload()
    assert payload["kind"] == "incident_initial" and payload["severity"] == "P1" and payload["title"] == "API down"
    assert msg.slack_payload() == {"text": msg.text}


def test_update_resolution_and_maintenance_messages():
    update = nm.render("incident_update", dict(severity="P2", status="Monitoring", time="14:45 UTC", duration="38m",
                                               metrics={"error_rate": "0.4% (was 31%)"}, actions=["rolled back"]))
    assert update.text.startswith(":information_source: *INCIDENT UPDATE* - 14:45 UTC")
    assert "- Error rate: 0.4% (was 31%)" in update.text
    resolved = nm.render("incident_resolved", dict(severity="P2", title="x", root_cause="bad image",
                                                   resolution="rolled back", duration="1h 2m"))
    assert "*Root Cause:* bad image" in resolved.text and "*Post-mortem" not in resolved.text
    start = nm.render("maintenance_start", dict(title="db window", maintenance_type="database",
                                                change_request="CHG-1", window="Sunday 04:00-06:00 UTC"))
    assert ":construction: *MAINTENANCE STARTED*" in start.text and "*Change Request:* CHG-1" in start.text
    done = nm.render("maintenance_complete", dict(title="db window", status="completed", duration="4m 2s",
                                                  checks={"health": "ok"}))
    assert "*Outcome:* completed" in done.text and "- Health: ok" in done.text


@pytest.mark.parametrize("kind, facts, error", [
    ("incident_initial", dict(title="x"), "needs severity"),
    ("incident_update", dict(severity="P9", status="x"), "severity must be"),
    ("maintenance_complete", dict(title="x"), "needs status"),
    ("nonsense", {}, "unknown message"),
])
def test_refuses_incomplete_facts(kind, facts, error):
    with pytest.raises(nm.MessageError, match=error):
        nm.render(kind, facts)


def test_nothing_secret_goes_into_a_message():
    hook = "https://hooks.slack.com/services/T0/B0/abcdefgh"
    msg = nm.render("incident_update", dict(
        severity="P3", status="Identified",
        summary="psql 'host=db password=hunter2' failed; Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc; see " + hook,
        actions=["ALTER ROLE apex PASSWORD 'sekrit'", "redis://:pw123@redis:6379 reset", "token=abcdef123"],
        metrics={"db_password": "hunter2", "error_rate": "2%"}, admin_token="t0ps3cret", webhook_url=hook),
        secrets=["internal-only-value"])
    dumped = msg.text + repr(msg.json_payload())
    for secret in ("hunter2", "eyJhbGciOiJIUzI1NiJ9", "abcdefgh", "sekrit", "pw123", "abcdef123", "t0ps3cret"):
        assert secret not in dumped, secret
    assert sorted(msg.redacted) == ["admin_token", "metrics.db_password", "webhook_url"]
    assert "2%" in msg.text


def test_a_secret_value_given_to_render_is_masked_anywhere():
    msg = nm.render("maintenance_start", dict(title="uses internal-only-value here"), secrets=["internal-only-value"])
    assert "internal-only-value" not in msg.text and nm.MASK in msg.text


class FakePost(object):
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, url, body, timeout, **kwargs):
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_delivery_retries_5xx_and_transport_errors_with_a_doubling_delay():
    slept = []
    post = FakePost([OSError("connection refused to https://hooks.slack.com/services/T/B/secret"), (503, None), (200, None)])
    out = wd.deliver("https://hooks.slack.com/services/T/B/secret", "slack", {"text": "x"}, attempts=3, delay=0.5,
                     post=post, sleep=slept.append)
    assert out == dict(target="hooks.slack.com (slack)", kind="slack", delivered=True, status=200, attempts=3, error=None)
    assert slept == [0.5, 1.0]


def test_delivery_gives_up_and_never_shows_the_url():
    url = "https://hooks.slack.com/services/T/B/secret"
    out = wd.deliver(url, "slack", {}, attempts=2, delay=0.1, post=FakePost([OSError("refused " + url)] * 2),
                     sleep=lambda s: None)
    assert out["delivered"] is False and out["attempts"] == 2 and "secret" not in repr(out)


def test_a_4xx_is_not_retried_and_retry_after_is_honoured_up_to_the_cap():
    post = FakePost([(404, None)])
    out = wd.deliver("http://sink/x", "json", {}, attempts=3, post=post, sleep=lambda s: None)
    assert out["delivered"] is False and out["attempts"] == 1 and out["error"] == "HTTP 404"
    slept = []
    wd.deliver("http://sink/x", "json", {}, attempts=2, delay=0.1, max_delay=5, post=FakePost([(429, 30.0), (200, None)]),
               sleep=slept.append)
    assert slept == [5]
