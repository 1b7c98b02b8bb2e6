"""Process supervision shared by every service: pids and pidfiles, starting and stopping
processes, ports, logs, readiness waits. Standard library only."""
import contextlib
import errno
import fcntl
import http.client
import os
import pwd
import random
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

PORT_RANGE = (20000, 30000)  # below the kernel's ephemeral range, so client sockets never take them
START_TIMEOUT = 60
LOG_ROTATE_BYTES = 64 * 1024 * 1024


class LabError(Exception):
    pass


class Background(threading.Thread):
    """Run ``fn`` in a thread; ``result()`` joins and returns its value or re-raises."""

    def __init__(self, fn):
        super().__init__(daemon=False)
        self._fn, self._value, self._error = fn, None, None
        self.start()

    def run(self):
        try:
            self._value = self._fn()
        except BaseException as exc:  # re-raised in the caller's thread
            self._error = exc

    def result(self):
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def say(msg):
    print("lab: %s" % msg, file=sys.stderr, flush=True)


def tail(path, lines=20):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log at %s)" % path
    # a standby's restore_command probes the archive for files that do not exist yet: noise
    # that would push the FATAL line that matters out of the tail
    text = [line for line in text if not line.startswith("cp: cannot stat ")]
    return "\n".join(text[-lines:])


def cmdline(pid):
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_alive(pid, marker=None):
    """True when ``pid`` runs and (if given) its command line contains ``marker``.

    The marker check stops a stale pidfile whose pid was reused by an unrelated process from
    being mistaken for our service (and from being signalled by ``down``)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    except (OSError, IndexError):
        return False
    return marker is None or marker in cmdline(pid)


def read_pid(pidfile):
    try:
        return int(Path(pidfile).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_pids(targets, timeout=20):
    """Stop several processes at once: ``targets`` is a list of (pid, marker, group). SIGTERM
    (to the process group when the process leads one) + SIGCONT, wait until all are gone,
    SIGKILL what is left. Returns the pids still alive (empty on success)."""
    live = []
    for pid, marker, group in targets:
        if not pid_alive(pid, marker):
            continue
        try:
            use_group = group and os.getpgid(pid) == pid
        except OSError:
            use_group = False
        live.append((pid, use_group))

    def _send(pid, use_group, sig):
        try:
            if use_group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _gone(pid, use_group):
        return not pid_alive(pid) and not (use_group and group_alive(pid))

    for pid, use_group in live:
        _send(pid, use_group, signal.SIGTERM)
        _send(pid, use_group, signal.SIGCONT)  # a stopped (SIGSTOP'ed) process would never act on it
    for sig, wait in ((None, timeout), (signal.SIGKILL, 5)):
        if sig is not None:
            for pid, use_group in live:
                _send(pid, use_group, sig)
        deadline = time.monotonic() + wait
        while live and time.monotonic() < deadline:
            live = [(p, g) for p, g in live if not _gone(p, g)]
            if live:
                time.sleep(0.05)
        if not live:
            return []
    return [p for p, _ in live]


def stop_pid(pid, marker, timeout=20, group=True):
    return not stop_pids([(pid, marker, group)], timeout)


def group_alive(pgid):
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def listening_inodes(port):
    """Socket inodes of TCP listeners on 127.0.0.1:port (from /proc/net/tcp)."""
    want = "0100007F:%04X" % port
    found = []
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) > 9 and fields[1] == want and fields[3] == "0A":
            found.append(fields[9])
    return found


def clean_env():
    """The caller's environment without libpq variables: lab.py talks to its own clusters with
    explicit -h/-p/-U, and a PGUSER/PGSSLMODE/PGOPTIONS from the caller must not change that."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def port_free(port):
    """Probe by binding 127.0.0.1:port (SO_REUSEADDR, as the services do, so TIME_WAIT is ok)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def pick_port(taken=()):
    """A random port in PORT_RANGE, not in ``taken``, free right now. Also used by test helpers
    (``from lab import pick_port``) for the ports of processes they start."""
    rng = random.SystemRandom()
    for _ in range(2000):
        port = rng.randrange(*PORT_RANGE)
        if port not in taken and port_free(port):
            return port
    raise LabError("no free port found in %s-%s" % PORT_RANGE)


def http_get(url_host, port, path, tls_ca=None, timeout=2.0, server_hostname=None):
    """Return (status, body) or raise OSError."""
    if tls_ca:
        ctx = ssl.create_default_context(cafile=str(tls_ca))
        conn = http.client.HTTPSConnection(url_host, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(url_host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def exited(proc, pid):
    """A ``gone`` check for :func:`wait_until`: the spawned ``proc`` (a Popen) has exited, or, for a
    service we did not spawn in this run (``proc`` None), ``pid()`` finds no process. A process we
    spawned is asked directly: the pidfile/command-line lookup once called a starting Alertmanager
    gone under load while it ran."""
    if proc is not None:
        return lambda: proc.poll() is not None
    return lambda: not pid()


def wait_until(check, timeout, what, interval=0.05, log=None, gone=None):
    """Poll ``check`` until truthy; ``gone`` (a callable) returning true means the process we
    wait for has exited: fail at once instead of waiting for the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        if gone is not None and gone():
            msg = "%s: the process exited" % what
            if log:
                msg += "\n--- %s ---\n%s" % (log, tail(log))
            raise LabError(msg)
        try:
            ok = check()
            last = ok
            if ok:
                return ok
        except Exception as exc:  # the last observed failure is reported on timeout
            last = exc
        if time.monotonic() >= deadline:
            msg = "%s not ready after %ss (last: %r)" % (what, timeout, last)
            if log:
                msg += "\n--- %s ---\n%s" % (log, tail(log))
            raise LabError(msg)
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


