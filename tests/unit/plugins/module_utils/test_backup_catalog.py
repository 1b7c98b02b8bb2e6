"""Catalog, manifest, freshness and retention logic of apex_backup (pure, no services)."""
import datetime

import pytest

from ansible_collections.apex.ops.plugins.module_utils import backup_catalog as cat
from ansible_collections.apex.ops.plugins.module_utils.redaction import redact
from ansible_collections.apex.ops.plugins.module_utils.timestamps import parse_time

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def at(hours_ago):
    return NOW - datetime.timedelta(hours=hours_ago)


def bid(hours_ago, token="0000000a"):
    return cat.new_backup_id(at(hours_ago), token)


def manifest(hours_ago, token="0000000a", name="apex", tags=(), size=100):
    backup_id = bid(hours_ago, token)
    keys = cat.backup_keys("apex", "postgres", name, backup_id)
    return cat.build_manifest("postgres", name, backup_id, keys, {"size": size, "sha256": "a" * 64, "parts": 1},
                              at(hours_ago), at(hours_ago) + datetime.timedelta(seconds=30), tags=tags,
                              row_counts={"public.tasks": 3})


def record(backup_id, level="toc", ok=True, previous=None):
    checks = dict((name, {"ok": True}) for name in cat.levels_upto(level))
    if not ok:
        checks[level] = {"ok": False, "error": "boom"}
    return cat.build_verify_record(backup_id, level, checks, NOW, previous=previous)


def objects_for(manifests, data=True):
    objs = []
    for m in manifests:
        keys = cat.backup_keys("apex", m["kind"], m["name"], m["backup_id"])
        if data:
            objs.append({"Key": keys["data"], "Size": m["size"], "LastModified": parse_time(m["finished_at"])})
        objs.append({"Key": keys["manifest"], "Size": 10, "LastModified": parse_time(m["finished_at"])})
    return objs


def build(manifests, records=None, extra_objects=()):
    objs = objects_for(manifests) + list(extra_objects)
    return cat.build_catalog("apex", objs, dict((m["backup_id"], m) for m in manifests), records or {}, NOW)


# ------------------------------------------------------------------ durations, ids, keys

def test_backup_id_roundtrip_and_layout():
    backup_id = cat.new_backup_id(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "deadbeef")
    assert backup_id == "20260102T030405Z-deadbeef"
    assert cat.backup_time(backup_id) == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    keys = cat.backup_keys("team/apex/", "postgres", "apex", backup_id)
    assert keys["data"] == "team/apex/postgres/apex/2026/01/02/20260102T030405Z-deadbeef.dump"
    assert keys["manifest"] == "team/apex/postgres/apex/2026/01/02/20260102T030405Z-deadbeef.manifest.json"
    assert keys["verify"].endswith(".verify.json")
    assert cat.backup_keys("apex", "redis", "cache", backup_id)["data"].endswith(".rdb")
    for role in ("data", "manifest", "verify"):
        assert cat.parse_key("team/apex", keys[role]) == ("postgres", "apex", backup_id, role)


def test_random_ids_are_unique():
    assert len(set(cat.new_backup_id(NOW) for dummy in range(200))) == 200


@pytest.mark.parametrize("key", [
    "other/postgres/apex/2026/01/02/20260102T030405Z-deadbeef.dump",
    "apex/postgres/apex/2026/01/02/notanid.dump",
    "apex/mysql/apex/2026/01/02/20260102T030405Z-deadbeef.dump",
    "apex/postgres/apex/20260102T030405Z-deadbeef.dump",
    "apex/postgres/apex/2026/01/02/20260102T030405Z-deadbeef.txt",
])
def test_parse_key_ignores_foreign_keys(key):
    assert cat.parse_key("apex", key) is None


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x y", "näme"])
def test_key_segments_are_checked(bad):
    with pytest.raises(cat.CatalogError):
        cat.check_segment("name", bad)


def test_bad_backup_id():
    with pytest.raises(cat.CatalogError):
        cat.backup_time("2026-01-02")


def test_scratch_db_name_is_an_identifier():
    name = cat.scratch_db_name("20260102T030405Z-deadbeef")
    assert name == "apex_verify_20260102t030405z_deadbeef"
    assert cat.check_db_name(name) == name
    assert len(name) <= 63


