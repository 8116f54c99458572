"""The copy check's feature cache (audit.copy_check.feature_cache): real demo images prepared by the
real check, stored, read back bit for bit; corrupt, foreign and stale files are misses; and
an incremental dedup run over the same accepted samples prepares no image again and finds the
same clusters as without the cache (tars and the real job of tests/audit/dedup/test_copy_modes.py)."""

import dataclasses
import shutil

import numpy as np
import pytest

from audit.copy_check import feature_cache as fc
from audit.copy_check import prepared as cp
from audit.copy_check.verification import PairVerifier, prepare, verify
from audit.io.output_dir import OutputDir
from tests.demo_images import demo_images
from tests.audit.dedup.test_copy_modes import CFG, clusters, hard_copies, shards  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def images():
    """Six demo images and two hard copies of the first: (key, bytes) each."""
    imgs = [(k, d) for k, d, _, _ in demo_images(6)]
    copies = hard_copies(imgs[0][1])
    return imgs + [(f"{imgs[0][0]}c{n}", c) for n, c in enumerate(copies.values())][:2]


def _rows(images):
    keys = [("s0", k) for k, _ in images]
    hashes = [f"h{n}" for n in range(len(images))]
    return keys, hashes


def _store(out, images, run_id="r1", mirror=True):
    keys, hashes = _rows(images)
    cache = fc.FeatureCache(out, keys, hashes, run_id)
    prepared = [prepare(d) for _, d in images]
    for row, p in enumerate(prepared):
        if mirror and row % 2 == 0:
            p.mirrored()  # what the check computes for some images: derived again, not stored
        cache.put(row, p)
    cache.close()
    return prepared


def _same(a, b) -> None:
    for f in dataclasses.fields(cp.Prepared):
        if f.name.startswith("_"):
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if x is None:
            assert y is None
        else:
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), f.name


def test_stored_images_come_back_bit_for_bit_and_check_the_same(images, tmp_path):
    out = OutputDir(tmp_path)
    prepared = _store(out, images)
    path = tmp_path / "features" / "copy_check" / "run=r1.parquet"
    assert path.is_file() and out.is_recorded(path)
    keys, hashes = _rows(images)
    cache = fc.FeatureCache(out, keys, hashes, "r2", write=False)
    back = [cache.get(row) for row in range(len(images))]
    for p, q in zip(prepared, back):
        _same(p, q)
    assert back[0]._mirrored is None  # not stored: mirrored() derives it
    _same(back[0].mirrored(), prepared[0].mirrored())
    for j in range(1, len(images)):
        assert repr(verify(back[0], back[j])) == repr(verify(prepared[0], prepared[j]))  # nan == nan


def test_a_changed_sample_an_unknown_row_and_a_foreign_file_are_misses(images, tmp_path):
    out = OutputDir(tmp_path)
    _store(out, images)
    keys, hashes = _rows(images)
    other = fc.FeatureCache(out, keys + [("s9", "x")], ["changed"] + hashes[1:] + ["h9"], "r2", write=False)
    assert other.get(0) is None  # re-ingested with other bytes
    assert other.get(1) is not None
    assert other.get(len(images)) is None
    foreign = tmp_path / "features" / "copy_check" / "run=r0.parquet"  # copied in: no record
    shutil.copy(tmp_path / "features" / "copy_check" / "run=r1.parquet", foreign)
    (tmp_path / "features" / "copy_check" / "run=r1.parquet").unlink()
    assert fc.FeatureCache(out, keys, hashes, "r2", write=False).get(1) is None


