# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running pg_dump and pg_restore: finding them, feeding and draining their pipes, stopping them.

Every program runs as an argv list; credentials reach it through the environment (libpq's
``PGPASSWORD``, :func:`libpq_env`), never argv. Also here: :class:`BackupError` (the error every
backup, verify, restore and drain step raises, with ``details`` returned on failure),
termination signals turned into :class:`Interrupted` so cleanup runs, and
:class:`ProcessDeadline` (a child killed at an overall deadline).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time

from ansible_collections.apex.ops.plugins.module_utils import postgres as pg
from ansible_collections.apex.ops.plugins.module_utils import waiting
from ansible_collections.apex.ops.plugins.module_utils.s3_store import MIB

STDERR_TAIL = 16 * 1024


class BackupError(Exception):
    """A backup/verify/restore step failed; ``details`` is returned with the failure."""

    def __init__(self, msg, **details):
        super(BackupError, self).__init__(msg)
        self.details = details


class Interrupted(Exception):
    """The module received SIGTERM/SIGINT/SIGHUP (e.g. an Ansible task timeout)."""


@contextlib.contextmanager
def interruptible():
    """Turn termination signals into :class:`Interrupted` so cleanup (abort, kill) runs."""
    def handler(signum, frame):
        raise Interrupted("interrupted by signal %s" % signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def find_program(name, bin_dir=None):
    candidates = []
    if bin_dir:
        candidates.append(os.path.join(bin_dir, name))
    found = shutil.which(name)
    if found:
        candidates.append(found)
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise BackupError("%s not found (looked in %s and PATH); set pg_bin_dir" % (name, bin_dir or "-"))


def program_version(path):
    out = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=30, check=False)
    return out.stdout.decode("utf-8", "replace").strip()


def major_of(version_text):
    match = re.search(r"(\d+)(?:\.(\d+))?", version_text or "")
    return int(match.group(1)) if match else None


class TailReader(threading.Thread):
    """Drain a pipe in the background; keep the last ``limit`` bytes (stderr) or everything."""

    def __init__(self, pipe, limit=STDERR_TAIL):
        super(TailReader, self).__init__(daemon=True)
        self.pipe = pipe
        self.limit = limit
        self.data = b""
        self.start()

    def run(self):
        try:
            for chunk in iter(lambda: self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536), b""):
                self.data += chunk
                if self.limit and len(self.data) > self.limit:
                    self.data = self.data[-self.limit:]
        except (OSError, ValueError):
            pass

    def text(self, timeout=10):
        self.join(timeout)
        return self.data.decode("utf-8", "replace").strip()


_STDERR_ERROR_RE = re.compile(r"^(?:pg_dump|pg_restore)(?:\[[^\]]*\])?: (?:error|fatal): ", re.IGNORECASE)


def stderr_errors(text):
    """The ``pg_dump: error: ...`` (or ``fatal:``) lines of a program's stderr.

    pg_dump reports every failure this way; an exit status 0 with such a line is a dump that
    cannot be trusted (a wrapper or a future version swallowing the status), so the backup fails.
    ``warning:`` lines are kept in the manifest, not fatal.
    """
    return [line.strip() for line in (text or "").splitlines() if _STDERR_ERROR_RE.match(line.strip())]


def exit_description(program, returncode):
    if returncode is None:
        return "%s did not exit" % program
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return "%s was killed by signal %s" % (program, name)
    return "%s exited with status %d" % (program, returncode)


def widen_pipe(pipe, size=MIB):
    """Linux: a 1 MiB pipe instead of 64 KiB, so pg_dump rarely waits for the reader."""
    try:
        import fcntl
        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError, ValueError):
        pass


def stop_process(proc, grace=5.0):
    """Terminate, then kill, a child process; always reap it."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
    except OSError:
        pass


class Sink(object):
    """A child process fed on stdin (pg_restore): stdout/stderr drained in threads."""

    def __init__(self, name, argv, env, capture_stdout=False):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env, close_fds=True)
        self.stdout = TailReader(self.proc.stdout, limit=0) if capture_stdout else None
        self.stderr = TailReader(self.proc.stderr)
        self.open = True
        self.bytes_fed = 0

    def write(self, chunk):
        if not self.open:
            return False
        try:
            self.proc.stdin.write(chunk)
            self.bytes_fed += len(chunk)
            return True
        except (BrokenPipeError, ValueError):
            # the program stopped reading (pg_restore --list needs only the header): its exit
            # status tells whether that was fine
            self.open = False
            return False

    def finish(self, timeout=None):
        if self.open:
            try:
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            self.open = False
        self.proc.wait(timeout=timeout)
        return {
            "returncode": self.proc.returncode,
            "stdout": self.stdout.text() if self.stdout else "",
            "stderr": self.stderr.text(),
        }

    def kill(self):
        self.open = False
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
        stop_process(self.proc)


def restore_argv(pg_restore, dbname, clean=False, single_transaction=False, jobs=1, no_owner=False, path=None):
    argv = [pg_restore, "--dbname=%s" % dbname, "--exit-on-error", "--no-password"]
    if clean:
        argv += ["--clean", "--if-exists"]
    if single_transaction:
        argv.append("--single-transaction")
    if jobs and jobs > 1:
        argv.append("--jobs=%d" % jobs)
    if no_owner:
        argv.append("--no-owner")
    if path:
        argv.append(path)
    return argv


def libpq_env(params, dbname=None, appname="apex.ops-restore"):
    """The environment of a libpq program: ours plus the connection options (password included)."""
    env = dict(os.environ)
    env.update(pg.libpq_environment(params, dbname=dbname))
    env["PGAPPNAME"] = appname
    return env


class ProcessDeadline(object):
    """An overall deadline for a child process: at the deadline a timer kills it (and its group).

    Time is a ``waiting.Deadline`` (monotonic, injectable clock); ``seconds`` of ``None`` or
    ``<= 0`` never expires.
    """

    def __init__(self, seconds, clock=time.monotonic):
        self.seconds = seconds
        self.deadline = waiting.Deadline(seconds if seconds and seconds > 0 else None, clock=clock)
        self.expired = False
        self.timer = None
        self.terminated = []

    def remaining(self):
        return self.deadline.remaining()

    def check(self):
        if self.deadline.expired():
            self.expired = True
        return self.expired

    def watch(self, proc, group=False, before_kill=None):
        """At the deadline: ``before_kill()`` (terminate the server sessions), then SIGKILL the process
        (group). SIGKILL, not SIGTERM: pg_restore's handler first tries to cancel on the server, and a
        module blocked writing into its full stdin pipe must get EPIPE now."""
        if self.deadline.at is None:
            return

        def fire():
            if proc.poll() is not None:
                return  # finished just in time
            self.expired = True
            if before_kill is not None:
                self.terminated = before_kill()
            try:
                if group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            except OSError:
                pass

        self.timer = threading.Timer(self.remaining(), fire)
        self.timer.daemon = True
        self.timer.start()

    def cancel(self):
        """Stop the timer; if it is already firing, wait until it is done, so ``terminated`` is
        complete before anyone reads it (the main thread sees ``expired`` while the timer is still
        terminating the server sessions)."""
        if self.timer is not None:
            self.timer.cancel()
            if self.timer.is_alive() and self.timer is not threading.current_thread():
                self.timer.join(30)
