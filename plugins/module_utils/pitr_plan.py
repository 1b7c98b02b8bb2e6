# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time recovery, the pure part: which base backup, which settings, what the log says.

PostgreSQL 12 removed ``recovery.conf``: a server that finds one refuses to start. Recovery is
asked for by an empty ``recovery.signal`` in the data directory, and the recovery settings
(``restore_command``, ``recovery_target_time``, ``recovery_target_action``...) are ordinary
settings, written here into ``postgresql.auto.conf`` (read last, so they win over the copied
``postgresql.conf``). Nothing here does I/O; ``pitr.py`` does. Unit-tested in
``tests/unit/plugins/module_utils/test_pitr_plan.py``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import shlex

from ansible_collections.apex.ops.plugins.module_utils.timestamps import isoformat, parse_time

ACTIONS = ("promote", "pause")
MARKER = "apex-pitr.json"
LOG_NAME = "apex-pitr.log"
AUTO_CONF = "postgresql.auto.conf"
_STOP_RE = re.compile(r"recovery stopping (before|after) (commit|abort) of transaction (\d+), time (.+?)\s*$", re.M)
_NOT_REACHED = "recovery ended before configured recovery target was reached"
_PAUSED_RE = re.compile(r"(pausing at the end of recovery|recovery has paused)")
_TIMELINE_RE = re.compile(r"selected new timeline ID: (\d+)")


class PitrRefused(ValueError):
    """A precondition of the recovery is not met; nothing was changed."""


def target_text(target):
    """The target as PostgreSQL reads it, to the microsecond (``isoformat`` keeps milliseconds only,
    which could move a target set between two commits of the same millisecond before the first)."""
    return target.strftime("%Y-%m-%d %H:%M:%S.%f+00")


def parse_target(value, now):
    """The recovery target as an aware UTC datetime; refused when unparseable or in the future."""
    target = parse_time(value)
    if target is None:
        raise PitrRefused("target_time %r is not a timestamp (ISO 8601 with a zone, e.g. 2026-12-02T14:30:00Z)"
                          % (value,))
    if target > now:
        raise PitrRefused("target_time %s is in the future (now %s): there is nothing to recover to yet"
                          % (isoformat(target), isoformat(now)))
    return target


def choose_base_backup(entries, target, backup_id=None):
    """The newest usable base backup that finished before ``target`` (``entries`` newest first).

    A base backup restores only to a time after its end; a failed verification or a missing
    data object makes it unusable.
    """
    usable = [e for e in entries if not e.get("problem") and e.get("verification") != "failed"]
    if backup_id:
        chosen = [e for e in entries if e.get("backup_id") == backup_id]
        if not chosen:
            raise PitrRefused("base backup %s is not in the catalog" % backup_id)
        if chosen[0] not in usable:
            raise PitrRefused("base backup %s is not usable: %s" % (
                backup_id, chosen[0].get("problem") or "its verification failed"))
        if parse_time(chosen[0]["finished_at"]) > target:
            raise PitrRefused("base backup %s finished at %s, after the target %s: it cannot go back in time"
                              % (backup_id, chosen[0]["finished_at"], isoformat(target)))
        return chosen[0]
    for entry in usable:
        if parse_time(entry["finished_at"]) <= target:
            return entry
    if not usable:
        raise PitrRefused("no usable base backup in the catalog (take one with apex_backup state=base_backup)")
    raise PitrRefused("no base backup finished before the target %s; the oldest finished at %s"
                      % (isoformat(target), usable[-1]["finished_at"]))


def restore_command(wal_archive=None, command=None):
    """``restore_command``: a copy from the archive directory, or the one given (S3 tools, wal-g...)."""
    if command:
        if "%f" not in command or "%p" not in command:
            raise PitrRefused("restore_command must contain %f (the file wanted) and %p (where to put it)")
        return command
    if not wal_archive:
        raise PitrRefused("a WAL archive is needed: wal_archive (a directory) or restore_command")
    # PostgreSQL runs restore_command through the shell: the directory is quoted for it
    return "cp %s/%%f %%p" % shlex.quote(wal_archive.rstrip("/") or "/")


