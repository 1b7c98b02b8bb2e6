# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verifying a PostgreSQL backup: one streamed read of the stored object feeds sha256
(``checksum``), ``pg_restore --list`` (``toc``) and ``pg_restore`` into a scratch database
(``deep``) at the same time.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import re
import time

from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as catalog
from ansible_collections.apex.ops.plugins.module_utils.pg_admin import count_in_database, create_database, drop_database, qualified
from ansible_collections.apex.ops.plugins.module_utils.pg_programs import Sink, exit_description, find_program, libpq_env, restore_argv
from ansible_collections.apex.ops.plugins.module_utils.redaction import redact

_TOC_DATA_RE = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (.+) (\S+)$")


def parse_toc(text):
    """Facts from ``pg_restore --list`` output: format, entry count, TABLE DATA names."""
    facts = {"format": None, "toc_entries": None, "dumped_from": None, "table_data": []}
    for line in text.splitlines():
        if line.startswith(";"):
            body = line[1:].strip()
            if body.startswith("Format:"):
                facts["format"] = body.split(":", 1)[1].strip()
            elif body.startswith("TOC Entries:"):
                facts["toc_entries"] = int(body.split(":", 1)[1].strip())
            elif body.startswith("Dumped from database version:"):
                facts["dumped_from"] = body.split(":", 1)[1].strip()
            continue
        match = _TOC_DATA_RE.match(line.strip())
        if match:
            facts["table_data"].append(qualified(match.group(1), match.group(2)))
    return facts


def stream_through(store, manifest, sinks, hold_last=False, on_complete=None, should_stop=None):
    """Read the object once, feed every sink, hash on the way; returns (size, sha256).

    ``hold_last``: keep the final chunk back and call ``on_complete(size, sha256)`` before
    delivering it; when that raises, the sinks never see the end of the stream.
    ``should_stop()``: checked per chunk; when true, stop reading (sha256 is then None and
    the sinks never see the end).
    """
    digest = hashlib.sha256()
    size = 0
    pending = None
    for chunk in store.iter_object(manifest["key"]):
        if should_stop is not None and should_stop():
            return size, None
        digest.update(chunk)
        size += len(chunk)
        if hold_last:
            if pending is not None:
                for sink in sinks:
                    sink.write(pending)
            pending = chunk
        else:
            for sink in sinks:
                sink.write(chunk)
    if on_complete is not None:
        on_complete(size, digest.hexdigest())
    if pending is not None:
        for sink in sinks:
            sink.write(pending)
    return size, digest.hexdigest()


def checksum_result(manifest, size, sha256):
    ok = size == manifest.get("size") and sha256 == manifest.get("sha256")
    result = {"ok": ok, "size": size, "sha256": sha256, "expected_size": manifest.get("size"),
              "expected_sha256": manifest.get("sha256")}
    if not ok:
        what = []
        if size != manifest.get("size"):
            what.append("size %s != manifest %s" % (size, manifest.get("size")))
        if sha256 != manifest.get("sha256"):
            what.append("sha256 differs from the manifest")
        result["error"] = "; ".join(what)
    return result


def toc_result(manifest, run):
    facts = parse_toc(run["stdout"])
    result = {"ok": False, "format": facts["format"], "toc_entries": facts["toc_entries"],
              "table_data_entries": len(facts["table_data"]), "dumped_from": facts["dumped_from"]}
    if run["returncode"] != 0:
        result["error"] = "%s: %s" % (exit_description("pg_restore --list", run["returncode"]), run["stderr"])
        return result
    missing = sorted(set(manifest.get("row_counts") or {}) - set(facts["table_data"]))
    if facts["format"] != "CUSTOM":
        result["error"] = "archive format is %r, expected CUSTOM" % facts["format"]
    elif missing:
        result["error"] = "tables of the manifest without TABLE DATA in the archive: %s" % ", ".join(missing)
    else:
        result["ok"] = True
    return result


def verify_postgres(params, store, manifest, level="toc", pg_bin_dir=None, secrets=(), scratch_db=None):
    """Run the checks up to ``level`` in one streamed pass. Returns ``{check: result}``."""
    checks = {}
    wanted = catalog.levels_upto(level)
    sinks = []
    toc_sink = restore_sink = None
    scratch = None
    try:
        if "toc" in wanted:
            pg_restore = find_program("pg_restore", pg_bin_dir)
            toc_sink = Sink("toc", [pg_restore, "--list"], libpq_env(params), capture_stdout=True)
            sinks.append(toc_sink)
        if "deep" in wanted:
            scratch = catalog.check_db_name(scratch_db or catalog.scratch_db_name(manifest["backup_id"]))
            drop_database(params, scratch, force=True)   # a leftover of a crashed run
            create_database(params, scratch)
            restore_sink = Sink("deep", restore_argv(pg_restore, scratch), libpq_env(params, scratch, "apex.ops-verify"))
            sinks.append(restore_sink)
        started = time.monotonic()
        size, sha256 = stream_through(store, manifest, sinks)
        checks["checksum"] = checksum_result(manifest, size, sha256)
        checks["checksum"]["seconds"] = round(time.monotonic() - started, 3)
        if toc_sink is not None:
            checks["toc"] = toc_result(manifest, toc_sink.finish())
            if checks["toc"].get("error"):
                checks["toc"]["error"] = redact(checks["toc"]["error"], secrets)
        if restore_sink is not None:
            run = restore_sink.finish()
            deep = {"ok": False, "scratch_db": scratch, "seconds": round(time.monotonic() - started, 3)}
            if run["returncode"] != 0:
                deep["error"] = redact("%s: %s" % (exit_description("pg_restore", run["returncode"]), run["stderr"]),
                                       secrets)
            else:
                expected = manifest.get("row_counts") or {}
                actual = count_in_database(params, scratch, sorted(expected))
                diffs = catalog.compare_counts(expected, actual)
                deep.update(tables=len(expected), rows=sum(v for v in actual.values() if v), differences=diffs)
                if diffs:
                    deep["error"] = "row counts differ from the manifest in %d table(s): %s" % (
                        len(diffs), ", ".join("%s %s != %s" % (d["table"], d["actual"], d["expected"]) for d in diffs[:5]))
                else:
                    deep["ok"] = True
            checks["deep"] = deep
        return checks
    finally:
        for sink in sinks:
            if sink.proc.poll() is None:
                sink.kill()
        if scratch:
            try:
                drop_database(params, scratch, force=True)
                if "deep" in checks:
                    checks["deep"]["scratch_dropped"] = True
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                if "deep" in checks:
                    checks["deep"]["scratch_dropped"] = False
                    checks["deep"]["drop_error"] = str(exc)
