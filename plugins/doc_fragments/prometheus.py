# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Matches PROMETHEUS_ARGSPEC in plugins/module_utils/common_args.py
    DOCUMENTATION = r"""
options:
  prometheus_url:
    description:
      - Base URL of the Prometheus server (the HTTP API is under C(/api/v1)), e.g. V(https://prometheus.example.com).
        Falls back to E(APEX_PROMETHEUS_URL).
    type: str
  prometheus_token:
    description:
      - Bearer token sent as C(Authorization), e.g. for a Prometheus behind an OAuth proxy. Falls back to
        E(APEX_PROMETHEUS_TOKEN). Never logged or returned.
    type: str
  prometheus_username:
    description:
      - User of HTTP basic authentication. Falls back to E(APEX_PROMETHEUS_USERNAME).
    type: str
  prometheus_password:
    description:
      - Password of HTTP basic authentication. Falls back to E(APEX_PROMETHEUS_PASSWORD). Never logged or returned.
    type: str
  prometheus_ca:
    description:
      - CA bundle that signed the server's certificate. Falls back to E(APEX_PROMETHEUS_CA).
    type: path
  prometheus_validate_certs:
    description:
      - Verify the server's certificate.
    type: bool
    default: true
  prometheus_timeout:
    description:
      - Seconds to wait for one API call.
    type: float
    default: 10.0
"""
