# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``apex_canary``: the canary Deployment made from the live stable one (``canary_plan``),
written and waited for until its pods are ready; or deleted and waited for until it is gone.
A canary that does not get ready in time fails with what its pods said (it is left for the
caller's ``always`` to remove: the evidence stays readable until then)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.apex.ops.plugins.module_utils import canary_plan
from ansible_collections.apex.ops.plugins.module_utils.k8s import get_or_none
from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import WorkloadError, workload_path
from ansible_collections.apex.ops.plugins.module_utils.k8s_rollout import (
    failure_message, rollout_status, rollout_target, wait_rollout)
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline, poll_until


def _pods_not_ready(client, namespace, manifest):
    """Pods of the canary that are not ready, with the reason their status gives."""
    from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import selector_string
    selector = selector_string(manifest["spec"]["selector"])
    pods = client.list("/api/v1/namespaces/%s/pods" % namespace, label_selector=selector).get("items") or []
    out = []
    for pod in pods:
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if statuses and all(s.get("ready") for s in statuses):
            continue
        why = []
        for s in statuses:
            for key in ("waiting", "terminated"):
                state = (s.get("state") or {}).get(key)
                if state:
                    why.append("%s %s: %s" % (s.get("name"), key, state.get("reason") or state.get("message") or "?"))
            if not why and not s.get("ready"):
                why.append("%s running, readiness probe failing" % s.get("name"))
        out.append(dict(name=pod["metadata"]["name"], phase=(pod.get("status") or {}).get("phase"),
                        reasons=why or ["not scheduled or no status yet"]))
    return out


def present(client, params, check_mode=False, sleep=time.sleep):
    namespace, name = params["namespace"], params["name"]
    stable = get_or_none(client, workload_path("Deployment", namespace, params["stable"]))
    if stable is None:
        raise WorkloadError("the stable Deployment %s/%s does not exist" % (namespace, params["stable"]))
    stable_replicas = (stable.get("spec") or {}).get("replicas") or 0
    replicas = params.get("replicas") or canary_plan.canary_replicas(stable_replicas, params["weight"])
    manifest, plan = canary_plan.build_canary(stable, name, params["version"], replicas, params.get("container"),
                                              params.get("track") or "canary")
    plan.update(stable_replicas=stable_replicas, weight=params["weight"],
                traffic_share=canary_plan.traffic_share(stable_replicas, replicas),
                helm_release=((stable.get("metadata") or {}).get("annotations") or {}).get("meta.helm.sh/release-name"))
    path = workload_path("Deployment", namespace, name)
    live = get_or_none(client, path)
    if live is not None and (live.get("metadata") or {}).get("annotations", {}).get(canary_plan.CANARY_OF) != plan["stable"]:
        raise WorkloadError("Deployment %s/%s exists and is not a canary of %s (no %s annotation): not touching it"
                            % (namespace, name, plan["stable"], canary_plan.CANARY_OF))
    changed = not canary_plan.same_canary(live, manifest)
    result = dict(changed=changed, action=("create" if live is None else ("update" if changed else "none")), plan=plan,
                  manifest=manifest)
    if check_mode:
        return result
    if changed:
        if live is None:
            client.post(workload_path("Deployment", namespace), manifest)
        else:
            manifest["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
            client.put(path, manifest)
    if not params.get("wait", True):
        return result
    timeout = params["wait_timeout"]
    entry = wait_rollout(client, [rollout_target("Deployment", namespace, name, replicas)],
                         Deadline(timeout), sleep=sleep)[0]
    result["rollout"] = entry["last"]
    if not entry["ok"]:
        last_state = dict(rollout=entry["last"], pods_not_ready=_pods_not_ready(client, namespace, manifest),
                          plan=plan)
        raise WorkloadError("the canary never got ready: %s" % failure_message(entry, timeout), last_state=last_state)
    return result


def absent(client, params, check_mode=False, sleep=time.sleep):
    namespace, name = params["namespace"], params["name"]
    path = workload_path("Deployment", namespace, name)
    live = get_or_none(client, path)
    if live is None:
        return dict(changed=False, action="none")
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    if canary_plan.CANARY_OF not in annotations and (live.get("metadata") or {}).get("labels", {}).get(
            canary_plan.TRACK_LABEL) != (params.get("track") or "canary"):
        raise WorkloadError("Deployment %s/%s is not a canary (no %s annotation, no track label): not deleting it"
                            % (namespace, name, canary_plan.CANARY_OF))
    result = dict(changed=True, action="delete", last=rollout_status(live, "Deployment"))
    if check_mode:
        return result
    client.request("DELETE", path, body={"kind": "DeleteOptions", "apiVersion": "v1",
                                         "propagationPolicy": "Foreground"})
    if params.get("wait", True):
        gone = poll_until(lambda: get_or_none(client, path), lambda obj: obj is None, Deadline(params["wait_timeout"]),
                          sleep=sleep)
        if not gone:
            raise WorkloadError("the canary %s/%s was deleted but is still there after %ss"
                                % (namespace, name, params["wait_timeout"]),
                                last_state=dict(last=rollout_status(gone.last, "Deployment")))
    return result
