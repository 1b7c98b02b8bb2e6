# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup catalog: key layout, manifests, verification records, freshness and retention.

Pure functions (no I/O): the S3 listing and the manifests are passed in, decisions come out
(``catalog_store`` reads and writes them in S3).
Everything here is unit-tested in ``tests/unit/plugins/module_utils/test_backup_catalog.py``.

Layout (``kind`` is ``postgres``, ``postgres_base`` or ``redis``; ``name`` the database, the
PostgreSQL cluster of a base backup, or the Redis instance)::

    <prefix>/<kind>/<name>/<YYYY>/<MM>/<DD>/<backup_id>.<ext>            the data (dump / rdb)
    <prefix>/<kind>/<name>/<YYYY>/<MM>/<DD>/<backup_id>.manifest.json    written LAST: "complete"
    <prefix>/<kind>/<name>/<YYYY>/<MM>/<DD>/<backup_id>.verify.json      latest verification

A backup exists for the catalog only when its manifest exists. Data without a manifest is an
*orphan* (an interrupted run that got as far as completing the upload); prune removes orphans
older than a grace period.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import datetime
import os
import re

from ansible_collections.apex.ops.plugins.module_utils.timestamps import isoformat, parse_time, utcnow

FORMAT_VERSION = 1
KINDS = ("postgres", "redis", "postgres_base")
DATA_EXT = {"postgres": "dump", "redis": "rdb", "postgres_base": "tar"}
MANIFEST_SUFFIX = ".manifest.json"
VERIFY_SUFFIX = ".verify.json"
LEVELS = ("checksum", "toc", "deep")        # cumulative: toc includes checksum, deep includes toc
REDIS_LEVELS = ("checksum",)
# the kinds that know only the checksum level (a Redis snapshot, a pg_basebackup tar)
CHECKSUM_ONLY_KINDS = ("redis", "postgres_base")
VERIFY_HISTORY = 10

_ID_RE = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{8})$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.$-]{1,128}$")


class CatalogError(ValueError):
    """Bad input to the catalog (an unknown id, a malformed duration...)."""


# ---------------------------------------------------------------------------- time and ids

