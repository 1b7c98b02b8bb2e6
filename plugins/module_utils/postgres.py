# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connections from POSTGRES_ARGSPEC options (psycopg 3)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils.apex_module import import_error_of

PSYCOPG_IMPORT_ERROR = import_error_of(lambda: __import__("psycopg"))
REQUIREMENT = ("psycopg[binary]>=3.1", PSYCOPG_IMPORT_ERROR)


def connection_kwargs(params, dbname=None):
    """libpq keyword arguments for psycopg.connect(); the password stays out of any DSN string."""
    kwargs = dict(
        host=params["login_host"],
        port=params["login_port"],
        user=params["login_user"],
        dbname=dbname or params["login_db"],
        sslmode=params["ssl_mode"],
        connect_timeout=params["connect_timeout"],
        application_name="apex.ops",
    )
    if params.get("login_password"):
        kwargs["password"] = params["login_password"]
    if params.get("ca_cert"):
        kwargs["sslrootcert"] = params["ca_cert"]
    return kwargs


def libpq_environment(params, dbname=None):
    """Environment for libpq programs (pg_dump, pg_restore): credentials never go on argv."""
    mapping = dict(host="PGHOST", port="PGPORT", user="PGUSER", dbname="PGDATABASE", password="PGPASSWORD",
                   sslmode="PGSSLMODE", sslrootcert="PGSSLROOTCERT", connect_timeout="PGCONNECT_TIMEOUT",
                   application_name="PGAPPNAME")
    return dict((mapping[k], str(v)) for k, v in connection_kwargs(params, dbname).items())


def connect(params, dbname=None, autocommit=True):
    import psycopg  # imported lazily: the module has checked REQUIREMENT already

    return psycopg.connect(autocommit=autocommit, **connection_kwargs(params, dbname))
