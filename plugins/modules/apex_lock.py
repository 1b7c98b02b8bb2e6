#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_lock
short_description: One changing apex.ops operation at a time per cluster (a Kubernetes Lease)
version_added: 0.2.0
description:
  - Takes, renews, releases or reads the cluster lock, the Lease C(apex-ops-lock) (coordination.k8s.io/v1) in the namespace
    of the workloads. C(spec.holderIdentity) is the holder (C(user@host/awx-job-<id>) in AWX, else C(user@host/pid-<pid>) of
    the C(ansible-playbook) process); the purpose, playbook, run id and since when are annotations C(apex.ops/*).
  - Held by someone else and live, acquiring refuses, naming the holder, its purpose and since when, and changes nothing.
    Expired (not renewed within its duration), or held by a run on this host whose process is gone, it is taken over and
    the result says whom it overrode.
  - On acquire, a detached renewer process renews the Lease every third of O(duration) while the C(ansible-playbook)
    process of the run lives and the lock is still this run's. A crashed run's lock therefore expires after O(duration).
  - Every changing role of the collection takes it in its first task (M(apex.ops.apex_preflight)) and releases it in its
    report (M(apex.ops.apex_report)); this module is for playbooks of your own and for breaking a stale lock by hand.
  - Runs on the controller (an action plugin).
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.k8s
attributes:
  check_mode:
    support: full
    description: In check mode nothing is written; the result says what acquiring or releasing would do.
  diff_mode:
    support: none
    description: No diff.
options:
  state:
    description:
      - C(acquired) takes the lock (or renews it when this run already holds it).
      - C(released) releases this run's lock; an expired lock, or one whose holder's process on this host is gone, is
        cleared too. Another run's live lock is broken only with O(confirm) naming its holder.
      - C(facts) returns who holds the lock, if anyone.
    type: str
    choices: [acquired, released, facts]
    default: facts
  duration:
    description: How long the lock lives without a renewal (C(leaseDurationSeconds)), a duration such as C(5m) or seconds.
    type: raw
    default: 5m
  purpose:
    description: What the run does, for whoever finds the lock held. Default is the task name.
    type: str
  playbook:
    description: The playbook or role taking the lock.
    type: str
  run_id:
    description: The run id (the one M(apex.ops.apex_preflight) returns), recorded with the lock.
    type: str
  mode:
    description:
      - C(take) refuses a live lock held by someone else.
      - C(override) takes it over without waiting (the emergency rollback) and reports whom it overrode.
    type: str
    choices: [take, override]
    default: take
  confirm:
    description:
      - The holder identity of a live lock to break (O(state=released)) or take over (O(state=acquired)). The refusal
        message prints it.
    type: str
  renew:
    description: Start the renewer after acquiring. Without it the lock lives O(duration) after the last acquire.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Take the cluster lock for a job of my own
  apex.ops.apex_lock:
    state: acquired
    purpose: quarterly node rotation
    duration: 10m

- name: Who holds the lock?
  apex.ops.apex_lock:
    state: facts
  register: lock

- name: Break a lock whose run is known to be dead (the refusal printed the holder)
  apex.ops.apex_lock:
    state: released
    confirm: oncall@bastion/pid-4242

- name: Release it at the end
  apex.ops.apex_lock:
    state: released
"""

RETURN = r"""
identity:
  description: This run's holder identity.
  returned: always
  type: str
  sample: oncall@bastion/awx-job-1234
lock:
  description:
    - The lock as seen after the call (C(facts) - as found). C(status) is C(free), C(ours), C(held), C(expired) or
      C(holder_gone); with C(holder), C(purpose), C(playbook), C(run_id), C(since), C(renewed), C(expires),
      C(seconds_left), C(host), C(pid), C(awx_job_id), C(overrode), C(duration), C(transitions).
  returned: always
  type: dict
before:
  description: The lock as found before acquiring or releasing.
  returned: state is acquired or released
  type: dict
action:
  description: What acquiring did, C(acquire), C(renew) or C(takeover).
  returned: state is acquired
  type: str
overrode:
  description: The holder identity of the lock that was taken over (expired, holder gone, O(mode=override), O(confirm)).
  returned: state is acquired
  type: str
broke:
  description: The holder identity of another run's lock that releasing cleared.
  returned: state is released
  type: str
renewer_pid:
  description: The pid of the renewer process started on acquire.
  returned: state is acquired
  type: int
message:
  description: What happened (or who holds the lock), in words.
  returned: always
  type: str
refused:
  description: True when the lock is held by someone else and the call changed nothing.
  returned: failure
  type: bool
"""