@pytest.mark.parametrize("bad", ["", "a;drop", "x" * 64, "1abc", "a b", 'a"b'])
def test_check_db_name(bad):
    with pytest.raises(cat.CatalogError):
        cat.check_db_name(bad)


# ------------------------------------------------------------------ manifests and records

def test_manifest_fields():
    m = manifest(2, tags=("safety", "safety", "pre-restore"))
    assert m["tags"] == ["pre-restore", "safety"]
    assert m["duration_seconds"] == 30
    assert cat.check_manifest(m) == []
    assert m["row_counts"] == {"public.tasks": 3}


def test_check_manifest_problems():
    assert cat.check_manifest([]) == ["manifest is not a JSON object"]
    bad = manifest(1)
    bad.pop("sha256")
    bad["format_version"] = 99
    problems = cat.check_manifest(bad)
    assert any("sha256" in p for p in problems) and any("newer" in p for p in problems)


def test_verify_record_names_first_failed_check():
    checks = {"checksum": {"ok": False}, "toc": {"ok": False}}
    rec = cat.build_verify_record("x", "toc", checks, NOW)
    assert rec["ok"] is False and rec["failed_check"] == "checksum"
    rec = cat.build_verify_record("x", "deep", {"checksum": {"ok": True}, "toc": {"ok": True},
                                                "deep": {"ok": False}}, NOW)
    assert rec["failed_check"] == "deep"
    assert cat.build_verify_record("x", "toc", {}, NOW)["ok"] is False  # nothing checked is not a pass


def test_verify_record_history_is_bounded():
    rec = None
    for dummy in range(15):
        rec = record("x", previous=rec)
    assert len(rec["history"]) == cat.VERIFY_HISTORY


def test_verification_state_keeps_deepest_passing_level():
    deep = record("x", "deep")
    later = record("x", "checksum", previous=deep)
    assert cat.verification_state(later) == ("verified", "deep")
    failed = record("x", "toc", ok=False, previous=later)
    assert cat.verification_state(failed) == ("failed", "toc")
    after_failure = record("x", "checksum", previous=failed)
    assert cat.verification_state(after_failure) == ("verified", "checksum")
    assert cat.verification_state(None) == ("unverified", None)


def test_levels():
    assert cat.levels_upto("checksum") == ["checksum"]
    assert cat.levels_upto("deep") == ["checksum", "toc", "deep"]
    assert cat.levels_upto("deep", "redis") == ["checksum"]
    with pytest.raises(cat.CatalogError):
        cat.level_rank("bogus")


def test_compare_counts():
    assert cat.compare_counts({"a": 1, "b": 2}, {"a": 1, "b": 2}) == []
    diffs = cat.compare_counts({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 0})
    assert diffs == [{"table": "b", "expected": 2, "actual": 3}, {"table": "c", "expected": None, "actual": 0}]


# ------------------------------------------------------------------ catalog, freshness

def test_catalog_orders_newest_first_and_reports_state():
    old, mid, new = manifest(50, "00000001"), manifest(20, "00000002"), manifest(2, "00000003")
    entries, orphans = build([old, mid, new], {mid["backup_id"]: record(mid["backup_id"], "deep")})
    assert [e["backup_id"] for e in entries] == [new["backup_id"], mid["backup_id"], old["backup_id"]]
    assert entries[0]["verification"] == "unverified"
    assert entries[1]["verification"] == "verified" and entries[1]["verified_level"] == "deep"
    assert entries[0]["age_seconds"] == 2 * 3600 - 30
    assert orphans == []


def test_data_without_manifest_is_an_orphan_not_a_backup():
    complete = manifest(5, "00000001")
    orphan_id = bid(3, "0000000b")
    orphan_key = cat.backup_keys("apex", "postgres", "apex", orphan_id)["data"]
    entries, orphans = build([complete], extra_objects=[{"Key": orphan_key, "Size": 7, "LastModified": at(3)}])
    assert [e["backup_id"] for e in entries] == [complete["backup_id"]]
    assert orphans[0]["backup_id"] == orphan_id and orphans[0]["age_seconds"] == 3 * 3600


