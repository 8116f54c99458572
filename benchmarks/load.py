"""Load benchmark: the full CPU pipeline on generated img2dataset shards at several sizes.

    .venv/bin/python benchmarks/load.py [--samples-list 10000,100000] [--shards-per 1000]
        [--config infra/demo/job.yaml] [--sscd sscd_distilled|sscd|none] [--no-captions]
        [--no-memorization] [--no-perturbations] [--beam-args "--direct_num_workers=2 --direct_running_mode=multi_processing"]
        [--keep DIR] [--seed 0] [--large-images 8] [--compare] [--baseline REV]

Input: the committed demo sample (infra/demo/sample/*.tar: real img2dataset output, 1000
samples, broken ones included), read with the real reader (audit.ingest.tar_samples).
Generated per size by benchmarks/load_shards.py, in img2dataset's format (NNNNN.tar with key.jpg/.txt/.json, NNNNN.parquet,
NNNNN_stats.json), N samples in N / --shards-per shards, each drawn (seeded) from the demo
samples as either an exact byte copy (--copy-share of them; broken demo samples are always
copied, so the errors tables get real failures) or a variant: a random crop (80-100% per
side), a resize (60-100%), a re-encode at a random JPEG quality (40-95), and for half of them
a caption suffix; --broken-share of the images are cut in half (failed samples, errors rows).
Generation runs before the timer, on every core.
Run: `pipelines.job.run_ingest` with --config (default the demo config: SSCD, MiniLM captions,
dedup, memorization on the tiny demo model, perturbation features and tests; --sscd,
--no-captions, --no-memorization and --no-perturbations change what runs, and the table says
what ran), each
size in its own child process, so each peak is that size's alone.
Large images (--large-images N, 0 = off): the smallest size is run again with one more shard of
N large images (half 8000x8000 palette PNGs with transparency, 64 M pixels each, half
7000x7000 JPEGs, every other one with EXIF orientation 6): the row 'large' of the table. Its
peak RSS must stay within 1.5x of the same run without them (memory must not depend on the
sizes images declare: audit.ingest.image_decode's decode budget, banded RGB conversion, and every
later stage reducing an image right after its own decode).
Output: one table (samples, shards, wall s, samples/s, peak RSS of the run's process and of
its largest child process from getrusage, the peak summed RSS of its process tree sampled
with psutil every 0.5 s, reconciliation), then the memory ratio largest size / smallest size.
Reconciliation, per shard from the tables: inputs = generated samples = ok + failed =
samples rows, failed = errors rows with a key. Failure: exit status 1 when a shard does not
reconcile, a run fails, or the large-image run's peak is over 1.5x; the generated data is
removed unless --keep.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.load_shards import generate, write_large_shard  # noqa: E402


def reconcile(out: Path, generated: list[int]) -> tuple[bool, dict]:
    """Per shard: inputs = generated = ok + failed = samples rows; failed = errors rows with a key."""
    from audit.io.store import query
    _, rows = query(out, """
        SELECT sh.shard, sh.n_inputs, sh.n_ok, sh.n_failed,
               (SELECT count(*) FROM samples s WHERE s.shard = sh.shard),
               (SELECT count(*) FROM errors e WHERE e.shard = sh.shard AND e.key IS NOT NULL)
        FROM shards sh ORDER BY sh.shard""")
    want = {f"{i:05d}": n for i, n in enumerate(generated)}
    bad = [r[0] for r in rows if not (r[1] == want.get(r[0]) == r[2] + r[3] == r[4] and r[3] == r[5])]
    ok = not bad and len(rows) == len(want)
    return ok, {"shards": len(rows), "inputs": sum(r[1] for r in rows), "ok": sum(r[2] for r in rows),
                "failed": sum(r[3] for r in rows), "bad_shards": bad[:5]}


def child_config(args: argparse.Namespace):
    """The job config of a run: --config with the command line's overrides."""
    import dataclasses
    from pipelines.config import load_config
    config = load_config(args.config, environ=None)
    embed = dict(sscd=args.sscd or config.embed.sscd, captions=config.embed.captions and not args.no_captions)
    config = dataclasses.replace(config, progress_seconds=0, report=False,
                                 embed=dataclasses.replace(config.embed, **embed))
    if args.no_memorization:
        config = dataclasses.replace(config, memorization=dataclasses.replace(config.memorization, model=""))
    if args.no_perturbations:
        config = dataclasses.replace(config, perturbations=dataclasses.replace(config.perturbations,
                                                                               features=False, tests=False))
    return config


