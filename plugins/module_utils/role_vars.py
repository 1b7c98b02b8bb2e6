# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which of a role's variables did the user not mean?

Ansible's role argument specs check the variables they declare and never the ones they do
not, so ``-e scale_componet=worker`` is silently ignored and the default (both components)
wins. These pure functions decide, for one role, which variables carrying its prefix it does
not know, and which scope variables were set to nothing. ``apex_preflight`` (an action plugin)
feeds them the play's variables before a role does anything.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib


class RoleVarsError(Exception):
    """A role was given variables it does not know, or an empty scope."""


def role_prefix(role_name):
    """``apex.ops.scale`` and ``scale`` -> ``scale_``."""
    return role_name.rsplit(".", 1)[-1] + "_"


def owning_prefix(name, prefixes):
    """The longest prefix in ``prefixes`` that ``name`` starts with (None if none):
    ``scale_event_name`` belongs to ``scale_event_``, not to ``scale_``."""
    best = None
    for prefix in prefixes:
        if name.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def suggest(name, declared):
    """The declared name closest to ``name``, or None."""
    close = difflib.get_close_matches(name, sorted(declared), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_vars(prefix, names, declared, internal=(), sibling_prefixes=()):
    """Variables in ``names`` that start with ``prefix`` (and belong to no longer sibling
    prefix) but are neither declared options nor the role's own internal variables.

    Returns a sorted list of ``(name, suggestion_or_None)``.
    """
    declared = set(declared)
    known = declared | set(internal)
    prefixes = set(sibling_prefixes) | {prefix}
    unknown = []
    for name in names:
        if not name.startswith(prefix) or name in known:
            continue
        # a sibling role's own name is its set_stats artifact key: AWX workflows pass the
        # artifacts of earlier nodes (backup_verify -> backup) as extra variables
        if name + "_" in prefixes:
            continue
        if owning_prefix(name, prefixes) != prefix:
            continue
        unknown.append((name, suggest(name, declared)))
    return sorted(unknown)


def is_empty(value):
    """An empty scope: None, an empty or blank string, an empty list or dict."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple, dict, set)):
        return len(value) == 0
    return False


def empty_scopes(values, scope_names):
    """Names in ``scope_names`` whose value in ``values`` is empty (sorted)."""
    return sorted(name for name in scope_names if name in values and is_empty(values[name]))


def refusal_message(role, unknown, empty=()):
    """One message for everything wrong, or None when nothing is."""
    parts = []
    if unknown:
        described = []
        for name, hint in unknown:
            described.append("%s (did you mean %s?)" % (name, hint) if hint else name)
        parts.append("unknown variable%s for role %s: %s" % ("s" if len(unknown) > 1 else "", role, ", ".join(described)))
    if empty:
        parts.append("empty scope%s: %s - an empty value would widen the action to everything; give a value or "
                     "leave the variable out to use its default" % ("s" if len(empty) > 1 else "", ", ".join(empty)))
    if not parts:
        return None
    return "Refusing before doing anything: %s. The declared variables are in roles/%s/meta/argument_specs.yml." % (
        "; ".join(parts), role.rsplit(".", 1)[-1])


def check(role, names, values, declared, internal=(), sibling_prefixes=(), scope_names=()):
    """Raise RoleVarsError naming every unknown variable and empty scope."""
    unknown = unknown_vars(role_prefix(role), names, declared, internal, sibling_prefixes)
    empty = empty_scopes(values, scope_names)
    msg = refusal_message(role, unknown, empty)
    if msg:
        raise RoleVarsError(msg)