def recovery_settings(target, action, command, port, socket_dir, timeline="latest"):
    """The settings written into the recovered copy's ``postgresql.auto.conf``, in order."""
    if action not in ACTIONS:
        raise PitrRefused("target_action must be one of %s (a shutdown leaves nothing to verify)" % ", ".join(ACTIONS))
    return [
        ("port", int(port)),
        ("listen_addresses", "127.0.0.1"),
        ("unix_socket_directories", socket_dir),
        # the copy must never write into the live server's archive (a new timeline's history file
        # there would be followed by every later recovery and standby)
        ("archive_mode", "off"),
        ("primary_conninfo", ""),
        ("primary_slot_name", ""),
        ("hot_standby", "on"),
        ("restore_command", command),
        ("recovery_target_time", target_text(target)),
        ("recovery_target_action", action),
        ("recovery_target_timeline", timeline),
        ("recovery_target_inclusive", "on"),
        # the log lines read afterwards are the English ones
        ("lc_messages", "C"),
        ("logging_collector", "off"),
        ("cluster_name", "apex-pitr"),
    ]


def quote_setting(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return "'%s'" % str(value).replace("'", "''")


def merge_auto_conf(existing, settings):
    """``postgresql.auto.conf`` with ``settings`` replacing any earlier line for the same names."""
    names = set(name for name, dummy in settings)
    kept = []
    for line in (existing or "").splitlines():
        key = line.split("=", 1)[0].strip().lower() if "=" in line and not line.lstrip().startswith("#") else None
        if key not in names:
            kept.append(line)
    kept.append("# point-in-time recovery settings written by apex.ops.apex_pitr")
    kept.extend("%s = %s" % (name, quote_setting(value)) for name, value in settings)
    return "\n".join(kept) + "\n"


def marker(backup_id, target, action, port, data_dir):
    """What the marker file of a recovered copy records (and what a re-run must match)."""
    return {"backup_id": backup_id, "target_time": target_text(target), "action": action, "port": int(port),
            "data_dir": data_dir, "created_by": "apex.ops.apex_pitr"}


def marker_mismatch(existing, wanted):
    """Why an existing recovered copy is not the one asked for (None when it is)."""
    for field in ("backup_id", "target_time", "action"):
        if wanted.get(field) is not None and existing.get(field) != wanted.get(field):
            return "%s is %s, not %s" % (field, existing.get(field), wanted.get(field))
    return None


def read_recovery_log(text):
    """What the server log says about the recovery: where it stopped, whether it paused, errors."""
    stops = list(_STOP_RE.finditer(text or ""))
    stop = stops[-1] if stops else None
    timelines = _TIMELINE_RE.findall(text or "")
    return {
        "stopped": {"position": stop.group(1), "record": stop.group(2), "xid": int(stop.group(3)),
                    "time": stop.group(4)} if stop else None,
        "target_not_reached": _NOT_REACHED in (text or ""),
        "paused": bool(_PAUSED_RE.search(text or "")),
        "new_timeline": int(timelines[-1]) if timelines else None,
    }


def judge(target, log_facts, server, migration_problems):
    """``(target_reached, problems)`` of a recovered copy: the log, the server's state, the migrations."""
    problems = []
    if log_facts.get("target_not_reached"):
        problems.append("PostgreSQL says the recovery ended before the target was reached: "
                        "the archive has no WAL past %s" % isoformat(target))
    if not log_facts.get("stopped"):
        problems.append("the server log has no 'recovery stopping' line: the target %s was not reached"
                        % isoformat(target))
    replayed = parse_time(server.get("last_replay_time")) if server.get("last_replay_time") else None
    if replayed is not None and replayed > target:
        problems.append("a transaction of %s was replayed, after the target %s"
                        % (isoformat(replayed), isoformat(target)))
    if server.get("action") == "promote" and server.get("in_recovery"):
        problems.append("the server is still in recovery (not promoted)")
    if server.get("action") == "pause" and server.get("pause_state") != "paused":
        problems.append("the server is not paused at the target (%s)" % server.get("pause_state"))
    reached = not problems
    problems.extend(migration_problems or [])
    return reached, problems


def compare_counts(recovered, live):
    """Per table: recovered and live row counts, and the difference (live minus recovered)."""
    tables = sorted(set(recovered or {}) | set(live or {}))
    rows = {}
    for table in tables:
        before, now = (recovered or {}).get(table), (live or {}).get(table)
        rows[table] = {"recovered": before, "live": now,
                       "difference": (now - before) if before is not None and now is not None else None}
    return rows
