"""Whether a running twin or simulator runs the code that is on disk now: mtime+size of the
package's Python files, recorded at start."""
import hashlib

from .procs import say
from .state import LAB_PY_DIR


def fingerprint(name):
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


def _file(state, name):
    return (state.twin_dir if name == "twin" else state.kube_dir) / "code.fingerprint"


def record(state, name):
    _file(state, name).write_text(fingerprint(name) + "\n")


def changed(state, name):
    try:
        return _file(state, name).read_text().strip() != fingerprint(name)
    except OSError:
        return False


def notice(state, name):
    if changed(state, name):
        say("note: tests/lab/%s changed since the running %s started; `lab.py restart %s` picks it up"
            % (name, name, name))
