# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Matches K8S_ARGSPEC in plugins/module_utils/common_args.py
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path to a kubeconfig file. Falls back to E(K8S_AUTH_KUBECONFIG), then E(KUBECONFIG),
        then C(~/.kube/config) or the in-cluster service account.
      - Proxies are used as kubectl uses them - the cluster's C(proxy-url) (http, https or socks5;
        credentials in it become the proxy's Basic authorization), else E(HTTPS_PROXY) (E(HTTP_PROXY)
        for an C(http://) server) unless E(NO_PROXY) covers the server (names with their subdomains,
        IP addresses, CIDRs, C(*)).
    type: path
  context:
    description:
      - Kubeconfig context, for example C(apex-primary) or C(apex-secondary). Falls back to E(K8S_AUTH_CONTEXT).
    type: str
  host:
    description:
      - API server URL, overriding the kubeconfig. Falls back to E(K8S_AUTH_HOST).
    type: str
  api_key:
    description:
      - Bearer token, overriding the kubeconfig. Falls back to E(K8S_AUTH_API_KEY). Never logged or returned.
    type: str
  validate_certs:
    description:
      - Verify the API server's certificate. Falls back to E(K8S_AUTH_VERIFY_SSL).
    type: bool
    aliases: [verify_ssl]
  ca_cert:
    description:
      - CA bundle for the API server. Falls back to E(K8S_AUTH_SSL_CA_CERT).
    type: path
    aliases: [ssl_ca_cert]
  namespace:
    description:
      - Namespace of the Apex workloads.
    type: str
    default: apex
requirements:
  - urllib3 and PyYAML (the collection's own client)
  - kubernetes >= 30, < 37 only for kubeconfig users with an C(exec) or C(auth-provider) plugin
"""
