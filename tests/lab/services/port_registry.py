"""The machine's register of labs and their ports. Every lab (the shared ``.lab``, the test
lanes' labs, the self-test's, private ones) registers its directory here, and ports are picked
and saved under one machine-wide lock, so two labs never hold the same port: not when they
assign ports at the same moment (``make test`` starts a lane's lab beside the self-test's),
and not while one of them is down. A CI run once lost a lane's moto that way: both labs
found the port free, the self-test's bound it first, the lane's moto exited.

An entry is a file named after a hash of the lab directory, holding that directory's path;
the ports themselves are read from the lab's own ``ports.json``, so they are never stale. An
entry whose lab has no ``ports.json`` any more (destroyed) is dropped when next read."""
import contextlib
import hashlib
import json
import os
from pathlib import Path

from .procs import exclusive_flock

REGISTRY_DIR = Path(os.environ.get("APEX_LAB_REGISTRY") or "/tmp/apex-lab-registry")


def _ensure_dir():
    try:
        REGISTRY_DIR.mkdir(mode=0o755, exist_ok=True)
        # shared by every user's labs, like /tmp: anyone adds entries, only owners remove them
        if REGISTRY_DIR.stat().st_uid == os.geteuid():
            os.chmod(str(REGISTRY_DIR), 0o1777)
    except OSError:
        pass


def _entry(lab_dir):
    return REGISTRY_DIR / ("%s.lab" % hashlib.sha256(str(Path(lab_dir).absolute()).encode()).hexdigest()[:20])


def locked(timeout=120.0):
    """Hold the machine-wide port lock (pick, save and register under it). Waits at most
    ``timeout`` seconds; the lock is short-held (no service start happens under it)."""
    _ensure_dir()
    return exclusive_flock(REGISTRY_DIR / ".lock", timeout, mode=0o666)


def register(lab_dir):
    """Record ``lab_dir`` as a lab whose ports others must avoid (idempotent)."""
    _ensure_dir()
    entry = _entry(lab_dir)
    text = str(Path(lab_dir).absolute())
    try:
        if not entry.exists() or entry.read_text() != text:
            tmp = entry.with_name(".%s.%d" % (entry.name, os.getpid()))
            tmp.write_text(text)
            os.replace(str(tmp), str(entry))
    except OSError:
        pass  # a registry we cannot write: the ports.json of the known labs still count


def _registered_dirs():
    try:
        entries = [p for p in REGISTRY_DIR.iterdir() if p.suffix == ".lab"]
    except OSError:
        return []
    dirs = []
    for entry in entries:
        try:
            lab_dir = Path(entry.read_text().strip())
        except OSError:
            continue
        if (lab_dir / "ports.json").exists():
            dirs.append(lab_dir)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    return dirs


def ports_json(lab_dir):
    """The ports one lab has persisted (an empty set when it has none or it is unreadable)."""
    try:
        data = json.loads((Path(lab_dir) / "ports.json").read_text())
    except (OSError, ValueError):
        return set()
    return {v for v in data.values() if isinstance(v, int)} if isinstance(data, dict) else set()


def lab_ports(exclude=None, also=()):
    """Every port any registered lab (and each of ``also``) has persisted, but ``exclude``'s."""
    exclude = Path(exclude).absolute() if exclude else None
    taken = set()
    for lab_dir in {Path(d).absolute() for d in list(also) + _registered_dirs()}:
        if lab_dir != exclude:
            taken |= ports_json(lab_dir)
    return taken
