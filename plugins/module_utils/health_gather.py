# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The daily health check's gathers, all at once: one thread per part (and per API path).

Each part reads what the read-only module of its area reads, through the same module_utils
(apex_queue state=facts, apex_db_maint state=facts, apex_cert state=facts, apex_info): the health
check is one process on the target instead of five module round trips one after another. Every
wait is network I/O, so the wall time is the slowest part. A part that fails returns
``{"failed": True, "msg": ...}``, which health_checks turns into a critical check.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import threading
import time

PARTS = ("api", "queue", "database", "tls", "kubernetes")


def _error(exc):
    return "%s: %s" % (type(exc).__name__, exc)


def probe_api(url, timeout=10.0, ca_file=None, validate_certs=True):
    """GET ``url``: ``{status, json, msg}`` like ansible.builtin.uri (status -1 when nothing answered)."""
    from ansible.module_utils.urls import open_url
    from ansible.module_utils.six.moves.urllib.error import HTTPError

    try:
        response = open_url(url, method="GET", timeout=timeout, validate_certs=validate_certs, ca_path=ca_file or None,
                            follow_redirects="safe")
        status, body, msg = response.getcode(), response.read(), "OK (%s)" % url
    except HTTPError as exc:
        status, body = exc.code, exc.read() if exc.fp is not None else b""
        msg = "Status code was %s and not [200]: HTTP Error %s: %s" % (exc.code, exc.code, exc.reason)
    except Exception as exc:  # connection refused, TLS failure, timeout: what a client would hit
        return dict(status=-1, msg="Status code was -1 and not [200]: Request failed: %s" % _error(exc))
    result = dict(status=status, msg=msg)
    try:
        result["json"] = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        pass
    return result


def queue_facts(params):
    from ansible_collections.apex.ops.plugins.module_utils import queue, redis_client

    client = redis_client.connect(params["redis"])
    try:
        return queue.facts(client, params["queue_key"], params["dead_letter_key"], params["processing_pattern"],
                           sample_size=3, memory_limit=queue.parse_size(params["redis_memory_limit"], "redis_memory_limit"))
    finally:
        client.close()


def database_facts(params):
    from ansible_collections.apex.ops.plugins.module_utils import db_facts, postgres
    from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration

    idle = parse_duration(params["db_idle_threshold"], "db_idle_threshold")
    running = parse_duration(params["db_long_query_threshold"], "db_long_query_threshold")
    conn = postgres.connect(params["postgres"])
    try:
        return db_facts.gather(conn, idle, running, top_tables=5, top_statements=0)
    finally:
        conn.close()


def tls_facts(params):
    from ansible_collections.apex.ops.plugins.module_utils import cert_manager, k8s, tls

    hostname = params["api_hostname"] or None  # the name clients use: SNI, and the certificate must cover it
    probe = None
    if params["api_url"]:
        host, port = tls.parse_endpoint(params["api_url"])
        hostname = hostname or host

        def probe():
            try:
                return tls.probe_endpoint(host, port, server_name=hostname, ca_file=params["api_ca_file"],
                                          timeout=params["api_timeout"], hostname=hostname,
                                          warning_days=params["tls_warning_days"], critical_days=params["tls_critical_days"])
            except Exception as exc:
                return dict(host=host, port=port, server_name=hostname, hostname=hostname, error=_error(exc),
                            expiry_status=None, days_left=None)
    manager = cert_manager.CertManager(k8s.connect(params["k8s"]))
    return cert_manager.gather_facts(manager, params["k8s"]["namespace"], name=params["tls_certificate"], probe=probe,
                                     hostname=hostname, warning_days=params["tls_warning_days"],
                                     critical_days=params["tls_critical_days"])


def kubernetes_facts(params):
    from ansible_collections.apex.ops.plugins.module_utils import k8s
    from ansible_collections.apex.ops.plugins.module_utils import k8s_info

    client = k8s.connect(params["k8s"])
    return k8s_info.gather(client, params["k8s"]["namespace"], sections=["workloads", "pods", "hpas", "nodes"])


GATHERS = dict(queue=queue_facts, database=database_facts, tls=tls_facts, kubernetes=kubernetes_facts)


def run_all(jobs, clock=time.monotonic):
    """Run ``{key: callable}`` concurrently: ``({key: result}, {key: seconds})``, an exception becoming
    ``{failed, msg}``."""
    results, elapsed = {}, {}
    lock = threading.Lock()

    def run(key, job):
        started = clock()
        try:
            value = job()
        except Exception as exc:
            value = dict(failed=True, msg=_error(exc))
        with lock:
            results[key] = value
            elapsed[key] = round(clock() - started, 3)

    threads = [threading.Thread(target=run, args=(key, job), name="health-%s" % (key,)) for key, job in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, elapsed


def gather(params, parts=PARTS):
    """Every part of ``parts`` at once: ``({part: facts, "api": [(path, probe result)]}, {name: seconds})``."""
    jobs = dict((part, (lambda fn=GATHERS[part]: fn(params))) for part in parts if part in GATHERS)
    paths = params["api_paths"] if "api" in parts and params["api_url"] else []
    base = (params["api_url"] or "").rstrip("/")
    for path in paths:
        jobs[("api", path)] = (lambda url=base + path: probe_api(url, params["api_timeout"], params["api_ca_file"],
                                                                 params["api_validate_certs"]))
    results, elapsed = run_all(jobs)
    gathered = dict((part, results[part]) for part in parts if part in GATHERS)
    if "api" in parts:
        gathered["api"] = [(path, results[("api", path)]) for path in paths]
    return gathered, dict(("api " + key[1] if isinstance(key, tuple) else key, value) for key, value in elapsed.items())
