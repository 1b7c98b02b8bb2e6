"""CronJob: a Job for the latest missed schedule time (minute resolution, UTC),
concurrencyPolicy, history limits, and the status (active, lastScheduleTime,
lastSuccessfulTime)."""
import calendar
import copy
import time

from .. import registry
from .common import CRONJOBS, JOBS, Controller, controller_uid, get_condition, owner_ref


_CRON_ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                 "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
                 "@annually": "0 0 1 1 *"}


def _cron_field(text, lo, hi):
    values = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_s = part.split("/", 1)
            step = int(step_s)
        if part in ("*", "?"):
            a, b = lo, hi
        elif "-" in part:
            a, b = (int(x) for x in part.split("-", 1))
        else:
            a = b = int(part)
            if step != 1:
                b = hi
        if a < lo or b > hi or a > b:
            raise ValueError("cron field out of range: %s" % text)
        values.update(range(a, b + 1, step))
    return values


def cron_latest(schedule, after, until, first=False):
    """The latest (or, with first, the earliest) schedule time t with after < t <= until
    (epoch seconds, UTC, minute resolution); None if there is none. Scans at most 8 days."""
    sched = _CRON_ALIASES.get(schedule.strip(), schedule)
    parts = sched.split()
    if len(parts) != 5:
        raise ValueError("invalid schedule %r" % schedule)
    minute, hour = _cron_field(parts[0], 0, 59), _cron_field(parts[1], 0, 23)
    dom, month = _cron_field(parts[2], 1, 31), _cron_field(parts[3], 1, 12)
    dow = {d % 7 for d in _cron_field(parts[4], 0, 7)}
    dom_any, dow_any = parts[2] in ("*", "?"), parts[4] in ("*", "?")
    start = int(after // 60) * 60 + 60
    end = min(until, after + 8 * 86400)
    found = None
    t = start
    while t <= end:
        tm = time.gmtime(t)
        day_ok = (tm.tm_mday in dom) if dow_any else (
            ((tm.tm_wday + 1) % 7 in dow) if dom_any else
            (tm.tm_mday in dom or (tm.tm_wday + 1) % 7 in dow))
        if tm.tm_mon in month and day_ok and tm.tm_hour in hour and tm.tm_min in minute:
            if first:
                return t
            found = t
        t += 60
    return found


class CronJobs(Controller):
    name = "cronjobs"

    def __init__(self, loop):
        super().__init__(loop)
        self.cron_next = {}       # (cronjob uid, schedule, last schedule) -> next run (epoch)

    def reconcile(self):
        for cj in self.c.store.list(CRONJOBS):
            try:
                self._cron_schedule(cj)
            except ValueError:
                pass
        for cj in self.c.store.list(CRONJOBS):
            ns = cj["metadata"]["namespace"]
            active = [{"apiVersion": "batch/v1", "kind": "Job", "name": j["metadata"]["name"],
                       "namespace": ns, "uid": j["metadata"]["uid"],
                       "resourceVersion": j["metadata"]["resourceVersion"]}
                      for j in self.c.store.list(JOBS, ns) if controller_uid(j) ==
                      cj["metadata"]["uid"] and not get_condition(j, "Complete")
                      and not get_condition(j, "Failed")]
            st = copy.deepcopy(cj.get("status") or {})
            if active:
                st["active"] = active
            else:
                st.pop("active", None)
            done = [j for j in self.c.store.list(JOBS, ns) if controller_uid(j) ==
                    cj["metadata"]["uid"] and get_condition(j, "Complete")]
            if done:
                st["lastSuccessfulTime"] = max(j["status"].get("completionTime", "") for j in done)
            if st != (cj.get("status") or {}):
                def put(o, st=st):
                    o["status"] = st
                self.c.mutate(CRONJOBS, ns, cj["metadata"]["name"], put, sub="status")

    def _cron_schedule(self, cj):
        """Create the Job of the latest missed schedule time (minute resolution, UTC)."""
        spec = cj.get("spec") or {}
        if spec.get("suspend"):
            return
        meta = cj["metadata"]
        st = cj.get("status") or {}
        since = st.get("lastScheduleTime") or meta["creationTimestamp"]
        start = calendar.timegm(time.strptime(since[:19], "%Y-%m-%dT%H:%M:%S"))
        now = time.time()
        key = (meta["uid"], spec.get("schedule", ""), since)
        nxt = self.cron_next.get(key)
        if nxt is None:
            nxt = cron_latest(spec.get("schedule", ""), start, start + 8 * 86400,
                              first=True) or float("inf")
            if len(self.cron_next) > 1000:
                self.cron_next.clear()
            self.cron_next[key] = nxt
        if nxt > now:
            if nxt != float("inf"):
                self.wake_at(time.monotonic() + max(nxt - now, 0.5))
            return
        due = cron_latest(spec.get("schedule", ""), start, now)
        if due is None:
            return
        ns = meta["namespace"]
        jobs = [j for j in self.c.store.list(JOBS, ns) if controller_uid(j) == meta["uid"]]
        active = [j for j in jobs if not get_condition(j, "Complete") and
                  not get_condition(j, "Failed")]
        policy = spec.get("concurrencyPolicy", "Allow")
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due))
        if active and policy == "Forbid":
            return
        if active and policy == "Replace":
            for j in active:
                self.c.delete(registry.lookup("batch", "v1", "jobs"), ns, j["metadata"]["name"])
        jt = copy.deepcopy(spec.get("jobTemplate") or {})
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "%s-%d" % (meta["name"], int(due // 60)), "namespace": ns,
                            "labels": dict((jt.get("metadata") or {}).get("labels") or {}),
                            "annotations": {"batch.kubernetes.io/cronjob-scheduled-timestamp":
                                            iso},
                            "ownerReferences": [owner_ref(cj)]},
               "spec": jt.get("spec") or {}}
        if self.c.store.get(JOBS, ns, job["metadata"]["name"]) is None:
            self.c.create(registry.lookup("batch", "v1", "jobs"), job)
            self.c.event(cj, "SuccessfulCreate", "Created job %s" % job["metadata"]["name"],
                         component="cronjob-controller")

        def put(o, iso=iso):
            o.setdefault("status", {})["lastScheduleTime"] = iso
        self.c.mutate(CRONJOBS, ns, meta["name"], put, sub="status")
        # history limits
        for limit_key, cond in (("successfulJobsHistoryLimit", "Complete"),
                                ("failedJobsHistoryLimit", "Failed")):
            done = sorted((j for j in self.c.store.list(JOBS, ns)
                           if controller_uid(j) == meta["uid"] and get_condition(j, cond)),
                          key=lambda j: j["metadata"]["creationTimestamp"])
            limit = spec.get(limit_key, 3 if cond == "Complete" else 1)
            for j in done[:max(len(done) - limit, 0)]:
                self.c.delete(registry.lookup("batch", "v1", "jobs"), ns, j["metadata"]["name"],
                              propagation="Background")
