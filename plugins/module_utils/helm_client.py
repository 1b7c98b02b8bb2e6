# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helm for the modules: a session with a ``helm_worker`` child process.

Helm is an optional dependency (``helm-python-sdk``, Helm v4 as a library: no ``helm`` binary).
Only ``apex_release`` needs it; ``REQUIREMENT`` locates the package without importing it, and the
import happens in the child. The child gets the release storage settings in its environment at
start (the only moment the Go runtime reads it, see ``helm_worker``); credentials travel in that
environment or over the pipe, never in ``argv``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import select
import subprocess
import sys
import tempfile

from ansible_collections.apex.ops.plugins.module_utils import helm_worker
from ansible_collections.apex.ops.plugins.module_utils.apex_module import find_error_of

PIP_NAME = "helm-python-sdk"
REQUIREMENT = (PIP_NAME, find_error_of("helm_python"))
SQL_CONNECTION_ENV = "HELM_DRIVER_SQL_CONNECTION_STRING"
WORKER = helm_worker.__name__  # imported so that Ansible ships it in the module's payload
STORAGE_DRIVERS = ("secret", "configmap", "sql")
# Helm's own actions carry their timeout; the pipe waits this much longer before it gives up.
ANSWER_MARGIN = 60.0


class HelmCallError(Exception):
    """Helm refused or failed; ``kind`` is the helm_python exception class (HelmReleaseError...)."""

    def __init__(self, op, kind, message):
        Exception.__init__(self, message)
        self.op = op
        self.kind = kind
        self.message = message

    def __str__(self):
        return "helm %s: %s: %s" % (self.op.replace("_", " "), self.kind, self.message)

    @property
    def not_found(self):
        return self.kind == "HelmNotFoundError" or "not found" in self.message.lower()


def config_kwargs(params):
    """``helm_python.Config`` arguments from the K8S_ARGSPEC options and the storage driver."""
    kwargs = dict(namespace=params["namespace"], storage_driver=params.get("storage_driver") or "secret")
    if params.get("kubeconfig"):
        kwargs["kubeconfig_path"] = params["kubeconfig"]
    if params.get("context"):
        kwargs["kube_context"] = params["context"]
    if params.get("host"):
        kwargs["kube_apiserver"] = params["host"]
    if params.get("api_key"):
        kwargs["kube_token"] = params["api_key"]
    if params.get("ca_cert"):
        kwargs["kube_ca_file"] = params["ca_cert"]
    if params.get("validate_certs") is False:
        kwargs["kube_insecure_skip_tls_verify"] = True
    return kwargs


def collections_root(module_file=None):
    """The directory (or the module payload's zip) that holds ``ansible_collections``: the
    worker imports from there only, not from the module's whole ``sys.path``."""
    path = os.path.abspath(module_file or helm_worker.__file__)
    marker = os.sep + "ansible_collections" + os.sep
    return path[:path.rindex(marker)] if marker in path else os.path.dirname(path)


def worker_environment(params, environ=None):
    """The child's environment: ours, the module's import path, and the sql connection string."""
    env = dict(os.environ if environ is None else environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (collections_root(), env.get("PYTHONPATH")) if x)
    if (params.get("storage_driver") or "secret") == "sql":
        if not params.get("sql_connection_string"):
            raise ValueError("storage_driver=sql needs sql_connection_string (or %s in the environment): the "
                             "libpq key=value or postgres:// connection string of Helm's release database"
                             % SQL_CONNECTION_ENV)
        env[SQL_CONNECTION_ENV] = params["sql_connection_string"]
    else:
        env.pop(SQL_CONNECTION_ENV, None)
    return env


class HelmSession(object):
    """One child process per module run; ``call(op, **args)`` returns what helm_python returns."""

    def __init__(self, params, python=None, worker=WORKER, environ=None):
        # stderr (Helm's and the Go runtime's own messages) goes to a file: a pipe nobody reads
        # would block the child once it fills
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(
            [python or sys.executable, "-m", worker], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, env=worker_environment(params, environ), universal_newlines=True)
        self._send(config_kwargs(params))

    def _send(self, document):
        self._proc.stdin.write(json.dumps(document) + "\n")
        self._proc.stdin.flush()

    def call(self, op, timeout=None, **args):
        """Run one Helm action; ``timeout`` is Helm's own (seconds), sent as its option."""
        if timeout is not None:
            args["timeout"] = int(timeout)
        try:
            self._send({"op": op, "args": args})
        except (BrokenPipeError, OSError):
            raise HelmCallError(op, "WorkerExited", self._exit_detail())
        ready = select.select([self._proc.stdout], [], [], (timeout or 0) + ANSWER_MARGIN)[0]
        if not ready:
            self.close()
            raise HelmCallError(op, "Timeout", "no answer from Helm within %ss" % ((timeout or 0) + ANSWER_MARGIN))
        line = self._proc.stdout.readline()
        if not line:
            raise HelmCallError(op, "WorkerExited", self._exit_detail())
        answer = json.loads(line)
        if "error" in answer:
            error = answer["error"]
            if error["type"] == "ImportError":
                raise HelmCallError(op, "ImportError", "%s (pip install %s)" % (error["message"], PIP_NAME))
            raise HelmCallError(op, error["type"], error["message"])
        return answer["result"]

    def _exit_detail(self):
        self.close()
        self._stderr.seek(0)
        stderr = self._stderr.read().strip()
        return "the Helm worker exited (rc=%s): %s" % (self._proc.returncode, stderr[-2000:] or "no output")

    def close(self):
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout and not self._proc.stdout.closed:
            self._proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
