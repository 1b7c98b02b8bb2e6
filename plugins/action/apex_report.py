# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""apex_report: the end of every role - the JSON report file and the AWX statistics, in one task on the
controller (no module round trip: the file, copy and set_stats tasks it replaces cost about 1.5 s).
Documentation: plugins/modules/apex_report.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow

OWN_ARGS = ("procedure", "report", "dir", "path", "stats", "stats_key", "documents")
# a document beside the JSON report: <stem>.<extension>, the extension a plain word
DOCUMENT_EXTENSIONS = ("md", "html", "txt")


def report_path(directory, procedure, now=None):
    """``<dir>/<procedure>-<UTC to the microsecond>.json``: two runs in one second never collide."""
    now = now or utcnow()
    return os.path.join(directory, "%s-%s.json" % (procedure, now.strftime("%Y%m%dT%H%M%S%fZ")))


def write_report(path, report):
    """Write the report atomically (temp file in the same directory, then rename); mode 0640."""

    def dump(out):
        json.dump(report, out, indent=4, sort_keys=True, default=str)
        out.write("\n")
    write_atomically(path, dump)


def document_path(path, extension):
    """The document's path: the JSON report's, with ``extension`` instead of ``.json``."""
    if extension not in DOCUMENT_EXTENSIONS:
        raise AnsibleActionFail("apex_report documents: extension %r is not one of %s"
                                % (extension, ", ".join(DOCUMENT_EXTENSIONS)))
    return (path[:-len(".json")] if path.endswith(".json") else path) + "." + extension


def write_atomically(path, write):
    """``write(handle)`` into a temp file in the same directory, then rename it to ``path``; mode 0640."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o750, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".report-", suffix=os.path.splitext(path)[1], dir=directory)
    try:
        with os.fdopen(handle, "w") as out:
            write(out)
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(OWN_ARGS)
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = self._task.args
        procedure = args.get("procedure")
        report = args.get("report")
        if not procedure or not isinstance(report, dict):
            raise AnsibleActionFail("apex_report needs procedure (a name) and report (a dict)")
        path = args.get("path") or (args.get("dir") and report_path(args["dir"], procedure))
        if not path:
            raise AnsibleActionFail("apex_report needs dir (or path)")
        documents = dict((ext, document_path(path, ext)) for ext in sorted(args.get("documents") or {}))
        try:
            for ext, doc_path in documents.items():
                write_atomically(doc_path, lambda out, text=args["documents"][ext]: out.write(str(text)))
            write_report(path, dict(report, documents=documents) if documents else report)
        except (IOError, OSError) as exc:
            raise AnsibleActionFail("cannot write the %s report to %s: %s" % (procedure, path, exc))
        # a report is a record of the run, not a change: never "changed", written in check mode too
        result.update(changed=False, path=path, documents=documents)
        stats = args.get("stats")
        if stats is None:
            stats = report
        if stats:
            result["ansible_stats"] = {"data": {args.get("stats_key") or procedure: stats},
                                       "per_host": False, "aggregate": True}
        return result
