"""Small helpers for the db/queue integration tests (own connections, own keys, polling)."""
import threading
import time
import uuid

import psycopg


def admin_conn(lab, application_name, port=None, autocommit=True):
    return psycopg.connect(host=lab["PGHOST"], port=int(port or lab["PGPORT"]), user=lab["PGUSER"],
                           password=lab["PGPASSWORD"], dbname=lab["PGDATABASE"], autocommit=autocommit,
                           application_name=application_name, sslmode="disable")


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def backends(conn, application_name):
    return [r[0] for r in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)).fetchall()]


class SleepingQuery(threading.Thread):
    """Runs ``SELECT pg_sleep(n)`` on its own connection; records how it ended."""

    def __init__(self, lab, application_name, seconds=60):
        super().__init__(daemon=True)
        self.conn = admin_conn(lab, application_name)
        self.pid = self.conn.info.backend_pid
        self.seconds = seconds
        self.error = None
        self.finished_at = None

    def run(self):
        try:
            self.conn.execute("SELECT pg_sleep(%s)", (self.seconds,))
        except Exception as exc:  # QueryCanceled expected
            self.error = exc
        self.finished_at = time.monotonic()

    def close(self):
        try:
            self.conn.cancel()
        except Exception:
            pass
        self.join(5)
        self.conn.close()
