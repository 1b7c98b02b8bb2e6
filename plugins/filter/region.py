# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the region failover and failback: the gates/plan and the step timings.
The logic lives in ``module_utils/failover_plan.py`` (pure, unit-tested); these only expose it
to the roles, on the controller, without a module round trip."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils import failover_plan


def region_failover_plan(secondary_info, standby_facts, primary_facts, primary_info, options):
    return failover_plan.plan_failover(secondary_info, standby_facts, primary_facts, primary_info, dict(options))


def region_failback_plan(secondary_db, primary_db, dns, primary_info, options):
    return failover_plan.plan_failback(secondary_db, primary_db, dns, primary_info, dict(options))


def region_timings(stamps, order):
    return failover_plan.timings(dict(stamps), list(order))


class FilterModule(object):
    def filters(self):
        return {"region_failover_plan": region_failover_plan, "region_failback_plan": region_failback_plan,
                "region_timings": region_timings}
