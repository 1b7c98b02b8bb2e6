"""One lab's state on disk: its directory layout, persisted ports and generated secrets
(``ports.json``, ``secrets.json``, 0600), and the lock that serializes ``lab.py`` commands."""
import json
import os
import pwd
from pathlib import Path

from . import port_registry, procs
from .procs import LabError, port_free, say

ROOT = Path(__file__).resolve().parents[3]
LAB_PY_DIR = Path(__file__).resolve().parents[1]  # tests/lab
DEFAULT_LAB_DIR = ROOT / ".lab"
PORT_NAMES = ("pg_primary", "pg_standby", "redis", "moto", "twin", "kube_primary", "kube_secondary",
              "prometheus", "alertmanager", "eda_webhook", "exporter", "webhook_sink",
              "twin_secondary")


def load_json(path):
    """The file's JSON, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_private(path, text, mode=0o600):
    """Write ``text`` atomically (temporary file, rename) with ``mode`` from the start."""
    path = Path(path)
    tmp = path.with_name(".%s.tmp" % path.name)
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(str(tmp), mode)
    os.replace(str(tmp), str(path))


class LabState:
    """Paths, ports and secrets of one lab directory; every service module is given one."""

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
        self.twin_secondary_dir = self.dir / "twin-secondary"  # the secondary region's Apex
        self.kube_dir = self.dir / "kube"
        self.ca_dir = self.dir / "ca"
        self.env_file = self.dir / "env"
        self.env_json = self.dir / "env.json"
        self.ports_file = self.dir / "ports.json"
        self.secrets_file = self.dir / "secrets.json"
        self._ports = None
        self._secrets = None
        self.skip = {s.strip() for s in os.environ.get("APEX_LAB_SKIP", "").split(",") if s.strip()}

    @property
    def secrets(self):
        if self._secrets is None:
            data = load_json(self.secrets_file) or {}
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
                write_private(self.secrets_file, json.dumps(data, indent=2) + "\n")
            elif self.secrets_file.stat().st_mode & 0o077:
                os.chmod(str(self.secrets_file), 0o600)
            self._secrets = data
        return self._secrets

    @property
    def ports(self):
        if self._ports is None:
            self._ports = load_json(self.ports_file) or {}
        return self._ports

    def foreign_lab_ports(self):
        """Ports every other lab on this machine has persisted (the shared lab, the test lanes',
        the self-test's: ``port_registry``), so two labs never pick the same port even while one
        is down."""
        return port_registry.lab_ports(exclude=self.dir, also=(DEFAULT_LAB_DIR,))

    def pick_port(self, taken):
        return procs.pick_port(taken)

    def assign_ports(self):
        """Give every service a port once; later runs reuse ports.json. Picked and saved under the
        machine-wide port lock, so a lab starting at the same moment sees them."""
        with port_registry.locked():
            ports = self.ports
            changed = False
            taken = self.foreign_lab_ports() | {v for k, v in ports.items() if k in PORT_NAMES}
            for name in PORT_NAMES:
                if not isinstance(ports.get(name), int):
                    ports[name] = self.pick_port(taken)
                    taken.add(ports[name])
                    changed = True
            if changed:
                self.save_ports()
            port_registry.register(self.dir)

    def save_ports(self):
        write_private(self.ports_file, json.dumps(self.ports, indent=2, sort_keys=True) + "\n", 0o644)

    def claim_port(self, name):
        """Called right before a (stopped) service starts: if a foreign process now holds the
        persisted port, move the service to another free port and persist that."""
        port = self.ports[name]
        if port_free(port):
            return port
        with port_registry.locked():
            taken = self.foreign_lab_ports() | set(self.ports.values())
            new = self.pick_port(taken)
            say("port %d for %s is taken by another process; using %d instead" % (port, name, new))
            self.ports[name] = new
            self.save_ports()
        return new

    def run(self, argv, as_postgres=False, check=True, env=None, input=None, timeout=120, cwd=None):
        """``procs.run`` in the lab directory (PostgreSQL's directory for the postgres user)."""
        return procs.run(argv, cwd or (self.pg if as_postgres else self.dir), as_postgres=as_postgres, check=check,
                         env=env, input=input, timeout=timeout)

    def package(self, name):
        """The twin's or the simulator's package exists and APEX_LAB_SKIP does not name it."""
        return (LAB_PY_DIR / name / "__main__.py").exists() and name not in self.skip

    def ensure_layout(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        for parent in self.dir.parents:
            st = parent.stat()
            if not st.st_mode & 0o001:
                raise LabError("the postgres user cannot reach %s: %s is mode %o; put the lab directory "
                               "somewhere world-traversable (e.g. mktemp -d /tmp/apex-lab.XXXX)"
                               % (self.dir, parent, st.st_mode & 0o777))
        os.chmod(str(self.dir), 0o711)  # postgres must traverse it; secrets below are 0600
        for d in (self.redis_dir, self.moto_dir, self.twin_dir, self.twin_secondary_dir, self.kube_dir, self.ca_dir):
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

    def lock(self, timeout=900):
        """Serialize lab.py commands on this lab directory."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "lab.lock"
        return procs.exclusive_flock(path, timeout, waiting="another lab.py holds %s; waiting" % path)