def new_backup_id(now=None, token=None):
    """``20261127T064512Z-1a2b3c4d``: sortable by time, unique by a random token."""
    now = now or utcnow()
    token = token or binascii.hexlify(os.urandom(4)).decode("ascii")
    return "%s-%s" % (now.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"), token)


def backup_time(backup_id):
    match = _ID_RE.match(backup_id or "")
    if not match:
        raise CatalogError("not a backup id: %r (expected YYYYMMDDTHHMMSSZ-xxxxxxxx)" % (backup_id,))
    return datetime.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


def is_backup_id(value):
    return bool(_ID_RE.match(value or ""))


# ---------------------------------------------------------------------------- keys

def time_of(document, field="finished_at"):
    """``document[field]`` as a datetime; a manifest without a usable time is refused, naming it."""
    moment = parse_time(document.get(field))
    if moment is None:
        raise CatalogError("backup %s: %s is not a UTC timestamp: %r" % (
            document.get("backup_id"), field, document.get(field)))
    return moment


def check_segment(what, value):
    if not value or not _SEGMENT_RE.match(value) or value in (".", ".."):
        raise CatalogError("%s %r is not usable in an S3 key (letters, digits, _ . $ - only)" % (what, value))
    return value


def kind_prefix(prefix, kind, name=None):
    """``<prefix>/<kind>/`` or ``<prefix>/<kind>/<name>/`` (always with a trailing slash)."""
    if kind not in KINDS:
        raise CatalogError("unknown backup kind %r" % (kind,))
    parts = [p for p in (prefix or "").strip("/").split("/") if p]
    parts.append(kind)
    if name:
        parts.append(check_segment("name", name))
    return "/".join(parts) + "/"


def backup_keys(prefix, kind, name, backup_id):
    """The data, manifest and verification-record keys of one backup."""
    moment = backup_time(backup_id)
    base = "%s%04d/%02d/%02d/%s" % (kind_prefix(prefix, kind, name), moment.year, moment.month, moment.day,
                                    backup_id)
    return {
        "data": "%s.%s" % (base, DATA_EXT[kind]),
        "manifest": base + MANIFEST_SUFFIX,
        "verify": base + VERIFY_SUFFIX,
    }


def parse_key(prefix, key):
    """``(kind, name, backup_id, role)`` for a key of our layout, else None.

    ``role`` is ``data``, ``manifest`` or ``verify``.
    """
    root = "/".join(p for p in (prefix or "").strip("/").split("/") if p)
    rest = key[len(root) + 1:] if root else key
    if root and not key.startswith(root + "/"):
        return None
    parts = rest.split("/")
    if len(parts) != 6 or parts[0] not in KINDS:
        return None
    kind, name, filename = parts[0], parts[1], parts[5]
    for role, suffix in (("manifest", MANIFEST_SUFFIX), ("verify", VERIFY_SUFFIX),
                         ("data", "." + DATA_EXT[kind])):
        if filename.endswith(suffix):
            backup_id = filename[:-len(suffix)]
            if is_backup_id(backup_id):
                return kind, name, backup_id, role
    return None


def scratch_db_name(backup_id):
    """``apex_verify_<id>`` as a valid, lower-case PostgreSQL identifier."""
    return "apex_verify_" + re.sub(r"[^a-z0-9_]", "_", backup_id.lower())


def check_db_name(name, what="database name"):
    if not name or not _IDENT_RE.match(name):
        raise CatalogError("%s %r is not a plain identifier (letters, digits, _ $ -; at most 63)" % (what, name))
    return name


# ---------------------------------------------------------------------------- documents

def build_manifest(kind, name, backup_id, keys, upload, started_at, finished_at, tags=(), **extra):
    """The manifest: the proof a backup is complete. Written after the data, never before."""
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "backup_id": backup_id,
        "key": keys["data"],
        "size": upload["size"],
        "sha256": upload["sha256"],
        "parts": upload.get("parts"),
        "started_at": isoformat(started_at),
        "finished_at": isoformat(finished_at),
        "duration_seconds": round((finished_at - started_at).total_seconds(), 3),
        "tags": sorted(set(tags or ())),
        "created_by": "apex.ops.apex_backup",
    }
    manifest.update(extra)
    return manifest


def check_manifest(manifest):
    """Problems with a manifest document (an empty list when it is usable)."""
    problems = []
    if not isinstance(manifest, dict):
        return ["manifest is not a JSON object"]
    for field in ("kind", "name", "backup_id", "key", "size", "sha256", "finished_at"):
        if field not in manifest:
            problems.append("manifest lacks %r" % field)
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        problems.append("manifest format %s is newer than this collection understands (%s)"
                        % (manifest.get("format_version"), FORMAT_VERSION))
    sha = manifest.get("sha256")
    if sha is not None and not re.match(r"^[0-9a-f]{64}$", str(sha)):
        problems.append("manifest sha256 is malformed")
    return problems


def level_rank(level):
    if level not in LEVELS:
        raise CatalogError("unknown verification level %r (one of %s)" % (level, ", ".join(LEVELS)))
    return LEVELS.index(level)


def levels_upto(level, kind="postgres"):
    """The checks a verification at ``level`` runs, in order."""
    if kind in CHECKSUM_ONLY_KINDS:
        return list(REDIS_LEVELS)
    return list(LEVELS[:level_rank(level) + 1])


def build_verify_record(backup_id, level, checks, verified_at, previous=None):
    """A verification record; ``checks`` maps check name -> dict with at least ``ok``.

    The first failing check (in level order) is named in ``failed_check``. Earlier records
    are kept (short) in ``history``.
    """
    failed = None
    for name in LEVELS:
        if name in checks and not checks[name].get("ok"):
            failed = name
            break
    record = {
        "format_version": FORMAT_VERSION,
        "backup_id": backup_id,
        "level": level,
        "ok": failed is None and bool(checks),
        "failed_check": failed,
        "checks": checks,
        "verified_at": isoformat(verified_at),
        "history": [],
    }
    if previous:
        past = [dict((k, previous.get(k)) for k in ("level", "ok", "failed_check", "verified_at"))]
        past.extend(previous.get("history") or [])
        record["history"] = past[:VERIFY_HISTORY]
    return record


