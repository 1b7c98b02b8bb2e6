"""Unit tests of the decisions behind issue 15 cause 4: privilege comparison and GRANT/REVOKE planning
(pg_privileges), the refusal of system targets (pg_admin), and the byte-exact dead-letter save format (queue)."""
import base64
import json

import pytest

from ansible_collections.apex.ops.plugins.module_utils import pg_admin, pg_privileges as pp
from ansible_collections.apex.ops.plugins.module_utils import queue as q


def acl(*rows):
    return [dict(grantor=g, grantee=e, privilege=p, grantable=o) for g, e, p, o in rows]


BEFORE = {
    "database": "apex", "owner": "apex",
    "acl": acl(("(owner)", "(owner)", "CONNECT", False), ("(owner)", "PUBLIC", "CONNECT", False),
               ("(owner)", "pg_monitor", "CREATE", False)),
    "public_schema": {"owner": "pg_database_owner", "acl": acl(("(owner)", "(owner)", "USAGE", False))},
    "default_acl": [dict(role="apex", schema="public", objtype="r", grantor="(owner)", grantee="pg_monitor",
                         privilege="SELECT", grantable=False)],
}


def test_compare_names_every_difference():
    after = json.loads(json.dumps(BEFORE))
    after["owner"] = "postgres"
    after["acl"] = after["acl"][:2] + acl(("(owner)", "PUBLIC", "TEMPORARY", False))
    after["default_acl"] = []
    diffs = pp.compare(BEFORE, after)
    assert diffs[0] == "database owner: expected apex, found postgres"
    assert any("missing pg_monitor CREATE" in d for d in diffs)
    assert any("unexpected PUBLIC TEMPORARY" in d for d in diffs)
    assert any(d.startswith("default privileges: missing for apex in public on TABLES: pg_monitor SELECT") for d in diffs)
    assert pp.compare(BEFORE, json.loads(json.dumps(BEFORE))) == []
    assert pp.compare(BEFORE, None) == ["database apex does not exist"]
    assert pp.compare(None, BEFORE) == []


def test_expected_owner_override_keeps_the_acl():
    want = pp.expected(BEFORE, "postgres")
    assert want["owner"] == "postgres" and want["acl"] == BEFORE["acl"] and BEFORE["owner"] == "apex"
    assert pp.expected(None, "x") is None


def test_acl_statements_revoke_first_then_grant_and_quote_identifiers():
    from psycopg import sql

    have = acl(("(owner)", "PUBLIC", "TEMPORARY", False), ("(owner)", 'we"ird', "CONNECT", True))
    want = acl(("(owner)", 'we"ird', "CONNECT", False), ("(owner)", "pg_monitor", "CREATE", False))
    planned = pp._acl_statements(sql, want, have, sql.SQL("DATABASE {}").format(sql.Identifier("apex")),
                                 pp.DATABASE_PRIVILEGES, "apex")
    texts = [stmt.as_string(None) if hasattr(stmt, "as_string") else str(stmt) for _g, stmt in planned]
    assert texts[0].startswith("REVOKE") and texts[-1].startswith("GRANT")
    assert 'REVOKE GRANT OPTION FOR CONNECT ON DATABASE "apex" FROM "we""ird"' in texts
    assert 'REVOKE TEMPORARY ON DATABASE "apex" FROM PUBLIC' in texts
    assert 'GRANT CREATE ON DATABASE "apex" TO "pg_monitor"' in texts


def test_unexpected_privilege_words_never_reach_sql():
    from psycopg import sql

    with pytest.raises(pp.PrivilegeError):
        pp._acl_statements(sql, acl(("(owner)", "x", "CONNECT; DROP", False)), [], sql.SQL("DATABASE x"),
                           pp.DATABASE_PRIVILEGES, "o")


def test_roles_named():
    assert pp.roles_named(BEFORE) == {"apex", "pg_monitor", "pg_database_owner"}


@pytest.mark.parametrize("target, maint, refused", [
    ("postgres", "postgres", "maintenance database"), ("template0", "postgres", "system database"),
    ("template1", "postgres", "system database"), ("ops", "ops", "maintenance database"),
    ("postgres", "template1", "system database"), ("apex", "postgres", None)])
def test_protected_targets(target, maint, refused):
    why = pg_admin.protected_target_refusal({"maintenance_db": maint}, target)
    assert (why is None) if refused is None else (refused in why and "nothing was changed" in why)


def test_save_document_is_byte_exact_and_loads_back(tmp_path):
    raw = [b'\xff\xfe{"id":1}\x80', b'{"task_id": "t1"}', b"tsk_2"]
    doc = q.save_document("dl", raw, "now")
    assert doc["format_version"] == 2 and doc["not_utf8"] == [0] and doc["items"][1] == {"task_id": "t1"}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    loaded = q.load_save_file(str(path))
    assert loaded["entries"] == raw and loaded["byte_exact"] is True


def test_old_format_is_read_but_lossy_items_refused(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"items": [{"task_id": "t"}, "tsk"]}))
    assert q.load_save_file(str(path)) == dict(entries=[b'{"task_id":"t"}', b"tsk"], byte_exact=False, key=None,
                                               path=str(path), format_version=1)
    path.write_text(json.dumps({"items": ["\ufffd"]}))
    with pytest.raises(q.QueueError, match="original bytes are lost"):
        q.load_save_file(str(path))
    path.write_text(json.dumps({"raw_base64": ["not base64!"], "items": ["x"]}))
    with pytest.raises(q.QueueError, match="not base64"):
        q.load_save_file(str(path))
    path.write_text(json.dumps({"raw_base64": [base64.b64encode(b"a").decode()], "count": 2}))
    with pytest.raises(q.QueueError, match="damaged"):
        q.load_save_file(str(path))
