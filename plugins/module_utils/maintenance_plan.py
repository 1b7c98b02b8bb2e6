# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The maintenance role's decisions, pure and unit-tested (the clock is an argument):

* ``window_decision`` - is this maintenance type allowed now, by the window table (the runbook's
  "Scheduling Maintenance" table, the role's defaults): days, UTC hours, notice, approval;
* ``http_totals`` / ``watch_verdict`` - the watch after a zero-downtime deploy: the error rate and
  the mean latency of the requests served since the watch began, from two scrapes of the API's
  Prometheus text (``apex_http_requests_total``, ``apex_http_request_duration_seconds``), judged
  against thresholds. (With a Prometheus configured, ``apex_metrics`` will give the same figures
  over the whole fleet; docs/maintenance.md.)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class WindowError(ValueError):
    """The window table or the maintenance type is wrong (not a refusal: a mistake in the input)."""


def _minutes(text, name):
    match = re.match(r"^(\d{1,2}):(\d{2})$", str(text).strip())
    if not match or int(match.group(1)) > 24 or int(match.group(2)) > 59 or (int(match.group(1)) == 24 and int(match.group(2))):
        raise WindowError("%s: expected HH:MM (UTC), got %r" % (name, text))
    return int(match.group(1)) * 60 + int(match.group(2))


def _days(value, name):
    if value in (None, "any", "*", ["any"]):
        return list(DAYS)
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        day = str(item).strip().lower()
        match = [d for d in DAYS if d.startswith(day[:3])] if len(day) >= 3 else []
        if len(match) != 1:
            raise WindowError("%s: unknown day %r" % (name, item))
        out.append(match[0])
    return out


def describe_window(entry):
    if entry.get("immediate"):
        return "immediate"
    days = _days(entry.get("days"), "days")
    names = "any day" if len(days) == 7 else "/".join(d.capitalize() for d in days)
    return "%s %s-%s UTC" % (names, entry.get("start", "00:00"), entry.get("end", "24:00"))


def window_decision(table, maintenance_type, now):
    """Whether ``maintenance_type`` may run at ``now`` (an aware datetime) by ``table``.

    ``table``: ``{type: {days: [Sunday] | any, start: "04:00", end: "06:00", notice: "1 week",
    approval: "DBA + Team Lead", immediate: false}}``. Returns a dict: ``allowed``, ``type``,
    ``window`` (in words), ``reason``, ``ends_at`` and ``seconds_left`` (inside a window),
    ``next_start`` (outside), ``notice``, ``approval``. Raises WindowError on a bad table or type."""
    if not isinstance(table, dict) or maintenance_type not in table:
        raise WindowError("unknown maintenance type %r; the window table has %s"
                          % (maintenance_type, ", ".join(sorted(table or {}))))
    entry = table[maintenance_type] or {}
    now = now.astimezone(datetime.timezone.utc)
    out = dict(type=maintenance_type, window=describe_window(entry), notice=entry.get("notice"),
               approval=entry.get("approval"), ends_at=None, seconds_left=None, next_start=None)
    if entry.get("immediate"):
        out.update(allowed=True, reason="%s maintenance runs immediately (no window)" % maintenance_type)
        return out
    days = _days(entry.get("days"), "%s.days" % maintenance_type)
    start = _minutes(entry.get("start", "00:00"), "%s.start" % maintenance_type)
    end = _minutes(entry.get("end", "24:00"), "%s.end" % maintenance_type)
    if end <= start:
        raise WindowError("%s: the window must end after it starts (%s-%s UTC)"
                          % (maintenance_type, entry.get("start"), entry.get("end")))
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    minute_now = (now - midnight).total_seconds() / 60.0
    if DAYS[now.weekday()] in days and start <= minute_now < end:
        ends = midnight + datetime.timedelta(minutes=end)
        out.update(allowed=True, ends_at=ends.isoformat(), seconds_left=round((ends - now).total_seconds(), 1),
                   reason="inside the %s window (%s), %d min left"
                          % (maintenance_type, out["window"], (ends - now).total_seconds() // 60))
        return out
    for ahead in range(0, 8):
        day = midnight + datetime.timedelta(days=ahead)
        begin = day + datetime.timedelta(minutes=start)
        if DAYS[day.weekday()] in days and begin > now:
            out["next_start"] = begin.isoformat()
            break
    out.update(allowed=False, reason="outside the %s window (%s); now is %s %s UTC; the next window starts %s"
               % (maintenance_type, out["window"], DAYS[now.weekday()].capitalize(), now.strftime("%H:%M"),
                  out["next_start"]))
    return out


def parse_samples(text):
    """Prometheus text exposition -> list of ``(name, labels, value)``; comments and junk skipped."""
    samples = []
    for line in (text or "").splitlines():
        match = _SAMPLE.match(line.strip())
        if not match:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        samples.append((match.group(1), labels, value))
    return samples


def http_totals(text):
    """``{requests, errors, duration_sum, duration_count}`` of the API's counters (5xx = errors)."""
    out = dict(requests=0.0, errors=0.0, duration_sum=0.0, duration_count=0.0)
    for name, labels, value in parse_samples(text):
        if name == "apex_http_requests_total":
            out["requests"] += value
            if str(labels.get("status", "")).startswith("5"):
                out["errors"] += value
        elif name == "apex_http_request_duration_seconds_sum":
            out["duration_sum"] += value
        elif name == "apex_http_request_duration_seconds_count":
            out["duration_count"] += value
    return out


def watch_verdict(before, now, max_error_rate=0.05, max_latency_ms=2000, min_requests=1):
    """Judge the requests served between two scrapes (``before``, ``now``: Prometheus text).

    A counter that went down (a restarted pod) restarts the count from ``now``. Returns a dict:
    ``requests``, ``errors``, ``error_rate``, ``mean_latency_ms``, ``breach`` (bool), ``reason``."""
    first, last = http_totals(before), http_totals(now)
    if last["requests"] < first["requests"] or last["duration_count"] < first["duration_count"]:
        first = dict(requests=0.0, errors=0.0, duration_sum=0.0, duration_count=0.0)
    requests = last["requests"] - first["requests"]
    errors = last["errors"] - first["errors"]
    count = last["duration_count"] - first["duration_count"]
    rate = errors / requests if requests else 0.0
    latency = 1000.0 * (last["duration_sum"] - first["duration_sum"]) / count if count else None
    out = dict(requests=int(requests), errors=int(errors), error_rate=round(rate, 4),
               mean_latency_ms=round(latency, 1) if latency is not None else None, breach=False)
    if requests < min_requests:
        out["reason"] = "no traffic to judge yet (%d request(s))" % requests
        return out
    problems = []
    if rate > max_error_rate:
        problems.append("error rate %.1f%% > %.1f%%" % (100 * rate, 100 * max_error_rate))
    if latency is not None and latency > max_latency_ms:
        problems.append("mean latency %d ms > %d ms" % (round(latency), max_latency_ms))
    out.update(breach=bool(problems), reason="; ".join(problems) or "error rate %.1f%%, mean latency %s ms within limits"
               % (100 * rate, out["mean_latency_ms"]))
    return out
