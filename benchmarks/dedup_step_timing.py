"""The dedup step alone (audit.dedup.duplicate_clusters.find_duplicates with the copy check), timed on
an output folder a job already ingested and embedded: wall and process CPU seconds and the
check's counts, so two versions of the check can be compared on the same pairs.

    .venv/bin/python benchmarks/dedup_step_timing.py OUT
    (e.g. OUT = DIR/shardguard-out of `benchmarks/dedup_timing.py --images 10000 --keep DIR`)

Input: OUT (read only: nothing is written; the feature cache is not used). Output: one table
row. Failure: an OUT without ingested samples raises.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from audit.copy_check.verification import PairVerifier  # noqa: E402
from audit.dedup.corpus import load_corpus  # noqa: E402
from audit.dedup.duplicate_clusters import DedupConfig, find_duplicates  # noqa: E402
from audit.io.output_dir import OutputDir  # noqa: E402
from audit.ingest.stored_images import stored_image_fetcher  # noqa: E402
from pipelines.shard_uris import open_uri  # noqa: E402


def main(argv: list[str]) -> int:
    out = OutputDir(argv[0])
    cfg = DedupConfig()
    corpus = load_corpus(out)
    verifier = PairVerifier(stored_image_fetcher(out, list(zip(corpus.shard, corpus.key)), open_uri),
                            cfg.copy_detection().rule)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    res = find_duplicates(corpus, cfg, "timing", verifier=verifier)
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.time() - t0
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    print(f"{'samples':>8} {'wall s':>8} {'CPU s':>8} {'checked':>8} {'vetoed':>7} {'added':>6} {'near samples':>13}")
    print(f"{len(corpus):>8} {wall:>8.1f} {cpu:>8.1f} {verifier.checked:>8} {verifier.rejected:>7} "
          f"{verifier.added:>6} {res.kinds['near'].get('samples', 0):>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["demo-out"]))
