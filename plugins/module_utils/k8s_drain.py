# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Node drain (``apex_drain``): cordon, evict through the Eviction API, wait for the pods elsewhere.

Evictions go through ``pods/<name>/eviction`` (policy/v1), so the API server applies the
PodDisruptionBudgets: a blocked eviction (HTTP 429) is retried until ``eviction_timeout`` and
reported with the budget's numbers; it is never turned into a delete unless ``force`` and the
confirmation naming the node are given. Then the wait: every controller of an evicted Ready pod
has as many Ready pods off the node as it had before. The plan is ``drain_plan`` (pure).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils import drain_plan as plan
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError
from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import selector_matches
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline, poll_until

NODES = "/api/v1/nodes"


class DrainError(Exception):
    """The drain did not complete; ``last_state`` says what was last seen."""

    def __init__(self, msg, last_state=None):
        super(DrainError, self).__init__(msg)
        self.last_state = last_state


def pod_path(key, sub=None):
    namespace, name = key.split("/", 1)
    return "/api/v1/namespaces/%s/pods/%s%s" % (namespace, name, "/" + sub if sub else "")


def node_facts(client, node):
    obj = client.get("%s/%s" % (NODES, node))
    return {"name": node, "unschedulable": bool((obj.get("spec") or {}).get("unschedulable")),
            "ready": any(c.get("type") == "Ready" and c.get("status") == "True"
                         for c in (obj.get("status") or {}).get("conditions") or [])}


def set_unschedulable(client, node, value, check_mode=False):
    """Cordon (True) or uncordon (False); ``changed`` only when it was not so already."""
    before = node_facts(client, node)
    if before["unschedulable"] == value:
        return False, before
    if not check_mode:
        client.merge_patch("%s/%s" % (NODES, node), {"spec": {"unschedulable": value}})
    return True, dict(before, unschedulable=value)


def pods_on(client, node, pod_selector=None, namespaces=None):
    pods = client.list("/api/v1/pods", label_selector=pod_selector or None,
                       field_selector="spec.nodeName=%s" % node).get("items") or []
    return [p for p in pods if not namespaces or (p.get("metadata") or {}).get("namespace") in namespaces]


def budgets_for(client, key, pod):
    """The PodDisruptionBudgets selecting a pod, with the numbers that decide an eviction."""
    namespace = key.split("/", 1)[0]
    found = []
    for pdb in client.list("/apis/policy/v1/namespaces/%s/poddisruptionbudgets" % namespace).get("items") or []:
        if selector_matches((pdb.get("spec") or {}).get("selector") or {}, (pod.get("metadata") or {}).get("labels")):
            spec, status = pdb.get("spec") or {}, pdb.get("status") or {}
            found.append({"name": pdb["metadata"]["name"], "minAvailable": spec.get("minAvailable"),
                          "maxUnavailable": spec.get("maxUnavailable"),
                          "currentHealthy": status.get("currentHealthy"), "desiredHealthy": status.get("desiredHealthy"),
                          "disruptionsAllowed": status.get("disruptionsAllowed")})
    return found


def evict_one(client, item):
    """``evicted``, ``gone`` (deleted meanwhile) or ``blocked`` (a budget said no, HTTP 429)."""
    namespace, name = item["pod"].split("/", 1)
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
    try:
        client.post(pod_path(item["pod"], "eviction"), body)
        return "evicted", None
    except KubeApiError as exc:
        if exc.not_found:
            return "gone", None
        if exc.status == 429:
            return "blocked", exc.message
        raise


def evict_all(client, items, deadline, force=False):
    """Evict every item; blocked ones are tried again (backing off) until the deadline.

    Returns ``(done, blocked)``: ``done`` items carry ``result`` and ``attempts``; ``blocked``
    items also the last ``message`` and the budgets. With ``force`` (the confirmation was
    checked by the caller) pods still blocked at the deadline are deleted, and say so.
    """
    pending = dict((item["pod"], dict(item, attempts=0)) for item in items)
    done = []

    def attempt():
        for key in sorted(pending):
            item = pending[key]
            item["attempts"] += 1
            result, message = evict_one(client, item)
            if result == "blocked":
                item["message"] = message
            else:
                item["result"] = result
                done.append(pending.pop(key))
        return len(pending)

    poll_until(attempt, lambda left: left == 0, deadline, interval=0.5, max_interval=5.0)
    blocked = []
    for key in sorted(pending):
        item = pending[key]
        item["budgets"] = budgets_for(client, key, item["object"])
        if force:
            try:
                client.delete(pod_path(key))
            except KubeApiError as exc:
                if not exc.not_found:
                    raise
            item["result"] = "deleted (forced past its disruption budget)"
            done.append(item)
        else:
            blocked.append(item)
    return done, blocked


def public(item):
    """An item without the pod object (results carry names and reasons, not whole pods)."""
    return dict((k, v) for k, v in item.items() if k != "object")


