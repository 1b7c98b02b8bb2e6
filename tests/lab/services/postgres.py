"""PostgreSQL 15: the primary (WAL archiving, TLS with the lab CA) and a streaming standby
cloned from it with pg_basebackup; a shared template cluster makes a new lab's primary cheap."""
import hashlib
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .procs import (START_TIMEOUT, LabError, clean_env, pid_alive, read_pid, rotate_log, say, status_row, tail,
                    wait_until)
from .state import write_private

PG_BIN = Path(os.environ.get("APEX_PG_BIN", "/usr/lib/postgresql/15/bin"))
REPLICATION_ROLE = "replicator"
PG_TEMPLATE_REVISION = 1  # bump when the template's contents (roles, databases, extensions) change


class Postgres:
    """Both servers of one lab: ``ensure_primary``, ``ensure_standby`` (idempotent), ``stop``."""

    def __init__(self, state):
        self.state = state
        self.pg = state.pg
        self.pg_primary, self.pg_standby = state.pg_primary, state.pg_standby
        self.pg_run, self.pg_log, self.pg_tls = state.pg_run, state.pg_log, state.pg_tls
        self.wal_archive, self.wal_archive_standby = state.wal_archive, state.wal_archive_standby
        self.ca_dir = state.ca_dir
        self.run = state.run

    def psql(self, port, sql, db="postgres", check=True):
        """Run SQL as the postgres OS user over the lab's unix socket (peer auth); SQL on stdin
        so no password ever appears on a command line."""
        return self.run([PG_BIN / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                         "-h", self.pg_run, "-p", port, "-d", db, "-f", "-"],
                        as_postgres=True, input=sql, check=check, timeout=60)

    def pid(self, datadir):
        """The postmaster pid if a postmaster really runs on ``datadir`` (stale pidfiles → None)."""
        pid = read_pid(datadir / "postmaster.pid")
        if not pid or not pid_alive(pid):
            return None
        try:
            if os.readlink("/proc/%d/cwd" % pid) != str(datadir):
                return None
        except OSError:
            return None
        return pid

    @staticmethod
    def ready(port):
        """What pg_isready does, in-process (no fork+exec on the idempotent path): send a startup
        packet; an authentication request means the server accepts connections, SQLSTATE 57P03
        (cannot_connect_now: starting up, shutting down, not yet consistent) means it does not.
        Hanging up during authentication is not logged by the server."""
        import struct
        params = b"user\0postgres\0database\0postgres\0application_name\0lab-ping\0\0"
        packet = struct.pack("!ii", 8 + len(params), 196608) + params
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(packet)
                head = b""
                while len(head) < 5:
                    chunk = sock.recv(5 - len(head))
                    if not chunk:
                        return False
                    head += chunk
                kind, length = head[:1], struct.unpack("!i", head[1:])[0]
                body = b""
                while len(body) < length - 4:  # read it all: unread data would make close() a RST,
                    chunk = sock.recv(length - 4 - len(body))  # which the server logs
                    if not chunk:
                        break
                    body += chunk
                if kind == b"R":
                    return True
                if kind != b"E":
                    return False
                fields = {f[:1]: f[1:] for f in body.split(b"\0") if f}
                return fields.get(b"C") != b"57P03"
        except (OSError, struct.error):
            return False

    def in_recovery(self, port):
        proc = self.psql(port, "SELECT pg_is_in_recovery();", check=False)
        out = proc.stdout.strip()
        return None if proc.returncode else out == "t"

    def _write_conf(self, datadir, port, standby):
        def q(value):
            return "'%s'" % str(value).replace("'", "''")
        archive = shlex.quote(str(self.wal_archive))
        own_archive = shlex.quote(str(self.wal_archive_standby if standby else self.wal_archive))
        lines = [
            "# Written by tests/lab/lab.py at every start; edit tests/lab/services/postgres.py, not this file.",
            "listen_addresses = '127.0.0.1'",
            "port = %d" % port,
            "unix_socket_directories = %s" % q(self.pg_run),
            "password_encryption = 'scram-sha-256'",
            "ssl = on",
            "ssl_cert_file = %s" % q(self.pg_tls / "server.crt"),
            "ssl_key_file = %s" % q(self.pg_tls / "server.key"),
            "ssl_ca_file = %s" % q(self.ca_dir / "ca.crt"),
            "wal_level = replica",
            "wal_log_hints = on",  # pg_rewind can rebuild an old primary as a standby (failback)
            "archive_mode = on",
            # never overwrites a segment; copies under a temporary name and renames, so a segment
            # in the archive is always complete (a crash mid-copy leaves only a .tmp behind)
            "archive_command = %s" % q("test ! -f {a}/%f && cp %p {a}/%f.tmp && mv -f {a}/%f.tmp {a}/%f"
                                       .format(a=own_archive)),
            "max_wal_senders = 10",
            "max_replication_slots = 10",
            "wal_keep_size = '256MB'",
            "hot_standby = on",
            "hot_standby_feedback = on",
            "shared_preload_libraries = 'pg_stat_statements'",
            "pg_stat_statements.track = all",
            "track_io_timing = on",
            "fsync = off",  # a lab: speed over crash safety of the host
            "log_line_prefix = '%m [%p] %q%u@%d '",
            "log_connections = off",
            "dynamic_shared_memory_type = posix",
        ]
        if standby:
            lines.append("restore_command = %s" % q("cp %s/%%f %%p" % archive))
        conf = datadir / "lab.conf"
        content = "\n".join(lines) + "\n"
        try:
            changed = conf.read_text() != content
        except OSError:
            changed = True
        if changed:
            conf.write_text(content)
            pw = pwd.getpwnam("postgres")
            os.chown(str(conf), pw.pw_uid, pw.pw_gid)
            os.chmod(str(conf), 0o600)
        main = datadir / "postgresql.conf"
        text = main.read_text()
        if "include_if_exists = 'lab.conf'" not in text:
            main.write_text(text.rstrip("\n") + "\n\n# apex.ops lab settings (tests/lab/lab.py)\n"
                                                "include_if_exists = 'lab.conf'\n")
            changed = True
        return changed

    def _reload_if_changed(self, datadir, name, port, standby):
        """A running server whose lab.conf is out of date (lab.py changed) gets the new file and
        a reload; settings that need a restart wait for the next one (pg_settings.pending_restart)."""
        if self._write_conf(datadir, port, standby):
            self.run([PG_BIN / "pg_ctl", "-D", datadir, "reload"], as_postgres=True, check=False, timeout=30)
            say("PostgreSQL %s: lab.conf updated and reloaded" % name)

    def _write_hba(self, datadir):
        hba = datadir / "pg_hba.conf"
        hba.write_text(
            "# Written by tests/lab/lab.py (services/postgres.py).\n"
            "# TCP only on 127.0.0.1, always scram; peer for the OS user postgres.\n"
            "local   all          postgres                 peer\n"
            "local   replication  postgres                 peer\n"
            "local   all          all                      scram-sha-256\n"
            "host    all          all        127.0.0.1/32  scram-sha-256\n"
            "host    replication  all        127.0.0.1/32  scram-sha-256\n")
        pw = pwd.getpwnam("postgres")
        os.chown(str(hba), pw.pw_uid, pw.pw_gid)
        os.chmod(str(hba), 0o600)

    def _remove_stale_pid(self, datadir, port=None):
        """After a crash: drop postmaster.pid and the socket lock whose postmaster is gone.

        PostgreSQL itself treats a pid that still exists as alive, and a killed postmaster can
        linger as a zombie for a moment (or its pid can be reused), which makes it refuse to
        start; lab.py checks the pid really is a live postmaster on that data directory."""
        pidfile = datadir / "postmaster.pid"
        if pidfile.exists() and not self.pid(datadir):
            say("removing stale %s" % pidfile)
            pidfile.unlink()
        if port:
            lock = self.pg_run / (".s.PGSQL.%d.lock" % port)
            pid = read_pid(lock)
            if lock.exists() and not (pid and pid_alive(pid, "postgres")):
                say("removing stale %s" % lock)
                lock.unlink()
                (self.pg_run / (".s.PGSQL.%d" % port)).unlink(missing_ok=True)

    def _start(self, datadir, name, port):
        self._remove_stale_pid(datadir, port)
        log = self.pg_log / ("%s.log" % name)
        rotate_log(log)
        proc = self.run([PG_BIN / "pg_ctl", "-D", datadir, "-l", log, "-w", "-t", str(START_TIMEOUT), "start"],
                        as_postgres=True, check=False, timeout=START_TIMEOUT + 10)
        if proc.returncode != 0:
            raise LabError("PostgreSQL %s did not start:\n%s%s\n--- %s ---\n%s"
                           % (name, proc.stdout, proc.stderr, log, tail(log)))

    def ensure_primary(self):
        datadir = self.pg_primary
        if self.pid(datadir):
            port = self.state.ports["pg_primary"]
            wait_until(lambda: self.ready(port), START_TIMEOUT, "PostgreSQL primary on %d" % port,
                       log=self.pg_log / "primary.log")
            self._reload_if_changed(datadir, "primary", port, standby=False)
            return False
        self._remove_stale_pid(datadir)
        fresh = not (datadir / "PG_VERSION").exists()
        if fresh:
            # built next to it and renamed: an interrupted `up` never leaves a half-made cluster
            # that the next `up` would mistake for a real one
            building = self._fresh_dir(datadir)
            template = self.template()
            if template:
                self.run(["cp", "-a", template, building], timeout=120)
            else:
                self._initdb(building, self.pg)
            self._write_hba(building)
            os.rename(str(building), str(datadir))
            (self.pg / "primary.setup-done").unlink(missing_ok=True)
        port = self.state.claim_port("pg_primary")
        self._write_conf(datadir, port, standby=False)
        self._start(datadir, "primary", port)
        if not (self.pg / "primary.setup-done").exists():
            self._setup(port)
            (self.pg / "primary.setup-done").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        say("PostgreSQL primary up on 127.0.0.1:%d%s" % (port, " (new cluster)" if fresh else ""))
        return True

    @staticmethod
    def _fresh_dir(datadir):
        """Remove ``datadir`` (no PG_VERSION: never a real cluster) and any leftover of an
        interrupted build; return the path to build the new cluster in."""
        building = datadir.with_name(datadir.name + ".building")
        for path in (datadir, building):
            if path.exists():
                shutil.rmtree(str(path))
        return building

    def _initdb(self, datadir, scratch, password=None):
        pwfile = scratch / ".pwfile"
        write_private(pwfile, (password or self.state.secrets["postgres_password"]) + "\n")
        pw = pwd.getpwnam("postgres")
        os.chown(str(pwfile), pw.pw_uid, pw.pw_gid)
        try:
            self.run([PG_BIN / "initdb", "-D", datadir, "-U", "postgres", "--pwfile", pwfile,
                      "--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                      "--no-sync"], as_postgres=True, timeout=120, cwd=scratch)
        finally:
            pwfile.unlink()

    def template(self):
        """A pristine, cleanly shut down cluster with the lab's roles, databases and extension
        (passwords are reset per lab by _pg_setup), shared by every lab on this machine: copying
        it costs ~0.1 s where initdb + setup cost ~2 s (and 5 s on a loaded machine), which is what
        makes private labs for destructive tests cheap. Built once, atomically (rename); on any
        failure the caller falls back to initdb. APEX_LAB_PG_TEMPLATE=off disables it."""
        root = os.environ.get("APEX_LAB_PG_TEMPLATE", "/var/tmp/apex-lab-pg-template")
        if root == "off":
            return None
        version = self.run([PG_BIN / "postgres", "--version"]).stdout.strip()
        key = hashlib.sha256(("%s|%s|%s" % (version, PG_TEMPLATE_REVISION, PG_BIN)).encode()).hexdigest()[:12]
        final = Path(root) / key
        if (final / "data" / "PG_VERSION").exists() and (final / "complete").exists():
            return final / "data"
        pw = pwd.getpwnam("postgres")
        try:
            Path(root).mkdir(parents=True, exist_ok=True)
            os.chmod(root, 0o755)
            import tempfile
            tmp = Path(tempfile.mkdtemp(prefix="build-", dir=root))
            os.chmod(str(tmp), 0o755)
            os.chown(str(tmp), pw.pw_uid, pw.pw_gid)
            data, run = tmp / "data", tmp / "run"
            run.mkdir()
            os.chown(str(run), pw.pw_uid, pw.pw_gid)
            import secrets as _s
            self._initdb(data, tmp, _s.token_hex(16))
            port = self.state.pick_port(set(self.state.ports.values()) | self.state.foreign_lab_ports())
            conf = data / "postgresql.conf"
            conf.write_text(conf.read_text() + "\n# template build\nlisten_addresses = ''\nport = %d\n"
                            "unix_socket_directories = '%s'\nfsync = off\n" % (port, run))
            self.run([PG_BIN / "pg_ctl", "-D", data, "-w", "-t", "60", "-l", tmp / "build.log", "start"],
                     as_postgres=True, cwd=tmp, timeout=90)
            try:
                self.run([PG_BIN / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", run, "-p", port,
                          "-d", "postgres", "-f", "-"], as_postgres=True, cwd=tmp, timeout=60,
                         input=self._setup_sql({k: _s.token_hex(16) for k in
                                                ("apex_password", "replication_password", "postgres_password")}))
            finally:
                self.run([PG_BIN / "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "60", "stop"],
                         as_postgres=True, cwd=tmp, timeout=90)
            # back to the stock postgresql.conf: lab.py adds its include at every start
            conf.write_text(conf.read_text().split("\n# template build\n")[0])
            for junk in ("postmaster.opts", "log"):
                path = data / junk
                if path.is_dir():
                    shutil.rmtree(str(path))
                elif path.exists():
                    path.unlink()
            (tmp / "complete").write_text(version + "\n")
            try:
                os.rename(str(tmp), str(final))
            except OSError:  # another lab built it meanwhile
                shutil.rmtree(str(tmp), ignore_errors=True)
            return final / "data" if (final / "complete").exists() else None
        except (OSError, LabError, subprocess.SubprocessError) as exc:
            say("no PostgreSQL template (%s); using initdb" % str(exc).splitlines()[0])
            return None

    def _setup_sql(self, s):
        def lit(v):
            return "'%s'" % v.replace("'", "''")
        return """
SELECT 'CREATE ROLE apex LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'apex')\\gexec
ALTER ROLE apex WITH LOGIN PASSWORD {apex};
SELECT 'CREATE ROLE {repl} LOGIN REPLICATION' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{repl}')\\gexec
ALTER ROLE {repl} WITH LOGIN REPLICATION PASSWORD {replpw};
ALTER ROLE postgres WITH PASSWORD {pg};
SELECT 'CREATE DATABASE apex OWNER apex' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'apex')\\gexec
SELECT 'CREATE DATABASE helm OWNER apex' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'helm')\\gexec
\\c apex
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
""".format(apex=lit(s["apex_password"]), repl=REPLICATION_ROLE, replpw=lit(s["replication_password"]),
           pg=lit(s["postgres_password"]))

    def _setup(self, port):
        self.psql(port, self._setup_sql(self.state.secrets))

    def ensure_standby(self, rebuild=False):
        datadir = self.pg_standby
        if rebuild:
            pid = self.pid(datadir)
            if pid:
                self.stop(datadir, "standby")
            if datadir.exists():
                shutil.rmtree(str(datadir))
            for f in self.wal_archive_standby.iterdir():
                f.unlink()
        if self.pid(datadir):
            port = self.state.ports["pg_standby"]
            wait_until(lambda: self.ready(port), START_TIMEOUT, "PostgreSQL standby on %d" % port,
                       log=self.pg_log / "standby.log")
            self._reload_if_changed(datadir, "standby", port, standby=True)
            return False
        self._remove_stale_pid(datadir)
        fresh = not (datadir / "PG_VERSION").exists()
        primary_port = self.state.ports["pg_primary"]
        if fresh:
            building = self._fresh_dir(datadir)
            env = dict(clean_env(), PGPASSWORD=self.state.secrets["replication_password"], PGSSLMODE="disable",
                       PGAPPNAME="apex-standby")
            self.run([PG_BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", primary_port, "-U", REPLICATION_ROLE,
                      "-D", building, "-R", "-X", "stream", "-c", "fast", "--no-sync"],
                     as_postgres=True, env=env, timeout=600)
            os.rename(str(building), str(datadir))
        port = self.state.claim_port("pg_standby")
        self._write_conf(datadir, port, standby=True)
        self._fix_primary_conninfo(datadir, primary_port)
        self._start(datadir, "standby", port)
        if fresh:
            wait_until(lambda: self.replication_state().get("state") == "streaming", 30,
                       "streaming replication to the standby", log=self.pg_log / "standby.log")
        say("PostgreSQL standby up on 127.0.0.1:%d%s" % (port, " (new clone of the primary)" if fresh else ""))
        return True

    def _fix_primary_conninfo(self, datadir, primary_port):
        """pg_basebackup -R recorded the primary's port; follow it if the primary moved."""
        auto = datadir / "postgresql.auto.conf"
        try:
            text = auto.read_text()
        except OSError:
            return
        import re
        new = re.sub(r"(primary_conninfo = '[^\n]*?\bport=)(\d+)", lambda m: m.group(1) + str(primary_port), text)
        if "application_name=" not in new:
            new = new.replace("primary_conninfo = '", "primary_conninfo = 'application_name=apex-standby ", 1)
        if new != text:
            auto.write_text(new)

    def unfence_primary(self):
        """Undo what a region failover's fence did to the primary (apex_replica state=fenced):
        the read-only default and the application role's refused logins."""
        self.psql(self.state.ports["pg_primary"],
                  "SET default_transaction_read_only = off;\n"  # this session: the reload comes last
                  "ALTER SYSTEM RESET default_transaction_read_only;\n"
                  "ALTER ROLE apex LOGIN;\n"
                  "SELECT pg_reload_conf();\n")

    def replication_state(self):
        out = self.psql(self.state.ports["pg_primary"],
                        "SELECT coalesce(application_name,''), state, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(),"
                        " replay_lsn), 0)::bigint FROM pg_stat_replication ORDER BY application_name;",
                        check=False).stdout.strip().splitlines()
        for line in out:
            app, state, lag = line.split("|")
            return {"application_name": app, "state": state, "replay_lag_bytes": int(lag)}
        return {}

    def stop(self, datadir, name):
        if not self.pid(datadir):
            self._remove_stale_pid(datadir) if datadir.exists() else None
            return True
        proc = self.run([PG_BIN / "pg_ctl", "-D", datadir, "-m", "fast", "-w", "-t", "60", "stop"],
                        as_postgres=True, check=False, timeout=90)
        if proc.returncode != 0 and self.pid(datadir):
            say("pg_ctl stop -m fast failed for %s, trying immediate: %s" % (name, proc.stderr.strip()))
            self.run([PG_BIN / "pg_ctl", "-D", datadir, "-m", "immediate", "-w", "-t", "30", "stop"],
                     as_postgres=True, check=False, timeout=60)
        return self.pid(datadir) is None

    def status_rows(self):
        rows = []
        p = self.state.ports
        for datadir, name, key in ((self.pg_primary, "pg-primary", "pg_primary"),
                                   (self.pg_standby, "pg-standby", "pg_standby")):
            pid = self.pid(datadir)
            ok = bool(pid) and self.ready(p[key])
            detail = "down"
            if ok:
                rec = self.in_recovery(p[key])
                if name == "pg-primary":
                    rep = self.replication_state()
                    detail = "accepting connections%s; replication: %s" % (
                        " (IN RECOVERY)" if rec else "",
                        "%s (lag %s bytes)" % (rep["state"], rep["replay_lag_bytes"]) if rep else "no standby attached")
                elif rec:
                    receiver = self.psql(p[key], "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver),"
                                                 " 'no wal receiver');", check=False).stdout.strip()
                    detail = ("standby, streaming from primary" if receiver == "streaming"
                              else "standby, NOT streaming (%s)" % (receiver or "unknown"))
                else:
                    detail = "PROMOTED (not in recovery)"
            rows.append(status_row(name, p.get(key), pid, ok, detail))
        return rows
