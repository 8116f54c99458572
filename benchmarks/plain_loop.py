"""The per-sample work of `shardguard run`, done once per sample in a plain loop: the yardstick
of benchmarks/load.py's speed check (issue 22: the whole job >= 0.8x this loop's samples/s).

    .venv/bin/python benchmarks/plain_loop.py INPUT_DIR [--config infra/demo/job.yaml]

Input: a folder of img2dataset shards (NNNNN.tar) and a job config. Per shard, in one process,
no Beam, nothing written: the tar is read and every sample validated with one decode
(audit.ingest.shard_ingest, the images kept), then, in batches of embed.batch_size, each configured
embedding model on the images reduced for it or on the captions (audit.embeddings.embedder_specs), the
perturbation features (audit.perturbations.feature_stage.image_features) and the memorization
scores (audit.memorization.scoring.score_rows), as the config turns each on. Models load once.
Output: one JSON line {wall_s, samples, ok, per-part seconds}. The corpus steps (dedup, flags,
tests) are not part of it: they are per corpus, not per sample.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run(inp: Path, config) -> dict:
    import torch

    from audit.embeddings.embedder_specs import plan_embedders
    from audit.ingest.image_decode import reduced_rgb
    from audit.memorization.scoring import score_rows
    from audit.memorization.stage import load_model
    from audit.perturbations.feature_stage import image_features
    from audit.ingest.shard_ingest import ingest_shard

    device = torch.device("cpu")
    embedders = [e for spec in plan_embedders(config.embed)[0] for e in spec.load(device)]
    mem = config.memorization
    model = load_model(mem) if mem.enabled else None
    features = config.perturbations.features
    seconds = {"read+decode": 0.0, **{e.model_id: 0.0 for e in embedders}, "features": 0.0, "memorization": 0.0}
    n_in = n_ok = 0
    batch: list = []

    def work():
        images = [img for _, img in batch]
        captions = [row.get("caption") or "" for row, _ in batch]
        for e in embedders:
            t = time.perf_counter()
            e.embed([reduced_rgb(i, e.input_side) for i in images] if e.modality == "image" else captions)
            seconds[e.model_id] += time.perf_counter() - t
        if features:
            t = time.perf_counter()
            for i in images:
                image_features(i)
            seconds["features"] += time.perf_counter() - t
        if model is not None:
            t = time.perf_counter()
            for j in range(0, len(batch), mem.pairs_per_batch):
                chunk = images[j:j + mem.pairs_per_batch]
                score_rows(model, mem, captions[j:j + mem.pairs_per_batch],
                           [reduced_rgb(i, model.resolution) for i in chunk] if mem.mode == "pair" else None)
            seconds["memorization"] += time.perf_counter() - t
        batch.clear()

    def take(raw, row, image):
        batch.append((row, image))
        if len(batch) >= config.embed.batch_size:
            work()

    t0 = time.perf_counter()
    for tar in sorted(inp.glob("*.tar")):
        t = time.perf_counter()
        before = sum(seconds.values())
        res = ingest_shard(tar.stem, str(tar), "plain", limits=config.ingest, on_sample=take, keep_images=True)
        work()
        seconds["read+decode"] += time.perf_counter() - t - (sum(seconds.values()) - before)
        n_in, n_ok = n_in + res.shard["n_inputs"], n_ok + res.shard["n_ok"]
    return {"wall_s": time.perf_counter() - t0, "samples": n_in, "ok": n_ok, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input", type=Path)
    ap.add_argument("--config", type=Path, default=REPO / "infra" / "demo" / "job.yaml")
    args = ap.parse_args()
    from pipelines.config import load_config
    print(json.dumps(run(args.input, load_config(args.config, environ=None))))


if __name__ == "__main__":
    main()
