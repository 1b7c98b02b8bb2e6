#!/usr/bin/env python3
"""The apex.ops lab: real services on 127.0.0.1, one command up, one down.

    python3 tests/lab/lab.py up               start everything (idempotent)
    python3 tests/lab/lab.py down             stop everything, no process left behind
    python3 tests/lab/lab.py status [--json]  one line per service; exit 1 if one is down
    python3 tests/lab/lab.py rebuild-standby  re-clone the standby from the primary
    python3 tests/lab/lab.py restart [SVC..]  stop the named services (default all), then up
    python3 tests/lab/lab.py destroy          down, then delete the lab directory

This file is the command line and the orchestrator (``Lab``); each service is a module of
``services/`` (postgres, redis, moto, kubesim, twin, prometheus, alertmanager, pki, env), sharing ``services/procs.py``
(processes, ports, waits) and ``services/state.py`` (layout, ports.json, secrets, lock).

State lives in ``<repo>/.lab`` (or ``$APEX_LAB_DIR``). Only the standard library is imported at
start-up; ``cryptography`` (lab CA) and ``boto3`` (moto resources) are imported lazily, after
``install-deps.sh`` has made sure they exist. See docs/lab.md.
"""
import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from services.alertmanager import Alertmanager
from services.deps import ensure_deps
from services.env import write_env
from services.exporter import Exporter
from services.kubesim import Kubesim
from services.moto import Moto
from services.pki import ensure_pki
from services.postgres import Postgres
from services.prometheus import Prometheus
from services.procs import Background, LabError, pick_port, say, stop_procs
from services.redis import Redis
from services.state import LabState
from services.twin import Twin
from services.webhook_sink import WebhookSink

# what tests and benchmarks import from here (tests/lab is on their sys.path)
__all__ = ("Lab", "LabError", "main", "pick_port", "private_lab")


