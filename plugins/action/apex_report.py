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

OWN_ARGS = ("procedure", "report", "dir", "path", "stats", "stats_key", "attachments")


def report_path(directory, procedure, now=None):
    """``<dir>/<procedure>-<UTC to the microsecond>.json``: two runs in one second never collide."""
    now = now or utcnow()
    return os.path.join(directory, "%s-%s.json" % (procedure, now.strftime("%Y%m%dT%H%M%S%fZ")))


def attachment_path(path, suffix):
    """``<report without .json>.<suffix>``: an attachment sits beside its report, same stem."""
    stem = path[:-5] if path.endswith(".json") else path
    return "%s.%s" % (stem, suffix)


def write_report(path, report, text=None):
    """Write the report atomically (temp file in the same directory, then rename); mode 0640.
    ``text`` (an attachment) is written as is instead of the JSON of ``report``."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o750, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".report-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w") as out:
            if text is not None:
                out.write(text)
            else:
                json.dump(report, out, indent=4, sort_keys=True, default=str)
                out.write("\n")
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
        attachments = args.get("attachments") or {}
        if not isinstance(attachments, dict) or not all(
                isinstance(k, str) and k.isalnum() and isinstance(v, str) for k, v in attachments.items()):
            raise AnsibleActionFail("apex_report attachments must map a file suffix (letters, digits) to text")
        written = {}
        try:
            # attachments first, so the report can name them and never names a file that is not there
            for suffix, text in sorted(attachments.items()):
                written[suffix] = attachment_path(path, suffix)
                write_report(written[suffix], None, text=text)
            if written:
                report = dict(report, attachments=written)
            write_report(path, report)
        except (IOError, OSError) as exc:
            raise AnsibleActionFail("cannot write the %s report to %s: %s" % (procedure, path, exc))
        # a report is a record of the run, not a change: never "changed", written in check mode too
        result.update(changed=False, path=path, attachments=written)
        stats = args.get("stats")
        if stats is None:
            stats = report
        if stats:
            result["ansible_stats"] = {"data": {args.get("stats_key") or procedure: stats},
                                       "per_host": False, "aggregate": True}
        self._release_lock(result, task_vars or {})
        return result

    def _release_lock(self, result, task_vars):
        """The end of the role that took the cluster lock in its pre-flight: release it (success, or the
        rescue that reports a failure). A nested role's report leaves its caller's lock alone."""
        owner = task_vars.get("apex_ops_lock_owner")
        role = self._task._role  # noqa: SLF001 - the role this task belongs to
        if not isinstance(owner, dict) or role is None or owner.get("role") != os.path.basename(role._role_path):  # noqa: SLF001
            return
        from ansible_collections.apex.ops.plugins.module_utils import cluster_lock, lock_session
        from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC, with_fallbacks
        from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, KubeConfigError, connect

        result["ansible_facts"] = {"apex_ops_lock_owner": None}
        try:
            client = connect(with_fallbacks(K8S_ARGSPEC, dict(owner.get("connection") or {})), request_timeout=10.0)
        except KubeConfigError as exc:
            result["warnings"] = ["could not release the apex.ops lock (its renewer releases it when the run ends): %s" % exc]
            return
        try:
            outcome = lock_session.release(cluster_lock.LeaseLock(client, owner.get("namespace") or "apex"), task_vars)
            result["lock"] = dict(released=outcome["changed"], message=outcome["message"])
        except (cluster_lock.LockError, KubeApiError, OSError) as exc:
            result["warnings"] = ["could not release the apex.ops lock (its renewer releases it when the run ends): %s" % exc]
        finally:
            client.close()
