# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the maintenance role: thin wrappers of module_utils/maintenance_plan (the decisions live there,
unit-tested); filters because they run on the controller without a module round trip."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.apex.ops.plugins.module_utils import maintenance_plan
from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration
from ansible_collections.apex.ops.plugins.module_utils.timestamps import parse_time


def maintenance_window(table, maintenance_type, now):
    moment = parse_time(now)
    if moment is None:
        raise AnsibleFilterError("maintenance_window: now must be an ISO 8601 time with a zone, got %r" % (now,))
    try:
        return maintenance_plan.window_decision(table, maintenance_type, moment)
    except maintenance_plan.WindowError as exc:
        raise AnsibleFilterError("maintenance_window: %s" % exc)


def maintenance_watch(before, now, max_error_rate=0.05, max_latency_ms=2000, min_requests=1):
    return maintenance_plan.watch_verdict(before, now, float(max_error_rate), float(max_latency_ms), int(min_requests))


def duration_seconds(value):
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise AnsibleFilterError("duration_seconds: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"maintenance_window": maintenance_window, "maintenance_watch": maintenance_watch,
                "duration_seconds": duration_seconds}
