# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""apex_preflight: the first task of every apex.ops role, on the controller.

1. Refuses variables carrying the role's prefix that its argument spec does not declare (with
   the closest declared name), and empty values for scope variables.
2. Reads the procedure journal and refuses (or warns, for read-only roles) when a procedure is in
   progress or was interrupted, naming the command that finishes it.
3. Takes the cluster lock (``cluster_lock``) for roles that change the system: refuses while another
   run holds it, naming that run; the role's report (``apex_report``) releases it.
Documentation: plugins/modules/apex_preflight.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.apex.ops.plugins.module_utils import cluster_lock, journal, lock_session, role_vars
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC, with_fallbacks
from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, KubeConfigError
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow

JOURNAL_MODES = ("refuse", "warn", "skip")
LOCK_MODES = ("take", "override", "none")
OWN_ARGS = ("role", "scopes", "journal", "allow_interrupted", "lock", "lock_purpose")
# connection options kept with the lock owner for the report that releases it (never the token)
CONNECTION_KEYS = ("kubeconfig", "context", "host", "validate_certs", "verify_ssl", "ca_cert", "ssl_ca_cert")
_ROLE_CACHE = {}


def journal_params(args):
    """The connection options of ``args`` that may be kept in a fact (no credentials)."""
    return dict((k, v) for k, v in args.items() if k in CONNECTION_KEYS and v is not None)


def _load_yaml(path):
    import yaml

    try:
        with open(path) as handle:
            return yaml.safe_load(handle)
    except (IOError, OSError):
        return None


def _walk(node, found):
    """Names a role's own task files define: set_fact keys, vars keys, register, loop_var."""
    if isinstance(node, list):
        for item in node:
            _walk(item, found)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("ansible.builtin.set_fact", "set_fact") and isinstance(value, dict):
            found.update(k for k in value if k != "cacheable")
        elif key == "vars" and isinstance(value, dict):
            found.update(value)
        elif key == "register" and isinstance(value, str):
            found.add(value)
        elif key == "loop_control" and isinstance(value, dict) and value.get("loop_var"):
            found.add(value["loop_var"])
        _walk(value, found)


