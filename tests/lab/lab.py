#!/usr/bin/env python3
"""The apex.ops lab: real services on 127.0.0.1, one command up, one down.

    python3 tests/lab/lab.py up               start everything (idempotent)
    python3 tests/lab/lab.py down             stop everything, no process left behind
    python3 tests/lab/lab.py status [--json]  one line per service; exit 1 if one is down
    python3 tests/lab/lab.py rebuild-standby  re-clone the standby from the primary
    python3 tests/lab/lab.py restart [SVC..]  stop the named services (default all), then up
    python3 tests/lab/lab.py destroy          down, then delete the lab directory

State lives in ``<repo>/.lab`` (or ``$APEX_LAB_DIR``). Only the standard library is imported at
start-up; ``cryptography`` (lab CA) and ``boto3`` (moto resources) are imported lazily, after
``install-deps.sh`` has made sure they exist. See docs/lab.md.
"""
import argparse
import contextlib
import errno
import fcntl
import hashlib
import http.client
import importlib.util
import json
import os
import pwd
import random
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB_PY_DIR = Path(__file__).resolve().parent
DEFAULT_LAB_DIR = ROOT / ".lab"
PG_BIN = Path(os.environ.get("APEX_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = "/usr/bin/redis-server"
PORT_NAMES = ("pg_primary", "pg_standby", "redis", "moto", "twin", "kube_primary", "kube_secondary")
PORT_RANGE = (20000, 30000)  # below the kernel's ephemeral range, so client sockets never take them
S3_BUCKET = "apex-backups"
DNS_ZONE = "apex.lab.test."
DNS_RECORD = "apex.apex.lab.test."
DNS_TARGETS = {"primary.apex.lab.test.": "127.0.0.1", "secondary.apex.lab.test.": "127.0.0.2"}
AWS_REGION = "us-east-1"
REPLICATION_ROLE = "replicator"
START_TIMEOUT = 60
# command-line markers of the Python services lab.py spawns (precise: `pytest .../kubesim` must not match)
MARK_MOTO = "-m moto.server "
MARK_KUBESIM = "-m kubesim serve "
# environment variable -> `kubesim serve` flag (docs/kubesim.md, docs/lab.md)
KUBESIM_FLAGS = (("KUBESIM_POD_READY_DELAY", "--pod-ready-delay"), ("KUBESIM_TIME_FACTOR", "--time-factor"),
                 ("KUBESIM_HPA_SYNC", "--hpa-sync"), ("KUBESIM_CRASH_INTERVAL", "--crash-interval"),
                 ("KUBESIM_JOB_DURATION", "--job-duration"))
MARK_TWIN = {"serve": "-m twin serve", "worker": "-m twin worker"}
LOG_ROTATE_BYTES = 64 * 1024 * 1024
PG_TEMPLATE_REVISION = 1  # bump when the template's contents (roles, databases, extensions) change


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


# --------------------------------------------------------------------------- processes

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


# --------------------------------------------------------------------------- the lab

class Lab:
    def __init__(self, lab_dir=None):
        self.dir = Path(lab_dir or os.environ.get("APEX_LAB_DIR") or DEFAULT_LAB_DIR).absolute()
        self.pg = self.dir / "pg"
        self.pg_primary = self.pg / "primary"
        self.pg_standby = self.pg / "standby"
        self.pg_run = self.pg / "run"
        self.pg_log = self.pg / "log"
        self.pg_tls = self.pg / "tls"
        self.wal_archive = self.pg / "wal_archive"
        # the secondary region archives into its own directory once promoted, so its timeline's
        # history files never reach the primary's archive (a standby re-cloned from the primary
        # would otherwise follow the dead timeline through restore_command)
        self.wal_archive_standby = self.pg / "wal_archive_standby"
        self.redis_dir = self.dir / "redis"
        self.moto_dir = self.dir / "moto"
        self.twin_dir = self.dir / "twin"
        self.kube_dir = self.dir / "kube"
        self.ca_dir = self.dir / "ca"
        self.env_file = self.dir / "env"
        self.env_json = self.dir / "env.json"
        self.ports_file = self.dir / "ports.json"
        self.secrets_file = self.dir / "secrets.json"
        self._ports = None
        self._secrets = None
        self.skip = {s.strip() for s in os.environ.get("APEX_LAB_SKIP", "").split(",") if s.strip()}

    # ---------------------------------------------------------------- small state files

    def _load_json(self, path):
        try:
            return json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _write_private(path, text, mode=0o600):
        path = Path(path)
        tmp = path.with_name(".%s.tmp" % path.name)
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(str(tmp), mode)
        os.replace(str(tmp), str(path))

    @property
    def secrets(self):
        if self._secrets is None:
            data = self._load_json(self.secrets_file) or {}
            import secrets as _s
            wanted = {
                "postgres_password": lambda: _s.token_hex(16),
                "apex_password": lambda: _s.token_hex(16),
                "replication_password": lambda: _s.token_hex(16),
                "redis_password": lambda: _s.token_hex(16),
                "admin_token": lambda: _s.token_hex(24),
                "aws_access_key_id": lambda: "AKIALAB" + _s.token_hex(6).upper(),
                "aws_secret_access_key": lambda: _s.token_hex(20),
            }
            missing = [k for k in wanted if not data.get(k)]
            for key in missing:
                data[key] = wanted[key]()
            if missing or not self.secrets_file.exists():
                self._write_private(self.secrets_file, json.dumps(data, indent=2) + "\n")
            elif self.secrets_file.stat().st_mode & 0o077:
                os.chmod(str(self.secrets_file), 0o600)
            self._secrets = data
        return self._secrets

    @property
    def ports(self):
        if self._ports is None:
            self._ports = self._load_json(self.ports_file) or {}
        return self._ports

    def _foreign_lab_ports(self):
        """Ports another lab on this machine has persisted (e.g. the shared lab while the
        self-test runs its own), so two labs never pick the same port even while one is down."""
        taken = set()
        for other in {DEFAULT_LAB_DIR.absolute()}:
            if other == self.dir:
                continue
            data = self._load_json(other / "ports.json") or {}
            taken.update(v for v in data.values() if isinstance(v, int))
        return taken

    def _pick_port(self, taken):
        return pick_port(taken)

    def assign_ports(self):
        """Give every service a port once; later runs reuse ports.json."""
        ports = self.ports
        changed = False
        taken = self._foreign_lab_ports() | {v for k, v in ports.items() if k in PORT_NAMES}
        for name in PORT_NAMES:
            if not isinstance(ports.get(name), int):
                ports[name] = self._pick_port(taken)
                taken.add(ports[name])
                changed = True
        if changed:
            self.save_ports()

    def save_ports(self):
        self._write_private(self.ports_file, json.dumps(self.ports, indent=2, sort_keys=True) + "\n", 0o644)

    def claim_port(self, name):
        """Called right before a (stopped) service starts: if a foreign process now holds the
        persisted port, move the service to another free port and persist that."""
        port = self.ports[name]
        if port_free(port):
            return port
        taken = self._foreign_lab_ports() | set(self.ports.values())
        new = self._pick_port(taken)
        say("port %d for %s is taken by another process; using %d instead" % (port, name, new))
        self.ports[name] = new
        self.save_ports()
        return new

    # ---------------------------------------------------------------- helpers

    def run(self, argv, as_postgres=False, check=True, env=None, input=None, timeout=120, cwd=None):
        argv = [str(a) for a in argv]
        if as_postgres and os.geteuid() != pwd.getpwnam("postgres").pw_uid:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        if env is None:
            env = clean_env()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, input=input, timeout=timeout,
                              cwd=str(cwd or (self.pg if as_postgres else self.dir)))
        if check and proc.returncode != 0:
            raise LabError("%s failed (rc=%s):\n%s%s" % (" ".join(shlex.quote(a) for a in argv[:6]),
                                                         proc.returncode, proc.stdout, proc.stderr))
        return proc

    def psql(self, port, sql, db="postgres", check=True):
        """Run SQL as the postgres OS user over the lab's unix socket (peer auth); SQL on stdin
        so no password ever appears on a command line."""
        return self.run([PG_BIN / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                         "-h", self.pg_run, "-p", port, "-d", db, "-f", "-"],
                        as_postgres=True, input=sql, check=check, timeout=60)

    def find_pid(self, pidfile, marker, port=None):
        """The service's pid: from its pidfile or, when that is stale or lost (a service started
        by hand with the lab's environment), the process whose command line has ``marker`` and
        that LISTENS on the lab's ``port`` (adopted by rewriting the pidfile). The port is the
        proof: other helpers' tests run private twins/simulators with the same environment."""
        pid = read_pid(pidfile)
        if pid_alive(pid, marker):
            return pid
        if not port:
            return None
        inodes = listening_inodes(port)
        if not inodes:
            return None
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            cand = int(entry)
            if marker not in cmdline(cand) + " " or not pid_alive(cand):
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

    def child_env(self, extra=None):
        """Environment of the long-running services: the caller's, minus anything that would
        configure a service behind the lab's back (`up` is often run from inside a test process
        with its own APEX_*/PG*/AWS_* overrides), plus the lab's."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("APEX_", "PG", "AWS_", "K8S_", "KUBE", "HELM_", "REDIS", "PYTHON"))
               or k.startswith("KUBESIM_")}  # the simulator's timing knobs (docs/lab.md)
        env.update(self.lab_env())
        env["PYTHONPATH"] = str(LAB_PY_DIR)
        env["PYTHONUNBUFFERED"] = "1"
        if extra:
            env.update(extra)
        return env

    @staticmethod
    def rotate_log(logfile, limit=LOG_ROTATE_BYTES):
        """Keep one previous generation (``x.log.1``) once a log passes ``limit`` at a start."""
        try:
            if Path(logfile).stat().st_size > limit:
                os.replace(str(logfile), str(logfile) + ".1")
        except OSError:
            pass

    def spawn(self, argv, pidfile, logfile, env, cwd):
        logfile.parent.mkdir(parents=True, exist_ok=True)
        self.rotate_log(logfile)
        with open(str(logfile), "ab") as log:
            log.write(("\n--- %s start: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), " ".join(argv))).encode())
            log.flush()
            proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env=env, cwd=str(cwd), start_new_session=True, close_fds=True)
        Path(pidfile).write_text("%d\n" % proc.pid)
        return proc

    # ---------------------------------------------------------------- layout / deps

    def missing_deps(self):
        missing = []
        for tool in ("initdb", "pg_ctl", "pg_basebackup", "psql", "pg_isready"):
            if not (PG_BIN / tool).exists():
                missing.append(str(PG_BIN / tool))
        if not Path(REDIS_SERVER).exists():
            missing.append(REDIS_SERVER)
        for mod in ("cryptography", "boto3", "moto", "flask"):
            if importlib.util.find_spec(mod) is None:
                missing.append("python:%s" % mod)
        return missing

    def ensure_deps(self):
        missing = self.missing_deps()
        if not missing:
            return
        say("missing %s: running tests/lab/install-deps.sh" % ", ".join(missing))
        rc = subprocess.call(["bash", str(LAB_PY_DIR / "install-deps.sh")], cwd=str(ROOT))
        importlib.invalidate_caches()
        missing = self.missing_deps()
        if rc != 0 or missing:
            raise LabError("install-deps.sh failed (rc=%s); still missing: %s" % (rc, ", ".join(missing) or "-"))

    def ensure_layout(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        for parent in self.dir.parents:
            st = parent.stat()
            if not st.st_mode & 0o001:
                raise LabError("the postgres user cannot reach %s: %s is mode %o; put the lab directory "
                               "somewhere world-traversable (e.g. mktemp -d /tmp/apex-lab.XXXX)"
                               % (self.dir, parent, st.st_mode & 0o777))
        os.chmod(str(self.dir), 0o711)  # postgres must traverse it; secrets below are 0600
        for d in (self.redis_dir, self.moto_dir, self.twin_dir, self.kube_dir, self.ca_dir):
            d.mkdir(exist_ok=True)
        pg_uid = pwd.getpwnam("postgres")
        for d, mode in ((self.pg, 0o755), (self.pg_run, 0o755), (self.pg_log, 0o750),
                        (self.wal_archive, 0o750), (self.wal_archive_standby, 0o750), (self.pg_tls, 0o700)):
            d.mkdir(exist_ok=True)
            st = d.stat()
            if st.st_uid != pg_uid.pw_uid or (st.st_mode & 0o777) != mode:
                os.chown(str(d), pg_uid.pw_uid, pg_uid.pw_gid)
                os.chmod(str(d), mode)
        link = self.dir / "collections" / "ansible_collections" / "apex" / "ops"
        if not (link.is_symlink() and os.readlink(str(link)) == str(ROOT)):
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(ROOT)

    # ---------------------------------------------------------------- CA and certificates

    def ensure_pki(self):
        ca_crt, ca_key = self.ca_dir / "ca.crt", self.ca_dir / "ca.key"
        twin_crt, twin_key = self.twin_dir / "tls.crt", self.twin_dir / "tls.key"
        pg_crt, pg_key = self.pg_tls / "server.crt", self.pg_tls / "server.key"
        fresh = not (ca_crt.exists() and ca_key.exists())
        todo = [(twin_crt, twin_key, None), (pg_crt, pg_key, "postgres")]
        if not fresh and all(self._cert_ok(c, ca_crt) and k.exists() for c, k, _ in todo):
            return
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
        import datetime
        import ipaddress

        now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        pem = serialization.Encoding.PEM

        def key_pem(key):
            return key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()

        if fresh:
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "apex.ops lab"),
                              x509.NameAttribute(NameOID.COMMON_NAME, "apex.ops lab CA")])
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                    .public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                    .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                 content_commitment=False, key_encipherment=False,
                                                 data_encipherment=False, key_agreement=False,
                                                 encipher_only=False, decipher_only=False), critical=True)
                    .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                    .sign(key, hashes.SHA256()))
            self._write_private(ca_key, key_pem(key))
            self._write_private(ca_crt, cert.public_bytes(pem).decode(), 0o644)
            say("created lab CA %s" % ca_crt)
        ca_key_obj = serialization.load_pem_private_key(ca_key.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
        for crt, keyfile, owner in todo:
            if not fresh and self._cert_ok(crt, ca_crt) and keyfile.exists():
                continue
            key = ec.generate_private_key(ec.SECP256R1())
            sans = [x509.DNSName("localhost"), x509.DNSName("apex.lab.test"), x509.DNSName("*.apex.lab.test"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            cert = (x509.CertificateBuilder()
                    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                    .issuer_name(ca_cert.subject).public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=397))
                    .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                          ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                    .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key_obj.public_key()),
                                   critical=False)
                    .sign(ca_key_obj, hashes.SHA256()))
            self._write_private(keyfile, key_pem(key))
            self._write_private(crt, cert.public_bytes(pem).decode(), 0o644)
            if owner:
                pw = pwd.getpwnam(owner)
                for f in (crt, keyfile):
                    os.chown(str(f), pw.pw_uid, pw.pw_gid)

    @staticmethod
    def _cert_ok(crt, ca_crt):
        """Cheap stdlib check: the cert exists, was issued by the lab CA and is not near expiry."""
        try:
            info = ssl._ssl._test_decode_cert(str(crt))  # noqa: SLF001 (stdlib, no cryptography import)
            expires = ssl.cert_time_to_seconds(info["notAfter"])
            return expires - time.time() > 30 * 86400 and _issuer_matches(info, ca_crt)
        except Exception:
            return False

    # ---------------------------------------------------------------- PostgreSQL

    def pg_pid(self, datadir):
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
    def pg_ready(port):
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

    def pg_in_recovery(self, port):
        proc = self.psql(port, "SELECT pg_is_in_recovery();", check=False)
        out = proc.stdout.strip()
        return None if proc.returncode else out == "t"

    def _write_pg_conf(self, datadir, port, standby):
        def q(value):
            return "'%s'" % str(value).replace("'", "''")
        archive = shlex.quote(str(self.wal_archive))
        own_archive = shlex.quote(str(self.wal_archive_standby if standby else self.wal_archive))
        lines = [
            "# Written by tests/lab/lab.py at every start; edit lab.py, not this file.",
            "listen_addresses = '127.0.0.1'",
            "port = %d" % port,
            "unix_socket_directories = %s" % q(self.pg_run),
            "password_encryption = 'scram-sha-256'",
            "ssl = on",
            "ssl_cert_file = %s" % q(self.pg_tls / "server.crt"),
            "ssl_key_file = %s" % q(self.pg_tls / "server.key"),
            "ssl_ca_file = %s" % q(self.ca_dir / "ca.crt"),
            "wal_level = replica",
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

    def _pg_reload_if_changed(self, datadir, name, port, standby):
        """A running server whose lab.conf is out of date (lab.py changed) gets the new file and
        a reload; settings that need a restart wait for the next one (pg_settings.pending_restart)."""
        if self._write_pg_conf(datadir, port, standby):
            self.run([PG_BIN / "pg_ctl", "-D", datadir, "reload"], as_postgres=True, check=False, timeout=30)
            say("PostgreSQL %s: lab.conf updated and reloaded" % name)

    def _write_hba(self, datadir):
        hba = datadir / "pg_hba.conf"
        hba.write_text(
            "# Written by tests/lab/lab.py. TCP only on 127.0.0.1, always scram; peer for the OS user postgres.\n"
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
        if pidfile.exists() and not self.pg_pid(datadir):
            say("removing stale %s" % pidfile)
            pidfile.unlink()
        if port:
            lock = self.pg_run / (".s.PGSQL.%d.lock" % port)
            pid = read_pid(lock)
            if lock.exists() and not (pid and pid_alive(pid, "postgres")):
                say("removing stale %s" % lock)
                lock.unlink()
                (self.pg_run / (".s.PGSQL.%d" % port)).unlink(missing_ok=True)

    def _pg_start(self, datadir, name, port):
        self._remove_stale_pid(datadir, port)
        log = self.pg_log / ("%s.log" % name)
        self.rotate_log(log)
        proc = self.run([PG_BIN / "pg_ctl", "-D", datadir, "-l", log, "-w", "-t", str(START_TIMEOUT), "start"],
                        as_postgres=True, check=False, timeout=START_TIMEOUT + 10)
        if proc.returncode != 0:
            raise LabError("PostgreSQL %s did not start:\n%s%s\n--- %s ---\n%s"
                           % (name, proc.stdout, proc.stderr, log, tail(log)))

    def ensure_primary(self):
        datadir = self.pg_primary
        if self.pg_pid(datadir):
            port = self.ports["pg_primary"]
            wait_until(lambda: self.pg_ready(port), START_TIMEOUT, "PostgreSQL primary on %d" % port,
                       log=self.pg_log / "primary.log")
            self._pg_reload_if_changed(datadir, "primary", port, standby=False)
            return False
        self._remove_stale_pid(datadir)
        fresh = not (datadir / "PG_VERSION").exists()
        if fresh:
            # built next to it and renamed: an interrupted `up` never leaves a half-made cluster
            # that the next `up` would mistake for a real one
            building = self._fresh_dir(datadir)
            template = self.pg_template()
            if template:
                self.run(["cp", "-a", template, building], timeout=120)
            else:
                self._initdb(building, self.pg)
            self._write_hba(building)
            os.rename(str(building), str(datadir))
            (self.pg / "primary.setup-done").unlink(missing_ok=True)
        port = self.claim_port("pg_primary")
        self._write_pg_conf(datadir, port, standby=False)
        self._pg_start(datadir, "primary", port)
        if not (self.pg / "primary.setup-done").exists():
            self._pg_setup(port)
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
        self._write_private(pwfile, (password or self.secrets["postgres_password"]) + "\n")
        pw = pwd.getpwnam("postgres")
        os.chown(str(pwfile), pw.pw_uid, pw.pw_gid)
        try:
            self.run([PG_BIN / "initdb", "-D", datadir, "-U", "postgres", "--pwfile", pwfile,
                      "--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                      "--no-sync"], as_postgres=True, timeout=120, cwd=scratch)
        finally:
            pwfile.unlink()

    def pg_template(self):
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
            port = self._pick_port(set(self.ports.values()) | self._foreign_lab_ports())
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

    def _pg_setup(self, port):
        self.psql(port, self._setup_sql(self.secrets))

    def ensure_standby(self, rebuild=False):
        datadir = self.pg_standby
        if rebuild:
            pid = self.pg_pid(datadir)
            if pid:
                self._pg_stop(datadir, "standby")
            if datadir.exists():
                shutil.rmtree(str(datadir))
            for f in self.wal_archive_standby.iterdir():
                f.unlink()
        if self.pg_pid(datadir):
            port = self.ports["pg_standby"]
            wait_until(lambda: self.pg_ready(port), START_TIMEOUT, "PostgreSQL standby on %d" % port,
                       log=self.pg_log / "standby.log")
            self._pg_reload_if_changed(datadir, "standby", port, standby=True)
            return False
        self._remove_stale_pid(datadir)
        fresh = not (datadir / "PG_VERSION").exists()
        primary_port = self.ports["pg_primary"]
        if fresh:
            building = self._fresh_dir(datadir)
            env = dict(clean_env(), PGPASSWORD=self.secrets["replication_password"], PGSSLMODE="disable",
                       PGAPPNAME="apex-standby")
            self.run([PG_BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", primary_port, "-U", REPLICATION_ROLE,
                      "-D", building, "-R", "-X", "stream", "-c", "fast", "--no-sync"],
                     as_postgres=True, env=env, timeout=600)
            os.rename(str(building), str(datadir))
        port = self.claim_port("pg_standby")
        self._write_pg_conf(datadir, port, standby=True)
        self._fix_primary_conninfo(datadir, primary_port)
        self._pg_start(datadir, "standby", port)
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

    def replication_state(self):
        out = self.psql(self.ports["pg_primary"],
                        "SELECT coalesce(application_name,''), state, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(),"
                        " replay_lsn), 0)::bigint FROM pg_stat_replication ORDER BY application_name;",
                        check=False).stdout.strip().splitlines()
        for line in out:
            app, state, lag = line.split("|")
            return {"application_name": app, "state": state, "replay_lag_bytes": int(lag)}
        return {}

    def _pg_stop(self, datadir, name):
        if not self.pg_pid(datadir):
            self._remove_stale_pid(datadir) if datadir.exists() else None
            return True
        proc = self.run([PG_BIN / "pg_ctl", "-D", datadir, "-m", "fast", "-w", "-t", "60", "stop"],
                        as_postgres=True, check=False, timeout=90)
        if proc.returncode != 0 and self.pg_pid(datadir):
            say("pg_ctl stop -m fast failed for %s, trying immediate: %s" % (name, proc.stderr.strip()))
            self.run([PG_BIN / "pg_ctl", "-D", datadir, "-m", "immediate", "-w", "-t", "30", "stop"],
                     as_postgres=True, check=False, timeout=60)
        return self.pg_pid(datadir) is None

    # ---------------------------------------------------------------- Redis

    def redis_pid(self):
        pid = read_pid(self.redis_dir / "redis.pid")
        return pid if pid_alive(pid, "redis-server") else None

    def redis_ping(self, port=None):
        port = port or self.ports["redis"]
        pw = self.secrets["redis_password"]
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            payload = "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(pw), pw)
            sock.sendall(payload.encode())
            data = b""
            deadline = time.monotonic() + 2
            while data.count(b"\r\n") < 2 and time.monotonic() < deadline:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
        return data.startswith(b"+OK\r\n+PONG")

    def ensure_redis(self):
        if self.redis_pid():
            wait_until(self.redis_ping, 10, "Redis", log=self.redis_dir / "redis.log")
            return False
        pidfile = self.redis_dir / "redis.pid"
        if pidfile.exists():
            say("removing stale %s" % pidfile)
            pidfile.unlink()
        port = self.claim_port("redis")

        def q(v):
            return '"%s"' % str(v).replace("\\", "\\\\").replace('"', '\\"')
        conf = "\n".join([
            "# Written by tests/lab/lab.py at every start.",
            "bind 127.0.0.1",
            "protected-mode yes",
            "port %d" % port,
            "requirepass %s" % q(self.secrets["redis_password"]),
            "dir %s" % q(self.redis_dir),
            "dbfilename dump.rdb",
            "save 900 1",
            "save 300 10",
            "save 60 10000",
            "appendonly no",
            "daemonize yes",
            "pidfile %s" % q(pidfile),
            "logfile %s" % q(self.redis_dir / "redis.log"),
            "loglevel notice",
            "databases 16",
            "",
        ])
        conf_path = self.redis_dir / "redis.conf"
        self.rotate_log(self.redis_dir / "redis.log")
        self._write_private(conf_path, conf)
        self.run([REDIS_SERVER, conf_path], timeout=30)
        wait_until(lambda: self.redis_pid() and self.redis_ping(port), 15, "Redis on %d" % port,
                   log=self.redis_dir / "redis.log")
        say("Redis up on 127.0.0.1:%d" % port)
        return True

    # ---------------------------------------------------------------- moto

    def moto_pid(self):
        return self.find_pid(self.moto_dir / "moto.pid", MARK_MOTO, self.ports.get("moto"))

    def moto_buckets(self):
        status, body = http_get("127.0.0.1", self.ports["moto"], "/")
        if status != 200 or b"ListAllMyBucketsResult" not in body:
            raise LabError("moto answered %s" % status)
        return body

    def start_moto(self):
        """Spawn moto (non-blocking: it imports for a second while PostgreSQL starts)."""
        if self.moto_pid():
            return None
        port = self.claim_port("moto")
        return self.spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                          self.moto_dir / "moto.pid", self.moto_dir / "moto.log",
                          dict(os.environ, PYTHONUNBUFFERED="1", APEX_LAB_DIR=str(self.dir)), self.moto_dir)

    def ensure_moto(self, proc):
        log = self.moto_dir / "moto.log"
        if proc is None and not self._answers(self.moto_buckets, 15):
            say("moto (pid %s) does not answer; restarting it" % self.moto_pid())
            self._stop_service("moto")
            proc = self.start_moto()
        wait_until(self.moto_buckets, 30, "moto on %d" % self.ports["moto"], log=log,
                   gone=lambda: not self.moto_pid())
        state = self._load_json(self.moto_dir / "state.json") or {}
        body = self.moto_buckets()
        if (proc is None and state.get("pid") == self.moto_pid() and state.get("zone_id")
                and ("<Name>%s</Name>" % S3_BUCKET).encode() in body):
            return False
        zone_id = self._moto_resources()
        self._write_private(self.moto_dir / "state.json",
                            json.dumps({"pid": self.moto_pid(), "zone_id": zone_id}) + "\n", 0o644)
        say("moto up on 127.0.0.1:%d (bucket %s, zone %s %s)" % (self.ports["moto"], S3_BUCKET, DNS_ZONE, zone_id))
        return True

    def _moto_resources(self):
        import boto3
        kw = dict(endpoint_url="http://127.0.0.1:%d" % self.ports["moto"], region_name=AWS_REGION,
                  aws_access_key_id=self.secrets["aws_access_key_id"],
                  aws_secret_access_key=self.secrets["aws_secret_access_key"])
        s3 = boto3.client("s3", **kw)
        names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
        if S3_BUCKET not in names:
            s3.create_bucket(Bucket=S3_BUCKET)
            s3.put_bucket_versioning(Bucket=S3_BUCKET, VersioningConfiguration={"Status": "Enabled"})
        r53 = boto3.client("route53", **kw)
        zones = [z for z in r53.list_hosted_zones_by_name(DNSName=DNS_ZONE).get("HostedZones", [])
                 if z["Name"] == DNS_ZONE]
        if zones:
            zone_id = zones[0]["Id"].split("/")[-1]
        else:
            zone_id = r53.create_hosted_zone(Name=DNS_ZONE, CallerReference="apex-lab-%d" % time.time(),
                                             HostedZoneConfig={"Comment": "apex.ops lab",
                                                               "PrivateZone": False})["HostedZone"]["Id"].split("/")[-1]
            changes = [{"Action": "UPSERT", "ResourceRecordSet": {
                "Name": name, "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": ip}]}}
                for name, ip in DNS_TARGETS.items()]
            changes.append({"Action": "UPSERT", "ResourceRecordSet": {
                "Name": DNS_RECORD, "Type": "CNAME", "TTL": 60,
                "ResourceRecords": [{"Value": "primary.apex.lab.test."}]}})
            r53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
                "Comment": "apex.ops lab: apex points at the primary region", "Changes": changes})
        return zone_id

    # ---------------------------------------------------------------- python services (kubesim, twin)

    @staticmethod
    def _answers(check, timeout):
        try:
            wait_until(check, timeout, "health check")
            return True
        except LabError:
            return False

    @staticmethod
    def code_fingerprint(name):
        """mtime+size of the package's Python files: tells whether a running twin/simulator runs
        the code that is on disk now."""
        items = []
        for path in sorted((LAB_PY_DIR / name).rglob("*.py")):
            try:
                st = path.stat()
            except OSError:
                continue
            items.append("%s:%d:%d" % (path.relative_to(LAB_PY_DIR), st.st_mtime_ns, st.st_size))
        return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16] if items else ""

    def _code_file(self, name):
        return (self.twin_dir if name == "twin" else self.kube_dir) / "code.fingerprint"

    def _record_code(self, name):
        self._code_file(name).write_text(self.code_fingerprint(name) + "\n")

    def code_changed(self, name):
        try:
            return self._code_file(name).read_text().strip() != self.code_fingerprint(name)
        except OSError:
            return False

    def _code_changed_notice(self, name):
        if self.code_changed(name):
            say("note: tests/lab/%s changed since the running %s started; `lab.py restart %s` picks it up"
                % (name, name, name))

    def package(self, name):
        return (LAB_PY_DIR / name / "__main__.py").exists() and name not in self.skip

    def kube_pid(self):
        return self.find_pid(self.kube_dir / "kubesim.pid", MARK_KUBESIM, self.ports.get("kube_primary"))

    def kube_ready(self):
        """``GET /readyz`` on the primary cluster's API server: HTTPS (the simulator's own serving
        certificate; readiness only, so not verified here), plain HTTP only if TLS is refused."""
        port = self.ports["kube_primary"]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no system CA bundle to load (~50 ms)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        for conn in (http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=ctx),
                     http.client.HTTPConnection("127.0.0.1", port, timeout=2)):
            try:
                conn.request("GET", "/readyz")
                resp = conn.getresponse()
                resp.read()
                return resp.status == 200
            except ssl.SSLError:
                continue  # not a TLS server: try plain HTTP
            except (OSError, http.client.HTTPException):
                return False
            finally:
                conn.close()
        return False

    def start_kubesim(self):
        """Spawn the simulator early (it imports and seeds while PostgreSQL starts); True if
        spawned. ensure_kubesim() waits for it later."""
        if "kubesim" in self.skip or not self.package("kubesim") or self.kube_pid():
            return False
        p1, p2 = self.claim_port("kube_primary"), self.claim_port("kube_secondary")
        self.write_env()
        # timing knobs from the caller's KUBESIM_* (e.g. `KUBESIM_POD_READY_DELAY=5 make lab-up`),
        # as explicit flags so `ps` shows them; the simulator reads the same variables itself
        flags = []
        for var, flag in KUBESIM_FLAGS:
            if os.environ.get(var):
                flags += [flag, os.environ[var]]
        self.spawn([sys.executable, "-m", "kubesim", "serve", "--lab-dir", str(self.dir),
                    "--primary-port", str(p1), "--secondary-port", str(p2)] + flags,
                   self.kube_dir / "kubesim.pid", self.kube_dir / "kubesim.log", self.child_env(), ROOT)
        self._record_code("kubesim")
        return True

    def ensure_kubesim(self, spawned=False):
        if not spawned and self.kube_pid():
            if self._answers(self.kube_ready, 20):
                self._code_changed_notice("kubesim")
                return False
            say("kubesim (pid %s) does not answer /readyz; restarting it" % self.kube_pid())
            self._stop_service("kubesim")
        if not spawned:
            self.start_kubesim()
        p1, p2 = self.ports["kube_primary"], self.ports["kube_secondary"]
        wait_until(self.kube_ready, START_TIMEOUT, "kubesim on %d" % p1,
                   log=self.kube_dir / "kubesim.log", gone=lambda: not self.kube_pid())
        say("kubesim up on 127.0.0.1:%d (primary) and :%d (secondary)" % (p1, p2))
        return True

    def twin_pid(self, role):
        return self.find_pid(self.twin_dir / ("%s.pid" % role), MARK_TWIN[role],
                             self.ports.get("twin") if role == "serve" else None)

    def twin_live(self):
        status, _ = http_get("127.0.0.1", self.ports["twin"], "/live", tls_ca=self.ca_dir / "ca.crt")
        return status == 200

    def ensure_twin(self):
        changed = False
        if self.twin_pid("serve") and self.twin_pid("worker"):
            if self._answers(self.twin_live, 20):
                self._code_changed_notice("twin")
                return False
            say("the twin (pid %s) does not answer /live; restarting it" % self.twin_pid("serve"))
            self._stop_service("twin")
        if not self.twin_pid("serve") or not self.twin_pid("worker"):
            self.write_env()
            env = self.child_env()
            log = self.twin_dir / "migrate.log"
            proc = subprocess.run([sys.executable, "-m", "twin", "migrate", "up"], env=env, cwd=str(ROOT),
                                  capture_output=True, text=True, timeout=300)
            with open(str(log), "a") as handle:
                handle.write("\n--- %s migrate up rc=%s\n%s%s" % (time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                                   proc.returncode, proc.stdout, proc.stderr))
            if proc.returncode != 0:
                raise LabError("twin migrate up failed (rc=%s):\n%s" % (proc.returncode, tail(log)))
        if not self.twin_pid("serve"):
            self.claim_port("twin")
            self.write_env()
            self.spawn([sys.executable, "-m", "twin", "serve"], self.twin_dir / "serve.pid",
                       self.twin_dir / "serve.log", self.child_env(), ROOT)
            self._record_code("twin")
            changed = True
        if not self.twin_pid("worker"):
            self.spawn([sys.executable, "-m", "twin", "worker"], self.twin_dir / "worker.pid",
                       self.twin_dir / "worker.log", self.child_env(), ROOT)
            changed = True
        wait_until(self.twin_live, START_TIMEOUT, "the Apex twin on %d" % self.ports["twin"],
                   log=self.twin_dir / "serve.log", gone=lambda: not self.twin_pid("serve"))
        if not self.twin_pid("worker"):
            raise LabError("the twin worker exited:\n%s" % tail(self.twin_dir / "worker.log"))
        if changed:
            say("Apex twin up on https://localhost:%d (worker pid %s)" % (self.ports["twin"], self.twin_pid("worker")))
        return changed

    # ---------------------------------------------------------------- env

    def lab_env(self):
        s, p = self.secrets, self.ports
        zone = (self._load_json(self.moto_dir / "state.json") or {}).get("zone_id", "")

        def dsn(port, user, password, db, extra=""):
            return "host=127.0.0.1 port=%d user=%s password=%s dbname=%s%s" % (port, user, password, db, extra)
        kubeconfig = str(self.kube_dir / "kubeconfig")
        env = {
            "APEX_LAB_DIR": str(self.dir),
            "PGHOST": "127.0.0.1",
            "PGPORT": str(p["pg_primary"]),
            "PGUSER": "postgres",
            "PGPASSWORD": s["postgres_password"],
            "PGDATABASE": "apex",
            "APEX_PG_DSN": dsn(p["pg_primary"], "apex", s["apex_password"], "apex"),
            "APEX_PG_ADMIN_DSN": dsn(p["pg_primary"], "postgres", s["postgres_password"], "apex"),
            "APEX_PG_STANDBY_PORT": str(p["pg_standby"]),
            "APEX_PG_STANDBY_DSN": dsn(p["pg_standby"], "postgres", s["postgres_password"], "apex"),
            "APEX_PG_APP_USER": "apex",
            "APEX_PG_APP_PASSWORD": s["apex_password"],
            "APEX_PG_REPLICATION_USER": REPLICATION_ROLE,
            "APEX_PG_REPLICATION_PASSWORD": s["replication_password"],
            "APEX_PG_WAL_ARCHIVE": str(self.wal_archive),
            "APEX_PG_STANDBY_WAL_ARCHIVE": str(self.wal_archive_standby),
            "APEX_PG_BIN": str(PG_BIN),
            "APEX_PG_PRIMARY_DATA": str(self.pg_primary),
            "APEX_PG_STANDBY_DATA": str(self.pg_standby),
            "APEX_PG_SOCKET_DIR": str(self.pg_run),
            "APEX_REDIS_HOST": "127.0.0.1",
            "APEX_REDIS_PORT": str(p["redis"]),
            "APEX_REDIS_PASSWORD": s["redis_password"],
            "APEX_REDIS_URL": "redis://:%s@127.0.0.1:%d/0" % (s["redis_password"], p["redis"]),
            "APEX_REDIS_DIR": str(self.redis_dir),
            "AWS_ENDPOINT_URL": "http://127.0.0.1:%d" % p["moto"],
            "AWS_ACCESS_KEY_ID": s["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": s["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": AWS_REGION,
            "AWS_REGION": AWS_REGION,
            "APEX_S3_BUCKET": S3_BUCKET,
            "APEX_ROUTE53_ZONE_ID": zone,
            "APEX_ROUTE53_ZONE": DNS_ZONE,
            "APEX_ROUTE53_RECORD": DNS_RECORD,
            "APEX_CA_FILE": str(self.ca_dir / "ca.crt"),
            "APEX_CA_KEY": str(self.ca_dir / "ca.key"),
            "APEX_API_URL": "https://localhost:%d" % p["twin"],
            "APEX_API_HOSTNAME": "localhost",
            "APEX_ADMIN_TOKEN": s["admin_token"],
            "APEX_TWIN_PORT": str(p["twin"]),
            "APEX_TWIN_CERT": str(self.twin_dir / "tls.crt"),
            "APEX_TWIN_KEY": str(self.twin_dir / "tls.key"),
            "APEX_TWIN_STATE": str(self.twin_dir / "desired.json"),
            "APEX_KUBE_PRIMARY_PORT": str(p["kube_primary"]),
            "APEX_KUBE_SECONDARY_PORT": str(p["kube_secondary"]),
            "HELM_DRIVER_SQL_CONNECTION_STRING": dsn(p["pg_primary"], "apex", s["apex_password"], "helm",
                                                     " sslmode=disable"),
            "ANSIBLE_COLLECTIONS_PATH": str(self.dir / "collections"),
        }
        if (LAB_PY_DIR / "kubesim" / "__main__.py").exists():
            env["KUBECONFIG"] = kubeconfig
            env["K8S_AUTH_KUBECONFIG"] = kubeconfig
        return env

    def write_env(self):
        env = self.lab_env()
        text = "# apex.ops lab environment, written by tests/lab/lab.py up. Source it: . %s\n" % self.env_file
        text += "".join("export %s=%s\n" % (k, shlex.quote(v)) for k, v in env.items())
        js = json.dumps(env, indent=2) + "\n"
        for path, content in ((self.env_file, text), (self.env_json, js)):
            try:
                same = path.read_text() == content and (path.stat().st_mode & 0o777) == 0o600
            except OSError:
                same = False
            if not same:
                self._write_private(path, content)

    # ---------------------------------------------------------------- commands

    @contextlib.contextmanager
    def lock(self, timeout=900):
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.dir / "lab.lock"), os.O_RDWR | os.O_CREAT, 0o600)
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
                    if not told:
                        say("another lab.py holds %s; waiting" % (self.dir / "lab.lock"))
                        told = True
                    if time.monotonic() > deadline:
                        raise LabError("timed out waiting for the lab lock")
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)

    def up(self):
        t0 = time.monotonic()
        with self.lock():
            self.ensure_deps()  # under the lock: two concurrent ups must not both run apt/pip
            self.ensure_layout()
            self.secrets  # noqa: B018 (generate once)
            self.assign_ports()
            self.ensure_pki()
            # moto and the simulator are spawned first and made ready in the background while
            # PostgreSQL starts (they are mostly Python imports); joined below
            moto_proc = self.start_moto()
            moto_job = Background(lambda: self.ensure_moto(moto_proc))
            kube_spawned = self.start_kubesim()
            changed, problems = [], []
            # one failing service does not keep the others down; `up` still exits 1
            for name, ensure in (("pg-primary", self.ensure_primary), ("pg-standby", self.ensure_standby),
                                 ("redis", self.ensure_redis), ("moto", moto_job.result)):
                try:
                    changed.append(ensure())
                except (LabError, OSError, subprocess.SubprocessError) as exc:
                    hint = ("\n(if the standby cannot follow the primary any more: lab.py rebuild-standby)"
                            if name == "pg-standby" else "")
                    problems.append("%s: %s%s" % (name, exc, hint))
            self.write_env()
            for name, ensure in (("kubesim", lambda: self.ensure_kubesim(kube_spawned)), ("twin", self.ensure_twin)):
                if name in self.skip:
                    say("%s skipped (APEX_LAB_SKIP)" % name)
                    continue
                if not self.package(name):
                    say("%s not started: tests/lab/%s/__main__.py does not exist yet" % (name, name))
                    continue
                try:
                    changed.append(ensure())
                except (LabError, OSError, subprocess.SubprocessError) as exc:
                    problems.append("%s: %s" % (name, exc))
            self.write_env()
        took = time.monotonic() - t0
        if problems:
            for p in problems:
                say("ERROR %s" % p)
            say("%d service(s) failed to come up (%.2fs); `lab.py status` shows the rest; env: %s"
                % (len(problems), took, self.env_file))
            return 1
        say("%s in %.2fs; env: %s  (. %s)" % ("lab up" if any(changed) else "lab already up, nothing to do",
                                              took, self.env_file, self.env_file))
        return 0

    def rebuild_standby(self):
        with self.lock():
            if not self.pg_pid(self.pg_primary):
                raise LabError("the primary is not running; run `lab.py up` first")
            self.ensure_standby(rebuild=True)
        return 0

    STOP_ORDER = ("twin", "kubesim", "moto", "redis", "pg-standby", "pg-primary")

    def _procs(self, name):
        return {
            "twin": (("twin worker", self.twin_dir / "worker.pid", MARK_TWIN["worker"], lambda: self.twin_pid("worker")),
                     ("twin serve", self.twin_dir / "serve.pid", MARK_TWIN["serve"], lambda: self.twin_pid("serve"))),
            "kubesim": (("kubesim", self.kube_dir / "kubesim.pid", MARK_KUBESIM, self.kube_pid),),
            "moto": (("moto", self.moto_dir / "moto.pid", MARK_MOTO, self.moto_pid),),
            "redis": (("redis-server", self.redis_dir / "redis.pid", "redis-server", self.redis_pid),),
        }[name]

    def _stop_services(self, names):
        """Stop services in parallel; return a list of what is still running afterwards."""
        leftovers = []
        pg = [n for n in names if n.startswith("pg-")]
        procs = [p for n in names if not n.startswith("pg-") for p in self._procs(n)]
        found = []
        for label, pidfile, marker, getpid in procs:
            pid = getpid() if self.ports else read_pid(pidfile)
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
        for name in ("pg-standby", "pg-primary"):
            if name not in pg:
                continue
            datadir = self.pg_standby if name == "pg-standby" else self.pg_primary
            pid = self.pg_pid(datadir)
            if not pid:
                continue
            if self._pg_stop(datadir, name):
                say("stopped PostgreSQL %s (pid %d)" % (name[3:], pid))
            else:
                leftovers.append("PostgreSQL %s (pid %d)" % (name[3:], pid))
        return leftovers

    def _stop_service(self, name):
        return self._stop_services([name])

    def down(self, services=None):
        t0 = time.monotonic()
        if not self.dir.exists():
            say("no lab at %s" % self.dir)
            return 0
        leftovers = []
        with self.lock():
            wanted = [n for n in self.STOP_ORDER if services is None or n in services]
            # the Python services together, then Redis, then PostgreSQL (standby first)
            for phase in (("twin", "kubesim", "moto"), ("redis",), ("pg-standby", "pg-primary")):
                names = [n for n in wanted if n in phase]
                if names:
                    leftovers += self._stop_services(names)
        if leftovers:
            say("still running: %s" % ", ".join(leftovers))
            return 1
        if services is None:
            say("lab down in %.2fs (data kept in %s)" % (time.monotonic() - t0, self.dir))
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
        if rc == 0 and self.dir.exists():
            shutil.rmtree(str(self.dir))
            say("removed %s" % self.dir)
        return rc

    def status(self, as_json=False):
        rows = []
        p = self.ports

        def row(name, port, pid, ok, detail, optional=False):
            rows.append({"service": name, "port": port, "pid": pid, "healthy": bool(ok), "detail": detail,
                         "optional": optional})

        def safe(fn):
            try:
                return fn()
            except Exception:
                return False

        if not p:
            print("lab: no lab at %s (run `make lab-up`)" % self.dir, file=sys.stderr)
            return 1
        for datadir, name, key in ((self.pg_primary, "pg-primary", "pg_primary"),
                                   (self.pg_standby, "pg-standby", "pg_standby")):
            pid = self.pg_pid(datadir)
            ok = bool(pid) and self.pg_ready(p[key])
            detail = "down"
            if ok:
                rec = self.pg_in_recovery(p[key])
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
            row(name, p.get(key), pid, ok, detail)
        pid = self.redis_pid()
        ok = bool(pid) and safe(self.redis_ping)
        row("redis", p.get("redis"), pid, ok, "PONG" if ok else "down")
        pid = self.moto_pid()
        ok = bool(pid) and safe(self.moto_buckets)
        row("moto", p.get("moto"), pid, ok, "S3/Route53/RDS" if ok else "down")
        if (LAB_PY_DIR / "kubesim" / "__main__.py").exists():
            pid = self.kube_pid()
            ok = bool(pid) and safe(self.kube_ready)
            skipped = "kubesim" in self.skip
            detail = "readyz ok" if ok else ("skipped" if skipped else "down")
            if ok and self.code_changed("kubesim"):
                detail += "; code changed since start (lab.py restart kubesim)"
            row("kubesim", "%s,%s" % (p.get("kube_primary"), p.get("kube_secondary")), pid, ok, detail,
                optional=skipped)
        else:
            row("kubesim", "%s,%s" % (p.get("kube_primary"), p.get("kube_secondary")), None, True,
                "not present (tests/lab/kubesim missing)", optional=True)
        if (LAB_PY_DIR / "twin" / "__main__.py").exists():
            skipped = "twin" in self.skip
            pid = self.twin_pid("serve")
            ok = bool(pid) and safe(self.twin_live)
            detail = "/live 200" if ok else ("skipped" if skipped else "down")
            if ok and self.code_changed("twin"):
                detail += "; code changed since start (lab.py restart twin)"
            row("twin-api", p.get("twin"), pid, ok, detail, optional=skipped)
            pid = self.twin_pid("worker")
            row("twin-worker", None, pid, bool(pid), "running" if pid else ("skipped" if skipped else "down"),
                optional=skipped)
        else:
            row("twin", p.get("twin"), None, True, "not present (tests/lab/twin missing)", optional=True)
        bad = [r for r in rows if not r["healthy"] and not r["optional"]]
        if as_json:
            print(json.dumps({"lab_dir": str(self.dir), "healthy": not bad, "services": rows}, indent=2))
        else:
            print("%-12s %-12s %-8s %-7s %s" % ("SERVICE", "PORT", "PID", "HEALTH", "DETAIL"))
            for r in rows:
                health = "ok" if r["healthy"] else ("-" if r["detail"] == "skipped" else "DOWN")
                print("%-12s %-12s %-8s %-7s %s" % (r["service"], r["port"] if r["port"] is not None else "-",
                                                     r["pid"] or "-", health, r["detail"]))
            print("env: %s" % self.env_file)
        return 1 if bad else 0


@contextlib.contextmanager
def private_lab(skip=("kubesim", "twin"), keep=False):
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


def _issuer_matches(info, ca_crt):
    ca_info = ssl._ssl._test_decode_cert(str(ca_crt))  # noqa: SLF001
    return info.get("issuer") == ca_info.get("subject")


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
                    help="twin, kubesim, moto, redis, pg-standby, pg-primary")
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
