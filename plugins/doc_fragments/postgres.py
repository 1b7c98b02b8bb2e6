# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Matches POSTGRES_ARGSPEC in plugins/module_utils/common_args.py
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host of the PostgreSQL server. Falls back to E(PGHOST).
    type: str
    default: localhost
  login_port:
    description:
      - Port of the PostgreSQL server. Falls back to E(PGPORT).
    type: int
    default: 5432
  login_user:
    description:
      - Role to connect as. Falls back to E(PGUSER).
    type: str
    default: postgres
  login_password:
    description:
      - Password of O(login_user). Falls back to E(PGPASSWORD). Never logged or returned.
    type: str
  login_db:
    description:
      - Database to connect to. Falls back to E(PGDATABASE).
    type: str
    default: apex
  ssl_mode:
    description:
      - libpq C(sslmode). Falls back to E(PGSSLMODE).
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ca_cert:
    description:
      - CA bundle used to verify the server certificate. Falls back to E(PGSSLROOTCERT).
    type: path
  connect_timeout:
    description:
      - Seconds to wait for a connection.
    type: int
    default: 10
  statement_timeout:
    description:
      - Longest any one statement of this module may run (PostgreSQL C(statement_timeout), set for
        the module's own sessions when they connect). A duration like V(30s), V(5m), V(1h), or seconds;
        V(0) removes the bound.
      - When it fires the statement is cancelled (it changes nothing) and the module fails naming the
        sessions that were blocking it, if any (pid, user, application, state, since when, query redacted),
        also under C(last_state.blocking_sessions).
      - C(VACUUM) of a large table can need longer; the C(db_vacuum) role uses V(1h).
        pg_dump and pg_restore run by M(apex.ops.apex_backup) are not affected (they set their own).
    type: raw
    default: 5m
  lock_timeout:
    description:
      - Longest any one statement of this module may wait for a lock held by another session
        (PostgreSQL C(lock_timeout)). A duration or seconds; V(0) removes the bound.
      - When it fires the module fails naming the session(s) holding the lock (pid, user, application,
        state, since when, held lock modes, query redacted), also under C(last_state.blocking_sessions).
    type: raw
    default: 10s
requirements:
  - psycopg >= 3.1
"""
