"""Dedup speed: ShardGuard's dedup-only job against the `immaculate` sscd_distilled CLI, side by
side on the same photos on this machine (issue 20, item 4).

    .venv/bin/python benchmarks/dedup_timing.py [--images 10000] [--seed 0] [--keep DIR | --reuse DIR]
        [--skip-immaculate] [--beam-args "--direct_num_workers 2 --direct_running_mode multi_processing"]

Data (built before any timer, deterministic by --seed): the 75 source photographs of
benchmarks/photo_set.py (both splits, role "src"; Debian packages fetched with apt-get download
and cached), and N images from them: each is one source (uniform) under a chain of 1-2
distinct transforms of photo_set.transform (uniform over TRANSFORMS), then rescaled to a web
size (longer side uniform in [256, 768]) and re-encoded as JPEG at a quality uniform in
[60, 95]; --copy-share (5%) of the images are instead exact byte copies of an earlier
generated image. So most images are distinct pictures of few sources: many near pairs, the
geometric check's work. Written twice: img2dataset shards (NNNNN.tar with key.jpg/.txt/.json,
NNNNN.parquet, NNNNN_stats.json; benchmarks.load.write_samples; --per-shard samples each) and
a flat folder of the same JPEG files (NNNNNN.jpg) for the CLI; plus plan.json (what each
image is), which --reuse reads back.

Runs, timed by wall clock one after another in this order:
1. immaculate: benchmarks.copy_peers.run_peer("immaculate_sscd_distilled") on the flat
   folder (`immaculate DIR --json --method sscd_distilled`, a subprocess with its defaults;
   run_peer rewrites the same bytes under the same names first, outside its timer).
2. ShardGuard: `shardguard run` (python -m pipelines.cli run) on the shards into a new output
   folder with a dedup-only config (embed.sscd sscd_distilled, embed.captions false, CLIP
   skipped for want of weights, no memorization model, perturbations.features/tests false,
   report false; dedup at its defaults: global, near_threshold 0.75, near_verify on) and the
   Beam flags --beam-args (default: the README's DirectRunner command, 2 worker processes).
   Wall = the whole subprocess (interpreter start, imports, both pipelines, runs row, views).
3. immaculate again; the table shows both and the ratio to their mean.
Step split of the ShardGuard run, from the time its stderr lines arrive: start to the end of
the ingest/embed pipeline, to the end of the dedup pipeline, to the exit; plus the worker
seconds of ingest (shards.seconds) and the near check's pair counts (Beam counters
dedup_near_checked / dedup_near_rejected). After the runs: whether the duplicates table has
every planned exact byte copy with its original.
Output: the machine (CPUs, load average at start and end), one table (tool, wall s, images/s,
ratio to the immaculate mean), the step split and check counts. Failure: exit status 1 when
a run fails or an exact copy is not found; the generated data is removed unless --keep.
SHARDGUARD_* environment variables reach the job (printed at the start), e.g.
SHARDGUARD_DEDUP__NEAR_VERIFY=false --reuse DIR --skip-immaculate times the job without the check.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.photo_set import PHOTOS, TRANSFORMS, fetch_packages, jpeg, load_photo, transform  # noqa: E402

README_BEAM_ARGS = "--runner DirectRunner --direct_num_workers 2 --direct_running_mode multi_processing"
# dedup-only: everything else the job can do is off; dedup keeps its defaults (near check on)
DEDUP_ONLY = {"report": False,
              "embed": {"sscd": "sscd_distilled", "captions": False, "clip_checkpoint": "", "clip_pretrained": ""},
              "memorization": {"model": ""},
              "perturbations": {"features": False, "tests": False}}
COUNTER_LINE = re.compile(r"(\S+) pipeline counters: (.*)$")


@dataclass
class TimingSet:
    """datas[k]: image k's JPEG bytes; source[k]: its source photo; chain[k]: the transforms
    applied ([] for an exact copy); copy_of[k]: the image it is a byte copy of, or -1."""
    datas: list[bytes]
    source: list[int]
    chain: list[list[str]]
    copy_of: list[int]


def photo_sources() -> list[Image.Image]:
    """The source photos of benchmarks/photo_set.py, both splits (RGB, longer side <= 768)."""
    roots = fetch_packages()
    return [load_photo(roots[pkg] / rel) for pkg, (_, files) in PHOTOS.items()
            for rel, role in files.items() if role == "src"]


_SOURCES: list[Image.Image] = []  # set before the worker pool forks


def make_image(args: tuple[int, int, int, list[str]]) -> bytes:
    """Image k: source `src` under `chain`, rescaled to a web size, JPEG at a random quality."""
    seed, k, src, chain = args
    rng = np.random.default_rng([seed, k, 1])
    img = _SOURCES[src]
    for name in chain:
        img = Image.open(io.BytesIO(transform(name, img, rng))).convert("RGB")
    side = int(rng.integers(256, 769))
    s = side / max(img.size)
    img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.LANCZOS)
    return jpeg(img, int(rng.integers(60, 96)))


def build_images(sources: list[Image.Image], n: int, seed: int, copy_share: float = 0.05,
                 workers: int | None = None) -> TimingSet:
    """N images from `sources` (see the module docstring); deterministic by seed."""
    global _SOURCES
    rng = np.random.default_rng(seed)
    is_copy = rng.random(n) < copy_share
    is_copy[0] = False
    src = rng.integers(0, len(sources), n)
    chains = [[str(t) for t in rng.choice(TRANSFORMS, int(rng.integers(1, 3)), replace=False)] for _ in range(n)]
    originals = [k for k in range(n) if not is_copy[k]]
    copy_of = [-1] * n
    for k in np.flatnonzero(is_copy):
        earlier = [o for o in originals if o < k]
        copy_of[k] = int(earlier[int(rng.integers(0, len(earlier)))])
    _SOURCES = sources
    jobs = [(seed, k, int(src[k]), chains[k]) for k in originals]
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) > 50:
        with mp.get_context("fork").Pool(workers) as pool:
            made = pool.map(make_image, jobs, chunksize=32)
    else:
        made = [make_image(j) for j in jobs]
    datas: list[bytes] = [b""] * n
    for k, data in zip(originals, made):
        datas[k] = data
    for k in range(n):
        if copy_of[k] >= 0:
            datas[k] = datas[copy_of[k]]
            src[k] = src[copy_of[k]]
    return TimingSet(datas, [int(s) for s in src], [[] if copy_of[k] >= 0 else chains[k] for k in range(n)], copy_of)


def key_of(k: int, per_shard: int) -> tuple[str, str]:
    """(shard, key) of image k in the shards."""
    return f"{k // per_shard:05d}", f"{k // per_shard:05d}{k % per_shard:04d}"


def write_data(ts: TimingSet, root: Path, per_shard: int, seed: int) -> None:
    """root/shards (img2dataset format), root/flat (NNNNNN.jpg), root/plan.json."""
    from benchmarks.load_shards import write_samples
    shards, flat = root / "shards", root / "flat"
    shards.mkdir(parents=True)
    flat.mkdir()
    n = len(ts.datas)
    for first in range(0, n, per_shard):
        samples = []
        for k in range(first, min(first + per_shard, n)):
            shard, key = key_of(k, per_shard)
            with Image.open(io.BytesIO(ts.datas[k])) as im:
                w, h = im.size
            what = f"copy of {ts.copy_of[k]}" if ts.copy_of[k] >= 0 else " + ".join(ts.chain[k])
            caption = f"photo {k}: source {ts.source[k]}, {what}"
            samples.append({"key": key, "jpg": ts.datas[k], "txt": caption,
                            "meta": {"key": key, "caption": caption, "width": w, "height": h, "url": None}})
        write_samples(shards, shard, samples)
    for k, data in enumerate(ts.datas):
        (flat / f"{k:06d}.jpg").write_bytes(data)
    (root / "plan.json").write_text(json.dumps({"seed": seed, "per_shard": per_shard, "source": ts.source,
                                                "chain": ts.chain, "copy_of": ts.copy_of}))


def read_data(root: Path) -> tuple[TimingSet, dict]:
    """What write_data wrote: the images from root/flat, the plan."""
    plan = json.loads((root / "plan.json").read_text())
    datas = [(root / "flat" / f"{k:06d}.jpg").read_bytes() for k in range(len(plan["source"]))]
    return TimingSet(datas, plan["source"], plan["chain"], plan["copy_of"]), plan


@dataclass
class RunResult:
    tool: str
    wall: float
    ok: bool = True
    error: str = ""
    info: dict = field(default_factory=dict)


def run_immaculate(datas: list[bytes], flat: Path) -> RunResult:
    """The immaculate sscd_distilled CLI on the flat folder (benchmarks.copy_peers)."""
    from benchmarks.copy_peers import available_peers, run_peer
    reason = available_peers()["immaculate_sscd_distilled"]
    if reason:
        return RunResult("immaculate sscd_distilled", float("nan"), False, reason)
    try:
        r = run_peer("immaculate_sscd_distilled", datas, flat)
    except RuntimeError as e:
        return RunResult("immaculate sscd_distilled", float("nan"), False, str(e))
    return RunResult("immaculate sscd_distilled", r.seconds, info={"pairs": len(r.pairs), "note": r.note,
                                                                    "skipped": len(r.skipped)})


def run_shardguard(shards: Path, out: Path, config: Path, beam_args: str) -> RunResult:
    """`shardguard run` as a subprocess; wall time, step times from its stderr, its counters."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    cmd = [sys.executable, "-m", "pipelines.cli", "run", "--input", str(shards), "--out", str(out),
           "--config", str(config)] + shlex.split(beam_args)
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace")

    def read_stderr():
        for line in proc.stderr:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    stdout = proc.stdout.read()
    proc.wait()
    wall = time.perf_counter() - t0
    reader.join()
    (out.parent / f"{out.name}.log").write_text(stdout + "\n".join(f"{t:8.1f}s {line}" for t, line in lines) + "\n")
    if proc.returncode != 0:
        tail = " | ".join(line for _, line in lines[-5:])
        return RunResult("ShardGuard dedup-only job", wall, False, f"exit {proc.returncode}: {tail}")
    steps, counters = {}, {}
    for t, line in lines:
        m = COUNTER_LINE.search(line)
        if m:
            steps[m.group(1)] = t
            counters.update({k: int(v) for k, v in (kv.split("=") for kv in m.group(2).split(", ") if "=" in kv)})
    return RunResult("ShardGuard dedup-only job", wall, info={"steps": steps, "counters": counters,
                                                               "stdout": stdout})