def verification_state(record):
    """``(state, level)``: state is ``verified``, ``failed`` or ``unverified``."""
    if not record:
        return "unverified", None
    if not record.get("ok"):
        return "failed", record.get("level")
    # a later, shallower check that passed does not undo an earlier deeper one: the level is the
    # deepest among the passing records since the last failure
    best = record.get("level")
    for past in record.get("history") or []:
        if not past.get("ok"):
            break
        if past.get("level") in LEVELS and (best not in LEVELS or LEVELS.index(past["level"]) > LEVELS.index(best)):
            best = past["level"]
    return "verified", best


def compare_counts(expected, actual):
    """Differences between two ``{table: rows}`` maps, as a sorted list of dicts."""
    diffs = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        if want != got:
            diffs.append({"table": table, "expected": want, "actual": got})
    return diffs


# ---------------------------------------------------------------------------- the catalog

def build_catalog(prefix, objects, manifests, verify_records, now, kind=None, name=None):
    """Catalog entries (newest first) and orphans from an S3 listing.

    ``objects``: dicts with Key, Size, LastModified (datetime); ``manifests``/``verify_records``:
    ``{backup_id: document}``. Returns ``(entries, orphans)``.
    """
    found = {}
    for obj in objects:
        parsed = parse_key(prefix, obj["Key"])
        if not parsed:
            continue
        okind, oname, backup_id, role = parsed
        if (kind and okind != kind) or (name and oname != name):
            continue
        slot = found.setdefault(backup_id, {"kind": okind, "name": oname})
        slot[role] = obj
    entries, orphans = [], []
    for backup_id, slot in found.items():
        manifest = manifests.get(backup_id) if "manifest" in slot else None
        if manifest is None:
            if "data" in slot:
                data = slot["data"]
                modified = parse_time(data.get("LastModified")) or backup_time(backup_id)
                orphans.append({"backup_id": backup_id, "kind": slot["kind"], "name": slot["name"],
                                "key": data["Key"], "size": data.get("Size"),
                                "age_seconds": int((now - modified).total_seconds())})
            continue
        entries.append(catalog_entry(manifest, verify_records.get(backup_id), now, slot))
    entries.sort(key=lambda e: (time_of(e), e["backup_id"]), reverse=True)
    orphans.sort(key=lambda o: o["backup_id"], reverse=True)
    return entries, orphans


def catalog_entry(manifest, record, now, slot=None):
    finished = time_of(manifest)
    state, level = verification_state(record)
    entry = {
        "backup_id": manifest["backup_id"],
        "kind": manifest.get("kind"),
        "name": manifest.get("name"),
        "key": manifest["key"],
        "size": manifest.get("size"),
        "sha256": manifest.get("sha256"),
        "started_at": manifest.get("started_at"),
        "finished_at": manifest["finished_at"],
        "age_seconds": int((now - finished).total_seconds()),
        "tags": manifest.get("tags") or [],
        "verification": state,
        "verified_level": level,
        "verified_at": (record or {}).get("verified_at"),
        "failed_check": (record or {}).get("failed_check"),
        "data_present": True if slot is None else "data" in slot,
    }
    if slot is not None and "data" in slot and slot["data"].get("Size") is not None \
            and manifest.get("size") is not None and slot["data"]["Size"] != manifest["size"]:
        entry["problem"] = "stored size %s differs from manifest size %s" % (slot["data"]["Size"], manifest["size"])
    if not entry["data_present"]:
        entry["problem"] = "data object missing"
    return entry


def is_verified(entry, min_level="checksum"):
    if entry.get("verification") != "verified" or entry.get("problem"):
        return False
    if entry.get("kind") in CHECKSUM_ONLY_KINDS:
        return True
    return level_rank(entry.get("verified_level") or "checksum") >= level_rank(min_level)


def latest_verified(entries, min_level="checksum", exclude_tags=()):
    """The newest entry verified at ``min_level`` or deeper (entries are newest first)."""
    for entry in entries:
        if set(entry.get("tags") or ()) & set(exclude_tags or ()):
            continue
        if is_verified(entry, min_level):
            return entry
    return None


