"""Deployment: one ReplicaSet per pod template, RollingUpdate (maxSurge / maxUnavailable) and
Recreate rollouts, revisions and rollback history, pause, progress deadline, and the
Available / Progressing conditions."""
import copy
import sys
import time
import traceback

from .. import registry
from ..store import now_iso
from .common import (DEPLOY, HASH_LABEL, PODS, REV_ANN, RS, Controller, controller_uid, get_condition,
                     int_or_percent, owner_ref, set_condition, strip_hash, template_hash)


class Deployments(Controller):
    name = "deployments"

    def __init__(self, loop):
        super().__init__(loop)
        self.progress = {}        # deployment uid -> (signature, monotonic)

    def reconcile(self):
        rs_by_owner = {}
        for rs in self.c.store.list(RS):
            cu = controller_uid(rs)
            if cu:
                rs_by_owner.setdefault(cu, []).append(rs)
        for d in self.c.store.list(DEPLOY):
            if d["metadata"].get("deletionTimestamp"):
                continue
            try:
                self._deployment(d, rs_by_owner.get(d["metadata"]["uid"], []))
            except Exception:
                traceback.print_exc(file=sys.stderr)

    def _scale_rs(self, d, rs, n, why=None):
        old = rs["spec"].get("replicas", 0)
        if old == n:
            return rs
        verb = "up" if n > old else "down"

        def put(o):
            o["spec"]["replicas"] = n
            ann = o["metadata"].setdefault("annotations", {})
            ann["deployment.kubernetes.io/desired-replicas"] = str(d["spec"].get("replicas", 1))
            ann["deployment.kubernetes.io/max-replicas"] = str(
                d["spec"].get("replicas", 1) + self._surge(d))
        new = self.c.mutate(RS, rs["metadata"]["namespace"], rs["metadata"]["name"], put)
        self.c.event(d, "ScalingReplicaSet", "Scaled %s replica set %s from %d to %d" % (
            verb, rs["metadata"]["name"], old, n), component="deployment-controller")
        return new

    def _surge(self, d):
        strat = d["spec"].get("strategy") or {}
        if strat.get("type") == "Recreate":
            return 0
        ru = strat.get("rollingUpdate") or {}
        return int_or_percent(ru.get("maxSurge", "25%"), d["spec"].get("replicas", 1), True)

    def _unavail(self, d):
        strat = d["spec"].get("strategy") or {}
        if strat.get("type") == "Recreate":
            return 0
        ru = strat.get("rollingUpdate") or {}
        replicas = d["spec"].get("replicas", 1)
        mu = int_or_percent(ru.get("maxUnavailable", "25%"), replicas, False)
        if mu == 0 and self._surge(d) == 0:
            mu = 1
        return min(mu, replicas)

    def _deployment(self, d, owned):
        meta, spec = d["metadata"], d["spec"]
        ns = meta["namespace"]
        replicas = spec.get("replicas", 1)
        tpl = spec["template"]
        want_tpl = strip_hash(tpl)
        new_rs = None
        for rs in owned:
            if strip_hash(rs["spec"]["template"]) == want_tpl:
                new_rs = rs
                break
        revs = [int((rs["metadata"].get("annotations") or {}).get(REV_ANN, "0") or 0)
                for rs in owned]
        max_rev = max(revs) if revs else 0
        olds = [rs for rs in owned if rs is not new_rs]
        created_new = False
        copy_ann = {k: v for k, v in (meta.get("annotations") or {}).items()
                    if k not in (REV_ANN, "kubectl.kubernetes.io/last-applied-configuration",
                                 "deployment.kubernetes.io/revision-history")
                    and not k.startswith("kubesim.apex.dev/")}
        if new_rs is None and not spec.get("paused"):
            h = template_hash(tpl)
            rs_tpl = copy.deepcopy(tpl)
            rs_tpl.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
            sel = copy.deepcopy(spec["selector"])
            sel.setdefault("matchLabels", {})[HASH_LABEL] = h
            labels = dict((tpl.get("metadata") or {}).get("labels") or {})
            labels[HASH_LABEL] = h
            ann = dict(copy_ann)
            ann.update({REV_ANN: str(max_rev + 1),
                        "deployment.kubernetes.io/desired-replicas": str(replicas),
                        "deployment.kubernetes.io/max-replicas": str(replicas + self._surge(d))})
            # the first RS of a deployment starts at full size (nothing to roll from)
            start = 0 if any(rs["spec"].get("replicas", 0) for rs in olds) else replicas
            rs_obj = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                      "metadata": {"name": "%s-%s" % (meta["name"], h), "namespace": ns,
                                   "labels": labels, "annotations": ann,
                                   "ownerReferences": [owner_ref(d)]},
                      "spec": {"replicas": start, "selector": sel, "template": rs_tpl,
                               "minReadySeconds": spec.get("minReadySeconds", 0)}}
            if not rs_obj["spec"]["minReadySeconds"]:
                rs_obj["spec"].pop("minReadySeconds")
            existing = self.c.store.get(RS, ns, rs_obj["metadata"]["name"])
            if existing is not None:
                return
            new_rs = self.c.create(registry.lookup("apps", "v1", "replicasets"), rs_obj)
            created_new = True
            if start:
                self.c.event(d, "ScalingReplicaSet", "Scaled up replica set %s from 0 to %d" % (
                    new_rs["metadata"]["name"], start), component="deployment-controller")
        elif new_rs is not None:
            cur_rev = int((new_rs["metadata"].get("annotations") or {}).get(REV_ANN, "0") or 0)
            need = {}
            if cur_rev < max_rev:
                need[REV_ANN] = str(max_rev + 1)
                hist = (new_rs["metadata"].get("annotations") or {}).get(
                    "deployment.kubernetes.io/revision-history")
                need["deployment.kubernetes.io/revision-history"] = \
                    (hist + "," if hist else "") + str(cur_rev)
            for k, v in copy_ann.items():
                if (new_rs["metadata"].get("annotations") or {}).get(k) != v:
                    need[k] = v
            if need:
                def annot(o, need=need):
                    o["metadata"].setdefault("annotations", {}).update(need)
                new_rs = self.c.mutate(RS, ns, new_rs["metadata"]["name"], annot)
        # ---- scaling / rollout
        if new_rs is not None and not spec.get("paused"):
            strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
            active_olds = [rs for rs in olds if rs["spec"].get("replicas", 0) > 0]
            if strategy == "Recreate":
                if active_olds:
                    for rs in active_olds:
                        self._scale_rs(d, rs, 0)
                else:
                    pods_left = [p for p in self.c.store.list(PODS, ns)
                                 if controller_uid(p) in {r["metadata"]["uid"] for r in olds}]
                    if not pods_left:
                        new_rs = self._scale_rs(d, new_rs, replicas)
            elif not active_olds:
                new_rs = self._scale_rs(d, new_rs, replicas)
            else:
                surge, unavail = self._surge(d), self._unavail(d)
                all_rs = [new_rs] + active_olds
                total = sum(rs["spec"].get("replicas", 0) for rs in all_rs)
                cur_new = new_rs["spec"].get("replicas", 0)
                if cur_new < replicas:
                    room = replicas + surge - total
                    if room > 0:
                        new_rs = self._scale_rs(d, new_rs, min(replicas, cur_new + room))
                elif cur_new > replicas:
                    new_rs = self._scale_rs(d, new_rs, replicas)
                # scale down old replica sets
                min_avail = replicas - unavail
                new_avail = (new_rs.get("status") or {}).get("availableReplicas", 0)
                all_rs = [new_rs] + active_olds
                all_pods = sum(rs["spec"].get("replicas", 0) for rs in all_rs)
                new_unavail = new_rs["spec"].get("replicas", 0) - new_avail
                max_down = all_pods - min_avail - new_unavail
                if max_down > 0:
                    # first unhealthy replicas of old sets
                    for rs in sorted(active_olds, key=lambda r: r["metadata"]["creationTimestamp"]):
                        if max_down <= 0:
                            break
                        have = rs["spec"].get("replicas", 0)
                        unhealthy = have - (rs.get("status") or {}).get("availableReplicas", 0)
                        cut = min(max_down, max(unhealthy, 0))
                        if cut > 0:
                            self._scale_rs(d, rs, have - cut)
                            max_down -= cut
                active_olds = [self.c.store.get(RS, ns, r["metadata"]["name"]) for r in active_olds]
                active_olds = [r for r in active_olds if r and r["spec"].get("replicas", 0) > 0]
                avail_total = sum((rs.get("status") or {}).get("availableReplicas", 0)
                                  for rs in [new_rs] + active_olds)
                down = avail_total - min_avail
                for rs in sorted(active_olds, key=lambda r: r["metadata"]["creationTimestamp"]):
                    if down <= 0:
                        break
                    have = rs["spec"].get("replicas", 0)
                    cut = min(have, down)
                    self._scale_rs(d, rs, have - cut)
                    down -= cut
        elif spec.get("paused") and new_rs is not None:
            if new_rs["spec"].get("replicas", 0) != replicas and not any(
                    rs["spec"].get("replicas", 0) for rs in olds):
                new_rs = self._scale_rs(d, new_rs, replicas)
        # ---- history cleanup
        limit = spec.get("revisionHistoryLimit", 10)
        dead = [rs for rs in olds if rs["spec"].get("replicas", 0) == 0 and
                (rs.get("status") or {}).get("replicas", 0) == 0]
        if len(dead) > limit:
            dead.sort(key=lambda r: int((r["metadata"].get("annotations") or {}).get(REV_ANN, 0)))
            for rs in dead[:len(dead) - limit]:
                self.c.store.remove(RS, ns, rs["metadata"]["name"])
        self._deployment_status(d, new_rs, created_new)

    def _deployment_status(self, d, new_rs, created_new):
        meta, spec = d["metadata"], d["spec"]
        ns = meta["namespace"]
        owned = [rs for rs in self.c.store.list(RS, ns) if controller_uid(rs) == meta["uid"]]
        if new_rs is not None:
            new_rs = self.c.store.get(RS, ns, new_rs["metadata"]["name"]) or new_rs
        replicas = spec.get("replicas", 1)
        tot = lambda f: sum((rs.get("status") or {}).get(f, 0) for rs in owned)
        st = {"observedGeneration": meta.get("generation", 1), "replicas": tot("replicas"),
              "updatedReplicas": (new_rs.get("status") or {}).get("replicas", 0) if new_rs else 0,
              "readyReplicas": tot("readyReplicas"), "availableReplicas": tot("availableReplicas")}
        st["unavailableReplicas"] = max(replicas - st["availableReplicas"], 0)
        st = {k: v for k, v in st.items() if v or k == "observedGeneration"}
        old_st = d.get("status") or {}
        conds = copy.deepcopy(old_st.get("conditions") or [])
        now = now_iso()
        min_avail = replicas - self._unavail(d)
        if st.get("availableReplicas", 0) >= min_avail:
            set_condition(conds, "Available", "True", "MinimumReplicasAvailable",
                          "Deployment has minimum availability.", now,
                          update_time=get_condition({"status": {"conditions": conds}},
                                                    "Available") is None or
                          get_condition({"status": {"conditions": conds}},
                                        "Available")["status"] != "True")
        else:
            set_condition(conds, "Available", "False", "MinimumReplicasUnavailable",
                          "Deployment does not have minimum availability.", now,
                          update_time=(get_condition({"status": {"conditions": conds}},
                                                     "Available") or {}).get("status") != "False")
        rs_name = new_rs["metadata"]["name"] if new_rs else ""
        complete = new_rs is not None and st.get("updatedReplicas", 0) == replicas and \
            st.get("replicas", 0) == replicas and st.get("availableReplicas", 0) == replicas and \
            new_rs["spec"].get("replicas", 0) == replicas
        sig = (rs_name, st.get("updatedReplicas", 0), st.get("readyReplicas", 0),
               st.get("availableReplicas", 0), st.get("replicas", 0), replicas)
        mono = time.monotonic()
        prev = self.progress.get(meta["uid"])
        progressed = prev is None or prev[0] != sig
        if progressed:
            self.progress[meta["uid"]] = (sig, mono)
        last_progress = self.progress[meta["uid"]][1]
        pcond = get_condition({"status": {"conditions": conds}}, "Progressing")
        pds = spec.get("progressDeadlineSeconds", 600)
        if spec.get("paused"):
            set_condition(conds, "Progressing", "Unknown", "DeploymentPaused",
                          "Deployment is paused", now, update_time=True)
        elif complete:
            if not pcond or pcond.get("reason") != "NewReplicaSetAvailable":
                set_condition(conds, "Progressing", "True", "NewReplicaSetAvailable",
                              'ReplicaSet "%s" has successfully progressed.' % rs_name, now,
                              update_time=True)
        elif pcond and pcond.get("reason") == "ProgressDeadlineExceeded" and not progressed:
            pass
        elif mono - last_progress > pds * self.cfg.time_factor:
            set_condition(conds, "Progressing", "False", "ProgressDeadlineExceeded",
                          'ReplicaSet "%s" has timed out progressing.' % rs_name, now,
                          update_time=True)
            self.c.event(d, "DeploymentRollback" if False else "ProgressDeadlineExceeded",
                         'Deployment "%s" has timed out progressing.' % meta["name"], "Warning",
                         "deployment-controller")
        else:
            if created_new:
                set_condition(conds, "Progressing", "True", "NewReplicaSetCreated",
                              'Created new replica set "%s"' % rs_name, now, update_time=True)
            elif progressed or not pcond or pcond.get("reason") not in (
                    "ReplicaSetUpdated", "NewReplicaSetCreated"):
                set_condition(conds, "Progressing", "True", "ReplicaSetUpdated",
                              'ReplicaSet "%s" is progressing.' % rs_name, now, update_time=True)
            self.wake_at(last_progress + pds * self.cfg.time_factor + 0.01)
        conds.sort(key=lambda c: {"Available": 0, "Progressing": 1}.get(c["type"], 2))
        st["conditions"] = conds
        rev = (new_rs["metadata"].get("annotations") or {}).get(REV_ANN) if new_rs else None
        if rev and (meta.get("annotations") or {}).get(REV_ANN) != rev:
            def annot(o, rev=rev):
                o["metadata"].setdefault("annotations", {})[REV_ANN] = rev
            d = self.c.mutate(DEPLOY, ns, meta["name"], annot)
        if st != (d.get("status") or {}):
            def put(o, st=st):
                o["status"] = st
            self.c.mutate(DEPLOY, ns, meta["name"], put, sub="status")
