# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rebuild a PostgreSQL data directory as a streaming standby of another server (failback).

``pg_rewind`` first (fast: only the blocks that diverged), a fresh ``pg_basebackup`` when the
rewind is impossible (no ``wal_log_hints``/checksums, or the WAL it needs is gone). Server
programs run as argument lists, as ``os_user`` when given; passwords reach them through the
environment, never ``argv``. The target's own configuration files are kept (a rewind or a
backup copies the source's, whose port and archive settings are the other server's), the
diverged data directory is kept aside after a base backup, and the standby's
``primary_conninfo`` is written by this module (not ``-R``, which would record the superuser
connection used for the rewind).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import subprocess
import time

DEFAULT_KEEP = ("postgresql.conf", "pg_hba.conf", "pg_ident.conf")
OWN_SETTINGS = re.compile(r"^\s*(primary_conninfo|primary_slot_name|default_transaction_read_only)\s*=", re.M)


class RebuildError(Exception):
    def __init__(self, msg, last_state=None):
        super(RebuildError, self).__init__(msg)
        self.last_state = last_state


def conninfo(params):
    """libpq key=value string of the source without the password (it goes in PGPASSWORD)."""
    def q(value):
        return "'%s'" % str(value).replace("\\", "\\\\").replace("'", "\\'")
    parts = [("host", params["host"]), ("port", params["port"]), ("user", params["user"]),
             ("dbname", params.get("dbname")), ("sslmode", params.get("sslmode")),
             ("sslrootcert", params.get("sslrootcert")), ("application_name", params.get("application_name"))]
    return " ".join("%s=%s" % (k, q(v)) for k, v in parts if v not in (None, ""))