def role_interface(role_path):
    """(declared options, internal names, sibling role prefixes, role name) of a role directory."""
    cached = _ROLE_CACHE.get(role_path)
    if cached is not None:
        return cached
    specs = _load_yaml(os.path.join(role_path, "meta", "argument_specs.yml")) or {}
    options = (((specs.get("argument_specs") or {}).get("main") or {}).get("options") or {})
    internal = set()
    for sub in ("tasks", "handlers"):
        folder = os.path.join(role_path, sub)
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.endswith((".yml", ".yaml")):
                    _walk(_load_yaml(os.path.join(folder, name)), internal)
    for sub in ("defaults", "vars"):
        data = _load_yaml(os.path.join(role_path, sub, "main.yml"))
        if isinstance(data, dict):
            internal.update(data)
    roles_dir = os.path.dirname(os.path.abspath(role_path))
    siblings = set(role_vars.role_prefix(name) for name in os.listdir(roles_dir)
                   if os.path.isdir(os.path.join(roles_dir, name)))
    cached = (set(options), internal, siblings, os.path.basename(os.path.abspath(role_path)))
    _ROLE_CACHE[role_path] = cached
    return cached


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(OWN_ARGS + tuple(K8S_ARGSPEC) + ("verify_ssl", "ssl_ca_cert"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        task_vars = task_vars or {}
        args = dict(self._task.args)
        mode = args.get("journal") or "refuse"
        if mode not in JOURNAL_MODES:
            raise AnsibleActionFail("journal must be one of %s" % ", ".join(JOURNAL_MODES))
        role = self._task._role  # noqa: SLF001 - the role this task belongs to
        if role is None:
            raise AnsibleActionFail("apex_preflight runs as the first task of an apex.ops role")
        declared, internal, siblings, role_name = role_interface(role._role_path)  # noqa: SLF001
        scopes = args.get("scopes") or []
        values = {}
        for name in scopes:
            if name in task_vars:
                values[name] = self._templar.template(task_vars[name])
        try:
            role_vars.check(role_name, list(task_vars), values, declared, internal, siblings, scopes)
        except role_vars.RoleVarsError as exc:
            result.update(failed=True, msg=str(exc), refused=True)
            return result

        now = utcnow()
        result.update(changed=False, run_id="%s-%s" % (role_name.replace("_", "-"), now.strftime("%Y%m%dT%H%M%S%fZ")),
                      started=now.isoformat(), interrupted=None, lock=None)
        lock_mode = args.get("lock") or ("take" if mode == "refuse" else "none")
        if lock_mode not in LOCK_MODES:
            raise AnsibleActionFail("lock must be one of %s" % ", ".join(LOCK_MODES))
        if mode == "skip" and lock_mode == "none":
            return result
        try:
            store, client = journal.connect_store(args, request_timeout=10.0)
        except KubeConfigError as exc:
            result["warnings"] = ["could not check for an interrupted apex.ops procedure or take the apex.ops lock: %s"
                                  % exc]
            return result
        try:
            # the lock first: a run in progress is named as the lock's holder (what is running now); then the
            # journal (what an interrupted run left half-done), which gives back the lock it refuses after
            if lock_mode != "none":
                self._take_lock(result, client, store.namespace, lock_mode, role_name, args, task_vars)
                if result.get("failed"):
                    return result
            if mode != "skip" and not self._check_journal(result, store, mode, role_name, args):
                if result.pop("ansible_facts", None):
                    try:
                        lock_session.release(cluster_lock.LeaseLock(client, store.namespace), task_vars)
                    except (cluster_lock.LockError, KubeApiError, OSError):
                        pass  # the renewer releases it when this run ends
                    result["lock"] = None
        finally:
            client.close()
        return result

    def _check_journal(self, result, store, mode, role_name, args):
        """Reads the journal into ``result``; False when the role must stop (refused)."""
        try:
            record = store.read()
        except (KubeApiError, journal.JournalError, OSError) as exc:
            result.setdefault("warnings", []).append(
                "could not check for an interrupted apex.ops procedure in namespace %s: %s" % (store.namespace, exc))
            return True
        if record is None:
            return True
        message = journal.describe(record)
        result.update(interrupted=record, interrupted_message=message,
                      recover_command=journal.recover_command(record), holder_alive=journal.holder_alive(record))
        allowed = args.get("allow_interrupted")
        if mode == "refuse" and allowed != record.get("run_id"):
            result.update(failed=True, refused=True,
                          msg="Refusing to start %s: %s (To run anyway, add -e apex_allow_interrupted=%s.) "
                              "Nothing was changed." % (role_name, message, record.get("run_id")))
            return False
        result.setdefault("warnings", []).append("INTERRUPTED PROCEDURE: " + message)
        return True

    def _take_lock(self, result, client, namespace, lock_mode, role_name, args, task_vars):
        """Takes the cluster lock for the role (``take``: refuse a live one; ``override``: never wait).
        The role's report releases it (``apex_ops_lock_owner`` says which role took it)."""
        templar = self._templar
        duration = templar.template(task_vars.get("apex_lock_duration")) or cluster_lock.DEFAULT_DURATION
        confirm = templar.template(task_vars.get("apex_lock_break")) or None
        try:
            duration = max(1, int(round(parse_duration(duration, "apex_lock_duration"))))
            outcome = lock_session.acquire(
                cluster_lock.LeaseLock(client, namespace), task_vars, duration, args.get("lock_purpose") or role_name,
                playbook=role_name, run_id=result["run_id"], mode="override" if lock_mode == "override" else "take",
                confirm=confirm, check_mode=bool(self._task.check_mode),
                params=with_fallbacks(K8S_ARGSPEC, args))
        except cluster_lock.LockHeld as exc:
            if self._task.check_mode:  # a plan changes nothing: say what a real run would meet
                result["lock"] = exc.view
                result.setdefault("warnings", []).append("check mode: a real run would be refused: %s" % exc)
                return
            result.update(failed=True, refused=True, lock=exc.view,
                          msg="Refusing to start %s: %s" % (role_name, exc))
            return
        except ValueError as exc:
            result.update(failed=True, refused=True, msg="Refusing to start %s: %s" % (role_name, exc))
            return
        except (cluster_lock.LockError, KubeApiError, OSError) as exc:
            # as for the journal: an unreachable cluster must not block what does not need it (db_connections in an
            # incident); the role's own Kubernetes tasks fail by themselves
            result.setdefault("warnings", []).append(
                "could not take the apex.ops lock in namespace %s, going on without it: %s" % (namespace, exc))
            return
        result["lock"] = dict(outcome["lock"], action=outcome["action"], overrode=outcome["overrode"],
                              message=outcome["message"])
        if outcome["overrode"]:
            result["lock"]["overrode_view"] = outcome["before"]
            result.setdefault("warnings", []).append(outcome["message"])
        if outcome["action"] != cluster_lock.RENEW and not self._task.check_mode:
            # the role that took the lock releases it in its report (apex_report); nested roles renew only
            result["ansible_facts"] = {"apex_ops_lock_owner": dict(
                role=role_name, run_id=result["run_id"], identity=outcome["identity"],
                connection=journal_params(args), namespace=namespace)}