def run_facts(out: Path, ts: TimingSet, per_shard: int) -> dict:
    """From the ShardGuard output: ingest worker seconds, duplicates per kind, exact copies found."""
    from audit.io.store import query
    _, [(ingest_s, ok)] = query(out, "SELECT sum(seconds), sum(n_ok) FROM shards")
    _, kinds = query(out, "SELECT kind, count(*), count(DISTINCT cluster) FROM duplicates GROUP BY kind ORDER BY kind")
    _, exact = query(out, "SELECT shard, key, cluster FROM duplicates WHERE kind = 'exact'")
    cluster = {(s, k): c for s, k, c in exact}
    pairs = [(key_of(k, per_shard), key_of(o, per_shard)) for k, o in enumerate(ts.copy_of) if o >= 0]
    found = sum(a in cluster and cluster.get(a) == cluster.get(b) for a, b in pairs)
    return {"ingest_worker_s": float(ingest_s or 0), "ok": int(ok or 0),
            "kinds": {k: (n, c) for k, n, c in kinds}, "exact_copies": len(pairs), "exact_found": found}


def machine_line(when: str) -> str:
    la = os.getloadavg()
    return (f"{when}: {os.cpu_count()} logical CPUs ({len(os.sched_getaffinity(0))} usable), load average "
            f"{la[0]:.2f} {la[1]:.2f} {la[2]:.2f} (1/5/15 min)")


