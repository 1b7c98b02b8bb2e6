# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Matches REDIS_ARGSPEC in plugins/module_utils/common_args.py
    DOCUMENTATION = r"""
options:
  redis_host:
    description:
      - Redis host. Falls back to E(APEX_REDIS_HOST).
    type: str
    default: localhost
  redis_port:
    description:
      - Redis port. Falls back to E(APEX_REDIS_PORT).
    type: int
    default: 6379
  redis_password:
    description:
      - Redis password (C(AUTH)). Falls back to E(APEX_REDIS_PASSWORD). Never logged or returned.
    type: str
  redis_db:
    description:
      - Redis database number.
    type: int
    default: 0
  redis_tls:
    description:
      - Connect with TLS.
    type: bool
    default: false
  redis_ca_file:
    description:
      - CA bundle for O(redis_tls).
    type: path
  redis_timeout:
    description:
      - Socket timeout in seconds.
    type: float
    default: 10.0
requirements:
  - redis >= 5.0
"""