def wait_replaced(client, owners, node, namespaces, deadline):
    """Until every owner has its Ready pods back off the node; returns the WaitResult."""
    def fetch():
        pods = []
        for namespace in namespaces:
            pods.extend(client.list("/api/v1/namespaces/%s/pods" % namespace).get("items") or [])
        return plan.replacement_status(owners, pods, node)

    return poll_until(fetch, plan.all_back, deadline, interval=0.1, max_interval=1.0)


def uncordon(client, node, check_mode=False):
    """``state=uncordon``: the node takes new pods again."""
    changed, facts = set_unschedulable(client, node, False, check_mode)
    return dict(changed=changed, drain={"node": node, "cordoned": facts["unschedulable"]},
                msg="%s %s" % ("uncordoned" if changed else "already schedulable:", node))


def cordon(client, node, check_mode=False):
    """``state=cordon``: no new pods on the node; the running ones stay."""
    changed, facts = set_unschedulable(client, node, True, check_mode)
    return dict(changed=changed, drain={"node": node, "cordoned": facts["unschedulable"]},
                msg="%s %s" % ("cordoned" if changed else "already cordoned:", node))


def facts(client, node, pod_selector=None, namespaces=None, delete_emptydir_data=False):
    """``state=facts``: the node, its pods and what a drain would do with them (read-only)."""
    node_state = node_facts(client, node)
    planned = plan.classify(pods_on(client, node, pod_selector, namespaces), delete_emptydir_data=delete_emptydir_data)
    budgets = dict((i["pod"], budgets_for(client, i["pod"], i["object"])) for i in planned["evict"])
    return dict(changed=False, drain={"node": node, "cordoned": node_state["unschedulable"], "ready": node_state["ready"],
                                      "to_evict": [dict(public(i), budgets=budgets[i["pod"]]) for i in planned["evict"]],
                                      "skipped": [public(i) for i in planned["skipped"]],
                                      "refused": [public(i) for i in planned["refused"]]},
                msg="%s: %d pod(s) to evict, %d skipped, %d refused" % (
                    node, len(planned["evict"]), len(planned["skipped"]), len(planned["refused"])))


def drain(client, node, pod_selector=None, namespaces=None, delete_emptydir_data=False, force=False,
          eviction_timeout=300.0, wait=True, wait_timeout=300.0, check_mode=False):
    """``state=drain``: cordon, evict (budgets honoured), wait for the pods elsewhere; the node stays cordoned."""
    facts = node_facts(client, node)  # a missing node fails here (404), before anything changes
    pods = pods_on(client, node, pod_selector, namespaces)
    planned = plan.classify(pods, delete_emptydir_data=delete_emptydir_data, force=force)
    refused = plan.refusal(planned)
    if refused:
        raise plan.DrainRefused(refused)
    result = {"node": node, "was_cordoned": facts["unschedulable"],
              "skipped": [public(i) for i in planned["skipped"]],
              "to_evict": [i["pod"] for i in planned["evict"]]}
    if check_mode:
        return dict(changed=not facts["unschedulable"] or bool(planned["evict"]), drain=result,
                    msg="would cordon %s and evict %d pod(s)" % (node, len(planned["evict"])))
    cordoned, dummy = set_unschedulable(client, node, True)
    timings = {}
    clock = Deadline(None)
    # the Ready pods of the evicted pods' controllers before anything moves: what the wait waits for
    namespaces_of = sorted(set(i["pod"].split("/", 1)[0] for i in planned["evict"]))
    before = []
    for namespace in namespaces_of:
        before.extend(client.list("/api/v1/namespaces/%s/pods" % namespace).get("items") or [])
    done, blocked = evict_all(client, planned["evict"], Deadline(eviction_timeout), force=force)
    timings["eviction_seconds"] = round(clock.elapsed(), 3)
    result.update(evicted=[public(i) for i in done], blocked=[public(i) for i in blocked], cordoned=True)
    changed = cordoned or bool(done)
    if blocked:
        raise DrainError("drain of %s blocked after %ss: %s. The node stays cordoned; nothing was forced "
                         "(force with confirm=%s deletes them past their budgets)"
                         % (node, eviction_timeout, plan.blocked_summary(blocked), node),
                         last_state=dict(result, changed=changed, timings=timings))
    if wait and done:
        owners = plan.owners_to_wait_for(done, before)
        waited = wait_replaced(client, owners, node, namespaces_of, Deadline(wait_timeout))
        timings["replacement_seconds"] = round(waited.elapsed, 3)
        result["replacements"] = waited.last
        if not waited.ok:
            missing = "; ".join("%s %d/%d Ready elsewhere" % (k, v["ready_elsewhere"], v["ready_before"])
                                for k, v in sorted(waited.last.items()) if not v["done"])
            raise DrainError("evicted pods of %s are not all Ready elsewhere after %ss: %s"
                             % (node, wait_timeout, missing), last_state=dict(result, changed=changed, timings=timings))
    timings["total_seconds"] = round(clock.elapsed(), 3)
    result["timings"] = timings
    return dict(changed=changed, drain=result, msg="drained %s: %d pod(s) evicted%s, %d skipped; node cordoned" % (
        node, len(done), " and Ready elsewhere" if wait and done else "", len(planned["skipped"])))