def run_one(inp: Path, out: Path, args: argparse.Namespace, result_path: Path) -> None:
    """Child process: one run_ingest (or, with --_plain, the plain loop), then its peak RSS."""
    import logging
    logging.basicConfig(level=logging.WARNING)
    config = child_config(args)
    t0 = time.perf_counter()
    if args._plain:
        from benchmarks.plain_loop import run as plain_loop
        r = plain_loop(inp, config)
        ran, notes, stages = ["plain loop"], [], {k: {"seconds": v} for k, v in r["seconds"].items()}
    else:
        from pipelines.job import run_ingest
        summary = run_ingest(str(inp), str(out), config, shlex.split(args.beam_args))
        ran = sorted(summary.embeddings) + (["memorization"] if summary.memorization else []) \
            + (["dedup"] if summary.dedup else []) + (["perturbations"] if summary.perturbations else [])
        notes, stages = summary.notes, stage_breakdown(out, summary.run_id)
    wall = time.perf_counter() - t0
    result_path.write_text(json.dumps({
        "wall_s": wall, "ran": ran, "notes": notes, "stages": stages,
        "self_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def stage_breakdown(out: Path, run_id: str) -> dict:
    """Seconds per stage of the run (the stage_timings table; {} from a version without it)."""
    try:
        from audit.io.output_dir import OutputDir
        from audit.runs.stage_timings import stage_totals
    except ImportError:
        return {}
    return {f"{r['kind']}: {r['stage']}": {"seconds": r["seconds"], "shards": r["shards"]}
            for r in stage_totals(OutputDir(out), run_id)}


def tree_rss_peak(pid: int, stop: threading.Event, peak: list[float]) -> None:
    """Peak of the summed RSS of pid and all its descendants, sampled every 0.5 s."""
    try:
        import psutil
    except ImportError:
        return
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.wait(0.5):
        total = 0
        try:
            for p in [root] + root.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            break
        peak[0] = max(peak[0], total / 2**20)


def ensure_demo_model(config_path: Path) -> None:
    """The demo config's tiny model is assembled into .cache/ by `make demo`; do the same here."""
    from pipelines.config import load_config
    model = load_config(config_path, environ=None).memorization.model
    if model == ".cache/tiny-diffusion" and not (REPO / model / "unet").exists():
        subprocess.run([sys.executable, str(REPO / "infra/demo/tiny_diffusion.py"), "assemble", str(REPO / model)],
                       check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples-list", default="10000,100000", help="comma-separated sizes, samples")
    ap.add_argument("--shards-per", type=int, default=1000, help="samples per shard")
    ap.add_argument("--config", type=Path, default=REPO / "infra" / "demo" / "job.yaml")
    ap.add_argument("--sscd", choices=["sscd_distilled", "sscd", "none"], help="override embed.sscd")
    ap.add_argument("--no-captions", action="store_true", help="skip the MiniLM caption embeddings")
    ap.add_argument("--no-memorization", action="store_true", help="skip the memorization stage")
    ap.add_argument("--no-perturbations", action="store_true", help="skip perturbation features and tests")
    ap.add_argument("--beam-args", default="", help="Beam flags passed to run_ingest")
    ap.add_argument("--copy-share", type=float, default=0.1, help="share of samples that are exact byte copies")
    ap.add_argument("--broken-share", type=float, default=0.01, help="share of images cut in half (failed rows)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", type=Path, default=REPO / "infra" / "demo" / "sample")
    ap.add_argument("--keep", type=Path, help="keep the generated shards and outputs in this folder")
    ap.add_argument("--large-images", type=int, default=8,
                    help="run the smallest size again plus a shard of this many large images (0 = off)")
    ap.add_argument("--compare", action="store_true",
                    help="also time the plain loop (benchmarks/plain_loop.py) on the same input, and print the ratio")
    ap.add_argument("--baseline", metavar="REV", help="also time the job of this git commit (a worktree) on the same input")
    ap.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)  # inp out result: one run, in a child
    ap.add_argument("--_plain", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        run_one(Path(args._child[0]), Path(args._child[1]), args, Path(args._child[2]))
        return
    import os
    os.chdir(REPO)  # the demo config names its model relative to the repository
    if not args.no_memorization:
        ensure_demo_model(args.config)
    sizes = [int(x) for x in args.samples_list.split(",")]
    runs = [(n, 0) for n in sizes] + ([(sizes[0], args.large_images)] if args.large_images > 0 else [])
    root = args.keep or Path(tempfile.mkdtemp(prefix="shardguard-load-"))
    results, failed = [], False
    try:
        for n, n_large in runs:
            name = f"{n}-large" if n_large else f"{n}"
            inp, out, res = root / f"in-{name}", root / f"out-{name}", root / f"result-{name}.json"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            generated = generate(inp, n, args.shards_per, args.seed, args.copy_share, args.broken_share,
                                 args.sample)
            if n_large:
                generated.append(write_large_shard(inp, len(generated), n_large))
            print(f"generated {sum(generated)} samples in {len(generated)} shards in {time.perf_counter() - t0:.0f} s",
                  flush=True)
            flags = ["--config", str(args.config), "--beam-args", args.beam_args] \
                + (["--sscd", args.sscd] if args.sscd else []) + (["--no-captions"] if args.no_captions else []) \
                + (["--no-memorization"] if args.no_memorization else []) \
                + (["--no-perturbations"] if args.no_perturbations else [])
            rc, peak = measure([sys.executable, __file__, "--_child", str(inp), str(out), str(res)] + flags)
            if rc != 0:
                print(f"run of {n} samples failed (exit {rc})", flush=True)
                failed = True
                continue
            r = json.loads(res.read_text())
            ok, counts = reconcile(out, generated)
            failed |= not ok
            results.append({"n": n, "large": n_large, "generated": generated, "tree_peak_mb": peak,
                            "reconciled": ok, **r, **counts})
            print(f"{n} samples: {r['wall_s']:.0f} s, ran {', '.join(r['ran'])}", flush=True)
            if not n_large and (args.compare or args.baseline):
                results[-1]["compare"] = compare(inp, root, name, flags, args)
            if not args.keep:
                shutil.rmtree(inp, ignore_errors=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    failed |= print_table(results, args)
    sys.exit(1 if failed else 0)


def measure(cmd: list[str], cwd: Path | None = None) -> tuple[int, float]:
    """Run a child; its exit status and the peak summed RSS of its process tree (MB)."""
    proc = subprocess.Popen(cmd, cwd=cwd)
    stop, peak = threading.Event(), [0.0]
    sampler = threading.Thread(target=tree_rss_peak, args=(proc.pid, stop, peak), daemon=True)
    sampler.start()
    rc = proc.wait()
    stop.set()
    sampler.join()
    return rc, peak[0]


def compare(inp: Path, root: Path, name: str, flags: list[str], args: argparse.Namespace) -> list[dict]:
    """The same input through the plain loop (--compare) and through the job of --baseline REV
    (a git worktree of that commit, its own benchmarks/load.py child), one after the other."""
    rows = []
    if args.compare:
        res = root / f"result-{name}-plain.json"
        rc, peak = measure([sys.executable, __file__, "--_child", str(inp), str(root / "unused"), str(res),
                            "--_plain"] + flags)
        if rc == 0:
            rows.append({"what": "plain loop (per-sample work once, no Beam)", "tree_peak_mb": peak,
                         **json.loads(res.read_text())})
    if args.baseline:
        tree, out, res = root / "baseline-tree", root / f"out-{name}-baseline", root / f"result-{name}-baseline.json"
        if not tree.exists():
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), args.baseline],
                           check=True)
        try:
            config = tree / args.config.resolve().relative_to(REPO)
            rc, peak = measure([sys.executable, str(tree / "benchmarks" / "load.py"), "--_child", str(inp), str(out),
                                str(res)] + flags[2:] + ["--config", str(config)], cwd=REPO)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(out, ignore_errors=True)
        if rc == 0:
            rows.append({"what": f"job at {args.baseline}", "tree_peak_mb": peak, **json.loads(res.read_text())})
    return rows


def peak_mb(r: dict) -> float:
    return max(r["self_maxrss_mb"], r["children_maxrss_mb"], r["tree_peak_mb"])


def print_table(results: list[dict], args: argparse.Namespace) -> bool:
    """Print the table; True when the large-image run is over 1.5x the same run's peak without them."""
    if not results:
        return False
    print(f"\nload benchmark: {args.shards_per} samples per shard, {mp.cpu_count()} CPUs, config {args.config.name}, "
          f"beam args '{args.beam_args}'; ran: {', '.join(results[0]['ran'])}")
    print(f"{'run':>6} {'samples':>8} {'shards':>6} {'wall s':>8} {'samples/s':>9} {'ok':>7} {'failed':>6} "
          f"{'RSS self MB':>11} {'RSS child MB':>12} {'tree peak MB':>12}  reconciled")
    for r in results:
        print(f"{'large' if r['large'] else 'normal':>6} {r['inputs']:>8} {r['shards']:>6} {r['wall_s']:>8.1f} {r['inputs'] / r['wall_s']:>9.1f} "
              f"{r['ok']:>7} {r['failed']:>6} {r['self_maxrss_mb']:>11.0f} {r['children_maxrss_mb']:>12.0f} "
              f"{r['tree_peak_mb']:>12.0f}  {'yes' if r['reconciled'] else 'NO ' + str(r['bad_shards'])}")
    normal = [r for r in results if not r["large"]]
    if len(normal) > 1:
        lo, hi = normal[0], normal[-1]
        print(f"memory ratio {hi['inputs']} / {lo['inputs']} samples: self {hi['self_maxrss_mb'] / lo['self_maxrss_mb']:.2f}, "
              f"tree peak {peak_mb(hi) / peak_mb(lo):.2f} (flat = near 1; the input grew {hi['inputs'] / lo['inputs']:.0f}x)")
    over = False
    for big in (r for r in results if r["large"]):
        base = next((r for r in normal if r["n"] == big["n"]), None)
        if base is None:
            continue
        ratio = peak_mb(big) / peak_mb(base)
        over |= ratio > 1.5
        print(f"large images: {big['large']} (8000x8000 palette PNGs, 7000x7000 JPEGs) added to the {base['inputs']}-sample "
              f"run: peak RSS {peak_mb(big):.0f} MB vs {peak_mb(base):.0f} MB = {ratio:.2f}x "
              f"({'within' if ratio <= 1.5 else 'OVER'} the 1.5x limit)")
    for r in normal:
        if r.get("stages"):
            print(f"\nstage breakdown of the {r['inputs']}-sample run (seconds of each stage's own work, stage_timings):")
            for stage, v in r["stages"].items():
                print(f"  {stage:<48} {v['seconds']:>8.1f} s")
        if r.get("compare"):
            print(f"\nside by side on the {r['inputs']}-sample input (same machine, one after the other):")
            print(f"  {'what':<46} {'wall s':>8} {'samples/s':>9} {'peak MB':>8} {'job vs it':>9}")
            job = r["inputs"] / r["wall_s"]
            print(f"  {'this job':<46} {r['wall_s']:>8.1f} {job:>9.1f} {peak_mb(r):>8.0f} {'':>9}")
            for c in r["compare"]:
                sps = r["inputs"] / c["wall_s"]
                print(f"  {c['what'][:46]:<46} {c['wall_s']:>8.1f} {sps:>9.1f} {c['tree_peak_mb']:>8.0f} {job / sps:>8.2f}x")
                if c.get("stages"):
                    print("    " + ", ".join(f"{k} {v['seconds']:.0f}s" for k, v in c["stages"].items()))
    print("RSS self = getrusage(RUSAGE_SELF) of the run's process; RSS child = the largest of its child "
          "processes (RUSAGE_CHILDREN); tree peak = the summed RSS of the process tree, sampled every 0.5 s.")
    return over


if __name__ == "__main__":
    main()