def answers(check, timeout):
    """True when ``check`` passes within ``timeout`` seconds (a running service that answers)."""
    try:
        wait_until(check, timeout, "health check")
        return True
    except LabError:
        return False


def run(argv, cwd, as_postgres=False, check=True, env=None, input=None, timeout=120):
    """Run a command to completion (as the postgres OS user when ``as_postgres``); raise
    LabError with its output when it fails and ``check``."""
    argv = [str(a) for a in argv]
    if as_postgres and os.geteuid() != pwd.getpwnam("postgres").pw_uid:
        argv = ["runuser", "-u", "postgres", "--"] + argv
    if env is None:
        env = clean_env()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, input=input, timeout=timeout,
                          cwd=str(cwd))
    if check and proc.returncode != 0:
        raise LabError("%s failed (rc=%s):\n%s%s" % (" ".join(shlex.quote(a) for a in argv[:6]),
                                                     proc.returncode, proc.stdout, proc.stderr))
    return proc


def find_pid(pidfile, marker, port=None):
    """The service's pid: from its pidfile or, when that is stale or lost (a service started
    by hand with the lab's environment), the process whose command line has ``marker``, that
    LISTENS on the lab's ``port`` and that belongs to this lab (adopted by rewriting the
    pidfile). The port is the proof against other helpers' tests, which run private
    twins/simulators with the same environment; belonging is the proof against another lab's
    service on the same port (two labs that once picked one port must not share a process)."""
    pid = read_pid(pidfile)
    if pid_alive(pid, marker):
        return pid
    if not port:
        return None
    inodes = listening_inodes(port)
    if not inodes:
        return None
    lab_dir = owning_lab_dir(pidfile)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        cand = int(entry)
        if marker not in cmdline(cand) + " " or not pid_alive(cand) or not belongs_to_lab(cand, lab_dir):
            continue
        try:
            links = {os.readlink("/proc/%d/fd/%s" % (cand, fd)) for fd in os.listdir("/proc/%d/fd" % cand)}
        except OSError:
            continue
        if any("socket:[%s]" % inode in links for inode in inodes):
            try:
                Path(pidfile).write_text("%d\n" % cand)
            except OSError:
                pass
            return cand
    return None


