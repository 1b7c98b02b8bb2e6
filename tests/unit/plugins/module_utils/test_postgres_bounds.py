"""Statement and lock timeouts of every PostgreSQL session (issue 15): options and messages."""
import pytest

from ansible_collections.apex.ops.plugins.module_utils import common_args, postgres


def test_defaults_match_the_argspec():
    spec = common_args.POSTGRES_ARGSPEC
    assert spec["statement_timeout"]["default"] == postgres.DEFAULT_STATEMENT_TIMEOUT == "5m"
    assert spec["lock_timeout"]["default"] == postgres.DEFAULT_LOCK_TIMEOUT == "10s"


@pytest.mark.parametrize("params, options", [
    ({}, "-c statement_timeout=300000 -c lock_timeout=10000"),
    ({"statement_timeout": None, "lock_timeout": None}, "-c statement_timeout=300000 -c lock_timeout=10000"),
    ({"statement_timeout": "1h", "lock_timeout": "250ms"}, "-c statement_timeout=3600000 -c lock_timeout=250"),
    ({"statement_timeout": 0, "lock_timeout": "0"}, "-c statement_timeout=0 -c lock_timeout=0"),
    ({"statement_timeout": 90, "lock_timeout": 1.5}, "-c statement_timeout=90000 -c lock_timeout=1500"),
])
def test_session_options(params, options):
    assert postgres.session_options(params) == options


@pytest.mark.parametrize("params, name", [
    ({"lock_timeout": "ten seconds"}, "lock_timeout"),
    ({"statement_timeout": "-5"}, "statement_timeout"),
    ({"statement_timeout": True}, "statement_timeout"),
    ({"lock_timeout": "0.0001"}, "lock_timeout"),
])
def test_bad_timeouts_name_the_option(params, name):
    with pytest.raises(ValueError) as err:
        postgres.session_timeouts(params)
    assert str(err.value).startswith(name + ":")


def test_options_never_reach_the_libpq_environment_of_pg_dump():
    params = dict(login_host="db", login_port=5432, login_user="apex", login_password="pw", login_db="apex",
                  ssl_mode="disable", ca_cert=None, connect_timeout=10, statement_timeout="5m", lock_timeout="10s")
    env = postgres.libpq_environment(params)
    assert "PGOPTIONS" not in env and "options" not in postgres.connection_kwargs(params)


class FakeError(Exception):
    def __init__(self, sqlstate, text):
        super(FakeError, self).__init__(text)
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate, text, kind", [
    ("55P03", "canceling statement due to lock timeout", "lock_timeout"),
    ("57014", "canceling statement due to statement timeout", "statement_timeout"),
    ("57014", "canceling statement due to user request", None),  # pg_cancel_backend: not ours to explain
    ("55P03", 'could not obtain lock on row in relation "tasks"', None),  # NOWAIT
    ("42P01", "relation does not exist", None),
])
def test_classify_timeout(sqlstate, text, kind):
    assert postgres.classify_timeout(FakeError(sqlstate, text)) == kind


HOLDER = {"pid": 4242, "user": "apex", "application_name": "psql", "client_addr": "10.0.0.7",
          "state": "idle in transaction", "xact_start": "2026-12-02T06:00:00+00:00",
          "query_start": "2026-12-02T06:00:01+00:00", "held_modes": ["AccessExclusiveLock"],
          "query": "LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE"}


def test_lock_timeout_message_names_the_holder():
    msg = postgres.timeout_message("lock_timeout", 10, "VACUUM (ANALYZE) \"public\".\"tasks\"", [HOLDER],
                                   {"locktype": "relation", "mode": "ShareUpdateExclusiveLock", "relation": "tasks"})
    assert msg == (
        "lock_timeout (10s) reached: the statement waited for ShareUpdateExclusiveLock on tasks held by pid 4242 "
        "(user apex, application 'psql', client 10.0.0.7, idle in transaction, transaction open since "
        "2026-12-02T06:00:00+00:00, holds AccessExclusiveLock), last query: LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE. "
        "It was cancelled; a cancelled statement changes nothing. End or wait for the blocking session "
        "(apex_db_maint state=cancel/terminate with its pid), or raise lock_timeout. "
        "Statement: VACUUM (ANALYZE) \"public\".\"tasks\"")


def test_statement_timeout_message_without_blocker_says_it_was_working():
    msg = postgres.timeout_message("statement_timeout", 300, "SELECT 1", [])
    assert msg.startswith("statement_timeout (5m) reached (no session was blocking it: it was still working).")
    assert "Raise statement_timeout (0 disables it)" in msg
    msg = postgres.timeout_message("lock_timeout", 0.5, "SELECT 1", [])
    assert "lock_timeout (0.5s) reached: the statement waited for a lock (the session holding it was not observed)" in msg


def test_statement_timeout_message_with_blocker():
    msg = postgres.timeout_message("statement_timeout", 60, "SELECT 1", [dict(HOLDER, xact_start=None)],
                                   {"locktype": "relation", "mode": "AccessShareLock", "relation": "tasks"})
    assert msg.startswith("statement_timeout (1m) reached: the statement was waiting for AccessShareLock on tasks "
                          "held by pid 4242 (user apex, application 'psql', client 10.0.0.7, idle in transaction, "
                          "last query started 2026-12-02T06:00:01+00:00")


def test_exception_carries_last_state():
    exc = postgres.StatementTimeout("lock_timeout", 2.0, "SELECT 1", [HOLDER], None, "canceling statement", "55P03")
    assert exc.last_state["blocking_sessions"] == [HOLDER] and exc.last_state["limit_seconds"] == 2.0
    assert "pid 4242" in str(exc)


def test_statement_text_is_redacted_and_short():
    text = postgres.statement_text("ALTER ROLE apex PASSWORD 'hunter2'  \n  VALID UNTIL 'infinity'")
    assert "hunter2" not in text and text.startswith("ALTER ROLE apex PASSWORD '********' VALID UNTIL")
    assert postgres.statement_text(b"SELECT " + b"x" * 1000).endswith("...")
    assert len(postgres.statement_text("SELECT " + "x" * 1000)) == postgres.QUERY_TEXT_LIMIT + 3