class Rebuilder(object):
    """One rebuild of ``data_dir``; ``run`` is injectable for tests."""

    def __init__(self, data_dir, bin_dir=None, os_user=None, log_file=None, run=subprocess.run, clock=time.time):
        self.data_dir = os.path.abspath(data_dir)
        self.bin_dir = bin_dir
        self.os_user = os_user
        self.log_file = log_file or os.path.join(os.path.dirname(self.data_dir),
                                                 os.path.basename(self.data_dir) + ".log")
        self._run = run
        self.clock = clock
        self.commands = []

    def program(self, name):
        return os.path.join(self.bin_dir, name) if self.bin_dir else name

    def run(self, argv, env=None, check=True, timeout=3600):
        self.commands.append(list(argv))
        kwargs = dict(capture_output=True, text=True, timeout=timeout, env=self.environment(env))
        if self.os_user:
            kwargs["user"] = self.os_user
        proc = self._run(argv, check=False, **kwargs)
        if check and proc.returncode != 0:
            raise RebuildError("%s failed (rc=%s): %s" % (os.path.basename(argv[0]), proc.returncode,
                                                          (proc.stderr or proc.stdout or "").strip()[-2000:]))
        return proc

    def environment(self, extra=None):
        """A clean environment: nothing of the caller's libpq settings (PGPASSWORD of the superuser
        must not reach the server started here), and the os_user's HOME (libpq, also the server's WAL
        receiver, reads ~/.postgresql; root's is not readable by postgres)."""
        env = dict((k, v) for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ"))
        env["HOME"] = os.environ.get("HOME", "/")
        if self.os_user:
            import pwd
            env["HOME"] = pwd.getpwnam(self.os_user).pw_dir
        env.update(extra or {})
        return env

    def running(self):
        return self.run([self.program("pg_ctl"), "status", "-D", self.data_dir], check=False).returncode == 0

    def stop(self):
        if self.running():
            proc = self.run([self.program("pg_ctl"), "stop", "-D", self.data_dir, "-m", "fast", "-w", "-t", "120"],
                            check=False)
            if proc.returncode != 0:
                self.run([self.program("pg_ctl"), "stop", "-D", self.data_dir, "-m", "immediate", "-w"])
            return True
        return False

    def start(self):
        self.run([self.program("pg_ctl"), "start", "-D", self.data_dir, "-w", "-t", "120", "-l", self.log_file])

    def read_kept(self, names):
        kept = {}
        for name in names:
            path = os.path.join(self.data_dir, name)
            if os.path.isfile(path):
                with open(path, "rb") as handle:
                    kept[name] = handle.read()
        return kept

    def write_file(self, path, data, mode=0o600):
        """Written as the os_user's file would be (owner taken from the data directory)."""
        tmp = path + ".apex-tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        st = os.stat(self.data_dir)
        os.chmod(tmp, mode)
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.rename(tmp, path)

    def rewind(self, source, password):
        return self.run([self.program("pg_rewind"), "--target-pgdata", self.data_dir,
                         "--source-server", conninfo(source)], env={"PGPASSWORD": password or ""}, check=False)

    def base_backup(self, replication, password):
        """A fresh copy beside the target, swapped in; the old directory is kept aside (its path returned)."""
        parent = os.path.dirname(self.data_dir)
        building = os.path.join(parent, ".%s.rebuilding" % os.path.basename(self.data_dir))
        if os.path.exists(building):
            self.run(["rm", "-rf", "--", building])
        env = {"PGPASSWORD": password or "", "PGAPPNAME": replication.get("application_name") or "apex-rebuild"}
        self.run([self.program("pg_basebackup"), "-h", str(replication["host"]), "-p", str(replication["port"]),
                  "-U", replication["user"], "-D", building, "-X", "stream", "-c", "fast"], env=env)
        aside = "%s.diverged-%s" % (self.data_dir, time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock())))
        os.rename(self.data_dir, aside)
        os.rename(building, self.data_dir)
        return aside

    def make_standby(self, kept, replication, password):
        """Put the target's own configuration back, drop the settings that belong to the other
        server (its primary_conninfo, a fence's read-only default), point it at the source."""
        for name, data in kept.items():
            self.write_file(os.path.join(self.data_dir, name), data)
        auto = os.path.join(self.data_dir, "postgresql.auto.conf")
        text = ""
        if os.path.exists(auto):
            with open(auto) as handle:
                text = handle.read()
        lines = [line for line in text.splitlines() if not OWN_SETTINGS.match(line)]
        info = dict(replication, dbname=None)
        conn = conninfo(info) + " password='%s'" % str(password or "").replace("\\", "\\\\").replace("'", "\\'")
        lines.append("primary_conninfo = '%s'" % conn.replace("'", "''"))
        self.write_file(auto, ("\n".join(lines) + "\n").encode())
        for stale in ("recovery.signal", "postmaster.pid"):
            path = os.path.join(self.data_dir, stale)
            if os.path.exists(path):
                os.unlink(path)
        self.write_file(os.path.join(self.data_dir, "standby.signal"), b"")

    def rebuild(self, source, source_password, replication, replication_password, method="auto",
                keep=DEFAULT_KEEP):
        """``source``: superuser connection to the new primary (pg_rewind); ``replication``: the
        standby's connection (replication role, ``application_name``). Returns what was done."""
        kept = self.read_kept(keep)
        stopped = self.stop()
        done = dict(stopped=stopped, kept_files=sorted(kept), method=None, rewind_error=None, diverged_copy=None)
        if method in ("auto", "rewind"):
            proc = self.rewind(source, source_password)
            if proc.returncode == 0:
                done["method"] = "pg_rewind"
            else:
                done["rewind_error"] = (proc.stderr or proc.stdout or "").strip()[-1000:]
                if method == "rewind":
                    raise RebuildError("pg_rewind failed: %s" % done["rewind_error"], last_state=done)
        if done["method"] is None:
            done["diverged_copy"] = self.base_backup(replication, replication_password)
            done["method"] = "pg_basebackup"
        self.make_standby(kept, replication, replication_password)
        self.start()
        return done
