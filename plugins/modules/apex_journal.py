#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_journal
short_description: Record what a multi-step procedure is doing and what must be undone, in the cluster
version_added: 0.2.0
description:
  - Keeps one record per namespace in the ConfigMap C(apex-ops-journal), next to the saved scale states of M(apex.ops.apex_scale).
    A procedure that changes state and later puts it back writes its record before it changes anything, updates the phase
    and the undo steps as it goes, and clears the record when it ends. Ansible runs no rescue on Ctrl-C, an AWX cancel
    or a killed controller; the record is what tells the next run (M(apex.ops.apex_preflight)), the health check and the
    C(recover) playbook what was left half-done.
  - Runs on the controller (an action plugin), so a write is one API call, not a module round trip.
  - Only one procedure's record at a time - writing a record while another run's record exists fails, naming that run.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.k8s
attributes:
  check_mode:
    support: full
    description: In check mode nothing is written; the result says what would be.
  diff_mode:
    support: none
    description: No diff.
options:
  state:
    description:
      - C(present) creates or updates the record of O(run_id).
      - C(absent) deletes the record of O(run_id); another run's record is never deleted.
      - C(facts) returns the record, if any.
    type: str
    choices: [present, absent, facts]
    default: facts
  run_id:
    description: The run the record belongs to (the C(run_id) that M(apex.ops.apex_preflight) returns). Required unless O(state=facts).
    type: str
  procedure:
    description: The procedure (role) name. Default is the first part of O(run_id).
    type: str
  phase:
    description: The phase the procedure is entering.
    type: str
  undo:
    description:
      - The undo steps that apply now, in the order they were taken (the recover role undoes them last first).
        Each is a dict with C(action) C(scale_restore) (with C(state_name)) or C(database_rollback) (with
        C(target_db), C(restore_mode), C(jobs), C(safety_backup), C(run_tag)) or C(release_rollback) (with C(release),
        C(revision), C(namespace), C(context), C(storage_driver)) and an optional C(description).
    type: list
    elements: dict
  details:
    description: Free-form details to keep with the record (the backup being restored, the replicas before).
    type: dict
"""

EXAMPLES = r"""
- name: Journal | About to scale api and worker to 0
  apex.ops.apex_journal:
    state: present
    run_id: "{{ preflight.run_id }}"
    phase: workloads
    undo:
      - action: scale_restore
        state_name: restore-apex-20261202T061500Z

- name: Journal | Done
  apex.ops.apex_journal:
    state: absent
    run_id: "{{ preflight.run_id }}"

- name: Is anything half-done?
  apex.ops.apex_journal:
    state: facts
  register: journal
"""

RETURN = r"""
record:
  description: The record after the call (C(facts) - the record found, or null).
  returned: always
  type: dict
  sample:
    run_id: restore-20261202T061500123456Z
    procedure: restore
    phase: restore
    started: "2026-12-02T06:15:00.123456+00:00"
    updated: "2026-12-02T06:15:03.000000+00:00"
    holder: {user: root, host: awx-ee-1, pid: 4242, awx_job_id: "1234"}
    undo: [{action: scale_restore, state_name: restore-apex-20261202T061500Z}]
previous:
  description: The record before the call (C(present), C(absent)).
  returned: state is present or absent
  type: dict
interrupted:
  description: True when a record exists (C(facts)).
  returned: state is facts
  type: bool
holder_alive:
  description: True when the record's holder ran on this host and still runs, false when it does not, null when unknowable.
  returned: state is facts
  type: bool
message:
  description: What the record means, in words (C(facts)).
  returned: state is facts
  type: str
recover_command:
  description: The command that finishes or undoes the recorded procedure.
  returned: when a record exists
  type: str
"""
