"""Job: pods up to parallelism until completions succeed or backoffLimit is passed; the
Complete / Failed conditions."""
import copy

from ..store import now_iso
from .common import JOBS, PODS, Controller, controller_uid, create_pod_from, pod_active, pod_ready, set_condition


class Jobs(Controller):
    name = "jobs"

    def reconcile(self):
        for j in self.c.store.list(JOBS):
            meta, spec = j["metadata"], j["spec"]
            if meta.get("deletionTimestamp"):
                continue
            ns = meta["namespace"]
            st = copy.deepcopy(j.get("status") or {})
            finished = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                           for c in st.get("conditions") or [])
            pods = [p for p in self.c.store.list(PODS, ns) if controller_uid(p) == meta["uid"]]
            succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
            failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
            active = [p for p in pods if pod_active(p)]
            completions = spec.get("completions", 1)
            if not finished and not spec.get("suspend"):
                if succeeded >= completions:
                    now = now_iso()
                    conds = st.setdefault("conditions", [])
                    set_condition(conds, "SuccessCriteriaMet", "True", "CompletionsReached",
                                  "Reached expected number of succeeded pods", now)
                    set_condition(conds, "Complete", "True", "CompletionsReached",
                                  "Reached expected number of succeeded pods", now)
                    for c in conds:
                        c["lastProbeTime"] = now
                    st["completionTime"] = now
                    self.c.event(j, "Completed", "Job completed", component="job-controller")
                elif failed > spec.get("backoffLimit", 6):
                    now = now_iso()
                    conds = st.setdefault("conditions", [])
                    set_condition(conds, "FailureTarget", "True", "BackoffLimitExceeded",
                                  "Job has reached the specified backoff limit", now)
                    set_condition(conds, "Failed", "True", "BackoffLimitExceeded",
                                  "Job has reached the specified backoff limit", now)
                    for c in conds:
                        c["lastProbeTime"] = now
                    self.c.event(j, "BackoffLimitExceeded", "Job has reached the specified "
                                 "backoff limit", "Warning", "job-controller")
                elif len(active) < min(spec.get("parallelism", 1), completions - succeeded):
                    create_pod_from(self.c, j, spec["template"], meta["name"] + "-")
                    active = [p for p in self.c.store.list(PODS, ns)
                              if controller_uid(p) == meta["uid"] and pod_active(p)]
            st["startTime"] = st.get("startTime") or now_iso()
            st["active"] = len(active) if not finished else 0
            st["ready"] = sum(1 for p in active if pod_ready(p))
            st["succeeded"] = succeeded
            st["failed"] = failed
            st["terminating"] = 0
            st["uncountedTerminatedPods"] = {}
            for k in ("active", "succeeded", "failed"):
                if not st[k]:
                    st.pop(k)
            if st != (j.get("status") or {}):
                def put(o, st=st):
                    o["status"] = st
                self.c.mutate(JOBS, ns, meta["name"], put, sub="status")
