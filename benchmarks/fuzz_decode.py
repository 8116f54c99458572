"""Decode fuzz benchmark: mutants of real JPEG/PNG/WebP files through ingest's per-sample validation.

    .venv/bin/python benchmarks/fuzz_decode.py [--count 100000] [--workers 2] [--seed 0]

Input: real images (tests/image_mutations.seed_images: demo-sample JPEGs, and PNG and WebP made
from them with EXIF, ICC and XMP) and the mutations of tests/image_mutations.py (bit flips, byte
insert/delete, truncation, EXIF/ICC/XMP segment and chunk payload edits, hostile EXIF IFDs,
segment/chunk length edits), seeded: chunk i of 1000 mutants uses seed * 1000003 + i, so a
count and a seed name the same mutants on any number of workers.
Each mutant is one webdataset sample (image + caption) through `audit.ingest.sample_validation.
validate_sample` (exactly what ingest runs per sample) and through `audit.ingest.image_decode.decode_rgb`
with a model side of 144 (what embed, features, memorization and replication run).
Output: one table per path: format, mutants, ok, failed (by error_type), escapes (an exception
out of the function, or a row that breaks the one-samples-row / one-errors-row-when-failed
contract), then the peak RSS of the largest worker. Failure: exit status 1 when anything escaped.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import resource
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHUNK = 1000
MODEL_SIDE = 144


def run_chunk(args: tuple[int, int, int]) -> dict:
    """Mutants [start, start + n) of chunk `index`: per format, outcome counts and escapes."""
    import random

    from audit.ingest.image_decode import ImageRejected, decode_rgb
    from audit.ingest.sample_validation import IngestLimits, validate_sample
    from audit.ingest.tar_samples import RawSample
    from tests.image_mutations import EXT, FORMATS, mutate, seed_images
    warnings.simplefilter("ignore")
    seed, index, n = args
    seeds = _SEEDS or seed_images()
    rng = random.Random(seed * 1_000_003 + index)
    limits = IngestLimits()
    ingest: dict = collections.defaultdict(collections.Counter)
    later: dict = collections.defaultdict(collections.Counter)
    examples: list[str] = []
    for i in range(n):
        fmt = FORMATS[(index * CHUNK + i) % len(FORMATS)]
        data, kind = mutate(rng.choice(seeds[fmt]), fmt, rng)
        raw = RawSample(f"m{index}-{i}", files={EXT[fmt]: data, "txt": b"a fuzzed sample"})
        ingest[fmt]["mutants"] += 1
        later[fmt]["mutants"] += 1
        try:
            row, err = validate_sample(raw, "fuzz", "r", limits)
            one_row = row["key"] == raw.key and (
                (row["status"] == "ok" and err is None) or
                (row["status"] == "failed" and err is not None and err["key"] == raw.key and err["stage"]))
            ingest[fmt]["ok" if row["status"] == "ok" else err["error_type"]] += 1
            if not one_row:
                ingest[fmt]["escapes"] += 1
                examples.append(f"ingest {fmt} {kind}: bad rows {row} {err}")
        except BaseException as e:  # an escape: what the benchmark is here to find
            ingest[fmt]["escapes"] += 1
            examples.append(f"ingest {fmt} {kind}: {type(e).__name__}: {e}")
        try:
            decode_rgb(data, limits.image, MODEL_SIDE)
            later[fmt]["ok"] += 1
        except ImageRejected as e:
            later[fmt][e.error_type] += 1
        except BaseException as e:
            later[fmt]["escapes"] += 1
            examples.append(f"later {fmt} {kind}: {type(e).__name__}: {e}")
    return {"ingest": ingest, "later": later, "examples": examples[:5],
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


_SEEDS: dict = {}


def _init() -> None:
    from tests.image_mutations import seed_images
    _SEEDS.update(seed_images())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=100_000, help="mutants in all (100000)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    jobs = [(args.seed, i, min(CHUNK, args.count - i * CHUNK)) for i in range(-(-args.count // CHUNK))]
    t0 = time.perf_counter()
    totals = {"ingest": collections.defaultdict(collections.Counter), "later": collections.defaultdict(collections.Counter)}
    examples, peak = [], 0.0
    with mp.get_context("spawn").Pool(args.workers, initializer=_init) as pool:
        for done, res in enumerate(pool.imap_unordered(run_chunk, jobs), 1):
            for path in totals:
                for fmt, c in res[path].items():
                    totals[path][fmt].update(c)
            examples += res["examples"]
            peak = max(peak, res["maxrss_mb"])
            if done % 20 == 0:
                print(f"{done * CHUNK} mutants, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    escapes = sum(c["escapes"] for t in totals.values() for c in t.values())
    print(f"decode fuzz: {args.count} mutants (seed {args.seed}), {args.workers} workers, {wall:.0f} s "
          f"({args.count / wall:.0f} mutants/s)")
    for path, title in (("ingest", "validate_sample (ingest, per sample)"),
                        ("later", f"decode_rgb(min_side={MODEL_SIDE}) (embed, features, memorization, replication)")):
        print(f"\n{title}")
        print("| format | mutants | ok | failed | failed by error_type | escapes |")
        print("| --- | ---: | ---: | ---: | --- | ---: |")
        for fmt in sorted(totals[path]):
            c = totals[path][fmt]
            n = c["mutants"]
            failed = {k: v for k, v in c.items() if k not in ("ok", "escapes", "mutants")}
            by = ", ".join(f"{k} {v}" for k, v in sorted(failed.items(), key=lambda kv: -kv[1]))
            print(f"| {fmt} | {n} | {c['ok']} | {sum(failed.values())} | {by} | {c['escapes']} |")
    print(f"\npeak RSS of the largest worker: {peak:.0f} MB; escapes: {escapes}")
    for e in examples[:10]:
        print("escape:", e[:300])
    sys.exit(1 if escapes else 0)


if __name__ == "__main__":
    main()
