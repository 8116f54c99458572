"""Copy detection's one rule (audit.dedup.copy_detection) everywhere: global, partitioned and
incremental dedup and `shardguard contamination` find the same copies, hard ones included.

Data: real demo images, and of five of them three hard copies each (a crop keeping 55% of
each side, off-centre; a rotation by 10 degrees; the image pasted on a canvas at 35% of its
area), which SSCD scores under its 0.75 threshold: only the candidates + check path finds
them. Shards: a0 and b0 hold the sources and other demo images, a1 and b1 the copies (b1 has
copies of a b0 source and of an a0 source, a1 of an a0 source and of a b0 source), so the
incremental run (a0 a1, then b0 b1) finds pairs new x new, new x accepted and the other way.
Every mode runs the real job on these tars."""

import dataclasses
import io
import shutil

import apache_beam as beam
import duckdb
import numpy as np
import pytest
from PIL import Image

from audit.dedup.decisions import write_decisions
from audit.dedup.corpus import load_corpus
from audit.dedup.duplicate_clusters import DedupConfig
from audit.embeddings.embedder_specs import EmbedConfig
from audit.io.output_dir import OutputDir
from audit.io.store import query
from pipelines.cli import main
from pipelines.config import JobConfig
from pipelines.dedup_scaleout import PartitionedDedup
from pipelines.progress import counter_values
from pipelines.job import run_ingest
from tests.demo_images import demo_images, jpeg
from tests.job_outputs import write_tar

pytestmark = pytest.mark.beam  # runs Beam jobs (tests/conftest.py)

# source key -> its shard; each one's copies go to COPIES_IN[source]
SOURCES = {"00000018": "a0", "00000007": "a0", "00000029": "a0", "00000014": "b0", "00000079": "b0"}
COPIES_IN = {"00000018": "a1", "00000007": "a1", "00000079": "a1", "00000014": "b1", "00000029": "b1"}
N_OTHERS = 8  # demo images without copies, half in a0, half in b0