class Lab:
    """The orchestrator: brings the services up in order (some in parallel), stops them in
    reverse, reports their status. Each service lives in ``services/<name>.py``."""

    STOP_ORDER = ("exporter", "twin", "kubesim", "prometheus", "alertmanager", "moto", "webhook-sink", "redis",
                  "pg-standby", "pg-primary")
    # spawned early and made ready in the background (a binary each, ready in about a second)
    MONITORING = ("prometheus", "alertmanager")

    def __init__(self, lab_dir=None):
        self.state = LabState(lab_dir)
        self.postgres = Postgres(self.state)
        self.redis = Redis(self.state)
        self.moto = Moto(self.state)
        self.kubesim = Kubesim(self.state)
        self.twin = Twin(self.state)
        self.prometheus = Prometheus(self.state)
        self.alertmanager = Alertmanager(self.state)
        self.exporter = Exporter(self.state)
        self.webhook_sink = WebhookSink(self.state)

    def up(self):
        t0 = time.monotonic()
        state = self.state
        with state.lock():
            ensure_deps()  # under the lock: two concurrent ups must not both run apt/pip
            state.ensure_layout()
            state.secrets  # noqa: B018 (generate once)
            state.assign_ports()
            ensure_pki(state)
            # moto and the simulator are spawned first and made ready in the background while
            # PostgreSQL starts (they are mostly Python imports); joined below
            moto_proc = self.moto.start()
            moto_job = Background(lambda: self.moto.ensure(moto_proc))
            kube_spawned = self.kubesim.start()
            monitoring = self._start_monitoring()
            changed, problems = [], []
            # one failing service does not keep the others down; `up` still exits 1
            for name, ensure in (("pg-primary", self.postgres.ensure_primary),
                                 ("pg-standby", self.postgres.ensure_standby),
                                 ("redis", self.redis.ensure), ("moto", moto_job.result),
                                 ("webhook-sink", self.webhook_sink.ensure)) + monitoring:
                try:
                    changed.append(ensure())
                except (LabError, OSError, subprocess.SubprocessError) as exc:
                    hint = ("\n(if the standby cannot follow the primary any more: lab.py rebuild-standby)"
                            if name == "pg-standby" else "")
                    problems.append("%s: %s%s" % (name, exc, hint))
            write_env(state)
            for name, ensure in (("kubesim", lambda: self.kubesim.ensure(kube_spawned)), ("twin", self.twin.ensure),
                                 ("exporter", self.exporter.ensure)):
                if name in state.skip:
                    say("%s skipped (APEX_LAB_SKIP)" % name)
                    continue
                if not state.package(name):
                    say("%s not started: tests/lab/%s/__main__.py does not exist yet" % (name, name))
                    continue
                try:
                    changed.append(ensure())
                except (LabError, OSError, subprocess.SubprocessError) as exc:
                    problems.append("%s: %s" % (name, exc))
            write_env(state)
        took = time.monotonic() - t0
        if problems:
            for p in problems:
                say("ERROR %s" % p)
            say("%d service(s) failed to come up (%.2fs); `lab.py status` shows the rest; env: %s"
                % (len(problems), took, state.env_file))
            return 1
        say("%s in %.2fs; env: %s  (. %s)" % ("lab up" if any(changed) else "lab already up, nothing to do",
                                              took, state.env_file, state.env_file))
        return 0

    def _start_monitoring(self):
        """Spawn Prometheus and Alertmanager without waiting; (name, join) pairs for ``up``."""
        jobs = ()
        for name in self.MONITORING:
            if name in self.state.skip:
                say("%s skipped (APEX_LAB_SKIP)" % name)
                continue
            service = getattr(self, name)

            def ensure(service=service):
                return service.ensure(service.start())
            jobs += ((name, Background(ensure).result),)
        return jobs

    def rebuild_standby(self):
        with self.state.lock():
            if not self.postgres.pid(self.state.pg_primary):
                raise LabError("the primary is not running; run `lab.py up` first")
            # unfenced first: the clone copies the primary's postgresql.auto.conf (its read-only default)
            self.postgres.unfence_primary()
            self.postgres.ensure_standby(rebuild=True)
            # the rest of the region layout a failover test changes (docs/failover.md)
            if self.moto.pid():
                self.moto.point_public_name("primary")
            if self.kubesim.pid():
                for deployment in ("apex-api", "apex-worker"):
                    self.kubesim.scale("secondary", deployment, 0)
            say("region layout restored: standby re-cloned, primary unfenced, apex. -> primary, "
                "secondary api/worker at 0")
        return 0

    def _stop_services(self, names):
        """Stop services in parallel; return a list of what is still running afterwards."""
        services = {"twin": self.twin, "kubesim": self.kubesim, "moto": self.moto, "redis": self.redis,
                    "prometheus": self.prometheus, "alertmanager": self.alertmanager, "exporter": self.exporter,
                    "webhook-sink": self.webhook_sink}
        procs = [p for n in names if n in services for p in services[n].procs()]
        leftovers = stop_procs(procs, bool(self.state.ports))
        for name in ("pg-standby", "pg-primary"):
            if name not in names:
                continue
            datadir = self.state.pg_standby if name == "pg-standby" else self.state.pg_primary
            pid = self.postgres.pid(datadir)
            if not pid:
                continue
            if self.postgres.stop(datadir, name):
                say("stopped PostgreSQL %s (pid %d)" % (name[3:], pid))
            else:
                leftovers.append("PostgreSQL %s (pid %d)" % (name[3:], pid))
        return leftovers

    def down(self, services=None):
        t0 = time.monotonic()
        if not self.state.dir.exists():
            say("no lab at %s" % self.state.dir)
            return 0
        leftovers = []
        with self.state.lock():
            wanted = [n for n in self.STOP_ORDER if services is None or n in services]
            # the Python services together, then Redis, then PostgreSQL (standby first)
            for phase in (("exporter", "twin", "kubesim", "prometheus", "alertmanager", "moto", "webhook-sink"),
                          ("redis",), ("pg-standby", "pg-primary")):
                names = [n for n in wanted if n in phase]
                if names:
                    leftovers += self._stop_services(names)
        if leftovers:
            say("still running: %s" % ", ".join(leftovers))
            return 1
        if services is None:
            say("lab down in %.2fs (data kept in %s)" % (time.monotonic() - t0, self.state.dir))
        return 0

    def restart(self, services):
        """Stop the named services (all when none are named) and bring the lab up again, e.g.
        after changing the twin's or the simulator's code."""
        unknown = set(services) - set(self.STOP_ORDER)
        if unknown:
            raise LabError("unknown service(s) %s; choose from %s" % (", ".join(sorted(unknown)),
                                                                   ", ".join(self.STOP_ORDER)))
        rc = self.down(set(services) if services else None)
        return rc or self.up()

    def destroy(self):
        rc = self.down()
        if rc == 0 and self.state.dir.exists():
            shutil.rmtree(str(self.state.dir))
            say("removed %s" % self.state.dir)
        return rc

    def status(self, as_json=False):
        if not self.state.ports:
            print("lab: no lab at %s (run `make lab-up`)" % self.state.dir, file=sys.stderr)
            return 1
        rows = []
        for service in (self.postgres, self.redis, self.moto, self.kubesim, self.twin, self.prometheus,
                        self.alertmanager, self.exporter, self.webhook_sink):
            rows += service.status_rows()
        bad = [r for r in rows if not r["healthy"] and not r["optional"]]
        if as_json:
            print(json.dumps({"lab_dir": str(self.state.dir), "healthy": not bad, "services": rows}, indent=2))
        else:
            print("%-12s %-12s %-8s %-7s %s" % ("SERVICE", "PORT", "PID", "HEALTH", "DETAIL"))
            for r in rows:
                health = "ok" if r["healthy"] else ("-" if r["detail"] == "skipped" else "DOWN")
                print("%-12s %-12s %-8s %-7s %s" % (r["service"], r["port"] if r["port"] is not None else "-",
                                                     r["pid"] or "-", health, r["detail"]))
            print("env: %s" % self.state.env_file)
        return 1 if bad else 0


