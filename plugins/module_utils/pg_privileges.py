# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The privileges of a database that a restore must keep: capture, re-apply, compare.

``pg_dump`` of one database does not carry the database itself: its owner (``datdba``) and its
ACL (``datacl``: ``CONNECT``, ``CREATE``, ``TEMPORARY``) are lost when a restore drops and
creates it again. Schema ``public`` (owner, ACL) and default privileges (``pg_default_acl``)
are in the dump, but ``--no-owner``/``--no-privileges`` or a backup of another database do not
bring them back either. The application then gets "permission denied for schema public".

So a restore captures these before it touches the target, puts them back afterwards and reads
them again to compare (``compare``): a restore (or a rollback) says "done" only when they match.

ACLs are compared as the *effective* privileges (``aclexplode`` of the ACL, or of
``acldefault`` when the ACL is NULL), one row per (grantor, grantee, privilege, grantable);
the owner, as grantor or grantee, is written ``(owner)`` so an explicit new owner
(``target_owner``) does not count as a difference of the ACL. Every identifier goes through
``psycopg.sql``; privilege keywords are checked against a fixed list.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

OWNER = "(owner)"
PUBLIC = "PUBLIC"

# privilege keywords aclexplode returns, per object class (the only words put into SQL text)
DATABASE_PRIVILEGES = ("CONNECT", "CREATE", "TEMPORARY")
SCHEMA_PRIVILEGES = ("CREATE", "USAGE")
DEFAULT_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN",
                      "EXECUTE", "USAGE", "CREATE")
DEFAULT_OBJECT_TYPES = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}


class PrivilegeError(Exception):
    pass


def _sql():
    from psycopg import sql  # lazily: REQUIREMENT checked by the module
    return sql


def _explode(owner_column, acl, catalog):
    """aclexplode of ``acl`` (a column expression of ``catalog``) with names, the owner as ``(owner)``."""
    return """
    SELECT CASE WHEN a.grantor = c.%(owner)s THEN '(owner)' ELSE pg_get_userbyid(a.grantor) END,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' WHEN a.grantee = c.%(owner)s THEN '(owner)'
                ELSE pg_get_userbyid(a.grantee) END,
           a.privilege_type, a.is_grantable
      FROM %(catalog)s c, aclexplode(%(acl)s) a""" % {"owner": owner_column, "acl": acl, "catalog": catalog}


DATABASE_ACL_SQL = _explode("datdba", "coalesce(c.datacl, acldefault('d', c.datdba))", "pg_database") + \
    " WHERE c.oid = %s"
SCHEMA_ACL_SQL = _explode("nspowner", "coalesce(c.nspacl, acldefault('n', c.nspowner))", "pg_namespace") + \
    " WHERE c.nspname = 'public'"


def _rows(rows):
    return sorted([{"grantor": r[0], "grantee": r[1], "privilege": r[2], "grantable": bool(r[3])} for r in rows],
                  key=_row_key)


def _row_key(row):
    return (row["grantee"], row["privilege"], row["grantor"], row["grantable"])


def capture(conn, dbname):
    """What to keep of database ``dbname``; ``conn`` is connected to ``dbname`` (for the schema and defaults).

    ``pg_database`` is a shared catalog, so one connection to the database reads everything.
    Returns None when the database does not exist.
    """
    row = conn.execute("SELECT oid, pg_get_userbyid(datdba), datacl::text[] FROM pg_database WHERE datname = %s",
                       (dbname,)).fetchone()
    if row is None:
        return None
    oid, owner, acl_text = row
    db_acl = conn.execute(DATABASE_ACL_SQL, (oid,)).fetchall()
    result = {
        "database": dbname,
        "owner": owner,
        "acl": _rows(db_acl),
        "acl_text": acl_text,
        "public_schema": None,
        "default_acl": [],
    }
    nsp = conn.execute("SELECT pg_get_userbyid(nspowner), nspacl::text[] FROM pg_namespace WHERE nspname = 'public'"
                       ).fetchone()
    if nsp is not None:
        nsp_acl = conn.execute(SCHEMA_ACL_SQL).fetchall()
        result["public_schema"] = {"owner": nsp[0], "acl": _rows(nsp_acl), "acl_text": nsp[1]}
    defaults = conn.execute("""
        SELECT pg_get_userbyid(d.defaclrole), coalesce(n.nspname, ''), d.defaclobjtype::text,
               CASE WHEN a.grantor = d.defaclrole THEN '(owner)' ELSE pg_get_userbyid(a.grantor) END,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' WHEN a.grantee = d.defaclrole THEN '(owner)'
                    ELSE pg_get_userbyid(a.grantee) END,
               a.privilege_type, a.is_grantable
          FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace,
               aclexplode(d.defaclacl) a""").fetchall()
    result["default_acl"] = sorted(
        [{"role": r[0], "schema": r[1], "objtype": r[2], "grantor": r[3], "grantee": r[4], "privilege": r[5],
          "grantable": bool(r[6])} for r in defaults], key=_default_key)
    return result


