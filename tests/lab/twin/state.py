"""The twin's desired state: the seam between "what Kubernetes says" and "how Apex behaves".

Whoever plays the cluster (today the lab, later the Kubernetes simulator) writes ONE JSON
object to the file named by ``$APEX_TWIN_STATE``; the twin's ``serve`` and ``worker``
processes re-read it whenever its mtime/size changes (a ``stat()`` at most every 0.2 s), so
a change is visible within ~0.2 s, without a restart.

Every key is optional; a missing key (or a missing/unreadable file) means the default.
Unknown keys are ignored (and listed in ``State.unknown``), so a writer may add its own
bookkeeping. Write the file atomically: use :func:`write_state` (temp file + ``rename``),
never truncate-and-write in place, or a reader may see half a file (it then keeps the last
good state and logs a warning).

Keys (type, default) and what they simulate:

``version`` (str, "1.0.0")
    Image tag of ``apex-api``/``apex-worker`` (stable track). Reported by ``/health``,
    ``X-Apex-Version`` and ``apex_build_info{version,track}``.
``maintenance_mode`` (bool, false)
    ``APEX__MAINTENANCE_MODE``. Every endpoint except ``/health``, ``/live`` and ``/metrics``
    answers 503 with a JSON message; ``/ready`` is 503; ``/health`` reports it (200).
``worker_concurrency`` (int >= 0, 2)
    ``APEX__WORKER__CONCURRENCY``: tasks in flight per worker replica.
``force_provider`` (str or null, null)
    ``APEX__ROUTING__FORCE_PROVIDER``: the worker records this provider on every task
    (``tasks.provider``) instead of the task's own.
``db_max_connections`` (int >= 1, 10)
    ``APEX__DATABASE__MAX_CONNECTIONS``: size of the API's PostgreSQL pool (visible in
    ``pg_stat_activity`` as application ``apex-api``). When every pooled connection is busy,
    ``/ready`` is 503 ("no capacity").
``circuit_breaker_failure_threshold`` (int >= 1, 5)
    ``APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD``: consecutive task failures that open the
    circuit breaker.
``failure_rate`` (float 0..1, 0.0)
    Fraction of routed requests (everything except ``/live``, ``/metrics``) the stable track
    answers with 500 — the "image that returns errors".
``task_failure_rate`` (float 0..1 or null, null)
    Fraction of tasks the worker fails at random; null means "same as failure_rate".
``latency_ms`` (int >= 0, 0)
    Extra latency added to every routed request of the stable track — the "slow image".
``db_latency_ms`` (int >= 0, 0)
    Every task API request (submit, get) also runs ``pg_sleep`` for this long on its pooled
    connection: slow queries, visible in ``pg_stat_activity`` as application ``apex-api``;
    with enough traffic the pool fills up and ``/ready`` says "no capacity".
``api_ready_replicas`` (int >= 0, 3)
    Ready pods of ``apex-api`` (stable track). Requests are routed to the stable or canary
    track in proportion to ready replicas. When stable + canary is 0, every endpoint
    except ``/live`` answers 503 ``{"error": "no ready replicas"}`` (what an ingress
    answers with no endpoints behind the service); the listener itself stays up.
``worker_ready_replicas`` (int >= 0, 5)
    Ready pods of ``apex-worker``. The worker drains the queue at
    ``worker_ready_replicas * worker_concurrency * $APEX_TWIN_TASK_RATE`` tasks/s
    (token bucket); 0 means no task is taken at all.
``canary`` (object or null, null)
    ``apex-api-canary``: ``ready_replicas`` (int, 0), ``version`` (str, stable version),
    ``failure_rate`` (float, 0.0), ``latency_ms`` (int, 0). Its requests and latency are
    labelled ``track="canary"`` in ``/metrics``; stable ones ``track="stable"``.
``tls_cert_file`` / ``tls_key_file`` (path or null, null)
    PEM certificate chain and key the HTTPS listener serves (the ``apex-tls`` secret as
    the ingress sees it). Null means ``$APEX_TWIN_CERT`` / ``$APEX_TWIN_KEY``. When a path
    or the file's mtime changes, NEW connections get the new certificate (existing
    keep-alive connections keep theirs, like an ingress reload). An unreadable pair is
    logged and the previous certificate stays in service.
"""
import copy
import json
import os
import tempfile
import threading
import time

