# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Matches S3_ARGSPEC in plugins/module_utils/common_args.py
    DOCUMENTATION = r"""
options:
  s3_bucket:
    description:
      - Bucket holding the backups. Falls back to E(APEX_S3_BUCKET).
    type: str
  s3_prefix:
    description:
      - Key prefix under which backups are stored.
    type: str
    default: apex
  endpoint_url:
    description:
      - S3 endpoint URL (S3-compatible stores, the lab's moto). Falls back to E(AWS_ENDPOINT_URL_S3), then E(AWS_ENDPOINT_URL).
    type: str
  region:
    description:
      - AWS region. Falls back to E(AWS_REGION), then E(AWS_DEFAULT_REGION).
    type: str
    default: us-east-1
  access_key:
    description:
      - AWS access key id. Falls back to E(AWS_ACCESS_KEY_ID). Never logged or returned.
    type: str
    aliases: [aws_access_key]
  secret_key:
    description:
      - AWS secret access key. Falls back to E(AWS_SECRET_ACCESS_KEY). Never logged or returned.
    type: str
    aliases: [aws_secret_key]
  session_token:
    description:
      - AWS session token. Falls back to E(AWS_SESSION_TOKEN). Never logged or returned.
    type: str
requirements:
  - boto3 >= 1.34
"""