def hard_copies(data: bytes) -> dict[str, bytes]:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = im.size
    cw, ch = round(w * 0.55), round(h * 0.55)
    s = 0.35 ** 0.5
    canvas = Image.new("RGB", (round(w / s), round(h / s)), (40, 90, 160))
    canvas.paste(im, (canvas.width - w - canvas.width // 20, canvas.height // 3))
    return {"crop55off": jpeg(im.crop((w - cw, 0, w, ch))),
            "rotate10": jpeg(im.rotate(10, resample=Image.BICUBIC, fillcolor=(0, 0, 0))),
            "canvas35": jpeg(canvas)}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """shard -> [(key, files)], and source sample id -> its copies' sample ids."""
    images = demo_images(60)
    by_key = {k: (d, cap) for k, d, cap, _ in images}
    others = [k for k, _, _, _ in images if k not in SOURCES][:N_OTHERS]
    shards: dict[str, list] = {"a0": [], "a1": [], "b0": [], "b1": []}
    groups = {}
    for n, key in enumerate(others):
        shards["a0" if n % 2 else "b0"].append((key, {"jpg": by_key[key][0], "txt": by_key[key][1].encode()}))
    for key, shard in SOURCES.items():
        data, cap = by_key[key]
        shards[shard].append((key, {"jpg": data, "txt": cap.encode()}))
        copies = hard_copies(data)
        for n, (name, c) in enumerate(copies.items()):
            shards[COPIES_IN[key]].append((f"{key}{n}", {"jpg": c, "txt": f"{cap} ({name})".encode()}))
        groups[(shard, key)] = {(COPIES_IN[key], f"{key}{n}") for n in range(len(copies))}
    root = tmp_path_factory.mktemp("copy_modes")
    for name, samples in shards.items():
        (root / "all").mkdir(exist_ok=True)
        write_tar(root / "all" / f"{name}.tar", sorted(samples))
    return root, groups


CFG = JobConfig(progress_seconds=0, embed=EmbedConfig(captions=False))  # near_verify: on by default


def clusters(rows) -> set[frozenset]:
    """Image clusters from decisions rows (shard, key, representative): the samples that share
    a representative, and it (which one is kept may differ: incremental runs keep accepted
    samples, and a later run names no cluster for a representative whose members it skips)."""
    by_rep: dict[str, set] = {}
    for shard, key, rep in rows:
        if rep is not None:
            by_rep.setdefault(rep, {tuple(rep.split("/", 1))}).add((shard, key))
    return {frozenset(m) for m in by_rep.values()}


def decisions(out, run=None):
    if run is None:
        return query(out, "SELECT shard, key, representative FROM decisions")[1]
    return duckdb.sql(f"SELECT shard, key, representative FROM '{out}/decisions/run={run}/run.parquet'").fetchall()


@pytest.fixture(scope="module")
def global_run(shards, tmp_path_factory):
    """The default job (global mode) over every shard: (its folder, its image clusters, SSCD
    vector of each sample id)."""
    root, _ = shards
    out = tmp_path_factory.mktemp("global")
    run_ingest(str(root / "all"), str(out), CFG)
    corpus = load_corpus(OutputDir(out))
    _, rows, x = corpus.matrix("sscd:", "image")
    return out, clusters(decisions(out)), {(corpus.shard[r], corpus.key[r]): v for r, v in zip(rows, x)}


def test_global_mode_joins_hard_copies_under_the_threshold(shards, global_run):
    _, groups = shards
    _, g, vec = global_run
    sims = [float(vec[s] @ vec[c]) for s, copies in groups.items() for c in copies]
    assert max(sims) < 0.75  # only candidates confirmed by the check can join them
    for source, copies in groups.items():
        assert any({source} | copies <= c for c in g), source
    assert len({c for c in g if any(s in c for s in groups)}) == len(groups)  # sources stay apart


def test_partitioned_mode_gives_the_global_clusters(shards, global_run):
    out, g, vec = global_run
    cfg = DedupConfig(mode="partitioned", n_centroids=6)  # 6 groups, each vector in 2: about a third each
    with beam.Pipeline() as p:
        _ = p | PartitionedDedup(str(out), "partitioned", cfg, ["a0", "a1", "b0", "b1"])
    write_decisions(OutputDir(out), "partitioned")  # what the job does after its corpus steps
    assert clusters(decisions(out, "partitioned")) == g
    # the groups read the global run's feature cache: a cached check is the same check
    assert near_counts(out, "partitioned-2", cfg)["near_cache_hits"] > 0


def near_counts(out, run_id: str, cfg: DedupConfig) -> dict[str, int]:
    """Runs partitioned dedup (run id `run_id`) on `out`: the near check's counters, after
    checking that it gives the folder's global clusters."""
    p = beam.Pipeline()
    _ = p | PartitionedDedup(str(out), run_id, cfg, ["a0", "a1", "b0", "b1"])
    result = p.run()
    result.wait_until_finish()
    write_decisions(OutputDir(out), run_id)
    return {k.removeprefix("dedup_"): v for k, v in counter_values(result).items() if k.startswith("dedup_near_")}


def test_partitioned_groups_keep_their_prepared_images_for_the_next_run(global_run, tmp_path):
    out, g, _ = global_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "features")  # no cache: every group prepares its images and stores them
    cfg = DedupConfig(mode="partitioned", n_centroids=6)
    first = near_counts(copy, "p1", cfg)
    assert first["near_prepared"] > 0  # (a sample in two groups may be read from the group that ran first)
    files = sorted((copy / "features" / "copy_check").glob("run=p1-*-g*.parquet"))  # one file per group
    assert len(files) > 1 and all(OutputDir(copy).is_recorded(f) for f in files)
    assert clusters(decisions(copy, "p1")) == g
    second = near_counts(copy, "p2", cfg)
    assert second["near_prepared"] == 0 and second["near_cache_hits"] == first["near_prepared"] + first["near_cache_hits"]
    assert second["near_checked"] == first["near_checked"] and clusters(decisions(copy, "p2")) == g


def test_incremental_mode_gives_the_global_clusters(shards, global_run, tmp_path):
    """a0 a1 first, then b0 b1 against the accepted index: copies of a b0 source arrived in
    a1 (new source x accepted copy), of an a0 source in b1 (new copy x accepted source), and
    of a b0 source in b1 (new x new)."""
    root, _ = shards
    inc = dataclasses.replace(CFG, dedup=DedupConfig(incremental=True))
    (tmp_path / "in").mkdir()
    for name in ("a0", "a1"):
        shutil.copy(root / "all" / f"{name}.tar", tmp_path / "in")
    run_ingest(str(tmp_path / "in"), str(tmp_path / "out"), inc)
    for name in ("b0", "b1"):
        shutil.copy(root / "all" / f"{name}.tar", tmp_path / "in")
    second = run_ingest(str(tmp_path / "in"), str(tmp_path / "out"), inc)
    assert sorted(s["shard"] for s in second.shards) == ["b0", "b1"]
    assert clusters(decisions(tmp_path / "out")) == global_run[1]


def test_contamination_finds_the_copies_dedup_finds(shards, global_run, tmp_path, capsys):
    """The copies as an eval set against the sources (and the other images) as train, through
    `shardguard contamination` on two real audit folders."""
    root, groups = shards
    _, g, vec = global_run
    for side, names in (("train", ("a0", "b0")), ("eval", ("a1", "b1"))):
        (tmp_path / f"{side}_in").mkdir()
        for name in names:
            shutil.copy(root / "all" / f"{name}.tar", tmp_path / f"{side}_in")
        run_ingest(str(tmp_path / f"{side}_in"), str(tmp_path / side),
                   dataclasses.replace(CFG, dedup=DedupConfig(enabled=False)))
    capsys.readouterr()
    assert main(["contamination", "--train", str(tmp_path / "train"), "--eval", str(tmp_path / "eval")]) == 0
    said = capsys.readouterr().out
    assert "of 15 eval samples" in said and int(said.split(" vetoed, ")[1].split()[0]) > 0  # candidates added
    found = query(tmp_path / "eval", "SELECT eval_shard, eval_key, kind, train_shard, train_key, similarity "
                                     "FROM contamination")[1]
    eval_ids = {(s, k) for s, k, *_ in found}
    in_train = {s for s in vec if s[0] in ("a0", "b0")}
    assert eval_ids == {s for c in g if c & in_train for s in c if s[0] in ("a1", "b1")}
    assert eval_ids == set().union(*groups.values())
    for s, k, kind, ts, tk, sim in found:  # each copy's best match is its source, at the SSCD cosine
        assert kind == "near" and s == COPIES_IN[tk] and k[:-1] == tk
        assert np.isclose(sim, float(vec[(ts, tk)] @ vec[(s, k)]), atol=1e-4)
    # a second run reads the eval images it prepared from the eval folder's feature cache (the
    # training folder is only read: nothing is written there) and finds the same copies
    first_hits = int(said.split(" images prepared, ")[1].split()[0])
    assert main(["contamination", "--train", str(tmp_path / "train"), "--eval", str(tmp_path / "eval")]) == 0
    again = capsys.readouterr().out
    assert int(again.split(" images prepared, ")[1].split()[0]) > first_hits
    assert not (tmp_path / "train" / "features").exists()
    second = sorted(query(tmp_path / "eval", "SELECT eval_shard, eval_key, kind, train_shard, train_key, similarity "
                                             "FROM contamination WHERE run_id = (SELECT max(run_id) FROM contamination)")[1])
    assert [r[:5] for r in second] == sorted(r[:5] for r in found)
    assert np.allclose([r[5] for r in second], [r[5] for r in sorted(found)])
