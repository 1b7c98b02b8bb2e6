#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apex_report
short_description: Write a procedure's JSON report and its AWX statistics, on the controller
version_added: 0.2.0
description:
  - The last task of every apex.ops role. Writes the report as JSON to C(<dir>/<procedure>-<UTC time to the microsecond>.json)
    (or O(path)), atomically (a temporary file renamed into place), mode C(0640), creating the directory (C(0750)) if needed;
    and publishes it as custom statistics (what M(ansible.builtin.set_stats) does) for AWX job artifacts.
  - Runs on the controller (an action plugin), so it costs no module round trip; the report lands on the machine that runs
    C(ansible-playbook) (in AWX, the execution environment), where the operator and AWX read it.
  - A report is a record of the run, not a change to the system - never C(changed), and written in check mode too.
  - In the role whose pre-flight took the cluster lock (M(apex.ops.apex_preflight), fact C(apex_ops_lock_owner)), it also
    releases the lock - at the end of the run and in the rescue that reports a failure. A nested role's report does not.
author:
  - Apex platform team (@apex-platform)
attributes:
  check_mode:
    support: full
    description: Writes the report in check mode too (it records the planned run).
  diff_mode:
    support: none
    description: No diff.
options:
  procedure:
    description: The procedure's name; the file name's stem and the default statistics key.
    type: str
    required: true
  report:
    description: The report.
    type: dict
    required: true
  dir:
    description: Directory of the report. Required unless O(path) is given.
    type: path
  path:
    description: The report file's full path (when the report itself names it).
    type: path
  stats:
    description: What to publish as statistics instead of the whole report; an empty dict publishes nothing.
    type: dict
  stats_key:
    description: The statistics key. Default is O(procedure).
    type: str
  attachments:
    description:
      - Text files written beside the report, as C(<report path without .json>.<suffix>) (same stem, mode C(0640),
        atomically), for example an C(svg) key whose value is the SVG text of a chart. Keys are file suffixes (letters and digits). The report
        names them under C(attachments) (suffix to path).
    type: dict
"""

EXAMPLES = r"""
- name: Report
  apex.ops.apex_report:
    procedure: scale
    report: "{{ scale_report }}"
    dir: "{{ scale_report_dir }}"
"""

RETURN = r"""
path:
  description: The report file written.
  returned: success
  type: str
  sample: /tmp/apex-reports/scale-20261202T061500123456Z.json
attachments:
  description: The attachments written, suffix to path.
  returned: success
  type: dict
  sample: {svg: /tmp/apex-reports/canary-20261202T061500123456Z.svg}
lock:
  description: When this role had taken the cluster lock, C(released) (bool) and C(message).
  returned: when the role had taken the cluster lock
  type: dict
"""
