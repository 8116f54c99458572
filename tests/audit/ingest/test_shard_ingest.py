"""The broken corpus, shard by shard, without Beam: every sample gets its expected outcome."""

import pytest

from audit.ingest.sample_validation import IngestLimits
from audit.ingest.shard_ingest import ingest_shard
from tests.data.make_broken_shards import EXPECTED, EXPECTED_LATE_DUPLICATE, SHARD_STATUS


@pytest.mark.parametrize("shard", sorted(EXPECTED))
def test_broken_shard_outcomes(broken_dir, shard):
    res = ingest_shard(shard, str(broken_dir / f"{shard}.tar"), "r1", limits=IngestLimits())
    assert res.shard["status"] == SHARD_STATUS[shard]
    got = {}
    for row in res.samples:
        got.setdefault(row["key"], []).append(row["error"].split(":")[0] if row["error"] else None)
    want = {k: [v] for k, v in EXPECTED[shard].items()}
    if shard == EXPECTED_LATE_DUPLICATE[0]:
        want[EXPECTED_LATE_DUPLICATE[1]].append("DuplicateKey")
    assert got == want
    # one errors row per failed sample, plus one shard-level row unless the shard is complete
    n_shard_rows = sum(e["key"] is None for e in res.errors)
    assert n_shard_rows == (SHARD_STATUS[shard] != "complete")
    assert len(res.errors) - n_shard_rows == res.shard["n_failed"]


def test_ok_samples_carry_hashes_sizes_and_exif_orientation(broken_dir):
    res = ingest_shard("bad_mixed", str(broken_dir / "bad_mixed.tar"), "r1")
    rows = {r["key"]: r for r in res.samples if r["status"] == "ok"}
    assert (rows["014"]["width"], rows["014"]["height"]) == (40, 80)  # EXIF 6 swaps the sides
    assert rows["013"]["image_format"] == "WEBP"
    assert rows["016"]["caption"].startswith("猫と犬 🐱🐶")
    assert all(len(r["byte_hash"]) == 64 and len(r["pixel_hash"]) == 64 for r in rows.values())
    assert rows["000"]["url"] == "https://example.com/000.jpg"


def test_unopenable_uri_is_a_shard_row_not_an_exception(tmp_path):
    res = ingest_shard("nope", str(tmp_path / "nope.tar"), "r1")
    assert res.shard["status"] == "unreadable" and res.errors[0]["error_type"] == "UnreadableShard"
