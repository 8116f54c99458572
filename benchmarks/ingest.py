"""Ingest throughput: the Beam pipeline against plain loops over the same shards, one run.

    .venv/bin/python benchmarks/ingest.py [--shards 16] [--sample infra/demo/sample]

Makes --shards shards by copying the demo sample's tars (real img2dataset output) into a temp
folder, then times, on the same files:
  wds+pillow loop   webdataset + Pillow decode to RGB, one process (the baseline the issue names)
  ingest loop       shardguard's audit.shard_ingest (decode, validate, hash) in a plain loop
  beam ingest       the `shardguard run` pipeline on the DirectRunner
with 1 worker and with 2 (multiprocessing Pool vs Beam multi_processing). Prints one table;
'beam overhead' compares Beam with the plain loop running the same per-shard code and the
same number of workers.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_input(sample: Path, n: int, dst: Path) -> list[Path]:
    tars = sorted(sample.glob("*.tar"))
    if not tars:
        sys.exit(f"no shards in {sample}")
    out = []
    for i in range(n):
        p = dst / f"{i:05d}.tar"
        shutil.copy(tars[i % len(tars)], p)
        out.append(p)
    return out


def wds_loop(paths: list[Path]) -> int:
    import webdataset as wds
    ds = wds.WebDataset([str(p) for p in paths], shardshuffle=False, empty_check=False)
    ds = ds.decode("pil").to_tuple("__key__", "jpg", "txt")
    n = 0
    for _key, img, _txt in ds:
        img.load()
        n += 1
    return n


def _ingest_one(p: str) -> int:
    from audit.shard_ingest import ingest_shard
    return ingest_shard(Path(p).stem, p, "bench").shard["n_inputs"]


def ingest_loop(paths: list[Path], workers: int) -> int:
    if workers == 1:
        return sum(_ingest_one(str(p)) for p in paths)
    with mp.get_context("spawn").Pool(workers) as pool:
        return sum(pool.map(_ingest_one, [str(p) for p in paths], chunksize=1))


def beam_run(inp: Path, out: Path, workers: int) -> int:
    from pipelines.config import JobConfig
    from pipelines.job import run_ingest
    args = [] if workers == 1 else [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    return run_ingest(str(inp), str(out), JobConfig(progress_seconds=0), args).n_inputs


def timed(fn, *a) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = fn(*a)
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--sample", type=Path, default=REPO / "infra" / "demo" / "sample")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        paths = make_input(args.sample, args.shards, tmp / "in")
        wds_loop(paths[:1])  # warm the page cache and imports
        rows = []
        n, t = timed(wds_loop, paths)
        rows.append(("wds+pillow loop", 1, n, t, None))
        for workers in (1, 2):
            n_loop, t_loop = timed(ingest_loop, paths, workers)
            rows.append(("ingest loop", workers, n_loop, t_loop, None))
            n_beam, t_beam = timed(beam_run, tmp / "in", tmp / f"out{workers}", workers)
            assert n_beam == n_loop, (n_beam, n_loop)
            rows.append(("beam ingest", workers, n_beam, t_beam, t_beam / t_loop - 1))
    print(f"\ningest benchmark: {args.shards} shards, {rows[0][2]} samples (cpu count {mp.cpu_count()})")
    print(f"{'path':<18} {'workers':>7} {'samples':>8} {'seconds':>8} {'samples/s':>10} {'beam overhead':>14}")
    for name, w, n, t, over in rows:
        o = f"{over:+.1%}" if over is not None else ""
        print(f"{name:<18} {w:>7} {n:>8} {t:>8.2f} {n / t:>10.0f} {o:>14}")


if __name__ == "__main__":
    main()
