# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""apex_handoff: read the controller's reports directory (where apex_report writes every role's report),
then run the module on the target with the reports of the window. Documentation: plugins/modules/apex_handoff.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.apex.ops.plugins.module_utils import report_history
from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        try:
            window = parse_duration(args.get("since", "24h"), "since")
        except ValueError as exc:
            raise AnsibleActionFail(str(exc))
        now = utcnow()
        directory = args.get("report_dir")
        # the reports are on this machine (the controller), whatever host the module runs on
        args["reports"] = report_history.recent(directory, now - datetime.timedelta(seconds=window), now) \
            if directory else []
        result.update(self._execute_module(module_name="apex.ops.apex_handoff", module_args=args,
                                           task_vars=task_vars))
        return result
