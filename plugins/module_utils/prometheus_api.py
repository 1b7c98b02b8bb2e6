# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A thin client of the Prometheus HTTP API (``/api/v1/query``, ``/api/v1/query_range``) over
``ansible.module_utils.urls.open_url``: bearer token or basic auth, a CA bundle. Errors say
which of three things went wrong: Prometheus could not be reached, it refused the query (its
own error text), or it answered something that is not the API. Credentials never appear in a
message (the URL's user information is redacted)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.apex.ops.plugins.module_utils.redaction import redact_url


class PrometheusError(Exception):
    """``kind`` is ``unreachable``, ``query`` (Prometheus refused it) or ``response``."""

    def __init__(self, kind, msg, query=None):
        super(PrometheusError, self).__init__(msg)
        self.kind = kind
        self.query = query


def connection_params(params):
    """The client's settings from a module's ``prometheus_*`` options."""
    return dict(url=params.get("prometheus_url"), token=params.get("prometheus_token"),
                username=params.get("prometheus_username"), password=params.get("prometheus_password"),
                ca_file=params.get("prometheus_ca"), validate_certs=params.get("prometheus_validate_certs", True),
                timeout=params.get("prometheus_timeout") or 10.0)


def sample_value(sample):
    """The float of a ``[time, "value"]`` pair (``NaN``, ``+Inf`` included)."""
    return float(sample[1])


class PrometheusClient(object):
    def __init__(self, url, token=None, username=None, password=None, ca_file=None, validate_certs=True,
                 timeout=10.0, opener=None):
        if not url:
            raise PrometheusError("unreachable", "no Prometheus URL (prometheus_url or APEX_PROMETHEUS_URL)")
        if token and (username or password):
            raise PrometheusError("unreachable", "give a bearer token or a username and password, not both")
        self.url = url.rstrip("/")
        self.shown_url = redact_url(self.url)
        self.token, self.username, self.password = token, username, password
        self.ca_file, self.validate_certs, self.timeout = ca_file, validate_certs, float(timeout)
        self._opener = opener  # tests inject one; default: open_url
        self.requests = 0

    def _post(self, path, form):
        from ansible.module_utils.six.moves.urllib.error import HTTPError
        from ansible.module_utils.six.moves.urllib.parse import urlencode

        opener = self._opener
        if opener is None:
            from ansible.module_utils.urls import open_url as opener
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer %s" % self.token
        self.requests += 1
        query = form.get("query")
        try:
            response = opener(self.url + path, data=urlencode(form), method="POST", headers=headers,
                              timeout=self.timeout, validate_certs=self.validate_certs, ca_path=self.ca_file or None,
                              url_username=self.username, url_password=self.password,
                              force_basic_auth=bool(self.username), follow_redirects="safe")
            body = response.read()
        except HTTPError as exc:
            body = exc.read() if exc.fp is not None else b""
            error = _api_error(body)
            if error:
                raise PrometheusError("query", "Prometheus refused the query (HTTP %s, %s): %s"
                                      % (exc.code, error[0], error[1]), query=query)
            raise PrometheusError("response" if exc.code < 500 else "unreachable",
                                  "Prometheus at %s answered HTTP %s %s" % (self.shown_url, exc.code, exc.reason),
                                  query=query)
        except Exception as exc:  # refused, TLS, DNS, timeout: what any client would hit
            raise PrometheusError("unreachable", "Prometheus at %s is unreachable: %s: %s"
                                  % (self.shown_url, type(exc).__name__, exc), query=query)
        try:
            doc = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise PrometheusError("response", "Prometheus at %s answered something that is not JSON (is the URL "
                                  "the Prometheus server?)" % self.shown_url, query=query)
        if not isinstance(doc, dict) or doc.get("status") != "success" or "data" not in doc:
            error = _api_error(body) or ("unknown", str(doc)[:200])
            raise PrometheusError("query", "Prometheus refused the query (%s): %s" % error, query=query)
        return doc["data"]

    def query(self, promql, time=None):
        """An instant query: ``{"resultType", "result"}``."""
        form = {"query": promql}
        if time is not None:
            form["time"] = "%.3f" % time
        return self._post("/api/v1/query", form)

    def query_range(self, promql, start, end, step):
        """A range query over [start, end] (Unix seconds) every ``step`` seconds."""
        return self._post("/api/v1/query_range", {"query": promql, "start": "%.3f" % start, "end": "%.3f" % end,
                                                  "step": "%gs" % step})

    def scalar(self, promql):
        """The one number an instant query returns; ``None`` for an empty result. A query that
        returns several series is a mistake in the check (aggregate it: ``sum(...)``)."""
        data = self.query(promql)
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            return sample_value(result)
        if kind != "vector":
            raise PrometheusError("query", "a check needs a number, the query returned a %s: %s" % (kind, promql),
                                  query=promql)
        if not result:
            return None
        if len(result) > 1:
            shown = ", ".join(json.dumps(r.get("metric")) for r in result[:3])
            raise PrometheusError("query", "a check needs one series, the query returned %d (%s); aggregate it, "
                                  "e.g. sum(...): %s" % (len(result), shown, promql), query=promql)
        return sample_value(result[0]["value"])


def _api_error(body):
    """(errorType, error) of a Prometheus API error body, or None."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    if isinstance(doc, dict) and doc.get("status") == "error":
        return doc.get("errorType") or "error", doc.get("error") or ""
    return None
