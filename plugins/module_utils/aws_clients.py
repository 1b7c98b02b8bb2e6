# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""boto3 clients for the AWS services other than S3 (Route53, RDS, CloudWatch), with the credentials of
the ``apex.ops.s3`` options. S3 has its own (``s3_store.make_client``: its endpoint option, path-style
addressing, our own retries)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def client(s3_params, service, read_timeout=15):
    """A client for ``service``; the endpoint is boto3's own (``AWS_ENDPOINT_URL`` /
    ``AWS_ENDPOINT_URL_<SERVICE>``), never the S3 one."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(aws_access_key_id=s3_params.get("access_key") or None,
                                    aws_secret_access_key=s3_params.get("secret_key") or None,
                                    aws_session_token=s3_params.get("session_token") or None,
                                    region_name=s3_params.get("region") or "us-east-1")
    return session.client(service, config=Config(connect_timeout=5, read_timeout=read_timeout,
                                                 retries={"max_attempts": 2, "mode": "standard"}))
