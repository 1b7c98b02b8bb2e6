# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Node drain, the pure part: which pods of a node are evicted, skipped or refused, and when the
evicted ones run Ready elsewhere (``apex_drain``; the I/O is in ``k8s_drain``).

The rules are kubectl drain's: DaemonSet pods and mirror (static) pods are skipped, finished pods
need nothing, a pod no controller re-creates (a bare pod) would be lost and is refused unless the
drain is forced with the confirmation, and a pod with ``emptyDir`` data is refused unless that data
may go (``delete_emptydir_data``). Unit-tested in ``tests/unit/plugins/module_utils/test_drain_plan.py``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import condition_true

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


class DrainRefused(ValueError):
    """The drain cannot start safely; nothing was changed."""


def pod_key(pod):
    meta = pod.get("metadata") or {}
    return "%s/%s" % (meta.get("namespace"), meta.get("name"))


def controller_of(pod):
    """The owner reference with ``controller: true`` (``{kind, name, uid}``), or None."""
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return {"kind": ref.get("kind"), "name": ref.get("name"), "uid": ref.get("uid")}
    return None


def is_ready(pod):
    return (pod.get("status") or {}).get("phase") == "Running" and condition_true(pod, "Ready")


def classify(pods, delete_emptydir_data=False, force=False):
    """``{"evict": [...], "skipped": [...], "refused": [...]}`` of the pods of one node.

    Each entry is ``{"pod": "ns/name", "reason": ..., "owner": ...}``; ``evict`` keeps the pod
    objects under ``object`` for the eviction calls. ``force`` lets a bare pod be evicted (it is
    not re-created).
    """
    plan = {"evict": [], "skipped": [], "refused": []}
    for pod in sorted(pods, key=pod_key):
        meta = pod.get("metadata") or {}
        owner = controller_of(pod)
        item = {"pod": pod_key(pod), "owner": owner, "node": (pod.get("spec") or {}).get("nodeName")}
        phase = (pod.get("status") or {}).get("phase")
        if meta.get("deletionTimestamp"):
            plan["skipped"].append(dict(item, reason="already terminating"))
        elif phase in ("Succeeded", "Failed"):
            plan["skipped"].append(dict(item, reason="finished (%s)" % phase))
        elif MIRROR_ANNOTATION in (meta.get("annotations") or {}):
            plan["skipped"].append(dict(item, reason="mirror (static) pod: the kubelet owns it"))
        elif owner and owner["kind"] == "DaemonSet":
            plan["skipped"].append(dict(item, reason="DaemonSet pod: its controller ignores cordons"))
        elif owner is None and not force:
            plan["refused"].append(dict(item, reason="no controller re-creates it (a bare pod): force to lose it"))
        elif any("emptyDir" in (v or {}) for v in (pod.get("spec") or {}).get("volumes") or []) \
                and not delete_emptydir_data:
            plan["refused"].append(dict(item, reason="emptyDir data would be lost: delete_emptydir_data to allow"))
        else:
            plan["evict"].append(dict(item, ready=is_ready(pod), object=pod))
    return plan


def refusal(plan):
    """The message refusing a drain whose plan has refused pods (None when there are none)."""
    if not plan["refused"]:
        return None
    return "cannot drain: %s" % "; ".join("%s (%s)" % (i["pod"], i["reason"]) for i in plan["refused"])


def force_refusal(node, force, confirm):
    """Forcing (deleting a pod a budget protects, or a bare pod) needs ``confirm`` naming the node."""
    if force and confirm != node:
        return "force needs confirm equal to the node name (%r); got %r" % (node, confirm)
    return None


def blocked_summary(blocked):
    """One line per blocked eviction: attempts, the API's answer and each budget's numbers."""
    lines = []
    for item in blocked:
        budgets = ", ".join("PDB %s allows %s disruption(s) (%s healthy, %s needed)" % (
            b["name"], b["disruptionsAllowed"], b["currentHealthy"], b["desiredHealthy"])
            for b in item.get("budgets") or []) or "no budget found"
        lines.append("%s (%d attempt(s): %s; %s)" % (item["pod"], item["attempts"], item.get("message"), budgets))
    return "; ".join(lines)


def owners_to_wait_for(evicted, pods_before):
    """Per controller of an evicted pod that was Ready: how many Ready pods it had before the drain."""
    owners = {}
    for item in evicted:
        owner = item.get("owner")
        if not owner or not item.get("ready"):
            continue  # a pod that was not Ready is not waited for (it served nothing)
        owners.setdefault(owner["uid"], dict(owner, namespace=item["pod"].split("/", 1)[0]))
    for uid, owner in owners.items():
        owner["ready_before"] = sum(1 for p in pods_before if (controller_of(p) or {}).get("uid") == uid and is_ready(p))
    return owners


def replacement_status(owners, pods_now, node):
    """Per owner: Ready pods off ``node`` now, against the Ready count before; ``done`` when all are back."""
    status = {}
    for uid, owner in owners.items():
        mine = [p for p in pods_now if (controller_of(p) or {}).get("uid") == uid]
        ready_elsewhere = sorted(pod_key(p) for p in mine
                                 if is_ready(p) and (p.get("spec") or {}).get("nodeName") != node)
        on_node = sorted(pod_key(p) for p in mine if (p.get("spec") or {}).get("nodeName") == node)
        status["%s/%s %s" % (owner["namespace"], owner["name"], owner["kind"])] = {
            "ready_before": owner["ready_before"], "ready_elsewhere": len(ready_elsewhere),
            "pods": ready_elsewhere, "still_on_node": on_node,
            "done": len(ready_elsewhere) >= owner["ready_before"] and not on_node}
    return status


def all_back(status):
    return all(s["done"] for s in status.values())
