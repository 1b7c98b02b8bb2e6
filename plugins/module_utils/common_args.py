# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument-spec constants shared by modules.

Each constant matches the doc fragment of the same name in ``plugins/doc_fragments``
(``apex.ops.postgres``, ``apex.ops.redis``, ``apex.ops.k8s``, ``apex.ops.s3``, ``apex.ops.prometheus``). Options
fall back to the environment variables their clients already know (libpq's ``PG*``,
``KUBECONFIG``, ``AWS_*``), so the lab's ``.lab/env`` and AWX credentials both work.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import env_fallback

POSTGRES_ARGSPEC = dict(
    login_host=dict(type="str", fallback=(env_fallback, ["PGHOST"]), default="localhost"),
    login_port=dict(type="int", fallback=(env_fallback, ["PGPORT"]), default=5432),
    login_user=dict(type="str", fallback=(env_fallback, ["PGUSER"]), default="postgres"),
    login_password=dict(type="str", no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
    login_db=dict(type="str", fallback=(env_fallback, ["PGDATABASE"]), default="apex"),
    ssl_mode=dict(
        type="str",
        fallback=(env_fallback, ["PGSSLMODE"]),
        default="prefer",
        choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
    ),
    ca_cert=dict(type="path", fallback=(env_fallback, ["PGSSLROOTCERT"])),
    connect_timeout=dict(type="int", default=10),
    statement_timeout=dict(type="raw", default="5m"),
    lock_timeout=dict(type="raw", default="10s"),
)

REDIS_ARGSPEC = dict(
    redis_host=dict(type="str", fallback=(env_fallback, ["APEX_REDIS_HOST"]), default="localhost"),
    redis_port=dict(type="int", fallback=(env_fallback, ["APEX_REDIS_PORT"]), default=6379),
    redis_password=dict(type="str", no_log=True, fallback=(env_fallback, ["APEX_REDIS_PASSWORD"])),
    redis_db=dict(type="int", default=0),
    redis_tls=dict(type="bool", default=False),
    redis_ca_file=dict(type="path"),
    redis_timeout=dict(type="float", default=10.0),
)

K8S_ARGSPEC = dict(
    kubeconfig=dict(type="path", fallback=(env_fallback, ["K8S_AUTH_KUBECONFIG", "KUBECONFIG"])),
    context=dict(type="str", fallback=(env_fallback, ["K8S_AUTH_CONTEXT"])),
    host=dict(type="str", fallback=(env_fallback, ["K8S_AUTH_HOST"])),
    api_key=dict(type="str", no_log=True, fallback=(env_fallback, ["K8S_AUTH_API_KEY"])),
    validate_certs=dict(type="bool", fallback=(env_fallback, ["K8S_AUTH_VERIFY_SSL"]), aliases=["verify_ssl"]),
    ca_cert=dict(type="path", fallback=(env_fallback, ["K8S_AUTH_SSL_CA_CERT"]), aliases=["ssl_ca_cert"]),
    namespace=dict(type="str", default="apex"),
)

S3_ARGSPEC = dict(
    s3_bucket=dict(type="str", fallback=(env_fallback, ["APEX_S3_BUCKET"])),
    s3_prefix=dict(type="str", default="apex"),
    endpoint_url=dict(type="str", fallback=(env_fallback, ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])),
    region=dict(type="str", fallback=(env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION"]), default="us-east-1"),
    access_key=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_ACCESS_KEY_ID"]), aliases=["aws_access_key"]),
    secret_key=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SECRET_ACCESS_KEY"]), aliases=["aws_secret_key"]),
    session_token=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SESSION_TOKEN"])),
)


def with_fallbacks(spec, params, environ=None):
    """``params`` completed as ``AnsibleModule`` would: environment fallbacks, then defaults.

    For code that runs on the controller (action plugins), where no ``AnsibleModule`` resolves
    the spec. Aliases are folded into their option name."""
    import os

    environ = os.environ if environ is None else environ
    resolved = {}
    for name, option in spec.items():
        value = params.get(name)
        for alias in option.get("aliases") or ():
            if value is None:
                value = params.get(alias)
        fallback = option.get("fallback")
        if value is None and fallback and fallback[0] is env_fallback:
            for var in fallback[1]:
                if environ.get(var):
                    value = environ[var]
                    break
        if value is None:
            value = option.get("default")
        if value is not None and option.get("type") == "bool" and isinstance(value, str):
            value = value.strip().lower() in ("1", "true", "yes", "on")
        resolved[name] = value
    return resolved


PROMETHEUS_ARGSPEC = dict(
    prometheus_url=dict(type="str", fallback=(env_fallback, ["APEX_PROMETHEUS_URL"])),
    prometheus_token=dict(type="str", no_log=True, fallback=(env_fallback, ["APEX_PROMETHEUS_TOKEN"])),
    prometheus_username=dict(type="str", fallback=(env_fallback, ["APEX_PROMETHEUS_USERNAME"])),
    prometheus_password=dict(type="str", no_log=True, fallback=(env_fallback, ["APEX_PROMETHEUS_PASSWORD"])),
    prometheus_ca=dict(type="path", fallback=(env_fallback, ["APEX_PROMETHEUS_CA"])),
    prometheus_validate_certs=dict(type="bool", default=True),
    prometheus_timeout=dict(type="float", default=10.0),
)
