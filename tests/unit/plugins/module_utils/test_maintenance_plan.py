"""Unit tests of the maintenance decisions: the window table on an injected clock, the watch verdict."""
import datetime

import pytest

from ansible_collections.apex.ops.plugins.module_utils import maintenance_plan as mp

TABLE = {
    "patch": {"days": ["Tuesday", "Thursday"], "start": "02:00", "end": "04:00", "notice": "24h", "approval": "Team Lead"},
    "major": {"days": ["Sunday"], "start": "02:00", "end": "06:00", "notice": "1 week", "approval": "Engineering Director"},
    "emergency": {"immediate": True, "notice": "ASAP", "approval": "On-Call Lead"},
    "database": {"days": ["Sunday"], "start": "04:00", "end": "06:00", "notice": "1 week", "approval": "DBA + Team Lead"},
}


def at(day, hhmm):
    # 2026-12-06 is a Sunday
    base = datetime.datetime(2026, 12, 6, tzinfo=datetime.timezone.utc)
    offset = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"].index(day)
    hours, minutes = map(int, hhmm.split(":"))
    return base + datetime.timedelta(days=offset, hours=hours, minutes=minutes)


@pytest.mark.parametrize("mtype, day, hhmm, allowed", [
    ("database", "sunday", "04:00", True),
    ("database", "sunday", "05:59", True),
    ("database", "sunday", "06:00", False),
    ("database", "sunday", "03:59", False),
    ("database", "wednesday", "04:30", False),
    ("patch", "tuesday", "02:30", True),
    ("patch", "thursday", "03:10", True),
    ("patch", "wednesday", "02:30", False),
    ("major", "sunday", "02:00", True),
    ("emergency", "wednesday", "15:55", True),
])
def test_window_decision(mtype, day, hhmm, allowed):
    decision = mp.window_decision(TABLE, mtype, at(day, hhmm))
    assert decision["allowed"] is allowed
    assert decision["approval"] == TABLE[mtype]["approval"]


def test_inside_says_how_long_is_left_outside_says_when_next():
    inside = mp.window_decision(TABLE, "database", at("sunday", "05:15"))
    assert inside["seconds_left"] == 45 * 60 and inside["ends_at"] == at("sunday", "06:00").isoformat()
    outside = mp.window_decision(TABLE, "database", at("wednesday", "15:55"))
    assert outside["next_start"] == (at("sunday", "04:00") + datetime.timedelta(days=7)).isoformat()
    assert "outside the database window (Sunday 04:00-06:00 UTC)" in outside["reason"]
    assert "Wednesday 15:55" in outside["reason"]
    same_day = mp.window_decision(TABLE, "database", at("sunday", "01:00"))
    assert same_day["next_start"] == at("sunday", "04:00").isoformat()


def test_any_day_and_end_of_day():
    table = {"lab": {"days": "any", "start": "00:00", "end": "24:00"}}
    assert mp.window_decision(table, "lab", at("friday", "23:59"))["allowed"] is True
    assert mp.describe_window(table["lab"]) == "any day 00:00-24:00 UTC"


@pytest.mark.parametrize("table, mtype, error", [
    (TABLE, "weekly", "unknown maintenance type"),
    ({"x": {"days": ["Sun"], "start": "6:00", "end": "04:00"}}, "x", "must end after it starts"),
    ({"x": {"days": ["Funday"], "start": "01:00", "end": "02:00"}}, "x", "unknown day"),
    ({"x": {"days": ["Sun"], "start": "25:00", "end": "26:00"}}, "x", "expected HH:MM"),
])
def test_bad_tables(table, mtype, error):
    with pytest.raises(mp.WindowError, match=error):
        mp.window_decision(table, mtype, at("sunday", "04:00"))


def scrape(ok, errors, seconds, count):
    return "\n".join([
        "# HELP apex_http_requests_total requests",
        'apex_http_requests_total{status="200",track="stable"} %d' % ok,
        'apex_http_requests_total{status="503",track="stable"} %d' % errors,
        'apex_http_request_duration_seconds_bucket{track="stable",le="0.005"} 1',
        'apex_http_request_duration_seconds_sum{track="stable"} %f' % seconds,
        'apex_http_request_duration_seconds_count{track="stable"} %d' % count,
        "apex_queue_depth 3",
    ])


def test_watch_verdict():
    calm = mp.watch_verdict(scrape(100, 0, 1.0, 100), scrape(200, 1, 2.0, 201), max_error_rate=0.05)
    assert calm["breach"] is False and calm["requests"] == 101 and calm["errors"] == 1
    assert calm["mean_latency_ms"] == pytest.approx(9.9, abs=0.1)
    bad = mp.watch_verdict(scrape(100, 0, 1.0, 100), scrape(150, 50, 2.0, 200), max_error_rate=0.05)
    assert bad["breach"] is True and "error rate 50.0% > 5.0%" in bad["reason"]
    slow = mp.watch_verdict(scrape(0, 0, 0, 0), scrape(10, 0, 30.0, 10), max_latency_ms=2000)
    assert slow["breach"] is True and "mean latency 3000 ms" in slow["reason"]
    quiet = mp.watch_verdict(scrape(5, 0, 1, 5), scrape(5, 0, 1, 5))
    assert quiet["breach"] is False and "no traffic" in quiet["reason"]
    restarted = mp.watch_verdict(scrape(500, 0, 5, 500), scrape(10, 10, 0.1, 20))
    assert restarted["requests"] == 20 and restarted["breach"] is True
