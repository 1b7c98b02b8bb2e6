"""What the lab needs on the machine (PostgreSQL 15, Redis, Prometheus, Alertmanager, Python packages); ``install-deps.sh``
installs what is missing."""
import importlib
import importlib.util
import subprocess
from pathlib import Path

from .alertmanager import ALERTMANAGER
from .postgres import PG_BIN
from .prometheus import PROMETHEUS
from .procs import LabError, say
from .redis import REDIS_SERVER
from .state import LAB_PY_DIR, ROOT


def missing_deps():
    missing = []
    for tool in ("initdb", "pg_ctl", "pg_basebackup", "psql", "pg_isready"):
        if not (PG_BIN / tool).exists():
            missing.append(str(PG_BIN / tool))
    for binary in (REDIS_SERVER, PROMETHEUS, ALERTMANAGER):
        if not Path(binary).exists():
            missing.append(binary)
    for mod in ("cryptography", "boto3", "moto", "flask"):
        if importlib.util.find_spec(mod) is None:
            missing.append("python:%s" % mod)
    return missing


def ensure_deps():
    missing = missing_deps()
    if not missing:
        return
    say("missing %s: running tests/lab/install-deps.sh" % ", ".join(missing))
    rc = subprocess.call(["bash", str(LAB_PY_DIR / "install-deps.sh")], cwd=str(ROOT))
    importlib.invalidate_caches()
    missing = missing_deps()
    if rc != 0 or missing:
        raise LabError("install-deps.sh failed (rc=%s); still missing: %s" % (rc, ", ".join(missing) or "-"))
