"""HorizontalPodAutoscaler: CPU utilization from the metrics model, min/max bounds,
scale-down stabilization, every ``hpa_sync`` seconds (or at once when the spec changed)."""
import copy
import math
import time

from .. import metrics
from ..store import now_iso
from .common import DEPLOY, HPA, RS, STS, Controller, set_condition


class HorizontalPodAutoscalers(Controller):
    name = "hpas"

    def __init__(self, loop):
        super().__init__(loop)
        self.hpa_last = {}        # hpa uid -> monotonic of last evaluation
        self.hpa_recs = {}        # hpa uid -> [(monotonic, recommendation)]

    def reconcile(self):
        now = time.monotonic()
        for h in self.c.store.list(HPA):
            uid = h["metadata"]["uid"]
            last = self.hpa_last.get(uid)
            gen_changed = (h.get("status") or {}).get("observedGeneration") != \
                h["metadata"].get("generation")
            if last is not None and now - last < self.cfg.hpa_sync and not gen_changed:
                self.wake_at(last + self.cfg.hpa_sync)
                continue
            self.hpa_last[uid] = now
            self.wake_at(now + self.cfg.hpa_sync)
            self._hpa(h)

    def _hpa(self, h):
        meta, spec = h["metadata"], h["spec"]
        ns = meta["namespace"]
        ref = spec.get("scaleTargetRef") or {}
        skey = {"Deployment": DEPLOY, "StatefulSet": STS, "ReplicaSet": RS}.get(ref.get("kind"))
        target = self.c.store.get(skey, ns, ref.get("name")) if skey else None
        st = copy.deepcopy(h.get("status") or {})
        conds = st.setdefault("conditions", [])
        now = now_iso()
        mn, mx = spec.get("minReplicas", 1), spec.get("maxReplicas", 1)
        target_util = None
        for m in spec.get("metrics") or []:
            if m.get("type") == "Resource" and m.get("resource", {}).get("name") == "cpu":
                target_util = (m["resource"].get("target") or {}).get("averageUtilization")
        if not spec.get("metrics"):
            target_util = 80
        if target is None:
            set_condition(conds, "AbleToScale", "False", "FailedGetScale",
                          'the HPA controller was unable to get the target\'s current scale: '
                          '%s "%s" not found' % ((ref.get("kind") or "").lower() + "s",
                                                 ref.get("name")), now)
            st.update({"currentReplicas": 0, "desiredReplicas": 0})
            self._hpa_status(h, st)
            return
        current = target["spec"].get("replicas", 1)
        util = metrics.effective_utilization(self.c, target)
        st["currentReplicas"] = (target.get("status") or {}).get("replicas", 0)
        if current == 0 and mn > 0:
            set_condition(conds, "AbleToScale", "True", "SucceededGetScale",
                          "the HPA controller was able to get the target's current scale", now)
            set_condition(conds, "ScalingActive", "False", "ScalingDisabled",
                          "scaling is disabled since the replica count of the target is zero",
                          now)
            st["desiredReplicas"] = 0
            st.pop("currentMetrics", None)
            self._hpa_status(h, st)
            return
        desired = current
        reason = None
        if target_util:
            ratio = float(util) / float(target_util)
            if abs(ratio - 1.0) > 0.1:
                desired = int(math.ceil(current * ratio))
                reason = "cpu resource utilization (percentage of request) %s target" % (
                    "above" if ratio > 1 else "below")
                if ratio < 1:
                    reason = "All metrics below target"
        # scale-down stabilisation (behavior.scaleDown.stabilizationWindowSeconds, default
        # 300 s, scaled by the lab's time factor): use the highest recommendation in the window
        window = (((spec.get("behavior") or {}).get("scaleDown") or {}).get(
            "stabilizationWindowSeconds", 300)) * self.cfg.time_factor
        mono = time.monotonic()
        recs = [r for r in self.hpa_recs.get(meta["uid"], []) if mono - r[0] <= window]
        recs.append((mono, desired))
        self.hpa_recs[meta["uid"]] = recs
        if desired < current:
            stabilized = max(r[1] for r in recs)
            if stabilized > desired:
                desired = min(stabilized, current)
                if desired == current:
                    reason = None
        limited = None
        if desired > mx:
            desired, limited = mx, ("TooManyReplicas", "the desired replica count is more than "
                                    "the maximum replica count")
            if current > mx:
                reason = "Current number of replicas above Spec.MaxReplicas"
        elif desired < mn:
            desired, limited = mn, ("TooFewReplicas", "the desired replica count is less than "
                                    "the minimum replica count")
            if current < mn:
                reason = "Current number of replicas below Spec.MinReplicas"
        set_condition(conds, "ScalingActive", "True", "ValidMetricFound",
                      "the HPA was able to successfully calculate a replica count from cpu "
                      "resource utilization (percentage of request)", now)
        if limited:
            set_condition(conds, "ScalingLimited", "True", limited[0], limited[1], now)
        else:
            set_condition(conds, "ScalingLimited", "False", "DesiredWithinRange",
                          "the desired count is within the acceptable range", now)
        if desired != current:
            def scale(o, desired=desired):
                o["spec"]["replicas"] = desired
            self.c.mutate(skey, ns, ref["name"], scale)
            st["lastScaleTime"] = now
            set_condition(conds, "AbleToScale", "True", "SucceededRescale",
                          "the HPA controller was able to update the target scale to %d"
                          % desired, now)
            self.c.event(h, "SuccessfulRescale", "New size: %d; reason: %s" % (
                desired, reason or "All metrics below target"),
                component="horizontal-pod-autoscaler")
        else:
            set_condition(conds, "AbleToScale", "True", "ReadyForNewScale",
                          "recommended size matches current size", now)
        st["desiredReplicas"] = desired
        cpu_req = 0.0
        for c in (target["spec"].get("template") or {}).get("spec", {}).get("containers") or []:
            cpu_req += metrics.parse_cpu(((c.get("resources") or {}).get("requests") or {})
                                         .get("cpu")) or 0.1
        st["currentMetrics"] = [{"type": "Resource", "resource": {"name": "cpu", "current": {
            "averageUtilization": int(util),
            "averageValue": "%dm" % int(cpu_req * 1000 * util / 100.0)}}}]
        self._hpa_status(h, st)

    def _hpa_status(self, h, st):
        st["observedGeneration"] = h["metadata"].get("generation", 1)
        order = {"AbleToScale": 0, "ScalingActive": 1, "ScalingLimited": 2}
        st["conditions"].sort(key=lambda c: order.get(c["type"], 3))
        if st != (h.get("status") or {}):
            def put(o, st=st):
                o["status"] = st
            self.c.mutate(HPA, h["metadata"]["namespace"], h["metadata"]["name"], put,
                          sub="status")