def freshness(entries, max_age_seconds, now, require_verified=True, min_level="checksum"):
    """The pre-maintenance gate: is there a (verified) backup younger than ``max_age``?"""
    candidate = latest_verified(entries, min_level) if require_verified else (entries[0] if entries else None)
    result = {
        "fresh": False,
        "max_age_seconds": max_age_seconds,
        "require_verified": require_verified,
        "backup_id": None,
        "age_seconds": None,
    }
    if candidate is None:
        result["reason"] = "no %sbackup found" % ("verified " if require_verified else "")
        return result
    age = int((now - time_of(candidate)).total_seconds())
    result.update(backup_id=candidate["backup_id"], age_seconds=age)
    if max_age_seconds is not None and age > max_age_seconds:
        result["reason"] = "newest %sbackup %s is %s old, more than %s" % (
            "verified " if require_verified else "", candidate["backup_id"], human_age(age), human_age(max_age_seconds))
        return result
    result["fresh"] = True
    result["reason"] = "%sbackup %s is %s old" % (
        "verified " if require_verified else "", candidate["backup_id"], human_age(age))
    return result


def human_age(seconds):
    seconds = int(seconds)
    if seconds < 120:
        return "%ds" % seconds
    if seconds < 7200:
        return "%dm" % (seconds // 60)
    if seconds < 172800:
        return "%.1fh" % (seconds / 3600.0)
    return "%.1fd" % (seconds / 86400.0)


def plan_retention(entries, now, keep_last=None, max_age_seconds=None, protect_min_level="checksum"):
    """Which backups to delete. ``entries`` newest first, all of one kind/name.

    A backup is kept when it is among the ``keep_last`` newest, or younger than ``max_age``
    (when both are given, either keeps it); the newest verified backup is always kept, whatever
    the rules say. Returns ``(delete, keep)``: lists of ``{"backup_id", "reason"}``.
    """
    if keep_last is None and max_age_seconds is None:
        raise CatalogError("retention needs keep_last and/or max_age")
    if keep_last is not None and keep_last < 1:
        raise CatalogError("keep_last must be at least 1 (use max_age alone to keep by age only)")
    protected = latest_verified(entries, protect_min_level)
    delete, keep = [], []
    for index, entry in enumerate(entries):
        age = (now - time_of(entry)).total_seconds()
        reasons = []
        if keep_last is not None and index < keep_last:
            reasons.append("among the %d newest" % keep_last)
        if max_age_seconds is not None and age <= max_age_seconds:
            reasons.append("younger than %s" % human_age(max_age_seconds))
        if protected is not None and entry["backup_id"] == protected["backup_id"]:
            reasons.append("newest verified backup")
        if reasons:
            keep.append({"backup_id": entry["backup_id"], "reason": "; ".join(reasons)})
        else:
            why = []
            if keep_last is not None:
                why.append("beyond the %d newest" % keep_last)
            if max_age_seconds is not None:
                why.append("older than %s" % human_age(max_age_seconds))
            delete.append({"backup_id": entry["backup_id"], "reason": " and ".join(why)})
    return delete, keep


# ---------------------------------------------------------------------------- restore guards

def confirmation_refusal(target, confirm):
    """The refusal message when ``confirm`` does not name ``target`` exactly, else None."""
    if confirm != target:
        return ("refusing to restore into %s: confirm must equal the target database name (%r given); "
                "nothing was changed" % (target, confirm))
    return None


def verification_refusal(entry, min_level="checksum", force=False):
    """The refusal message for restoring a backup that is not verified at ``min_level``, else None.

    ``force`` allows it (the caller reports that it was forced); a backup with a problem
    (data missing, size mismatch) is refused even then.
    """
    if entry.get("problem"):
        return "refusing to restore backup %s: %s; nothing was changed" % (entry["backup_id"], entry["problem"])
    if is_verified(entry, min_level) or force:
        return None
    if entry.get("verification") == "verified":
        state = "verified only at %s" % entry.get("verified_level")
    else:
        state = entry.get("verification") or "unverified"
        if entry.get("failed_check"):
            state += " (check %s failed)" % entry["failed_check"]
    return ("refusing to restore backup %s: it is %s (needs verification at level %s or deeper; run "
            "state=verify, or set force=true); nothing was changed" % (entry["backup_id"], state, min_level))
