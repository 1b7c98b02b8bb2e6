# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Saved scale states (apex_scale ``save_state`` / ``restore_state``).

One ConfigMap (``apex-ops-scale-state``) in the namespace, one JSON record per state name: the
replicas and HPA bounds of each target before a scale. Updated with optimistic concurrency
(a conflict is retried on a fresh read); readable with kubectl; not overwritten by a Helm upgrade or
``kubectl apply`` of the Deployments (which could drop annotations). Whether a record that was not
restored yet may be replaced is the caller's decision (``run_scale``: only with ``overwrite_saved``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils.configmap_records import ConfigMapRecords
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow
from ansible_collections.apex.ops.plugins.module_utils.k8s_scale_plan import ScaleError

STATE_CONFIGMAP = "apex-ops-scale-state"


class StateStore(object):
    """Saved scale states: one ConfigMap, one JSON record per state name."""

    def __init__(self, client, namespace, name=STATE_CONFIGMAP):
        self.client = client
        self.namespace = namespace
        self.name = name
        self.records = ConfigMapRecords(client, namespace, name,
                                        "scale states saved by apex.ops.apex_scale; one JSON record per state name")

    def read(self, state_name):
        return self.records.read(state_name)

    def write(self, state_name, record, retries=5):
        for dummy in range(retries):
            try:
                return self.records.save(self.records.get(), {state_name: record})
            except KubeApiError as exc:
                if exc.conflict:
                    continue
                raise
        raise ScaleError("could not update ConfigMap %s/%s: it kept changing (conflicts)" % (self.namespace, self.name))


def state_record(plans, namespace, context, state_name, now=None):
    return dict(
        state_name=state_name,
        namespace=namespace,
        context=context,
        saved_at=(now or utcnow()).strftime("%Y-%m-%dT%H:%M:%SZ"),
        restored_at=None,
        targets=[dict(kind=p["kind"], name=p["name"], replicas=p["before"]["replicas"],
                      hpa=p["hpa"], hpa_bounds=p["before"]["hpa"]) for p in plans],
    )