def test_manifest_without_data_is_flagged():
    m = manifest(5)
    objs = objects_for([m], data=False)
    entries, dummy = cat.build_catalog("apex", objs, {m["backup_id"]: m}, {}, NOW)
    assert entries[0]["data_present"] is False and entries[0]["problem"] == "data object missing"
    assert not cat.is_verified(dict(entries[0], verification="verified", verified_level="deep"))


def test_size_mismatch_is_flagged():
    m = manifest(5, size=100)
    objs = objects_for([m])
    objs[0]["Size"] = 99
    entries, dummy = cat.build_catalog("apex", objs, {m["backup_id"]: m}, {}, NOW)
    assert "differs" in entries[0]["problem"]


def test_catalog_filters_by_name():
    a, b = manifest(1, "00000001", name="apex"), manifest(2, "00000002", name="other")
    objs = objects_for([a, b])
    entries, dummy = cat.build_catalog("apex", objs, {a["backup_id"]: a, b["backup_id"]: b}, {}, NOW, name="apex")
    assert [e["name"] for e in entries] == ["apex"]


def test_latest_verified_respects_level_and_tags():
    a, b, c = manifest(1, "00000001", tags=("safety",)), manifest(2, "00000002"), manifest(3, "00000003")
    recs = {a["backup_id"]: record(a["backup_id"], "deep"), b["backup_id"]: record(b["backup_id"], "checksum"),
            c["backup_id"]: record(c["backup_id"], "toc")}
    entries, dummy = build([a, b, c], recs)
    assert cat.latest_verified(entries)["backup_id"] == a["backup_id"]
    assert cat.latest_verified(entries, exclude_tags=["safety"])["backup_id"] == b["backup_id"]
    assert cat.latest_verified(entries, "toc", exclude_tags=["safety"])["backup_id"] == c["backup_id"]
    assert cat.latest_verified(entries[1:], "deep") is None


def test_freshness_gate():
    fresh_unverified, verified_old = manifest(1, "00000001"), manifest(30, "00000002")
    recs = {verified_old["backup_id"]: record(verified_old["backup_id"])}
    entries, dummy = build([fresh_unverified, verified_old], recs)
    gate = cat.freshness(entries, 24 * 3600, NOW)
    assert gate["fresh"] is False and gate["backup_id"] == verified_old["backup_id"]
    assert "more than" in gate["reason"]
    loose = cat.freshness(entries, 24 * 3600, NOW, require_verified=False)
    assert loose["fresh"] is True and loose["backup_id"] == fresh_unverified["backup_id"]
    assert cat.freshness([], 3600, NOW)["reason"] == "no verified backup found"
    assert cat.freshness(entries, None, NOW)["fresh"] is True


# ------------------------------------------------------------------ retention

def daily(n, verified=()):
    ms = [manifest(24 * i + 1, "%08x" % (i + 1)) for i in range(n)]
    recs = dict((ms[i]["backup_id"], record(ms[i]["backup_id"])) for i in verified)
    entries, dummy = build(ms, recs)
    return ms, entries


def ids(items):
    return [i["backup_id"] for i in items]


def test_retention_keep_last():
    ms, entries = daily(5, verified=[0])
    delete, keep = cat.plan_retention(entries, NOW, keep_last=2)
    assert ids(keep) == [ms[0]["backup_id"], ms[1]["backup_id"]]
    assert ids(delete) == [m["backup_id"] for m in ms[2:]]
    assert all("beyond the 2 newest" in d["reason"] for d in delete)


def test_retention_max_age():
    ms, entries = daily(5, verified=[0])
    delete, keep = cat.plan_retention(entries, NOW, max_age_seconds=2.5 * 86400)
    assert ids(keep) == [m["backup_id"] for m in ms[:3]]
    assert ids(delete) == [m["backup_id"] for m in ms[3:]]


def test_retention_count_or_age_keeps_the_union():
    ms, entries = daily(6, verified=[0])
    delete, keep = cat.plan_retention(entries, NOW, keep_last=2, max_age_seconds=3.5 * 86400)
    assert ids(keep) == [m["backup_id"] for m in ms[:4]]
    assert ids(delete) == [m["backup_id"] for m in ms[4:]]


