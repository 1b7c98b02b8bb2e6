"""Shared plumbing for the twin: configuration from the environment, logging, clients."""
import json
import os
import sys
import threading
import time

QUEUE_KEY = "apex:tasks:queue"
DEAD_LETTER_KEY = "apex:tasks:dead-letter"
PROCESSING_PREFIX = "apex:tasks:processing:"
WORKER_HEARTBEAT_PREFIX = "apex:workers:"
CIRCUIT_BREAKER_KEY = "apex:circuit-breaker"
# The lab's fake LLM provider status pages (twin-only): provider -> Statuspage indicator.
PROVIDER_STATUS_KEY = "apex:lab:provider-status"
STATS_COMPLETED_KEY = "apex:stats:tasks_completed"
STATS_FAILED_KEY = "apex:stats:tasks_failed"

_log_lock = threading.Lock()


def env(name, default=None):
    value = os.environ.get(name)
    return default if value in (None, "") else value


def env_float(name, default):
    try:
        return float(env(name, default))
    except (TypeError, ValueError):
        raise SystemExit("%s must be a number, got %r" % (name, os.environ.get(name)))


def env_int(name, default):
    try:
        return int(env(name, default))
    except (TypeError, ValueError):
        raise SystemExit("%s must be an integer, got %r" % (name, os.environ.get(name)))


def make_logger(component):
    """One JSON line per event on stderr (like a container log): ``log("task completed", ...)``."""

    def log(event, **fields):
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "component": component,
                  "msg": event}
        record.update(fields)
        line = json.dumps(record, default=str, sort_keys=False)
        with _log_lock:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    return log


def pg_dsn(required=True):
    dsn = env("APEX_PG_DSN")
    if not dsn and required:
        raise SystemExit("APEX_PG_DSN is not set (libpq DSN of the application role)")
    return dsn


def pg_connect(dsn, application_name, autocommit=True, connect_timeout=3):
    import psycopg
    return psycopg.connect(dsn, autocommit=autocommit, application_name=application_name,
                           connect_timeout=connect_timeout)


def redis_client(url=None, timeout=2.0):
    import redis
    url = url or env("APEX_REDIS_URL")
    if not url:
        raise SystemExit("APEX_REDIS_URL is not set (redis://:password@host:port/db)")
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                decode_responses=True, health_check_interval=10)


def pid_alive(pid):
    """A live process (a zombie nobody reaped yet counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child nobody reaped yet is a zombie: dead for our purpose
        with open("/proc/%d/stat" % pid, "r") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True
