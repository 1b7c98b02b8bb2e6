#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_preflight
short_description: First task of every apex.ops role - refuse unknown variables and interrupted procedures
version_added: 0.2.0
description:
  - Runs on the controller (an action plugin; no module is sent to the host), before the role changes anything.
  - Refuses every variable that carries the role's prefix (C(scale_) for the C(scale) role) but is neither an option
    declared in the role's C(meta/argument_specs.yml) nor one of the role's own internal variables, and names the closest
    declared option ("did you mean restore_backup_id?"). Ansible's argument spec validation checks only the variables a
    role declares, so without this a typo such as C(scale_componet) is silently ignored and the default applies.
    A variable that starts with a longer prefix of another role of the collection (C(scale_event_name)) belongs to that role.
  - Refuses an empty value for the scope variables listed in O(scopes) (an empty database name must not mean "every database").
  - Reads the procedure journal (see M(apex.ops.apex_journal)). When a procedure is in progress or was interrupted
    (Ctrl-C, an AWX cancel, a killed controller), it says which one, in which phase, what is left to undo and the command
    that undoes it (C(ansible-playbook apex.ops.recover -e recover_confirm=RUN_ID)). With O(journal=refuse) (roles that
    change the system) it refuses to start; with O(journal=warn) (read-only roles) it warns.
  - Takes the cluster lock (see M(apex.ops.apex_lock)) with O(lock=take) - the default of the roles that change the
    system (O(journal=refuse)) - and refuses while another run holds it, naming the holder, its purpose and since when.
    O(lock=override) takes it over without waiting (the emergency rollback) and returns whom it overrode in RV(lock).
    The role's report (M(apex.ops.apex_report)) releases it; nested roles (same run) only renew it. The duration comes
    from the shared variable C(apex_lock_duration) (default 5m), a confirmation to break a live lock from C(apex_lock_break).
  - When the cluster cannot be reached the journal check and the lock are skipped with a warning; the role's own tasks
    then fail or not as they would.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.k8s
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing.
options:
  scopes:
    description: Role variables that narrow an action (a database, a list of names); an empty value for any of them is refused.
    type: list
    elements: str
    default: []
  journal:
    description:
      - C(refuse) - fail when the journal holds a record (roles that change the system).
      - C(warn) - warn and return the record (read-only roles, the health check).
      - C(skip) - do not read the journal (the recover role, which reads it itself).
    type: str
    choices: [refuse, warn, skip]
    default: refuse
  allow_interrupted:
    description:
      - Run id of a journal record to run past anyway (the shared variable C(apex_allow_interrupted)); any other record still refuses.
    type: str
  lock:
    description:
      - C(take) - take the cluster lock, refusing a live lock held by another run.
      - C(override) - take it even when another run holds it (an emergency must not wait), and say whom it overrode.
      - C(none) - do not touch the lock (read-only roles).
      - Default is C(take) with O(journal=refuse), else C(none).
    type: str
    choices: [take, override, none]
  lock_purpose:
    description: The purpose recorded with the lock. Default is the role name.
    type: str
notes:
  - Must be a task of a role (it reads the role's argument specs); it fails otherwise.
"""

EXAMPLES = r"""
- name: Pre-flight | Known variables only, no interrupted procedure
  apex.ops.apex_preflight:
    scopes: [db_connections_database]
    journal: refuse
    allow_interrupted: "{{ apex_allow_interrupted | default(omit, true) }}"
"""

RETURN = r"""
run_id:
  description: A run id for this run of the role (role name and UTC time to the microsecond), used in the journal.
  returned: success
  type: str
  sample: restore-20261202T061500123456Z
started:
  description: When the pre-flight ran (UTC, ISO 8601).
  returned: success
  type: str
interrupted:
  description: The journal record found (procedure, run_id, phase, holder, undo steps), or null.
  returned: always
  type: dict
interrupted_message:
  description: What the record means and the command that undoes it.
  returned: when a record was found
  type: str
recover_command:
  description: The command that finishes or undoes the recorded procedure.
  returned: when a record was found
  type: str
holder_alive:
  description: True when the record's holder ran on this host and still runs, false when it does not, null when unknowable.
  returned: when a record was found
  type: bool
lock:
  description:
    - The cluster lock as taken (C(status), C(holder), C(purpose), C(since), C(expires), C(action) acquire/renew/takeover,
      C(overrode) the holder identity taken over, C(overrode_view) who that was, C(message)); null when not taken.
    - On a refusal, the lock as found (who holds it).
  returned: always
  type: dict
refused:
  description: True when the role was refused (unknown variables, an empty scope, a journal record with O(journal=refuse), or
    the cluster lock held by another run).
  returned: failure
  type: bool
"""
