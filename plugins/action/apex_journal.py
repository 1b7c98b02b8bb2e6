# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""apex_journal runs on the controller: a journal write is one API call, not a module round trip
(about 0.3 s each, four per restore). Documentation: plugins/modules/apex_journal.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.apex.ops.plugins.module_utils import journal
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, KubeConfigError
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow

STATES = ("present", "absent", "facts")
OWN_ARGS = ("state", "procedure", "run_id", "phase", "undo", "details")


def utcnow_iso():
    return utcnow().isoformat()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(OWN_ARGS + tuple(K8S_ARGSPEC) + ("verify_ssl", "ssl_ca_cert"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        state = args.get("state") or "facts"
        if state not in STATES:
            raise AnsibleActionFail("state must be one of %s, got %r" % (", ".join(STATES), state))
        run_id = args.get("run_id")
        if state != "facts" and not run_id:
            raise AnsibleActionFail("state=%s needs run_id" % state)
        try:
            store, client = journal.connect_store(args)
        except KubeConfigError as exc:
            raise AnsibleActionFail("cannot reach the cluster to keep the procedure journal: %s" % exc)
        try:
            if state == "facts":
                record = store.read()
                result.update(changed=False, record=record, interrupted=record is not None,
                              holder_alive=journal.holder_alive(record) if record else None,
                              message=journal.describe(record) if record else "no procedure in progress or interrupted",
                              recover_command=journal.recover_command(record) if record else None)
                return result
            if state == "absent":
                changed, previous = store.clear(run_id, check_mode=self._task.check_mode)
                result.update(changed=changed, record=None, previous=previous)
                return result
            undo = args.get("undo")
            if undo is not None and not isinstance(undo, list):
                raise AnsibleActionFail("undo must be a list of steps (dicts with an 'action')")
            for step in undo or []:
                if not isinstance(step, dict) or step.get("action") not in journal.UNDO_ACTIONS:
                    raise AnsibleActionFail("undo step %r: action must be one of %s"
                                            % (step, ", ".join(sorted(journal.UNDO_ACTIONS))))
            now = utcnow_iso()
            record = dict(run_id=run_id, procedure=args.get("procedure") or run_id.split("-")[0],
                          phase=args.get("phase") or "started", updated=now, started=now,
                          namespace=store.namespace, context=args.get("context"),
                          holder=journal.holder_identity(task_vars))
            if undo is not None:
                record["undo"] = undo
            if args.get("details") is not None:
                record["details"] = args["details"]
            changed, previous = store.write(record, check_mode=self._task.check_mode)
            result.update(changed=changed, record=store.read() if changed and not self._task.check_mode else record,
                          previous=previous)
            return result
        except journal.JournalBusy as exc:
            result.update(failed=True, msg=str(exc), record=exc.record,
                          recover_command=journal.recover_command(exc.record))
            return result
        except (journal.JournalError, KubeApiError) as exc:
            result.update(failed=True, msg="procedure journal in namespace %s: %s" % (store.namespace, exc))
            return result
        finally:
            client.close()
