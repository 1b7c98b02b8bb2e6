# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wall-clock time, done one way: ``utcnow()``, ``parse_time()`` and ``isoformat()``.

Every timestamp the collection reads or writes (backup manifests, certificate dates, Kubernetes
``creationTimestamp``s, journal records) is an aware UTC ``datetime`` in memory and RFC 3339 text
on the wire. Wall-clock time is for records; waits use the monotonic clock (``waiting.Deadline``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re

UTC = datetime.timezone.utc
_FRACTION = re.compile(r"\.(\d+)")


def utcnow():
    """The current time as an aware UTC ``datetime`` (full precision)."""
    return datetime.datetime.now(UTC)


def parse_time(value):
    """An aware UTC ``datetime`` from an RFC 3339 / ISO 8601 timestamp, or ``None``.

    Accepts ``2026-11-27T06:45:12Z``, fractions of any length (``.345Z``, nanoseconds as
    Kubernetes may write them), offsets (``+02:00``, converted to UTC), naive text (taken as UTC)
    and ``datetime`` objects (naive ones taken as UTC).

    Never raises: an absent value (``None``, ``""``) or one that is not a timestamp returns
    ``None``. A caller for whom a missing time is an error (a backup manifest without
    ``finished_at``) checks for ``None`` and raises its own error naming the field.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        text = str(value).strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        # fromisoformat before Python 3.11 takes 3 or 6 fraction digits only: pad or trim to 6
        text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def isoformat(moment):
    """``2026-11-27T06:45:12Z``, or ``2026-11-27T06:45:12.345Z`` when there are milliseconds.

    Milliseconds are kept (two backups finishing within one second still order correctly);
    anything finer is dropped.
    """
    moment = moment.astimezone(UTC)
    if moment.microsecond // 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
