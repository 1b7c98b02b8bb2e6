# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""apex_lock runs on the controller: the holder is the ansible-playbook process of the run (its pid,
its AWX job), and the renewer is forked from there. Documentation: plugins/modules/apex_lock.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.apex.ops.plugins.module_utils import cluster_lock, lock_session
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC, with_fallbacks
from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, KubeConfigError, connect
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow

STATES = ("acquired", "released", "facts")
OWN_ARGS = ("state", "duration", "purpose", "playbook", "run_id", "mode", "confirm", "renew")


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
        mode = args.get("mode") or "take"
        if mode not in cluster_lock.MODES:
            raise AnsibleActionFail("mode must be one of %s, got %r" % (", ".join(cluster_lock.MODES), mode))
        try:
            duration = max(1, int(round(parse_duration(args.get("duration") or cluster_lock.DEFAULT_DURATION))))
        except ValueError as exc:
            raise AnsibleActionFail(str(exc))
        params = with_fallbacks(K8S_ARGSPEC, args)
        try:
            client = connect(params, request_timeout=15.0)
        except KubeConfigError as exc:
            raise AnsibleActionFail("cannot reach the cluster for the apex.ops lock: %s" % exc)
        store = cluster_lock.LeaseLock(client, params["namespace"])
        check = bool(self._task.check_mode)
        try:
            if state == "facts":
                me = lock_session.who(task_vars)[0]
                lease = store.read()
                view = cluster_lock.judge(lease, me, utcnow(), lock_session.holder_alive(lease) if lease else None)
                result.update(changed=False, identity=me, lock=view, message=cluster_lock.describe(view))
            elif state == "acquired":
                purpose = args.get("purpose") or self._task.get_name()
                result.update(lock_session.acquire(
                    store, task_vars, duration, purpose, playbook=args.get("playbook"), run_id=args.get("run_id"),
                    mode=mode, confirm=args.get("confirm"), check_mode=check,
                    renew=args.get("renew", True) not in (False, "false", "no"), params=params))
                if result.get("overrode"):
                    result["warnings"] = [result["message"]]
            else:
                result.update(lock_session.release(store, task_vars, confirm=args.get("confirm"), check_mode=check))
        except cluster_lock.LockHeld as exc:
            result.update(failed=True, refused=True, msg="Refusing: %s" % exc, lock=exc.view)
        except (cluster_lock.LockError, KubeApiError) as exc:
            result.update(failed=True, msg="apex.ops lock in namespace %s: %s" % (store.namespace, exc))
        finally:
            client.close()
        return result
