"""Incremental dedup with and without the copy check's feature cache (audit.copy_check.feature_cache),
and what writing the cache costs a global run (issue 20, item 4).

    .venv/bin/python benchmarks/feature_cache_timing.py [--images 1200] [--per-shard 200] [--seed 0] [--keep DIR]

Data: benchmarks/dedup_timing.py's photo-derived images (its build_images/write_data: the 75
source photos under 1-2 transforms, web sizes, JPEG 60-95, 5% byte copies), in img2dataset
shards split into three batches A, B, C as a nightly job would see them: A ingested and
deduplicated globally, B ingested with an incremental dedup (both through run_ingest, the
feature cache on: each stores the images its check prepared), C ingested with dedup off.
Timed by wall clock in-process (dedup only, embeddings already computed):
  global, cache off / cache on (writing): pipelines.dedup.dedup_and_record over A, B and C
    (to a scratch copy of the folder; features/ removed before the second run);
  incremental x4 over C against the same saved index (restored after each): cache off;
    cache on (what A's and B's runs stored: the accepted samples they checked are hits);
    cache on again (the same accepted and new samples again: every image a hit); cache off again.
Output: one table: run, wall s, images prepared, of them accepted (A or B) ones (counted from
the file the run wrote; cache-on runs only), cache hits, pairs checked, MB the run wrote, and
whether the clusters equal the first cache-off run's. Failure: exit 1 when a cached run's
clusters differ from the uncached one's.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.dedup_timing import build_images, machine_line, photo_sources, write_data  # noqa: E402


def clusters(decisions: list[dict]) -> set[frozenset]:
    by_rep: dict[str, set] = {}
    for d in decisions:
        if d["representative"] is not None:
            by_rep.setdefault(d["representative"], {d["representative"]}).add(f"{d['shard']}/{d['key']}")
    return {frozenset(m) for m in by_rep.values()}


def written(out: Path, run_id: str, accepted: set[str]) -> tuple[float, int | None]:
    """MB of the cache file run `run_id` wrote, and how many of its rows are accepted samples."""
    import pyarrow.parquet as pq
    path = out / "features" / "copy_check" / f"run={run_id}.parquet"
    if not path.is_file():
        return 0.0, 0
    shards = pq.read_table(path, columns=["shard"]).column("shard").to_pylist()
    return path.stat().st_size / 1e6, sum(s in accepted for s in shards)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1200)
    ap.add_argument("--per-shard", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="keep the data and output folder here")
    args = ap.parse_args(argv)
    from audit.dedup.duplicate_clusters import DedupConfig
    from audit.embeddings.embedder_specs import EmbedConfig
    from audit.dedup.incremental import incremental_duplicates
    from audit.io.output_dir import OutputDir
    from audit.perturbations.perturbation_audit import PerturbationConfig
    from pipelines.config import JobConfig
    from pipelines.dedup import dedup_and_record
    from pipelines.shard_uris import open_uri
    from pipelines.job import run_ingest

    print(machine_line("start"), flush=True)
    root = args.keep or Path(tempfile.mkdtemp(prefix="feature-cache-timing-"))
    try:
        ts = build_images(photo_sources(), args.images, args.seed)
        root.mkdir(parents=True, exist_ok=True)
        write_data(ts, root / "data", args.per_shard, args.seed)
        shards = sorted((root / "data" / "shards").glob("*.tar"))
        k = len(shards) // 3
        batches = [shards[:k], shards[k:2 * k], shards[2 * k:]]
        inp, out_root = root / "in", root / "out"
        inp.mkdir()
        base = JobConfig(progress_seconds=0, report=False, embed=EmbedConfig(captions=False),
                         perturbations=PerturbationConfig(features=False, tests=False))
        cfg = DedupConfig(incremental=True)
        for n, (batch, dedup) in enumerate(zip(batches, [cfg, cfg, DedupConfig(enabled=False)])):
            for s in batch:
                for p in s.parent.glob(f"{s.stem}*"):
                    shutil.copy(p, inp)
            t = time.perf_counter()
            run_ingest(str(inp), str(out_root), dataclasses.replace(base, dedup=dedup))
            print(f"batch {'ABC'[n]} ({len(batch)} shards): {time.perf_counter() - t:.0f} s", flush=True)
        out = OutputDir(out_root)
        accepted = {s.stem for s in batches[0] + batches[1]}
        new = {s.stem for s in batches[2]}
        rows = []

        def timed(name, run_id, fn, v_of, where=out_root):
            t = time.perf_counter()
            res = fn()
            wall = time.perf_counter() - t
            v = v_of(res)
            mb, acc = written(where, run_id, accepted)
            rows.append((name, wall, v.get("prepared"), acc if "cache on" in name else None, v.get("cache_hits"),
                         v.get("checked"), mb, res))
            print(f"{name}: {wall:.1f} s", flush=True)

        scratch = root / "scratch"
        shutil.copytree(out_root, scratch)
        shutil.rmtree(scratch / "features", ignore_errors=True)
        glob_cfg = DedupConfig()
        for name, run_id, c in [("global A+B+C, cache off", "g-off", dataclasses.replace(glob_cfg, near_feature_cache=False)),
                                ("global A+B+C, cache on (writes)", "g-on", glob_cfg)]:
            timed(name, run_id, lambda: dedup_and_record(OutputDir(scratch), run_id, c),
                  lambda s: s["kinds"]["near"]["verification"], scratch)
        shutil.rmtree(scratch)
        saved = root / "index_saved"
        shutil.copytree(out_root / "index", saved)

        def incremental(run_id, c):
            def go():
                try:
                    return incremental_duplicates(out, c, run_id, new, open_uri)
                finally:
                    shutil.rmtree(out_root / "index")
                    shutil.copytree(saved, out_root / "index")
            return go

        off = dataclasses.replace(cfg, near_feature_cache=False)
        for name, run_id, c in [("incremental C, cache off", "i-off", off),
                                ("incremental C, cache on (A's and B's runs)", "i-on1", cfg),
                                ("incremental C, cache on again", "i-on2", cfg),
                                ("incremental C, cache off again", "i-off2", off)]:
            timed(name, run_id, incremental(run_id, c), lambda r: r.kinds["near"]["verification"])
        ref = clusters(rows[2][7].decisions)
        print(f"\nfeature cache timing: {args.images} images, batches of {[len(b) for b in batches]} shards of "
              f"{args.per_shard}; dedup only (embeddings computed before), in-process, wall clock")
        print(f"{'run':44s} {'wall s':>7s} {'prepared':>9s} {'accepted':>9s} {'hits':>6s} {'checked':>8s} "
              f"{'MB written':>10s} same clusters")
        same_all = True
        for name, wall, prep, acc, hits, checked, mb, res in rows:
            same = "-" if name.startswith("global") else str(clusters(res.decisions) == ref)
            same_all &= same != "False"
            print(f"{name:44s} {wall:7.1f} {prep!s:>9s} {'-' if acc is None else acc:>9} {hits!s:>6s} "
                  f"{checked!s:>8s} {mb:10.1f} {same}")
        print(machine_line("end"))
        return 0 if same_all else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
