# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one module base of apex.ops.

Every module builds an ``ApexModule``: it merges the shared argument-spec constants
(which match the doc fragments of the same name), checks optional Python dependencies
with a message that names the missing package, and fails in one way — the message, the
exception, and the last state the module observed, so an on-call engineer sees what the
system looked like when it gave up.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib


class ApexModule(AnsibleModule):
    """AnsibleModule with merged argument specs, dependency checks and ``fail``."""

    def __init__(self, argument_spec, fragments=(), requirements=(), value_synonyms=None, **kwargs):
        """``fragments`` are argument-spec dicts (e.g. POSTGRES_ARGSPEC); ``requirements``
        are ``(pip_name, import_error_or_None)`` pairs checked before any work starts.

        ``value_synonyms`` (``{option: {old_value: value}}``) accepts deprecated spellings of a
        choice (``state: list`` for ``state: facts``) without listing them as choices; what was
        replaced is in ``replaced_values`` (``(option, old, new)``) for the module to deprecate.
        """
        merged = {}
        for fragment in fragments:
            merged.update(copy.deepcopy(fragment))
        merged.update(argument_spec)
        self._value_synonyms = dict(
            (name, (dict(synonyms), [name] + list(merged.get(name, {}).get("aliases") or [])))
            for name, synonyms in (value_synonyms or {}).items())
        self.replaced_values = []
        super(ApexModule, self).__init__(argument_spec=merged, **kwargs)
        for pip_name, import_error in requirements:
            self.require(pip_name, import_error)

    def _load_params(self):
        super(ApexModule, self)._load_params()
        for option, (synonyms, names) in self._value_synonyms.items():
            for name in names:
                value = self.params.get(name)
                if isinstance(value, str) and value in synonyms:
                    self.params[name] = synonyms[value]
                    self.replaced_values.append((option, value, synonyms[value]))

    def require(self, pip_name, import_error):
        """Fail with a clear message when an optional dependency did not import."""
        if import_error is not None:
            self.fail_json(
                msg=missing_required_lib(pip_name, reason="apex.ops needs it on the host running this module"),
                exception=import_error,
            )

    def fail(self, msg, exception=None, last_state=None, **result):
        """Fail once, the same way everywhere.

        ``exception`` may be an exception instance or a formatted traceback string;
        ``last_state`` is whatever the module last observed (a dict), returned as is.
        """
        if last_state is not None:
            result["last_state"] = last_state
        if isinstance(exception, BaseException):
            detail = "%s: %s" % (type(exception).__name__, exception)
            if detail not in msg:
                msg = "%s (%s)" % (msg, detail)
            result["exception"] = "".join(
                traceback.format_exception(type(exception), exception, exception.__traceback__)
            )
        elif exception:
            result["exception"] = exception
        self.fail_json(msg=msg, **result)


def import_error_of(callable_import):
    """Run an import and return ``None`` or its formatted traceback.

    Used at module_utils import time so a missing package is reported by ``require``
    rather than as an ImportError before the module can speak.
    """
    try:
        callable_import()
    except ImportError:
        return traceback.format_exc()
    return None


def find_error_of(name):
    """Like :func:`import_error_of` for a top-level package, without importing it.

    ``find_spec`` only locates the package: a module that does not use it on this run (boto3
    for a drain, redis for a PostgreSQL restore) does not pay for its import (0.2-0.5 s each).
    """
    import importlib.util

    def find():
        if importlib.util.find_spec(name) is None:
            raise ImportError("No module named %r" % name)
    return import_error_of(find)