def test_retention_never_deletes_newest_verified():
    ms, entries = daily(5, verified=[3, 4])
    delete, keep = cat.plan_retention(entries, NOW, keep_last=1)
    assert ms[3]["backup_id"] in ids(keep)
    assert ms[4]["backup_id"] in ids(delete)  # an older verified one may go
    reason = [k for k in keep if k["backup_id"] == ms[3]["backup_id"]][0]["reason"]
    assert "newest verified" in reason


def test_retention_protects_by_level():
    ms, entries = daily(3, verified=[2])
    delete, keep = cat.plan_retention(entries, NOW, keep_last=1, protect_min_level="deep")
    # verified only at toc: not protected at level deep
    assert ms[2]["backup_id"] in ids(delete)


def test_retention_needs_a_rule():
    dummy, entries = daily(2)
    with pytest.raises(cat.CatalogError):
        cat.plan_retention(entries, NOW)
    with pytest.raises(cat.CatalogError):
        cat.plan_retention(entries, NOW, keep_last=0)


def test_retention_of_nothing():
    assert cat.plan_retention([], NOW, keep_last=3) == ([], [])


# ------------------------------------------------------------------ restore guards

def test_confirmation_must_name_the_target_exactly():
    assert cat.confirmation_refusal("apex", "apex") is None
    for wrong in (None, "", "APEX", "apex ", "apex_restore_test"):
        assert "confirm must equal" in cat.confirmation_refusal("apex", wrong)


def test_verification_refusal():
    m = manifest(1)
    entries, dummy = build([m])
    unverified = entries[0]
    assert "it is unverified" in cat.verification_refusal(unverified)
    assert cat.verification_refusal(unverified, force=True) is None
    entries, dummy = build([m], {m["backup_id"]: record(m["backup_id"], "checksum")})
    assert cat.verification_refusal(entries[0]) is None
    assert "verified only at checksum" in cat.verification_refusal(entries[0], "deep")
    entries, dummy = build([m], {m["backup_id"]: record(m["backup_id"], "toc", ok=False)})
    assert "failed (check toc failed)" in cat.verification_refusal(entries[0])
    broken = dict(entries[0], problem="data object missing")
    assert "data object missing" in cat.verification_refusal(broken, force=True)


# ------------------------------------------------------------------ redaction

def test_redact():
    text = "connection failed: password=hunter2x host=db; url redis://:s3cretpw@host:6379/0 key AKIAXYZ"
    out = redact(text, ["AKIAXYZ", "hunter2x", None, "ab"])
    assert "hunter2x" not in out and "s3cretpw" not in out and "AKIAXYZ" not in out
    assert "host=db" in out
    assert redact(None, ["x"]) is None


def test_backups_finishing_in_the_same_second_order_by_milliseconds():
    """Ids share the second and their random tokens sort backwards: time must decide."""
    second = datetime.datetime(2026, 11, 27, 11, 0, 0, tzinfo=UTC)
    early, late = second.replace(microsecond=100000), second.replace(microsecond=900000)
    docs = []
    for finished, token in ((early, "ffffffff"), (late, "00000001")):
        backup_id = cat.new_backup_id(finished, token)
        keys = cat.backup_keys("apex", "postgres", "apex", backup_id)
        docs.append(cat.build_manifest("postgres", "apex", backup_id, keys, {"size": 1, "sha256": "a" * 64, "parts": 1},
                                       second, finished))
    assert docs[0]["finished_at"] == "2026-11-27T11:00:00.100Z"
    entries, dummy = cat.build_catalog("apex", objects_for(docs), dict((m["backup_id"], m) for m in docs), {}, NOW)
    assert [e["backup_id"] for e in entries] == [docs[1]["backup_id"], docs[0]["backup_id"]]


def test_parse_time_reads_both_precisions():
    assert parse_time("2026-11-27T06:45:12Z") == datetime.datetime(2026, 11, 27, 6, 45, 12, tzinfo=UTC)
    assert parse_time("2026-11-27T06:45:12.345Z").microsecond == 345000
