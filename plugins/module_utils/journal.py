# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The procedure journal: what a multi-step procedure is doing and what must be undone.

Ansible runs no rescue on Ctrl-C, an AWX cancel or a killed controller, so a procedure that
changes state and later puts it back (restore scales api/worker to 0, scale_event saves and
scales) writes, *before* it changes anything, a record in the cluster: one ConfigMap
(``apex-ops-journal``) per namespace, next to the saved scale states. The record names the
procedure, the run, who runs it, the phase it is in, and the undo steps that apply. The
procedure deletes it when it ends (success, or a rescue that undid everything). A record left
behind means the procedure is still running or was interrupted: every apex.ops playbook says
so (``apex_preflight``), the health check reports it, and the ``recover`` playbook undoes it.

Records are plain dicts so that the recover role and the tests read them as JSON.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible_collections.apex.ops.plugins.module_utils.configmap_records import ConfigMapRecords
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError

JOURNAL_CONFIGMAP = "apex-ops-journal"
RECORD_KEY = "record"

# undo actions the recover role knows, with how to say them to a human
UNDO_ACTIONS = {
    "scale_restore": "put api/worker back to the saved scale state %(state_name)r",
    "database_rollback": "check database %(target_db)r and roll it back to the safety backup of this run if "
                         "the interrupted restore left it partly restored",
    "release_rollback": "roll Helm release %(release)r back to revision %(revision)s",
    "canary_remove": "delete the canary Deployment %(name)r (stable was not changed by the canary run)",
}


class JournalError(Exception):
    """The journal cannot be read or written as asked."""


class JournalBusy(JournalError):
    """Another run's record is in the journal."""

    def __init__(self, msg, record):
        super(JournalBusy, self).__init__(msg)
        self.record = record


def recover_command(record):
    """The command that finishes or undoes an interrupted run."""
    return "ansible-playbook apex.ops.recover -e recover_confirm=%s" % record.get("run_id")


def describe_undo(step):
    template = UNDO_ACTIONS.get(step.get("action"))
    if step.get("description"):
        return step["description"]
    if template:
        try:
            return template % step
        except (KeyError, TypeError, ValueError):
            pass
    return "%s %s" % (step.get("action"), json.dumps(step, sort_keys=True))


def describe(record):
    """One paragraph an on-call engineer can act on."""
    holder = record.get("holder") or {}
    who = "%s@%s" % (holder.get("user") or "?", holder.get("host") or "?")
    if holder.get("awx_job_id"):
        who += " (AWX job %s)" % holder["awx_job_id"]
    undo = record.get("undo") or []
    left = "; ".join("%d. %s" % (i + 1, describe_undo(step)) for i, step in enumerate(reversed(undo))) or "nothing"
    return ("procedure %s (run %s, started %s by %s) is still running or was interrupted in phase %r "
            "(last update %s). Left to undo: %s. If it is not running any more, finish/undo it with: %s"
            % (record.get("procedure"), record.get("run_id"), record.get("started"), who, record.get("phase"),
               record.get("updated"), left, recover_command(record)))


def holder_identity(task_vars=None, now=None, pid=None):
    """Who runs this: user, host, the ansible-playbook pid, the AWX job when there is one."""
    import getpass
    import socket

    task_vars = task_vars or {}
    awx = (task_vars.get("awx_job_id") or task_vars.get("tower_job_id") or os.environ.get("AWX_JOB_ID")
           or os.environ.get("JOB_ID"))
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = str(os.getuid())
    return dict(user=user, host=socket.gethostname(), pid=pid if pid is not None else os.getppid(),
                awx_job_id=str(awx) if awx else None)


def holder_alive(record, host=None):
    """True when the holder ran on this host and its process still exists; None when unknowable."""
    import socket

    holder = (record or {}).get("holder") or {}
    if holder.get("host") != (host or socket.gethostname()) or not holder.get("pid"):
        return None
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return None
    return True


def connect_store(args, request_timeout=15.0):
    """``(JournalStore, client)`` for the K8S options in ``args``, resolved as a module would (environment
    fallbacks, defaults) - for the action plugins, which run on the controller."""
    from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC, with_fallbacks
    from ansible_collections.apex.ops.plugins.module_utils.k8s import connect

    params = with_fallbacks(K8S_ARGSPEC, args)
    client = connect(params, request_timeout=request_timeout)
    return JournalStore(client, params["namespace"]), client


class JournalStore(object):
    """The journal ConfigMap of one namespace (one record: one procedure at a time)."""

    def __init__(self, client, namespace, name=JOURNAL_CONFIGMAP):
        self.client = client
        self.namespace = namespace
        self.name = name
        self.records = ConfigMapRecords(
            client, namespace, name, "the apex.ops procedure in progress or interrupted, and its undo steps "
            "(see the recover playbook)")

    def read(self):
        try:
            return self.records.read(RECORD_KEY)
        except ValueError:
            raise JournalError("ConfigMap %s/%s holds an unreadable journal record" % (self.namespace, self.name))

    def write(self, record, check_mode=False):
        """Create or update the record of ``record['run_id']``; refuse another run's record.

        Returns ``(changed, previous)``."""
        cm = self.records.get()
        previous = self.records.record(cm, RECORD_KEY)
        if previous and previous.get("run_id") != record.get("run_id"):
            raise JournalBusy("refusing to start: " + describe(previous), previous)
        if previous:
            merged = dict(previous)
            merged.update(record)
            merged["started"] = previous.get("started") or record.get("started")
            record = merged
        if previous == record:
            return False, previous
        if check_mode:
            return True, previous
        try:
            # no retry on a conflict: the refusal above was decided on what was read
            self.records.save(cm, {RECORD_KEY: record}, keep_others=False)
        except KubeApiError as exc:
            if exc.conflict:
                raise JournalError("the journal ConfigMap %s/%s changed while writing (another run?): %s"
                                   % (self.namespace, self.name, exc))
            raise
        return True, previous

    def clear(self, run_id, check_mode=False):
        """Delete the record of ``run_id``. Returns ``(changed, previous)``; another run's record is kept."""
        cm = self.records.get()
        previous = self.records.record(cm, RECORD_KEY)
        if cm is None or previous is None:
            return False, None
        if previous.get("run_id") != run_id:
            raise JournalBusy("not clearing the journal: it holds another run's record: " + describe(previous), previous)
        if check_mode:
            return True, previous
        self.records.delete(cm)
        return True, previous