def print_table(n: int, runs: list[RunResult], facts: dict) -> None:
    imm = [r.wall for r in runs if r.tool.startswith("immaculate") and r.ok]
    mean = sum(imm) / len(imm) if imm else float("nan")
    print(f"\n{'tool':<34} {'wall s':>8} {'images/s':>9} {'ratio to immaculate mean':>25}")
    seen = 0
    for r in runs:
        name = r.tool
        if r.tool.startswith("immaculate"):
            seen += 1
            name = f"{r.tool} (run {seen})"
        if not r.ok:
            print(f"{name:<34} {'failed':>8}  {r.error[:200]}")
            continue
        print(f"{name:<34} {r.wall:>8.1f} {n / r.wall:>9.1f} {r.wall / mean:>25.2f}")
    if len(imm) > 1:
        print(f"{'immaculate sscd_distilled (mean)':<34} {mean:>8.1f} {n / mean:>9.1f} {1.0:>25.2f}"
              f"   (runs differ by {abs(imm[0] - imm[1]) / mean:.0%})")
    sg = next((r for r in runs if r.tool.startswith("ShardGuard") and r.ok), None)
    if sg is None:
        return
    c, steps = sg.info["counters"], sg.info["steps"]
    if "dedup_near_checked" in c:  # absent: the check was off (dedup.near_verify false) or did not report
        print(f"near pairs verified by the check: {c['dedup_near_checked']} checked, "
              f"{c.get('dedup_near_rejected', 0)} rejected (counters dedup_near_checked / dedup_near_rejected); "
              f"images {c.get('dedup_near_prepared', '?')} prepared, {c.get('dedup_near_cache_hits', '?')} "
              "from the feature cache")
    else:
        print("near pairs verified by the check: not reported (no dedup_near_checked counter in the run's log)")
    ie, dd = steps.get("ingest/embed"), steps.get("dedup")
    if ie is not None and dd is not None:
        print(f"ShardGuard steps (from its log lines): start + ingest/embed pipeline {ie:.1f} s "
              f"(ingest worker time {facts['ingest_worker_s']:.1f} s over all shards), dedup pipeline "
              f"{dd - ie:.1f} s, runs row + views + exit {sg.wall - dd:.1f} s")
    kinds = ", ".join(f"{k} {n} samples in {cl} clusters" for k, (n, cl) in facts["kinds"].items())
    print(f"ShardGuard duplicates: {kinds or 'none'}; exact byte copies found with their original: "
          f"{facts['exact_found']} of {facts['exact_copies']}")
    for r in runs:
        if r.ok and r.tool.startswith("immaculate"):
            print(f"immaculate: {r.info['pairs']} predicted pairs; {r.info['note']}")
            break


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--copy-share", type=float, default=0.05, help="share of images that are exact byte copies")
    ap.add_argument("--per-shard", type=int, default=1000, help="samples per shard")
    ap.add_argument("--keep", type=Path, help="write the data (and outputs) here and keep them")
    ap.add_argument("--reuse", type=Path, help="measure on the data of an earlier --keep (nothing is generated)")
    ap.add_argument("--skip-immaculate", action="store_true")
    ap.add_argument("--beam-args", default=README_BEAM_ARGS, help=f"Beam flags for shardguard run ({README_BEAM_ARGS!r})")
    ap.add_argument("--sources", type=int, default=0, help=argparse.SUPPRESS)  # tests: first N demo images as sources
    args = ap.parse_args(argv)
    if args.keep and args.reuse:
        ap.error("--keep and --reuse exclude each other")
    print(machine_line("start"), flush=True)
    print(f"environment: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')}; Beam flags: {args.beam_args}; "
          f"config from the environment: {' '.join(f'{k}={v}' for k, v in sorted(os.environ.items()) if k.startswith('SHARDGUARD_')) or 'none'}")
    root = args.reuse or args.keep or Path(tempfile.mkdtemp(prefix="dedup-timing-"))
    try:
        if args.reuse:
            ts, plan = read_data(root)
            per_shard = plan["per_shard"]
            print(f"reusing {len(ts.datas)} images (seed {plan['seed']}) in {root}", flush=True)
        else:
            t = time.perf_counter()
            if args.sources:
                from tests.demo_images import demo_images
                sources = [Image.open(io.BytesIO(d)).convert("RGB") for _, d, _, _ in demo_images(args.sources)]
            else:
                sources = photo_sources()
            ts = build_images(sources, args.images, args.seed, args.copy_share)
            per_shard = args.per_shard
            root.mkdir(parents=True, exist_ok=True)
            write_data(ts, root, per_shard, args.seed)
            print(f"generated {len(ts.datas)} images from {len(sources)} sources "
                  f"({sum(c >= 0 for c in ts.copy_of)} exact byte copies, {sum(map(len, ts.datas)) / 1e6:.0f} MB) "
                  f"in {time.perf_counter() - t:.0f} s: {root}", flush=True)
        n = len(ts.datas)
        config = root / "dedup_only.yaml"
        import yaml
        config.write_text(yaml.safe_dump(DEDUP_ONLY, sort_keys=False))
        runs: list[RunResult] = []
        out = root / "shardguard-out"
        for step in (["immaculate"] if not args.skip_immaculate else []) + ["shardguard"] + \
                ([] if args.skip_immaculate else ["immaculate"]):
            if step == "immaculate":
                runs.append(run_immaculate(ts.datas, root / "flat"))
            else:
                shutil.rmtree(out, ignore_errors=True)
                runs.append(run_shardguard(root / "shards", out, config, args.beam_args))
            r = runs[-1]
            print(f"{r.tool}: {f'{r.wall:.1f} s' if r.ok else 'FAILED ' + r.error[:300]}", flush=True)
        sg_ok = any(r.ok and r.tool.startswith("ShardGuard") for r in runs)
        facts = run_facts(out, ts, per_shard) if sg_ok else {}
        print(f"\ndedup timing: {n} images, {len(set(ts.source))} source photos, "
              f"{per_shard} per shard; ShardGuard config {DEDUP_ONLY}")
        print_table(n, runs, facts)
        print(machine_line("end"))
        failed = not all(r.ok for r in runs) or not facts or facts["exact_found"] != facts["exact_copies"]
        return 1 if failed else 0
    finally:
        if not (args.keep or args.reuse):
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
