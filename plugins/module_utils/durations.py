# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Durations as operators write them: ``30s``, ``5m``, ``1h30m``, ``2d``, ``90`` (seconds).

Used by every option that says "longer than X" so ``idle_longer_than: 10m`` and
``idle_longer_than: 600`` mean the same thing. Pure Python, unit-tested.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

_UNITS = {
    "ms": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")


def parse_duration(value, name="duration"):
    """Return seconds (float) for ``value``; ``None`` stays ``None``.

    Accepts ints/floats (seconds), numeric strings (seconds) and unit strings made of one
    or more ``<number><unit>`` parts (``1h30m``). Raises ``ValueError`` naming ``name``.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("%s: expected a duration like 30s, 5m, 1h or seconds, got %r" % (name, value))
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        if not text:
            raise ValueError("%s: empty duration" % name)
        try:
            seconds = float(text)
        except ValueError:
            compact = text.replace(" ", "")
            parts = _PART.findall(compact)
            if not parts or "".join(n + u for n, u in parts) != compact:
                raise ValueError("%s: cannot parse %r; use e.g. 30s, 5m, 1h30m or seconds" % (name, value))
            seconds = 0.0
            for number, unit in parts:
                if unit not in _UNITS:
                    raise ValueError("%s: unknown unit %r in %r (known: ms, s, m, h, d, w)" % (name, unit, value))
                seconds += float(number) * _UNITS[unit]
    if seconds < 0:
        raise ValueError("%s: a duration cannot be negative (%r)" % (name, value))
    return seconds


def format_duration(seconds):
    """Short human form: 75 -> '1m15s', 3600 -> '1h', 0.5 -> '0.5s'."""
    if seconds is None:
        return None
    if seconds < 60:
        return ("%.1fs" % seconds).replace(".0s", "s")
    total = int(round(seconds))
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            out.append("%d%s" % (total // size, unit))
            total %= size
    return "".join(out)
