# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reports directory as a history: what apex.ops procedures ran in a window, and how they ended.

Every role's last task (``apex_report``) writes ``<procedure>-<YYYYmmddTHHMMSSffffffZ>.json``; the
time in the name is when the report was written (UTC), so the window is decided from the name
without opening older files. Each report read gives a one-line outcome from the keys the roles
share (``status``, ``changed``, ``error``, ``started``, ``finished``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import re

from ansible_collections.apex.ops.plugins.module_utils.timestamps import UTC

NAME = re.compile(r"^(?P<procedure>[a-z0-9_]+)-(?P<stamp>\d{8}T\d{6}\d{6}Z)\.json$")

# what a procedure's report means for the handoff: the section it belongs to
CATEGORIES = {
    "scale": "scale", "scale_event": "scale", "hpa": "scale", "alert_resource_exhaustion": "scale",
    "alert_queue_backlog": "scale",
    "backup": "backup", "backup_prune": "backup", "backup_verify": "backup",
    "restore": "restore", "recover": "restore",
    "deploy": "release", "rollback": "release", "emergency_rollback": "release", "db_migrate": "release",
    "config": "release",
}
# read-only procedures: runs, not changes (left out of the change history)
READ_ONLY = frozenset(["health_check", "cert_check", "handoff", "capacity_report"])


def stamp_time(stamp):
    return datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)


def outcome(report):
    """``ok``, ``changed``, ``failed: <error>``..., from the report's own words."""
    status = report.get("status")
    text = str(status) if status is not None else ("changed" if report.get("changed") else "ok")
    if report.get("changed") and status == "ok":
        text = "ok, changed"
    if report.get("error"):
        text = "%s: %s" % (text, str(report["error"])[:200])
    return text


def recent(directory, since, now, limit=200):
    """Reports written in ``[since, now]``, newest first: procedure, category, time, file, outcome.

    A missing directory is an empty history; an unreadable report is listed with its error."""
    try:
        names = os.listdir(directory)
    except (IOError, OSError):
        return []
    found = []
    for name in names:
        match = NAME.match(name)
        if not match or match.group("procedure") in READ_ONLY:
            continue
        moment = stamp_time(match.group("stamp"))
        if since <= moment <= now:
            found.append((moment, match.group("procedure"), name))
    found.sort(reverse=True)
    out = []
    for moment, procedure, name in found[:limit]:
        path = os.path.join(directory, name)
        try:
            with open(path) as handle:
                report = json.load(handle)
            text = outcome(report if isinstance(report, dict) else {})
        except (IOError, OSError, ValueError) as exc:
            text = "unreadable report: %s" % exc
        out.append(dict(procedure=procedure, category=CATEGORIES.get(procedure, "other"),
                        time=moment.strftime("%Y-%m-%dT%H:%M:%SZ"), file=path, outcome=text))
    return out