def _default_key(row):
    return (row["role"], row["schema"], row["objtype"], row["grantee"], row["privilege"], row["grantor"],
            row["grantable"])


def roles_named(privileges):
    """Every role a capture names (to check they exist before applying it elsewhere)."""
    names = set()
    if not privileges:
        return names
    names.add(privileges["owner"])
    for row in privileges["acl"]:
        names.update([row["grantor"], row["grantee"]])
    schema = privileges.get("public_schema")
    if schema:
        names.add(schema["owner"])
        for row in schema["acl"]:
            names.update([row["grantor"], row["grantee"]])
    for row in privileges.get("default_acl") or []:
        names.update([row["role"], row["grantor"], row["grantee"]])
    names.discard(OWNER)
    names.discard(PUBLIC)
    return names


def missing_roles(conn, names):
    if not names:
        return []
    found = set(r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                           (sorted(names),)).fetchall())
    return sorted(set(names) - found)


def expected(before, owner=None):
    """What the database should look like after the restore: ``before``, with ``owner`` when one was given."""
    if before is None:
        return None
    want = dict(before)
    if owner:
        want["owner"] = owner
    return want


def _grantee(sql, name, owner):
    if name == PUBLIC:
        return sql.SQL("PUBLIC")
    return sql.Identifier(owner if name == OWNER else name)


def _keyword(sql, word, allowed):
    if word not in allowed:
        raise PrivilegeError("unexpected privilege %r" % word)
    return sql.SQL(word)


def _acl_statements(sql, want_rows, have_rows, on, allowed, owner):
    """GRANT/REVOKE statements turning the ACL ``have_rows`` into ``want_rows``: (grantor or None, statement)."""
    want = set(tuple(sorted(r.items())) for r in want_rows)
    have = set(tuple(sorted(r.items())) for r in have_rows)
    out = []
    for item in sorted(have - want):
        row = dict(item)
        same = dict(row, grantable=not row["grantable"])
        if row["grantable"] and tuple(sorted(same.items())) in want:
            stmt = sql.SQL("REVOKE GRANT OPTION FOR {} ON {} FROM {}")
        else:
            stmt = sql.SQL("REVOKE {} ON {} FROM {}")
        out.append((0, row["grantor"], stmt.format(_keyword(sql, row["privilege"], allowed), on,
                                                   _grantee(sql, row["grantee"], owner))))
    for item in sorted(want - have):
        row = dict(item)
        stmt = sql.SQL("GRANT {} ON {} TO {}" + (" WITH GRANT OPTION" if row["grantable"] else ""))
        out.append((1 if row["grantor"] == OWNER else 2, row["grantor"],
                    stmt.format(_keyword(sql, row["privilege"], allowed), on, _grantee(sql, row["grantee"], owner))))
    # revokes first, then grants by the owner, then grants by other grantors (they may need the owner's grant)
    return [(grantor, stmt) for _order, grantor, stmt in sorted(out, key=lambda item: item[0])]


def _default_statements(sql, want_rows, have_rows):
    def group(rows):
        return set(tuple(sorted(r.items())) for r in rows)

    want, have = group(want_rows), group(have_rows)
    out = []
    for item, verb in [(i, "REVOKE") for i in sorted(have - want)] + [(i, "GRANT") for i in sorted(want - have)]:
        row = dict(item)
        if row["objtype"] not in DEFAULT_OBJECT_TYPES:
            raise PrivilegeError("unexpected default privilege object type %r" % row["objtype"])
        head = sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {}").format(sql.Identifier(row["role"]))
        if row["schema"]:
            head = head + sql.SQL(" IN SCHEMA {}").format(sql.Identifier(row["schema"]))
        grantee = _grantee(sql, row["grantee"], row["role"])
        what = _keyword(sql, row["privilege"], DEFAULT_PRIVILEGES)
        objects = sql.SQL(DEFAULT_OBJECT_TYPES[row["objtype"]])
        if verb == "GRANT":
            tail = sql.SQL(" GRANT {} ON {} TO {}" + (" WITH GRANT OPTION" if row["grantable"] else "")).format(
                what, objects, grantee)
        else:
            tail = sql.SQL(" REVOKE {} ON {} FROM {}").format(what, objects, grantee)
        out.append((None, head + tail))
    return out


