"""One raw sample -> one samples row (+ one errors row when it fails), whatever its bytes are."""

import collections
import io
import time

import pytest

from audit.ingest.sample_validation import IngestLimits, validate_sample
from audit.ingest.shard_ingest import ingest_shard
from audit.ingest.tar_samples import RawSample
from tests.hostile_tars import build_tar, small_jpeg
from tests.image_mutations import EXT, declared_size_png, malformed_exif_jpeg, mpo_jpeg, mutants, seed_images


def _one_row(raw: RawSample, limits: IngestLimits = IngestLimits()):
    row, err = validate_sample(raw, "s", "r1", limits)
    assert row["key"] == raw.key and row["status"] in ("ok", "failed")
    assert (err is None) == (row["status"] == "ok")
    if err is not None:
        assert err["key"] == raw.key and err["stage"] and err["error_type"] and err["message"]
        assert row["error"] == f"{err['error_type']}: {err['message']}"
    return row, err


def test_malformed_exif_jpeg_is_its_samples_errors_row():
    row, err = _one_row(RawSample("k", files={"jpg": malformed_exif_jpeg(), "txt": b"a caption"}))
    assert row["status"] == "failed"
    assert (err["stage"], err["error_type"]) == ("decode", "CorruptExif") and "TypeError" in err["message"]


def test_mpo_from_a_phone_ingests_as_ok():
    data, first = mpo_jpeg()
    row, err = _one_row(RawSample("k", files={"jpg": data, "txt": b"a caption"}))
    assert err is None and row["image_format"] == "MPO" and (row["width"], row["height"]) == first.size


def test_an_unexpected_exception_is_a_row_of_the_stage_it_happened_in():
    # a member that is not bytes makes hashlib raise TypeError: no parser expects it, the boundary catches it
    row, err = _one_row(RawSample("k", files={"jpg": "not bytes", "txt": b"a caption"}))
    assert (err["stage"], err["error_type"]) == ("read", "UnexpectedError") and "TypeError" in err["message"]


def test_seeded_mutants_never_escape_and_each_is_one_row():
    """A few thousand mutants of real JPEG/PNG/WebP files (bit flips, insert/delete, truncation,
    EXIF/ICC/XMP payloads, hostile EXIF IFDs, length fields): 0 escapes, one row each."""
    seeds = seed_images()
    t0, outcomes, kinds = time.perf_counter(), collections.Counter(), collections.Counter()
    for i, (fmt, kind, data) in enumerate(mutants(4500, seed=19, seeds=seeds)):
        kinds[kind] += 1
        row, err = _one_row(RawSample(f"m{i}", files={EXT[fmt]: data, "txt": b"a fuzzed sample"}))
        outcomes["ok" if err is None else err["error_type"]] += 1
    assert time.perf_counter() - t0 < 60
    assert {"bitflip", "insert", "delete", "truncate", "length", "meta-random", "meta-flip", "meta-cut",
            "meta-exif"} <= set(kinds)
    assert outcomes["ok"] > 500 and outcomes["CorruptImage"] > 500  # both sides of the line are reached
    assert outcomes["UnexpectedError"] == 0  # every failure is classified by the decoder


def test_a_shard_of_hostile_images_gives_every_sample_one_row(tmp_path):
    seeds = seed_images()
    members = []
    for i, (fmt, _, data) in enumerate(mutants(300, seed=7, seeds=seeds)):
        members += [(f"{i:04d}.{EXT[fmt]}", "file", data), (f"{i:04d}.txt", "file", b"caption")]
    specials = [malformed_exif_jpeg(), mpo_jpeg()[0], declared_size_png(20000, 20000), small_jpeg(5, 32)]
    for j, data in enumerate(specials):
        members += [(f"x{j}.jpg", "file", data), (f"x{j}.txt", "file", b"caption")]
    path = tmp_path / "hostile.tar"
    path.write_bytes(build_tar(members))
    res = ingest_shard("hostile", str(path), "r1")  # check() inside: rows reconcile
    assert res.shard["status"] == "complete" and res.shard["n_inputs"] == 304 == len(res.samples)
    by_key = {r["key"]: r for r in res.samples}
    assert [by_key[f"x{j}"]["status"] for j in range(4)] == ["failed", "ok", "failed", "ok"]
    errors = {e["key"]: e["error_type"] for e in res.errors}
    assert errors["x0"] == "CorruptExif" and errors["x2"] == "DecompressionBomb"


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_the_seed_images_are_valid_and_carry_metadata(fmt):
    from PIL import Image
    for data in seed_images()[fmt]:
        img = Image.open(io.BytesIO(data))
        assert img.info.get("icc_profile") and img.getexif()
        row, err = _one_row(RawSample("k", files={EXT[fmt]: data, "txt": b"c"}))
        assert err is None