DEFAULTS = {
    "version": "1.0.0",
    "maintenance_mode": False,
    "worker_concurrency": 2,
    "force_provider": None,
    "db_max_connections": 10,
    "circuit_breaker_failure_threshold": 5,
    "failure_rate": 0.0,
    "task_failure_rate": None,
    "latency_ms": 0,
    "db_latency_ms": 0,
    "api_ready_replicas": 3,
    "worker_ready_replicas": 5,
    "canary": None,
    "tls_cert_file": None,
    "tls_key_file": None,
}

CANARY_DEFAULTS = {
    "ready_replicas": 0,
    "version": None,  # None: the stable version
    "failure_rate": 0.0,
    "latency_ms": 0,
}


class StateError(ValueError):
    """The desired-state document does not match the schema."""


def _bool(key, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise StateError("%s must be a boolean, got %r" % (key, value))


def _int(key, value, minimum=0):
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise StateError("%s must be an integer, got %r" % (key, value))
    try:
        number = int(value)
    except ValueError:
        raise StateError("%s must be an integer, got %r" % (key, value))
    if number < minimum:
        raise StateError("%s must be >= %d, got %r" % (key, minimum, value))
    return number


def _rate(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise StateError("%s must be a number between 0 and 1, got %r" % (key, value))
    try:
        number = float(value)
    except ValueError:
        raise StateError("%s must be a number between 0 and 1, got %r" % (key, value))
    if not 0.0 <= number <= 1.0:
        raise StateError("%s must be between 0 and 1, got %r" % (key, value))
    return number


def _opt_str(key, value):
    if value is None:
        return None
    if not isinstance(value, str):
        raise StateError("%s must be a string or null, got %r" % (key, value))
    return value or None


def normalize(raw):
    """Validate ``raw`` (a dict) and return a complete state dict (defaults filled in).

    Raises :class:`StateError` on a wrong type or range; unknown keys are kept aside under
    ``"_unknown"`` (a sorted list of names).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise StateError("the desired state must be a JSON object, got %s" % type(raw).__name__)
    state = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if key not in DEFAULTS:
            continue
        if value is None and key not in ("force_provider", "task_failure_rate", "canary",
                                         "tls_cert_file", "tls_key_file"):
            continue  # explicit null on a non-nullable key: the default
        state[key] = value
    state["version"] = str(state["version"])
    state["maintenance_mode"] = _bool("maintenance_mode", state["maintenance_mode"])
    state["worker_concurrency"] = _int("worker_concurrency", state["worker_concurrency"])
    state["force_provider"] = _opt_str("force_provider", state["force_provider"])
    state["db_max_connections"] = _int("db_max_connections", state["db_max_connections"], 1)
    state["circuit_breaker_failure_threshold"] = _int(
        "circuit_breaker_failure_threshold", state["circuit_breaker_failure_threshold"], 1)
    state["failure_rate"] = _rate("failure_rate", state["failure_rate"])
    if state["task_failure_rate"] is not None:
        state["task_failure_rate"] = _rate("task_failure_rate", state["task_failure_rate"])
    state["latency_ms"] = _int("latency_ms", state["latency_ms"])
    state["db_latency_ms"] = _int("db_latency_ms", state["db_latency_ms"])
    state["api_ready_replicas"] = _int("api_ready_replicas", state["api_ready_replicas"])
    state["worker_ready_replicas"] = _int("worker_ready_replicas", state["worker_ready_replicas"])
    state["tls_cert_file"] = _opt_str("tls_cert_file", state["tls_cert_file"])
    state["tls_key_file"] = _opt_str("tls_key_file", state["tls_key_file"])
    canary = state["canary"]
    if canary is not None:
        if not isinstance(canary, dict):
            raise StateError("canary must be an object or null, got %r" % (canary,))
        merged = dict(CANARY_DEFAULTS)
        merged.update({k: v for k, v in canary.items() if k in CANARY_DEFAULTS and v is not None})
        merged["ready_replicas"] = _int("canary.ready_replicas", merged["ready_replicas"])
        merged["version"] = str(merged["version"]) if merged["version"] is not None else state["version"]
        merged["failure_rate"] = _rate("canary.failure_rate", merged["failure_rate"])
        merged["latency_ms"] = _int("canary.latency_ms", merged["latency_ms"])
        state["canary"] = merged
    state["_unknown"] = sorted(k for k in raw if k not in DEFAULTS)
    return state


def load(path):
    """Read and normalize the state file; a missing file means all defaults."""
    if not path or not os.path.exists(path):
        return normalize({})
    with open(path, "r", encoding="utf-8") as handle:
        text = handle.read()
    return parse(text)


def parse(text):
    """Normalize the state file's text (str or UTF-8 bytes); blank means all defaults."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    raw = json.loads(text) if text.strip() else {}
    return normalize(raw)


def write_state(path, state):
    """Atomically replace the state file with ``state`` (validated first).

    Only known keys are validated; the written document is ``state`` as given (not the
    filled-in defaults), so the file stays a short, readable record of what was set.
    """
    normalize(state)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".desired-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def update_state(path, **changes):
    """Read-modify-write helper: ``update_state(p, maintenance_mode=True)``."""
    current = {}
    if os.path.exists(path):
        with open(path, "r", encoding="utf-8") as handle:
            text = handle.read()
        current = json.loads(text) if text.strip() else {}
    current.update(changes)
    write_state(path, current)
    return current


class StateWatcher:
    """Caches the normalized state; re-parses the file when its content changes.

    ``get()`` is cheap: it reads the (small) file at most every ``interval`` seconds and
    compares the bytes with the last ones seen. Content, not stat: an atomic rewrite of the
    same size within one kernel timestamp tick can reuse the freed inode, so (mtime, size,
    inode) may not change. A broken file keeps the last good state (``last_error`` says why).
    """

    def __init__(self, path, interval=0.2, log=None):
        self.path = path
        self.interval = interval
        self.log = log
        self._lock = threading.Lock()
        self._content = object()  # bytes last parsed (good or broken); None: no file
        self._state = normalize({})
        self._checked = 0.0
        self.last_error = None
        self.get()

    def _read(self):
        """The file's bytes; None when there is no file (all defaults)."""
        if not self.path:
            return None
        try:
            with open(self.path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def get(self, fresh=False):
        """The current state; ``fresh=True`` reads the file now (ignores ``interval``)."""
        if not fresh and time.monotonic() - self._checked < self.interval:
            return self._state
        with self._lock:
            # _checked moves only once _state is current: a reader inside the interval must
            # never get the previous state while another thread is still loading the new one
            started = time.monotonic()
            try:
                content = self._read()
                if content == self._content:
                    self._checked = started
                    return self._state
                state = parse(content) if content is not None else normalize({})
            except (ValueError, OSError) as exc:
                if self.last_error != str(exc) and self.log:
                    self.log("state_invalid", path=self.path, error=str(exc))
                self.last_error = str(exc)
                if isinstance(exc, ValueError):
                    self._content = content  # do not re-parse the same broken bytes
                self._checked = started
                return self._state
            self.last_error = None
            if self.log and content is not None:
                self.log("state_loaded", path=self.path,
                         **{k: v for k, v in state.items() if k in ("version", "maintenance_mode",
                                                                   "api_ready_replicas",
                                                                   "worker_ready_replicas")})
            self._content = content
            self._state = state
            self._checked = started
            return state