@contextlib.contextmanager
def exclusive_flock(path, timeout, mode=0o600, waiting=None):
    """Hold an exclusive flock on ``path`` (created with ``mode``), polling with a monotonic
    deadline; says ``waiting`` once if another process holds it. A file this user may not
    write is locked through a read-only descriptor (flock allows that)."""
    try:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT, mode)
    except PermissionError:
        fd = os.open(str(path), os.O_RDONLY)
    deadline = time.monotonic() + timeout
    told = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if waiting and not told:
                    say(waiting)
                    told = True
                if time.monotonic() > deadline:
                    raise LabError("timed out after %.0fs waiting for %s" % (timeout, path)) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def owning_lab_dir(path):
    """The lab directory ``path`` (a pidfile) lies in: its nearest parent holding ports.json."""
    for parent in Path(path).absolute().parents:
        if (parent / "ports.json").exists():
            return parent
    return None


def belongs_to_lab(pid, lab_dir):
    """The process runs for ``lab_dir``: its working directory is inside it (PostgreSQL,
    Prometheus, moto) or its environment names it as APEX_LAB_DIR (every service lab.py
    spawns, and one started by hand after sourcing the lab's env). Unknown: not ours."""
    if lab_dir is None:
        return False
    try:
        cwd = Path(os.readlink("/proc/%d/cwd" % pid))  # a physical path: compare with the resolved dir
        if any(d == cwd or d in cwd.parents for d in (lab_dir, lab_dir.resolve())):
            return True
        with open("/proc/%d/environ" % pid, "rb") as handle:
            environ = handle.read().split(b"\0")
    except OSError:
        return False
    return ("APEX_LAB_DIR=%s" % lab_dir).encode() in environ


def rotate_log(logfile, limit=LOG_ROTATE_BYTES):
    """Keep one previous generation (``x.log.1``) once a log passes ``limit`` at a start."""
    try:
        if Path(logfile).stat().st_size > limit:
            os.replace(str(logfile), str(logfile) + ".1")
    except OSError:
        pass


def spawn(argv, pidfile, logfile, env, cwd):
    logfile.parent.mkdir(parents=True, exist_ok=True)
    rotate_log(logfile)
    with open(str(logfile), "ab") as log:
        log.write(("\n--- %s start: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), " ".join(argv))).encode())
        log.flush()
        proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, cwd=str(cwd), start_new_session=True, close_fds=True)
    Path(pidfile).write_text("%d\n" % proc.pid)
    return proc


def stop_procs(procs, find=True):
    """Stop services' processes in parallel and remove their stale pidfiles; return "label (pid
    N)" for each process still running afterwards. ``procs`` holds (label, pidfile, marker,
    getpid); without ``find`` (no ports known) only the pidfiles are read."""
    leftovers = []
    found = []
    for label, pidfile, marker, getpid in procs:
        pid = getpid() if find else read_pid(pidfile)
        if pid_alive(pid, marker):
            # our spawned services lead their own session: signal the whole group, so a
            # child they started cannot outlive them. Redis daemonizes on its own.
            found.append((label, pid, marker, marker != "redis-server"))
    alive = stop_pids([(pid, marker, group) for _, pid, marker, group in found])
    for label, pid, _, _ in found:
        if pid in alive:
            leftovers.append("%s (pid %d)" % (label, pid))
        else:
            say("stopped %s (pid %d)" % (label, pid))
    for label, pidfile, marker, _ in procs:
        if pidfile.exists() and not pid_alive(read_pid(pidfile), marker):
            pidfile.unlink()
    return leftovers


def status_row(name, port, pid, ok, detail, optional=False):
    """One line of ``lab.py status``."""
    return {"service": name, "port": port, "pid": pid, "healthy": bool(ok), "detail": detail, "optional": optional}


def healthy(check):
    """``check()``, or False when it raises (status never fails on a service that is down)."""
    try:
        return check()
    except Exception:
        return False
