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
requirements:
  - psycopg >= 3.1
"""