@pytest.mark.parametrize("damage", ["truncate", "truncate_recorded", "flip_middle", "garbage_recorded"])
def test_a_corrupt_cache_file_is_a_miss(images, tmp_path, damage):
    out = OutputDir(tmp_path)
    _store(out, images)
    path = tmp_path / "features" / "copy_check" / "run=r1.parquet"
    data = bytearray(path.read_bytes())
    if damage.startswith("truncate"):
        data = data[: len(data) // 2]
    elif damage == "flip_middle":  # inside the stored arrays: same size, still recorded
        for k in range(len(data) // 3, len(data) // 3 + 64):
            data[k] ^= 0xFF
    else:
        data = bytearray(b"PAR1" + bytes(range(256)) * 40 + b"PAR1")
    path.write_bytes(bytes(data))
    if damage.endswith("_recorded"):
        out.record_file(path)  # someone records the damaged file: still not trusted
    keys, hashes = _rows(images)
    cache = fc.FeatureCache(out, keys, hashes, "r2", write=False)
    got = [cache.get(row) for row in range(len(images))]
    if damage == "flip_middle":
        assert any(g is None for g in got)
    else:
        assert all(g is None for g in got)
    fresh = [prepare(d) for _, d in images]
    for g, p in zip(got, fresh):  # whatever comes back is exactly what prepare gives
        if g is not None:
            _same(g, p)


def test_a_changed_check_parameter_invalidates_and_the_stale_file_goes(images, tmp_path, monkeypatch):
    out = OutputDir(tmp_path)
    _store(out, images, mirror=False)
    keys, hashes = _rows(images)
    monkeypatch.setattr(cp, "N_FEATURES", cp.N_FEATURES + 1)
    assert fc.FeatureCache(out, keys, hashes, "r2", write=False).get(0) is None
    _store(out, images[:1], run_id="r2", mirror=False)
    names = sorted(p.name for p in (tmp_path / "features" / "copy_check").iterdir())
    assert names == ["run=r2.parquet"]
    assert not out.is_recorded(tmp_path / "features" / "copy_check" / "run=r1.parquet")
    assert fc.FeatureCache(out, keys, hashes, "r3", write=False).get(0) is not None
    monkeypatch.setattr(cp, "MAX_SIDE", cp.MAX_SIDE * 2)
    assert fc.FeatureCache(out, keys, hashes, "r3", write=False).get(0) is None


def test_the_verifier_prepares_each_image_once_across_runs(images, tmp_path):
    """A second verifier over the same rows (a later run) prepares nothing: every image is a
    cache hit, the pairs' answers are the same; evicted images (LRU of 2) are stored too."""
    out = OutputDir(tmp_path)
    keys, hashes = _rows(images)
    datas = [d for _, d in images]
    pairs = [(0, j) for j in range(1, len(images))] + [(1, 2), (3, 4)]

    def run(run_id):
        v = PairVerifier(lambda r: datas[r], cache=2, threads=1,
                         features=fc.FeatureCache(out, keys, hashes, run_id))
        answers = [(v.same_picture(i, j), v.confirms(i, j)) for i, j in pairs]
        v.save_features()
        return v, answers

    first, a1 = run("r1")
    assert first.prepared >= len(images) and first.cache_hits == 0  # evicted ones prepared again
    import pyarrow.parquet as pq
    stored = pq.read_table(tmp_path / "features" / "copy_check" / "run=r1.parquet", columns=["key"])
    assert sorted(stored.column("key").to_pylist()) == sorted(k for _, k in keys)  # each once
    second, a2 = run("r2")
    assert second.prepared == 0 and second.cache_hits >= len(images) and a1 == a2
    plain = PairVerifier(lambda r: datas[r])
    assert [(plain.same_picture(i, j), plain.confirms(i, j)) for i, j in pairs] == a1
    assert not (tmp_path / "features" / "copy_check" / "run=r2.parquet").exists()  # nothing new to store


@pytest.mark.beam
def test_incremental_run_takes_accepted_images_from_the_cache(shards, tmp_path):  # noqa: F811
    """a0 a1 (global run: stores what it checked), then b0 b1 ingested; the incremental dedup of
    b0 b1 run three times over the same saved index: without the cache, with it (accepted
    samples the global run checked are hits), and again (every image a hit, none prepared).
    All three give the same clusters."""
    from audit.dedup.incremental import incremental_duplicates
    from audit.dedup.duplicate_clusters import DedupConfig
    from pipelines.shard_uris import open_uri
    from pipelines.job import run_ingest
    root, _ = shards
    (tmp_path / "in").mkdir()
    for name in ("a0", "a1"):
        shutil.copy(root / "all" / f"{name}.tar", tmp_path / "in")
    inc = DedupConfig(incremental=True)
    run_ingest(str(tmp_path / "in"), str(tmp_path / "out"), dataclasses.replace(CFG, dedup=inc))
    out = OutputDir(tmp_path / "out")
    assert len(list((out.root / "features" / "copy_check").glob("run=*.parquet"))) == 1
    for name in ("b0", "b1"):
        shutil.copy(root / "all" / f"{name}.tar", tmp_path / "in")
    run_ingest(str(tmp_path / "in"), str(out.root), dataclasses.replace(CFG, dedup=DedupConfig(enabled=False)))
    saved = tmp_path / "index_saved"
    shutil.copytree(out.root / "index", saved)

    def incremental(run_id, cfg):
        result = incremental_duplicates(out, cfg, run_id, {"b0", "b1"}, open_uri)
        shutil.rmtree(out.root / "index")
        shutil.copytree(saved, out.root / "index")  # the same accepted corpus for the next call
        return clusters((d["shard"], d["key"], d["representative"]) for d in result.decisions), \
            result.kinds["near"]["verification"]

    plain, v0 = incremental("plain", dataclasses.replace(inc, near_feature_cache=False))
    cached, v1 = incremental("cached1", inc)
    again, v2 = incremental("cached2", inc)
    assert v0["cache_hits"] == 0 and v1["cache_hits"] > 0 and v1["prepared"] < v0["prepared"]
    assert v2["prepared"] == 0 and v2["cache_hits"] == v0["prepared"]
    assert plain == cached == again
    assert v0["checked"] == v1["checked"] == v2["checked"]
