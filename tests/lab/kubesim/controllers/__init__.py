"""The controllers of one cluster, run by a single loop woken by store changes and timers.

One module per controller (each a ``common.Controller`` with its own state): the garbage
collector, node cordon events, the scheduler + kubelet (pods), Deployment, ReplicaSet,
StatefulSet, Job, CronJob, HPA, PDB (and the eviction check), Endpoints, and cert-manager.
``Controllers`` starts the loop and runs them in that order on every pass."""
import sys
import threading
import time
import traceback

from . import certmanager
from .cronjobs import CronJobs, cron_latest
from .deployments import Deployments
from .endpoints import Endpoints
from .garbage_collector import GarbageCollector
from .hpa import HorizontalPodAutoscalers
from .jobs import Jobs
from .kubelet import Kubelet, migration_args
from .nodes import NodeEvents
from .disruption_budgets import PodDisruptionBudgets
from .replicasets import ReplicaSets
from .statefulsets import StatefulSets

__all__ = ("Controllers", "cron_latest", "migration_args")  # what the unit tests import from here

# one pass, in this order: garbage, nodes, pods, workloads, autoscalers, budgets, endpoints
ORDER = (GarbageCollector, NodeEvents, Kubelet, Deployments, ReplicaSets, StatefulSets, Jobs,
         CronJobs, HorizontalPodAutoscalers, PodDisruptionBudgets, Endpoints)


class Controllers:
    def __init__(self, cluster, config, after_pass=None, pki=None):
        self.c = cluster
        self.cfg = config
        self.after_pass = after_pass
        self.pki = pki
        self.stopped = False
        self.errors_seen = set()
        self.timers = []
        self.steps = [cls(self) for cls in ORDER]
        self.thread = threading.Thread(target=self.run, name="controllers-" + cluster.name,
                                       daemon=True)
        self.passes = 0

    def start(self):
        self.thread.start()

    def wake_at(self, t):
        self.timers.append(t)

    def run(self):
        store = self.c.store
        seen = -1
        while not self.stopped:
            with self.c.lock:
                now = time.monotonic()
                nxt = min(self.timers) if self.timers else now + 1.0
                if store.rv == seen and nxt > now:
                    store.cond.wait(min(nxt - now, 1.0))
                seen = store.rv
            self.timers = [t for t in self.timers if t > time.monotonic()]
            try:
                self.reconcile()
                self.passes += 1
            except Exception as exc:
                if str(exc) not in self.errors_seen:
                    self.errors_seen.add(str(exc))
                    traceback.print_exc(file=sys.stderr)
                time.sleep(0.2)
            if self.after_pass:
                try:
                    self.after_pass()
                except Exception:
                    traceback.print_exc(file=sys.stderr)

    def reconcile(self):
        failed = []
        with self.c.lock:
            for step in self.steps:
                try:  # one controller tripping over an odd object must not stop the others
                    step.reconcile()
                except Exception:
                    failed.append(step.name)
                    text = traceback.format_exc()
                    if text not in self.errors_seen:  # each distinct failure logged once
                        if len(self.errors_seen) > 100:
                            self.errors_seen.clear()
                        self.errors_seen.add(text)
                        sys.stderr.write(text)
        if self.pki is not None:
            certmanager.reconcile(self)
        if failed:
            raise RuntimeError("controllers failed: %s" % ", ".join(failed))
