# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""apex_preflight: the first task of every apex.ops role, on the controller.

1. Refuses variables carrying the role's prefix that its argument spec does not declare (with
   the closest declared name), and empty values for scope variables.
2. Reads the procedure journal and refuses (or warns, for read-only roles) when a procedure is in
   progress or was interrupted, naming the command that finishes it.
Documentation: plugins/modules/apex_preflight.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.apex.ops.plugins.module_utils import journal, role_vars
from ansible_collections.apex.ops.plugins.module_utils.common_args import K8S_ARGSPEC
from ansible_collections.apex.ops.plugins.module_utils.k8s import KubeApiError, KubeConfigError
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow

JOURNAL_MODES = ("refuse", "warn", "skip")
OWN_ARGS = ("role", "scopes", "journal", "allow_interrupted")
_ROLE_CACHE = {}


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
                      started=now.isoformat(), interrupted=None)
        if mode == "skip":
            return result
        try:
            store, client = journal.connect_store(args, request_timeout=10.0)
        except KubeConfigError as exc:
            result["warnings"] = ["could not check for an interrupted apex.ops procedure: %s" % exc]
            return result
        try:
            record = store.read()
        except (KubeApiError, journal.JournalError, OSError) as exc:
            result["warnings"] = ["could not check for an interrupted apex.ops procedure in namespace %s: %s"
                                  % (store.namespace, exc)]
            return result
        finally:
            client.close()
        if record is None:
            return result
        message = journal.describe(record)
        result.update(interrupted=record, interrupted_message=message,
                      recover_command=journal.recover_command(record), holder_alive=journal.holder_alive(record))
        allowed = args.get("allow_interrupted")
        if mode == "refuse" and allowed != record.get("run_id"):
            result.update(failed=True, refused=True,
                          msg="Refusing to start %s: %s (To run anyway, add -e apex_allow_interrupted=%s.) "
                              "Nothing was changed." % (role_name, message, record.get("run_id")))
            return result
        result["warnings"] = ["INTERRUPTED PROCEDURE: " + message]
        return result
