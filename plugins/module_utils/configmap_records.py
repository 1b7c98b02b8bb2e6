# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""JSON records kept in one ConfigMap, one per data key: the plumbing of the saved scale states
(``k8s_scale_state``) and of the procedure journal (``journal``).

A ConfigMap because it lives in the cluster next to what it describes, is readable with kubectl,
and is not touched by a Helm upgrade or a ``kubectl apply`` of the workloads. Writes carry the
resourceVersion that was read (a replacement PUT), so a concurrent writer makes them fail with a
409 conflict instead of being overwritten: what to do then (retry, refuse) is the caller's policy.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, get_or_none

MANAGED_BY = {"app.kubernetes.io/managed-by": "apex.ops"}


class ConfigMapRecords(object):
    """One ConfigMap of ``namespace``; ``description`` is its ``apex.ops/description`` annotation."""

    def __init__(self, client, namespace, name, description):
        self.client = client
        self.namespace = namespace
        self.name = name
        self.description = description
        self.path = "/api/v1/namespaces/%s/configmaps" % namespace

    @property
    def item_path(self):
        return "%s/%s" % (self.path, self.name)

    def get(self):
        """The ConfigMap as it is now, or None when it does not exist."""
        return get_or_none(self.client, self.item_path)

    @staticmethod
    def record(configmap, key):
        """The record under ``key`` of a ConfigMap read with ``get`` (None: no ConfigMap, no record).
        A value that is not JSON raises ValueError."""
        raw = ((configmap or {}).get("data") or {}).get(key)
        return json.loads(raw) if raw else None

    def read(self, key):
        return self.record(self.get(), key)

    def save(self, configmap, records, keep_others=True):
        """Create the ConfigMap with ``records`` (``{key: record}``), or replace the one read as
        ``configmap``: its metadata (and resourceVersion) kept, ``records`` set, its other keys kept
        unless ``keep_others`` is false. Raises ``KubeApiError`` (409 when it changed since it was read)."""
        body = dict(apiVersion="v1", kind="ConfigMap",
                    metadata=dict(name=self.name, namespace=self.namespace, labels=dict(MANAGED_BY),
                                  annotations={"apex.ops/description": self.description}),
                    data={})
        if configmap is not None:
            body["metadata"] = configmap["metadata"]
            if keep_others:
                body["data"] = dict(configmap.get("data") or {})
        body["data"].update((key, json.dumps(record, sort_keys=True)) for key, record in records.items())
        if configmap is None:
            return self.client.post(self.path, body)
        return self.client.put(self.item_path, body)

    def delete(self, configmap):
        """Delete the ConfigMap read as ``configmap``, unless it changed since (a 409 raises);
        already gone is fine."""
        try:
            self.client.request("DELETE", self.item_path,
                                body={"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {
                                    "resourceVersion": configmap["metadata"].get("resourceVersion")}})
        except KubeApiError as exc:
            if not exc.not_found:
                raise
