# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis connections from REDIS_ARGSPEC options."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils.apex_module import find_error_of

REDIS_IMPORT_ERROR = find_error_of("redis")  # imported where used
REQUIREMENT = ("redis>=5.0", REDIS_IMPORT_ERROR)


def connect(params):
    import redis  # imported lazily: the module has checked REQUIREMENT already

    kwargs = dict(
        host=params["redis_host"],
        port=params["redis_port"],
        db=params["redis_db"],
        password=params.get("redis_password") or None,
        socket_timeout=params["redis_timeout"],
        socket_connect_timeout=params["redis_timeout"],
        decode_responses=False,
    )
    if params.get("redis_tls"):
        kwargs["ssl"] = True
        if params.get("redis_ca_file"):
            kwargs["ssl_ca_certs"] = params["redis_ca_file"]
    client = redis.Redis(**kwargs)
    client.ping()
    return client