def apply(conn, dbname, want):
    """Make database ``dbname`` (``conn`` is connected to it) match ``want``; returns the statements run and errors.

    Owners first (``ALTER ... OWNER`` also moves the owner's grants), then the ACL differences
    (revokes, then grants), then default privileges. A statement that fails is reported, the
    others still run; :func:`compare` afterwards tells whether the result matches.
    """
    sql = _sql()
    have = capture(conn, dbname)
    ran, errors = [], []

    def run(stmt, grantor=None):
        text = stmt.as_string(conn)
        try:
            if grantor and grantor != OWNER:
                # a grant recorded with another grantor is made as that role
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(grantor)))
                    conn.execute(stmt)
                text = "SET ROLE %s; %s" % (grantor, text)
            else:
                conn.execute(stmt)
            ran.append(text)
        except Exception as exc:  # noqa: BLE001 - reported; compare() decides
            errors.append("%s: %s: %s" % (text, type(exc).__name__, str(exc).strip()))

    db = sql.Identifier(dbname)
    if have["owner"] != want["owner"]:
        run(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(want["owner"])))
    schema_want, schema_have = want.get("public_schema"), have.get("public_schema")
    if schema_want and schema_have and schema_have["owner"] != schema_want["owner"]:
        run(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(schema_want["owner"])))
    have = capture(conn, dbname)  # owner changes rewrite the ACLs
    for grantor, stmt in _acl_statements(sql, want["acl"], have["acl"], sql.SQL("DATABASE {}").format(db),
                                         DATABASE_PRIVILEGES, want["owner"]):
        run(stmt, grantor)
    if schema_want and have.get("public_schema"):
        for grantor, stmt in _acl_statements(sql, schema_want["acl"], have["public_schema"]["acl"],
                                             sql.SQL("SCHEMA public"), SCHEMA_PRIVILEGES, schema_want["owner"]):
            run(stmt, grantor)
    for grantor, stmt in _default_statements(sql, want.get("default_acl") or [], have.get("default_acl") or []):
        run(stmt, grantor)
    return {"statements": ran, "errors": errors}


def _acl_text(rows):
    return ["%s %s%s (by %s)" % (r["grantee"], r["privilege"], " WITH GRANT OPTION" if r["grantable"] else "",
                                 r["grantor"]) for r in rows]


def _default_text(rows):
    return ["for %s%s on %s: %s %s%s" % (r["role"], " in %s" % r["schema"] if r["schema"] else "",
                                         DEFAULT_OBJECT_TYPES.get(r["objtype"], r["objtype"]), r["grantee"],
                                         r["privilege"], " WITH GRANT OPTION" if r["grantable"] else "")
            for r in rows]


def _item_key(row):
    return tuple(sorted(row.items()))


def _diff_rows(label, want, have, text):
    want_keys, have_keys = set(map(_item_key, want)), set(map(_item_key, have))
    missing = [dict(k) for k in sorted(want_keys - have_keys)]
    extra = [dict(k) for k in sorted(have_keys - want_keys)]
    out = []
    if missing:
        out.append("%s: missing %s" % (label, "; ".join(text(missing))))
    if extra:
        out.append("%s: unexpected %s" % (label, "; ".join(text(extra))))
    return out


def compare(want, have):
    """Differences between the expected privileges and those read back, as sentences ([] when they match)."""
    if want is None:
        return []
    if have is None:
        return ["database %s does not exist" % want.get("database")]
    diffs = []
    if want["owner"] != have["owner"]:
        diffs.append("database owner: expected %s, found %s" % (want["owner"], have["owner"]))
    diffs.extend(_diff_rows("database privileges", want["acl"], have["acl"], _acl_text))
    schema_want, schema_have = want.get("public_schema"), have.get("public_schema")
    if schema_want and not schema_have:
        diffs.append("schema public: missing")
    elif schema_want:
        if schema_want["owner"] != schema_have["owner"]:
            diffs.append("schema public owner: expected %s, found %s" % (schema_want["owner"], schema_have["owner"]))
        diffs.extend(_diff_rows("schema public privileges", schema_want["acl"], schema_have["acl"], _acl_text))
    diffs.extend(_diff_rows("default privileges", want.get("default_acl") or [], have.get("default_acl") or [],
                            _default_text))
    return diffs