@contextlib.contextmanager
def private_lab(skip=("kubesim", "twin", "prometheus", "alertmanager", "exporter"), keep=False):
    """A throw-away lab for destructive tests (failover, restore over the database, killing
    services), so the shared lab other tests use is never disturbed::

        sys.path.insert(0, "tests/lab"); from lab import private_lab
        with private_lab() as env:          # dict: the private lab's .lab/env
            ... psycopg.connect(env["APEX_PG_ADMIN_DSN"]) ...

    Starts in a few seconds (PostgreSQL primary + standby, Redis, moto; the twin and the
    simulator only if ``skip`` does not name them) and is destroyed on exit unless ``keep``."""
    import tempfile
    lab_dir = tempfile.mkdtemp(prefix="apex-lab-private.", dir="/tmp")
    env = dict(os.environ, APEX_LAB_DIR=lab_dir, APEX_LAB_SKIP=",".join(skip))
    cmd = [sys.executable, str(Path(__file__).resolve())]
    try:
        proc = subprocess.run(cmd + ["up"], env=env, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise LabError("private lab did not come up:\n%s" % proc.stderr)
        yield json.loads((Path(lab_dir) / "env.json").read_text())
    finally:
        if not keep:
            subprocess.run(cmd + ["destroy"], env=env, capture_output=True, timeout=300, check=False)
            shutil.rmtree(lab_dir, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lab.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab-dir", help="lab state directory (default: $APEX_LAB_DIR or <repo>/.lab)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start every service (idempotent)")
    sub.add_parser("down", help="stop every service")
    st = sub.add_parser("status", help="report each service; exit 1 when one is down")
    st.add_argument("--json", action="store_true")
    sub.add_parser("rebuild-standby", help="re-clone the standby from the primary (after a failover test)")
    sub.add_parser("destroy", help="down, then delete the lab directory")
    rs = sub.add_parser("restart", help="stop the named services (default: all), then up")
    rs.add_argument("services", nargs="*", metavar="SERVICE",
                    help="exporter, twin, kubesim, prometheus, alertmanager, moto, redis, pg-standby, pg-primary")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("lab: run as root (PostgreSQL runs as the postgres user via runuser)", file=sys.stderr)
        return 2
    lab = Lab(args.lab_dir)
    try:
        if args.cmd == "up":
            return lab.up()
        if args.cmd == "down":
            return lab.down()
        if args.cmd == "status":
            return lab.status(as_json=args.json)
        if args.cmd == "rebuild-standby":
            return lab.rebuild_standby()
        if args.cmd == "destroy":
            return lab.destroy()
        if args.cmd == "restart":
            return lab.restart(args.services)
    except LabError as exc:
        say("ERROR %s" % exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
