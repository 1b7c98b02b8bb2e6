# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runbook's communication templates, rendered from facts: incident declared, incident update,
incident resolved, maintenance start, maintenance complete. Pure and unit-tested.

``render(kind, facts)`` returns a ``Message``: the runbook's text (Slack mrkdwn, one ``*bold*`` label
per line as in the runbook's Markdown), and the same content as structured fields for a status page's
JSON webhook. Nothing secret goes into a message: values of fields whose name says secret are
dropped, and every text goes through ``redaction.redact`` (URL credentials, DSN and SQL passwords)
plus the patterns of bearer tokens and Slack webhook URLs.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.apex.ops.plugins.module_utils.redaction import MASK, redact

KINDS = ("incident_initial", "incident_update", "incident_resolved", "maintenance_start", "maintenance_complete")
SEVERITIES = ("P1", "P2", "P3", "P4")
UNKNOWN = "-"
_SECRET_NAME = re.compile(r"password|passwd|secret|token|api_?key|access_?key|private_?key|authorization|credential|"
                          r"webhook_?url|dsn", re.IGNORECASE)
_BEARER = re.compile(r"(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_SLACK_HOOK = re.compile(r"https://hooks\.slack\.com/\S+")
_TOKEN_ASSIGN = re.compile(r"(\b(?:token|api_?key|secret|password)\s*[=:]\s*)\S+", re.IGNORECASE)

HEADINGS = {
    "incident_initial": (":rotating_light:", "INCIDENT DECLARED"),
    "incident_update": (":information_source:", "INCIDENT UPDATE"),
    "incident_resolved": (":white_check_mark:", "INCIDENT RESOLVED"),
    "maintenance_start": (":construction:", "MAINTENANCE STARTED"),
    "maintenance_complete": (":white_check_mark:", "MAINTENANCE COMPLETE"),
}

# (label, field) per kind, in the runbook's order; lists are rendered as bullets under the label
LAYOUT = {
    "incident_initial": [("Severity", "severity"), ("Title", "title"), ("Impact", "impact"),
                         ("Detection Time", "detection_time"), ("Incident Commander", "incident_commander"),
                         ("Current Status", "summary"), ("Actions Being Taken", "actions"),
                         ("Next Update", "next_update"), ("Incident Channel", "channel")],
    "incident_update": [("Severity", "severity"), ("Status", "status"), ("Duration", "duration"),
                        ("Summary", "summary"), ("Metrics", "metrics"), ("Actions Completed", "actions"),
                        ("Next Steps", "next_steps"), ("Next Update", "next_update")],
    "incident_resolved": [("Severity", "severity"), ("Title", "title"), ("Duration", "duration"),
                          ("Resolution Time", "resolution_time"), ("Root Cause", "root_cause"),
                          ("Resolution", "resolution"), ("Impact Summary", "impact_summary"),
                          ("Follow-up Actions", "next_steps"), ("Post-mortem document", "postmortem")],
    "maintenance_start": [("Title", "title"), ("Type", "maintenance_type"), ("Change Request", "change_request"),
                          ("Approved By", "approved_by"), ("Window", "window"), ("Expected Duration", "expected_duration"),
                          ("Impact", "impact"), ("Status", "status"), ("Actions", "actions")],
    "maintenance_complete": [("Title", "title"), ("Type", "maintenance_type"), ("Change Request", "change_request"),
                             ("Outcome", "status"), ("Duration", "duration"), ("Window", "window"),
                             ("Summary", "summary"), ("Actions Completed", "actions"),
                             ("Post-maintenance Checks", "checks")],
}
# the heading line of an update carries its time, as the runbook's "INCIDENT UPDATE - [HH:MM UTC]"
TIMED_HEADING = {"incident_update": "time"}
REQUIRED = {"incident_initial": ("severity", "title"), "incident_update": ("severity", "status"),
            "incident_resolved": ("severity", "title"), "maintenance_start": ("title",),
            "maintenance_complete": ("title", "status")}


class MessageError(ValueError):
    """The facts cannot make this message (unknown kind, a required fact missing)."""


class Message(object):
    def __init__(self, kind, text, fields, redacted):
        self.kind = kind
        self.text = text
        self.fields = fields
        self.redacted = redacted

    def slack_payload(self):
        """A Slack incoming webhook's body (``text`` in mrkdwn)."""
        return {"text": self.text}

    def json_payload(self):
        """A generic JSON webhook's body (a status page): the same content as fields."""
        heading = HEADINGS[self.kind][1]
        return {"source": "apex.ops", "kind": self.kind, "heading": heading, "title": self.fields.get("title"),
                "severity": self.fields.get("severity"), "status": self.fields.get("status"),
                "fields": self.fields, "text": self.text}


def scrub_text(text, secrets=()):
    """``text`` without anything that looks like a credential."""
    if text is None:
        return None
    text = redact(str(text), secrets)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    text = _SLACK_HOOK.sub("https://hooks.slack.com/" + MASK, text)
    return _TOKEN_ASSIGN.sub(lambda m: m.group(1) + MASK, text)


def scrub(value, secrets=(), path="", dropped=None):
    """``value`` (any JSON-like structure) scrubbed; keys that name a secret are dropped (listed in ``dropped``)."""
    dropped = [] if dropped is None else dropped
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = "%s.%s" % (path, key) if path else str(key)
            if _SECRET_NAME.search(str(key)):
                dropped.append(name)
                continue
            out[str(key)] = scrub(item, secrets, name, dropped)
        return out
    if isinstance(value, (list, tuple)):
        return [scrub(item, secrets, path, dropped) for item in value]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return scrub_text(value, secrets)


def _line(value):
    if value is None or value == "" or value == [] or value == {}:
        return UNKNOWN
    if isinstance(value, dict):
        return ", ".join("%s %s" % (k.replace("_", " "), _line(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(_line(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _block(label, value, kind):
    if isinstance(value, (list, tuple)) and value:
        box = "- [ ] " if label in ("Actions Being Taken", "Next Steps", "Follow-up Actions") else "- "
        return "*%s:*\n%s" % (label, "\n".join(box + _line(v) for v in value))
    if isinstance(value, dict) and value:
        lines = ["- %s: %s" % (k.replace("_", " ").capitalize(), _line(v)) for k, v in value.items()]
        return "*%s:*\n%s" % (label, "\n".join(lines))
    return "*%s:* %s" % (label, _line(value))


def render(kind, facts, secrets=()):
    """The ``kind`` message from ``facts`` (a dict). Raises MessageError when a required fact is missing."""
    if kind not in KINDS:
        raise MessageError("unknown message %r; choose from %s" % (kind, ", ".join(KINDS)))
    dropped = []
    fields = scrub(dict((k, v) for k, v in (facts or {}).items() if v is not None), secrets, dropped=dropped)
    severity = fields.get("severity")
    if severity is not None:
        severity = str(severity).upper()
        if not severity.startswith("P"):
            severity = "P" + severity
        if severity not in SEVERITIES:
            raise MessageError("severity must be one of %s, got %r" % (", ".join(SEVERITIES), facts.get("severity")))
        fields["severity"] = severity
    missing = [name for name in REQUIRED[kind] if fields.get(name) in (None, "")]
    if missing:
        raise MessageError("the %s message needs %s" % (kind, ", ".join(missing)))
    emoji, heading = HEADINGS[kind]
    head = "%s *%s*" % (emoji, heading)
    if kind in TIMED_HEADING and fields.get(TIMED_HEADING[kind]):
        head += " - %s" % fields[TIMED_HEADING[kind]]
    if kind == "incident_initial":
        head += " %s" % emoji
    blocks = [head]
    for label, name in LAYOUT[kind]:
        if name in ("channel", "postmortem", "checks", "metrics", "next_steps", "impact_summary",
                    "approved_by", "expected_duration") and fields.get(name) in (None, "", [], {}):
            continue  # optional lines are left out rather than shown empty
        blocks.append(_block(label, fields.get(name), kind))
    return Message(kind, "\n\n".join(blocks), fields, dropped)
