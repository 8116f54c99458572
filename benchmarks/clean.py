"""Clean-job throughput: `shardguard clean` against a plain tar-copy loop, one table.

    .venv/bin/python benchmarks/clean.py [--shards 16] [--strategy rt]

Input: --shards copies of the demo sample's shards (real img2dataset output), ingested
without embeddings or dedup, so every ok sample is kept. Then, on the same samples:
  plain copy loop   read each kept image by offset, write key.jpg/.txt/.json into new tars
                    (tarfile, one process): the floor for any clean job
  shardguard clean  the Beam clean job (DirectRunner): decisions, captions (--strategy, applied
                    to all samples), img2dataset tar + parquet + stats, markers, caption_variants
Images are copied byte for byte (no re-encoding). Target: >= 500 samples/s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.ingest import make_input  # noqa: E402


def plain_copy(samples, dest: Path, shard_size: int) -> int:
    handles = {}
    for n, start in enumerate(range(0, len(samples), shard_size)):
        with tarfile.open(dest / f"{n:05d}.tar", "w") as tf:
            for i, s in enumerate(samples[start:start + shard_size]):
                f = handles.get(s.uri) or handles.setdefault(s.uri, open(s.uri, "rb"))
                f.seek(s.image_offset)
                data = f.read(s.image_bytes)
                for ext, payload in (("jpg", data), ("txt", s.caption.encode()),
                                     ("json", json.dumps({"caption": s.caption}).encode())):
                    info = tarfile.TarInfo(f"{n:05d}{i:04d}.{ext}")
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
    for f in handles.values():
        f.close()
    return len(samples)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--strategy", default="rt", choices=["none", "mc", "rc", "rt", "cwr", "rna"])
    ap.add_argument("--sample", type=Path, default=REPO / "infra" / "demo" / "sample")
    args = ap.parse_args()
    from audit.captions.strategies import CaptionPolicy
    from audit.clean.shards import CleanConfig
    from audit.dedup.duplicate_clusters import DedupConfig
    from audit.embeddings.embedder_specs import EmbedConfig
    from audit.io.output_dir import OutputDir
    from pipelines.clean import kept_samples, run_clean
    from pipelines.config import JobConfig
    from pipelines.job import run_ingest
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        make_input(args.sample, args.shards, tmp / "in")
        run_ingest(str(tmp / "in"), str(tmp / "audit"), JobConfig(
            progress_seconds=0, embed=EmbedConfig(enabled=False), dedup=DedupConfig(enabled=False)))
        samples, _, _, _ = kept_samples(OutputDir(tmp / "audit"))
        (tmp / "plain").mkdir()
        t0 = time.perf_counter()
        n_plain = plain_copy(samples, tmp / "plain", args.shard_size)
        t_plain = time.perf_counter() - t0
        cfg = CleanConfig(shard_size=args.shard_size, apply_to="all", caption=CaptionPolicy(strategy=args.strategy))
        t0 = time.perf_counter()
        r = run_clean(str(tmp / "audit"), str(tmp / "clean"), cfg)
        t_clean = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (tmp / "clean").glob("*.tar")) / 2**20
    print(f"\nclean benchmark: {n_plain} samples ({args.shards} demo shards), shard size {args.shard_size}, "
          f"caption strategy {args.strategy} on all samples, images copied byte for byte, {size:.0f} MiB written")
    print(f"{'path':<20} {'samples':>8} {'seconds':>8} {'samples/s':>10} {'vs plain':>9}")
    print(f"{'plain copy loop':<20} {n_plain:>8} {t_plain:>8.2f} {n_plain / t_plain:>10.0f} {'':>9}")
    print(f"{'shardguard clean':<20} {r['written']:>8} {t_clean:>8.2f} {r['written'] / t_clean:>10.0f} "
          f"{t_clean / t_plain:>8.2f}x")
    print(f"captions changed: {r['captions_changed']}; kept {r['kept']} + dropped {r['dropped']} = {r['input']}")


if __name__ == "__main__":
    main()
