# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redaction, done one way: every text that may carry a credential goes through ``redact``.

``redact(text, secrets)`` removes, in this order:

* the values of the module's own secrets (passwords, keys; longer than 3 characters, longest
  first) wherever they appear (program error output, exception texts);
* password literals in SQL (``CREATE/ALTER ROLE ... PASSWORD '...'``, user mappings'
  ``password '...'``; standard, ``E''``, nested, dollar-quoted or cut-off literals) -> ``'********'``;
* ``password=...`` in libpq DSNs -> ``password=********``;
* the user information of URLs (``redis://:pw@host``, ``http://user:pw@proxy``) -> ``***@``.

When in doubt it redacts more, never less. Pure Python, unit-tested.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

MASK = "********"

# A password literal after PASSWORD: a standard string ('' escapes), an E'' string (backslash
# escapes), one quoted inside another string, a dollar-quoted string, or one cut off by a length
# limit (to the end).
_PASSWORD_LITERAL = re.compile(
    r"""(?P<kw>(?<!['\w])password\b\s*)(?P<lit>"""
    r"""[eE]'(?:\\.|''|[^'\\])*(?:'|$)"""
    r"""|''(?:''''|[^'])+''"""  # quoted inside another literal: 'ALTER ROLE x PASSWORD ''pw'''
    r"""|'(?:''|[^'])*(?:'|$)"""
    r"""|(?P<tag>\$[A-Za-z_0-9]*\$)(?:.|\n)*?(?:(?P=tag)|$))""",
    re.IGNORECASE | re.DOTALL)
_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|[^\s']\S*)", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact(text, secrets=()):
    """``text`` without credentials (see the module docstring); ``None`` and ``""`` stay as they are."""
    if not text:
        return text
    text = str(text)
    for secret in sorted((str(s) for s in secrets or () if s and len(str(s)) > 3), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _PASSWORD_LITERAL.sub(lambda m: m.group("kw") + "'" + MASK + "'", text)
    text = _DSN_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    text = _URL_USERINFO.sub(r"\1***@", text)
    return text


def redact_url(url):
    """One URL without its user information (``http://***@proxy:3128``), with or without a scheme."""
    if not url or "@" not in url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    netloc, slash, tail = rest.partition("/")
    netloc = "***@" + netloc.rpartition("@")[2]
    return (scheme + "://" if sep else "") + netloc + slash + tail


def redact_rows(rows, field="query", secrets=()):
    """Redact ``field`` of dict rows (backends from ``pg_stat_activity``) in place; returns them."""
    for row in rows or []:
        if isinstance(row, dict) and row.get(field):
            row[field] = redact(row[field], secrets)
    return rows
