"""A sample is (shard, key): keys repeat across shards (LAION keys are per shard; a re-shard or two
downloads repeat them), and no stage may mix two samples that share a key.

One real job (module fixture) over two shards `a` and `b` with the SAME key set but different
images and captions (cut from two demo shards), with planted findings on colliding keys:
  b/K[5] = an exact copy (image and caption) of a/K[0]  -> a/K[0] is the kept representative
           of a one-caption repeat (clean's apply_to: flagged randomizes its caption), b/K[0]
           is another picture and is not;
  b/K[1] = an exact copy of a/K[1] (same key, other shard) -> b/K[1] dropped, a/K[1] kept;
  b/K[2] = pure noise -> a perturbation feature outlier, a/K[2] is not.
Memorization runs on a random-weight checkpoint with action 'keep' (flags kept, their captions
randomized by clean). Every table must hold one row per (shard, key) and the findings must land
on the sample that has them; then a second run adds shard `c` (the same keys again, c/K[0] an
exact copy of b/K[0]) and the run diff must name the right samples.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from audit.captions.strategies import CaptionPolicy
from audit.clean.shards import CleanConfig
from audit.dedup.contamination import find_contamination
from audit.dedup.corpus import load_corpus
from audit.report.finding_pages import read_training_images
from audit.memorization.scoring import ScoreConfig
from audit.memorization.training_filter import load_key_list
from audit.memorization.shard import MemorizationConfig
from audit.io.output_dir import OutputDir
from audit.io.store import query
from pipelines.clean import run_clean
from pipelines.config import load_config
from pipelines.shard_uris import open_uri
from pipelines.job import run_ingest
from tests.diffusion_checkpoints import random_checkpoint
from tests.job_outputs import read_samples, write_tar
from tests.pipelines.conftest import SMALL_JOB_YAML

pytestmark = pytest.mark.beam  # runs Beam jobs (tests/conftest.py)

N = 24  # samples per shard


def _noise_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (192, 192, 3), np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _renamed(files: dict[str, bytes], key: str) -> dict[str, bytes]:
    meta = json.loads(files["json"])
    meta["key"] = key
    return {**files, "json": json.dumps(meta).encode()}


def decodable(samples: dict[str, dict[str, bytes]]) -> list[str]:
    """Sorted keys whose image passes ingest (a few demo images are under the 16-pixel minimum)."""
    return [k for k in sorted(samples) if min(Image.open(io.BytesIO(samples[k]["jpg"])).size) >= 16]


def colliding_shards(demo_sample, dst) -> tuple[list[str], dict[tuple[str, str], dict[str, bytes]]]:
    """Shards a, b (and c, written beside them for the second run) with one key set."""
    src_a, src_b, src_c = (read_samples(demo_sample / f"{s}.tar") for s in ("00000", "00001", "00002"))
    keys = decodable(src_a)[:N]
    a = {k: src_a[k] for k in keys}
    b = {k: _renamed(src_b[kb], k) for k, kb in zip(keys, decodable(src_b))}
    b[keys[5]] = _renamed(a[keys[0]], keys[5])           # exact copy, one caption, other key
    b[keys[1]] = dict(a[keys[1]])                         # exact copy under the same key
    b[keys[2]] = {**b[keys[2]], "jpg": _noise_jpeg(0), "txt": b"static noise"}
    c = {k: _renamed(src_c[kc], k) for k, kc in zip(keys[:6], decodable(src_c))}
    c[keys[0]] = dict(b[keys[0]])                         # exact copy of b/K0 (new in the second run)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "c").mkdir()
    for name, samples, where in (("a", a, dst), ("b", b, dst), ("c", c, dst / "c")):
        write_tar(where / f"{name}.tar", [(k, samples[k]) for k in keys if k in samples])
    source = {(s, k): f for s, d in (("a", a), ("b", b), ("c", c)) for k, f in d.items()}
    return keys, source


@pytest.fixture(scope="module")
def job(demo_sample, tmp_path_factory):
    root = tmp_path_factory.mktemp("identity")
    keys, source = colliding_shards(demo_sample, root / "in")
    ckpt = random_checkpoint(root / "ckpt")
    base = load_config(str(SMALL_JOB_YAML))
    cfg = dataclasses.replace(
        base, report=True,
        memorization=MemorizationConfig(model=str(ckpt), pairs_per_batch=64, score=ScoreConfig(timesteps=(200,), seeds=(0,)),
                                        calibration_method="fpr", calibration_level=0.25, action="keep",
                                        trigger_tokens_max=2),
        perturbations=dataclasses.replace(base.perturbations, reference_shards=()))
    out = root / "out"
    first = run_ingest(str(root / "in"), str(out), cfg)
    return {"keys": keys, "source": source, "out": out, "root": root, "cfg": cfg, "first": first}


def _distinct(out, table: str, ident: str = "shard, key", where: str = "true") -> tuple[int, int]:
    _, [(n, d)] = query(out, f"SELECT count(*), count(DISTINCT ({ident})) FROM {table} WHERE {where}")
    return n, d


LATEST = "run_id = (SELECT max(run_id) FROM {t})"


def test_every_table_holds_one_row_per_shard_and_key(job):
    out, n = job["out"], 2 * N
    s = job["first"]
    assert s.n_inputs == n and s.n_ok + s.n_failed == n
    assert _distinct(out, "samples") == (n, n)
    assert _distinct(out, "embeddings", "model, shard, key") == (n, n)  # one model (distilled SSCD)
    for t in ("decisions", "memorization", "perturbation_flags"):
        assert _distinct(out, t, where=LATEST.format(t=t)) == (n, n), t
    assert _distinct(out, "perturbation_samples") == (n, n)
    assert _distinct(out, "memorization_scores") == (n, n)
    dn, dd = _distinct(out, "duplicates", "shard, key, kind", LATEST.format(t="duplicates"))
    assert dn == dd > 0


def test_dedup_decides_per_shard_and_key(job):
    out, k = job["out"], job["keys"]
    _, exact = query(out, "SELECT shard, key, is_representative, repeat_type FROM duplicates "
                          "WHERE kind = 'exact' ORDER BY shard, key")
    assert exact == [("a", k[0], True, "same_caption"), ("a", k[1], True, "same_caption"),
                     ("b", k[1], False, "same_caption"), ("b", k[5], False, "same_caption")]
    _, dec = query(out, "SELECT shard, key, keep, list_filter(reasons, lambda r: r LIKE 'exact%') FROM decisions "
                        f"WHERE len(list_filter(reasons, lambda r: r LIKE 'exact%')) > 0 OR key IN ('{k[0]}', '{k[1]}') "
                        "ORDER BY shard, key")
    assert dec == [("a", k[0], True, []), ("a", k[1], True, []),
                   ("b", k[0], True, []), ("b", k[1], False, [f"exact_duplicate_of:a/{k[1]}"]),
                   ("b", k[5], False, [f"exact_duplicate_of:a/{k[0]}"])]


def test_flags_land_on_the_sample_that_has_them(job):
    out, k = job["out"], job["keys"]
    _, pert = query(out, "SELECT shard, key FROM perturbation_flags WHERE list_contains(reasons, 'features')")
    assert ("b", k[2]) in pert and ("a", k[2]) not in pert
    _, mem = query(out, "SELECT shard, key FROM memorization WHERE flagged")
    assert mem and load_key_list(out / "exports" / "memorized_samples.jsonl") == {tuple(r) for r in mem}
    # each sample's score is its own: the two samples of a key differ unless their bytes are one
    _, scores = query(out, "SELECT key, count(DISTINCT score) FROM memorization GROUP BY key")
    source = job["source"]
    assert all(d == 2 for key, d in scores if source[("a", key)]["jpg"] != source[("b", key)]["jpg"])


def test_images_are_read_back_by_shard_and_key(job):
    out, k, source = job["out"], job["keys"], job["source"]
    got = read_training_images(OutputDir(out), [("a", k[0]), ("b", k[0]), ("b", k[2])], open_uri)
    for sk in got:
        want = np.asarray(Image.open(io.BytesIO(source[sk]["jpg"])).convert("RGB"))
        assert np.array_equal(np.asarray(got[sk]), want), sk
    assert (out / "reports" / "index.html").exists() and job["first"].report


def test_contamination_names_both_shard_and_key(job):
    corpus = load_corpus(OutputDir(job["out"]))
    k = job["keys"]
    train, eval_ = corpus.subset(corpus.shard == "a"), corpus.subset(corpus.shard == "b")
    rows = find_contamination(train, eval_, 0.99, "r", "train")
    exact = sorted((r["eval_shard"], r["eval_key"], r["train_shard"], r["train_key"]) for r in rows if r["kind"] == "exact")
    assert exact == [("b", k[1], "a", k[1]), ("b", k[5], "a", k[0])]


def test_clean_applies_decisions_and_captions_to_the_right_sample(job, tmp_path):
    out, k, source = job["out"], job["keys"], job["source"]
    cfg = CleanConfig(shard_size=1000, apply_to="flagged", caption=CaptionPolicy(strategy="rna", p=1.0))
    r = run_clean(str(out), str(tmp_path / "clean"), cfg)
    assert r["shards"] == 1  # both shards' samples side by side in one output shard
    _, dup = query(out, "SELECT shard, key FROM duplicates WHERE kind IN ('exact', 'near', 'semantic') "
                        "AND repeat_type = 'same_caption'")
    _, mem = query(out, "SELECT shard, key FROM memorization WHERE flagged")
    flagged = {tuple(x) for x in dup} | {tuple(x) for x in mem}
    assert ("a", k[0]) in flagged  # the kept representative of a one-caption repeat
    _, kept = query(out, "SELECT shard, key FROM decisions WHERE keep ORDER BY shard, key")
    written = []
    with tarfile.open(tmp_path / "clean" / "00000.tar") as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}
    for name in sorted(n for n in members if n.endswith(".json")):
        meta = json.loads(members[name])
        sk = (meta["source_shard"], meta["source_key"])
        image = members[name[:-5] + ".jpg"]
        assert image == source[sk]["jpg"], sk
        assert meta["original_caption"] == source[sk]["txt"].decode(), sk
        assert meta["caption_changed"] == (sk in flagged), sk
        written.append(sk)
    assert written == [tuple(x) for x in kept]
    # the case a key-only lookup gets wrong: one sample of a key flagged, the other not, both written
    assert any((("a", key) in flagged) != (("b", key) in flagged) for key in k
               if ("a", key) in written and ("b", key) in written)
    _, variants = query(out, f"SELECT shard, key FROM caption_variants WHERE run_id = '{r['run_id']}'")
    assert sorted(tuple(v) for v in variants) == sorted(flagged & set(written))


def test_run_diff_names_the_new_samples(job):
    out, k = job["out"], job["keys"]
    (job["root"] / "in" / "c" / "c.tar").rename(job["root"] / "in" / "c.tar")
    second = run_ingest(str(job["root"] / "in"), str(out), job["cfg"])
    assert second.n_shards_skipped == 2 and second.n_inputs == 6
    _, new_exact = query(out, "SELECT shard, key FROM run_changes WHERE change = 'new_duplicate' "
                              f"AND after LIKE 'exact%' AND run_id = '{second.run_id}' ORDER BY shard, key")
    assert [tuple(x) for x in new_exact] == [("b", k[0]), ("c", k[0])]  # a/K0 was a duplicate before
    n, d = _distinct(out, "run_changes", "change, source_table, shard, key, after",
                     f"run_id = '{second.run_id}'")
    assert n == d
    _, exact_drops = query(out, "SELECT shard, key FROM decisions WHERE NOT keep AND "
                                f"len(list_filter(reasons, lambda r: r LIKE 'exact%')) > 0 AND run_id = '{second.run_id}' "
                                "ORDER BY shard, key")
    assert [tuple(x) for x in exact_drops] == [("b", k[1]), ("b", k[5]), ("c", k[0])]


@pytest.mark.parametrize("mode", ["partitioned", "incremental"])
def test_partitioned_and_incremental_dedup_decide_per_shard_and_key(job, mode, tmp_path):
    k, base = job["keys"], load_config(str(SMALL_JOB_YAML))
    dedup = dataclasses.replace(base.dedup, mode="partitioned") if mode == "partitioned" else \
        dataclasses.replace(base.dedup, incremental=True)
    cfg = dataclasses.replace(base, dedup=dedup, perturbations=dataclasses.replace(base.perturbations, features=False,
                                                                                   tests=False))
    out, shards = tmp_path / "out", job["root"] / "in"
    if mode == "incremental":  # a first, then b searched against a's accepted index
        run_ingest(str(shards / "a.tar"), str(out), cfg)
    run_ingest(f"{shards / 'a.tar'},{shards / 'b.tar'}", str(out), cfg)
    assert _distinct(out, "decisions", where=LATEST.format(t="decisions")) == (2 * N, 2 * N)
    _, exact = query(out, "SELECT shard, key, list_filter(reasons, lambda r: r LIKE 'exact%') FROM decisions "
                          "WHERE run_id = (SELECT max(run_id) FROM decisions) "
                          "AND len(list_filter(reasons, lambda r: r LIKE 'exact%')) > 0 ORDER BY shard, key")
    assert exact == [("b", k[1], [f"exact_duplicate_of:a/{k[1]}"]), ("b", k[5], [f"exact_duplicate_of:a/{k[0]}"])]
    _, near = query(out, "SELECT shard, key FROM duplicates WHERE kind = 'near' AND key IN "
                         f"('{k[0]}', '{k[1]}', '{k[5]}') AND run_id = (SELECT max(run_id) FROM duplicates) ORDER BY ALL")
    want = [("a", k[0]), ("a", k[1]), ("b", k[1]), ("b", k[5])]
    assert [tuple(x) for x in near] == (want if mode == "partitioned" else [("b", k[1]), ("b", k[5])])
