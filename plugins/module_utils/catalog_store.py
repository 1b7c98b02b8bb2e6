# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup catalog in S3: read it, find a backup in it, record a verification, apply retention.

The decisions are ``backup_catalog``'s (pure, unit-tested); this file does the reads and writes
through an ``s3_store.Store``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as catalog
from ansible_collections.apex.ops.plugins.module_utils.timestamps import utcnow


def load_catalog(store, prefix, kind=None, name=None, now=None):
    """Read the catalog from S3: ``(entries, orphans, manifests, records)``.

    One listing under ``<prefix>/<kind>/<name>/`` plus one GET per manifest and per
    verification record (small JSON documents).
    """
    now = now or utcnow()
    kinds = [kind] if kind else list(catalog.KINDS)
    objects = []
    for one in kinds:
        objects.extend(store.list_objects(catalog.kind_prefix(prefix, one, name)))
    manifests, records = {}, {}
    for obj in objects:
        parsed = catalog.parse_key(prefix, obj["Key"])
        if not parsed:
            continue
        backup_id, role = parsed[2], parsed[3]
        if role == "manifest":
            manifests[backup_id] = store.get_json(obj["Key"])
        elif role == "verify":
            records[backup_id] = store.get_json(obj["Key"])
    entries, orphans = catalog.build_catalog(prefix, objects, manifests, records, now, kind=kind, name=name)
    return entries, orphans, manifests, records


def find_backup(entries, manifests, kind, name, prefix, backup_id=None, verified_only=False, min_level="checksum"):
    """``(entry, manifest)`` of ``backup_id``, else of the newest backup (verified at ``min_level``
    with ``verified_only``). Raises ``CatalogError`` saying what is missing."""
    if backup_id:
        for entry in entries:
            if entry["backup_id"] == backup_id:
                return entry, manifests[backup_id]
        raise catalog.CatalogError("backup %s not found (no manifest) for %s %s under %s"
                                   % (backup_id, kind, name, prefix))
    if verified_only:
        entry = catalog.latest_verified(entries, min_level)
        if entry is None:
            raise catalog.CatalogError("no backup of %s verified at level %s or deeper; verify one first "
                                       "(state=verify) or name backup_id with force=true" % (name, min_level))
    else:
        if not entries:
            raise catalog.CatalogError("no backups of %s %s under %s" % (kind, name, prefix))
        entry = entries[0]
    return entry, manifests[entry["backup_id"]]


def record_verification(store, prefix, kind, name, backup_id, level, checks, previous=None, now=None):
    """Write the verification record beside the manifest; returns it with its ``record_key``."""
    record = catalog.build_verify_record(backup_id, level, checks, now or utcnow(), previous=previous)
    key = catalog.backup_keys(prefix, kind, name, backup_id)["verify"]
    store.put_json(key, record)
    record["record_key"] = key
    return record


def prune(store, prefix, kind, name, keep_last=None, max_age_seconds=None, grace_seconds=86400.0,
          min_level="checksum", check_mode=False, now=None):
    """Apply retention to the backups of one ``kind``/``name``; remove stale orphans and uploads.

    Decisions come from :func:`backup_catalog.plan_retention` (the newest verified backup is
    always kept). Manifests (and verification records) are deleted in a first request, data in
    a second: an interrupted prune leaves orphans, never a manifest without its data.
    """
    now = now or utcnow()
    entries, orphans, manifests, _records = load_catalog(store, prefix, kind, name, now)
    delete, keep = catalog.plan_retention(entries, now, keep_last, max_age_seconds, min_level)
    stale_orphans = [o for o in orphans if o["age_seconds"] > grace_seconds]
    uploads = []
    for upload in store.list_multipart_uploads(catalog.kind_prefix(prefix, kind, name)):
        initiated = upload.get("Initiated")
        if initiated is not None and (now - initiated).total_seconds() > grace_seconds:
            uploads.append(upload)
    documents, data = [], []
    for item in delete:
        keys = catalog.backup_keys(prefix, kind, name, item["backup_id"])
        item["keys"] = [keys["data"], keys["manifest"], keys["verify"]]
        item["size"] = manifests[item["backup_id"]].get("size")
        documents.extend([keys["manifest"], keys["verify"]])
        data.append(keys["data"])
    before = sorted(e["backup_id"] for e in entries)
    after = sorted(set(before) - set(d["backup_id"] for d in delete))
    if not check_mode:
        if documents:
            store.delete(documents)
        if data or stale_orphans:
            store.delete(data + [o["key"] for o in stale_orphans])
        for upload in uploads:
            store.abort_upload(upload["Key"], upload["UploadId"])
    return dict(changed=bool(delete or stale_orphans or uploads), deleted=delete, kept=keep,
                orphans_removed=[o["key"] for o in stale_orphans],
                uploads_aborted=["%s (%s)" % (u["Key"], u["UploadId"]) for u in uploads],
                diff=dict(before={"backups": before}, after={"backups": after}))
