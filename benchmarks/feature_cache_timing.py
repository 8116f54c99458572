"""Incremental dedup with and without the copy check's feature cache (audit.copy_feature_cache),
and what writing the cache costs a global run (issue 20, item 4).

    .venv/bin/python benchmarks/feature_cache_timing.py [--images 1200] [--per-shard 200] [--seed 0] [--keep DIR]

Data: benchmarks/dedup_timing.py's photo-derived images (its build_images/write_data: the 75
source photos under 1-2 transforms, web sizes, JPEG 60-95, 5% byte copies), in img2dataset
shards. The first half of the shards is ingested and deduplicated globally (the accepted
corpus), the second half ingested with dedup off. Then, timed by wall clock in-process
(dedup only, embeddings already computed):
  global, cache off / global, cache on (writing): audit's dedup_and_record over the first half
    (features/ removed before the second, so it prepares and writes everything it checks);
  incremental x4 over the second half against the same saved index (restored after each):
    cache off; cache on (the global run's file: accepted samples it checked are hits, the rest
    prepared and written); cache on again (every image a hit); cache off again (noise check).
Output: one table: run, wall s, images prepared, cache hits, pairs checked, cache files' MB,
and whether the clusters equal the cache-off run's. Failure: exit 1 when a cached run's
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


def cache_mb(out: Path) -> float:
    folder = out / "features" / "copy_check"
    return sum(p.stat().st_size for p in folder.glob("run=*.parquet")) / 1e6 if folder.is_dir() else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1200)
    ap.add_argument("--per-shard", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="keep the data and output folder here")
    args = ap.parse_args(argv)
    from audit.duplicate_clusters import DedupConfig
    from audit.embedder_specs import EmbedConfig
    from audit.incremental_dedup import incremental_duplicates
    from audit.output_dir import OutputDir
    from audit.perturbation_audit import PerturbationConfig
    from pipelines.config import JobConfig
    from pipelines.dedup import dedup_and_record
    from pipelines.ingest import open_uri
    from pipelines.job import run_ingest

    print(machine_line("start"), flush=True)
    root = args.keep or Path(tempfile.mkdtemp(prefix="feature-cache-timing-"))
    try:
        ts = build_images(photo_sources(), args.images, args.seed)
        root.mkdir(parents=True, exist_ok=True)
        write_data(ts, root / "data", args.per_shard, args.seed)
        shards = sorted((root / "data" / "shards").glob("*.tar"))
        first, second = shards[: len(shards) // 2], shards[len(shards) // 2:]
        inp, out_root = root / "in", root / "out"
        inp.mkdir()
        for s in first:
            for p in s.parent.glob(f"{s.stem}*"):
                shutil.copy(p, inp)
        base = JobConfig(progress_seconds=0, report=False, embed=EmbedConfig(captions=False),
                         perturbations=PerturbationConfig(features=False, tests=False))
        cfg = DedupConfig(incremental=True)
        t = time.perf_counter()
        run_ingest(str(inp), str(out_root), dataclasses.replace(base, dedup=cfg))
        print(f"first half ({len(first)} shards) ingested, embedded, deduplicated: {time.perf_counter() - t:.0f} s",
              flush=True)
        out = OutputDir(out_root)
        rows = []

        def timed(name, fn, v_of):
            t = time.perf_counter()
            res = fn()
            wall = time.perf_counter() - t
            v = v_of(res)
            rows.append((name, wall, v.get("prepared"), v.get("cache_hits"), v.get("checked"), cache_mb(out_root), res))
            print(f"{name}: {wall:.1f} s", flush=True)

        glob_cfg = DedupConfig()
        timed("global, cache off", lambda: dedup_and_record(out, "g-off", dataclasses.replace(glob_cfg, near_feature_cache=False)),
              lambda s: s["kinds"]["near"]["verification"])
        shutil.rmtree(out_root / "features", ignore_errors=True)
        timed("global, cache on (writes)", lambda: dedup_and_record(out, "g-on", glob_cfg),
              lambda s: s["kinds"]["near"]["verification"])
        for s in second:
            for p in s.parent.glob(f"{s.stem}*"):
                shutil.copy(p, inp)
        run_ingest(str(inp), str(out_root), dataclasses.replace(base, dedup=DedupConfig(enabled=False)))
        saved = root / "index_saved"
        shutil.copytree(out_root / "index", saved)
        new = {s.stem for s in second}

        def incremental(run_id, c):
            def go():
                try:
                    return incremental_duplicates(out, c, run_id, new, open_uri)
                finally:
                    shutil.rmtree(out_root / "index")
                    shutil.copytree(saved, out_root / "index")
            return go

        off = dataclasses.replace(cfg, near_feature_cache=False)
        for name, run_id, c in [("incremental, cache off", "i-off", off),
                                ("incremental, cache from the global run", "i-on1", cfg),
                                ("incremental, cache on again", "i-on2", cfg),
                                ("incremental, cache off again", "i-off2", off)]:
            timed(name, incremental(run_id, c), lambda r: r.kinds["near"]["verification"])
        ref = clusters(rows[2][6].decisions)
        print(f"\nfeature cache timing: {args.images} images, {len(first)} + {len(second)} shards of {args.per_shard}; "
              f"dedup only (embeddings computed before), in-process, wall clock")
        print(f"{'run':42s} {'wall s':>7s} {'prepared':>9s} {'hits':>6s} {'checked':>8s} {'cache MB':>9s} same clusters")
        same_all = True
        for name, wall, prep, hits, checked, mb, res in rows:
            same = "-" if name.startswith("global") else str(clusters(res.decisions) == ref)
            same_all &= same != "False"
            print(f"{name:42s} {wall:7.1f} {prep!s:>9s} {hits!s:>6s} {checked!s:>8s} {mb:9.1f} {same}")
        print(machine_line("end"))
        return 0 if same_all else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
