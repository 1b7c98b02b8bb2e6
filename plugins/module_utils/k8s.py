# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes API clients from K8S_ARGSPEC options.

Loads the kubeconfig (or in-cluster config) with the official client and returns an
``ApiClient``; the typed APIs are created by callers only for what they use.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils.apex_module import import_error_of

KUBERNETES_IMPORT_ERROR = import_error_of(lambda: __import__("kubernetes.client"))
REQUIREMENT = ("kubernetes>=30,<37", KUBERNETES_IMPORT_ERROR)


def api_client(params):
    """An authenticated ``kubernetes.client.ApiClient`` for the configured cluster/context."""
    from kubernetes import client, config  # lazy: ~0.25 s, paid only by modules that talk to Kubernetes

    configuration = client.Configuration()
    kubeconfig, context = params.get("kubeconfig"), params.get("context")
    if kubeconfig or context or not params.get("host"):
        try:
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        except config.ConfigException:
            if kubeconfig or context:
                raise
            config.load_incluster_config(client_configuration=configuration)
    if params.get("host"):
        configuration.host = params["host"]
    if params.get("api_key"):
        configuration.api_key = {"authorization": "Bearer " + params["api_key"]}
    if params.get("ca_cert"):
        configuration.ssl_ca_cert = params["ca_cert"]
    if params.get("validate_certs") is not None:
        configuration.verify_ssl = params["validate_certs"]
    return client.ApiClient(configuration)
