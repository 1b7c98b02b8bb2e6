# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The child process that runs Helm (``helm-python-sdk``, Helm v4's Go SDK through ctypes).

Run as ``python -m ansible_collections.apex.ops.plugins.module_utils.helm_worker`` by
``helm_client.HelmSession``; never imported by a module. Why a child process: the Go runtime
reads its environment once, when the process starts, and Helm's ``sql`` storage driver takes its
connection string from ``HELM_DRIVER_SQL_CONNECTION_STRING`` there; setting it in
``os.environ`` of a running process is silently ignored (the release then goes to no storage at
all). The child is started with the variable in its environment, so the module option works.

Protocol, one JSON document per line: stdin carries first the ``helm_python.Config`` keyword
arguments, then ``{"op": ..., "args": {...}}`` requests; the reserved fd answers
``{"result": ...}`` or ``{"error": {"type": ..., "message": ...}}``. Anything Helm itself prints
goes to stderr, never into the answers.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import sys

# Config methods a request may call (nothing else is reachable through the pipe).
OPERATIONS = frozenset(["install", "upgrade", "rollback", "uninstall", "history", "status", "get_values",
                        "get_all", "list"])


def _answers_stream():
    """The answers go to a duplicate of stdout; fd 1 then points to stderr, so a print from the
    Go side cannot corrupt the protocol."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return answers


def serve(requests, answers, helm):
    config = helm.Config(**json.loads(requests.readline()))
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.get("op")
        try:
            if op == "parse_set":
                result = helm.parse_set_string(request["args"]["expression"])
            elif op in OPERATIONS:
                result = getattr(config, op)(**request.get("args") or {})
            else:
                raise ValueError("unknown operation %r" % op)
            answer = {"result": result}
        except Exception as exc:  # every failure goes back to the module, typed
            answer = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        answers.write(json.dumps(answer, default=str) + "\n")
        answers.flush()


def main():
    answers = _answers_stream()
    try:
        import helm_python as helm
    except ImportError as exc:
        answers.write(json.dumps({"error": {"type": "ImportError", "message": str(exc)}}) + "\n")
        answers.flush()
        return
    serve(sys.stdin, answers, helm)


if __name__ == "__main__":
    main()
