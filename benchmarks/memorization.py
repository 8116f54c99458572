"""Memorization detection quality and scorer throughput, as tables.

    .venv/bin/python benchmarks/memorization.py                       # quality + CPU throughput
    .venv/bin/python benchmarks/memorization.py --device cuda --sd15  # + SD-1.5-shaped throughput

Quality: the committed tiny demo model (infra/demo/tiny_diffusion/, trained on the demo sample
with 10 planted pairs repeated in every batch). Positives = the 10 planted pairs, negatives =
every other accepted demo pair (trained-on and held-out shard 00003). Per detector setting:
ROC AUC and TPR at 1% FPR (threshold at the negatives' 99th-percentile cut).
  pair mode:   the training image noised at 1 timestep vs several (2 seeds; and the demo's 1 seed)
  prompt mode: caption only, the first 1 vs 3 DDIM steps (of 50) from random latents, 4 seeds

Throughput: pairs/s of the pair-mode scorer with one timestep and one seed (both halves in one
batched UNet call), after a warm-up batch: the tiny model on this machine's device, and with
--sd15 a Stable-Diffusion-1.5-shaped UNet, VAE and CLIP text encoder BUILT FROM THEIR CONFIGS
WITH RANDOM WEIGHTS (same compute as the real model; no weights can be had offline) at 512 px,
bf16 on CUDA. Target: >= 200 pairs/s on an H100.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "infra" / "demo"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import tiny_diffusion  # noqa: E402
from audit.memorization.detection_metrics import roc_auc, tpr_at_fpr  # noqa: E402
from audit.memorization.diffusion_models import DiffusionModel, image_pixels  # noqa: E402
from audit.memorization.scoring import ScoreConfig, score_pairs, score_prompts  # noqa: E402

SETTINGS = [
    ("pair", "1 timestep, t=500 (mid noise)", ScoreConfig(timesteps=(500,), seeds=(0, 1))),
    ("pair", "1 timestep, t=950", ScoreConfig(timesteps=(950,), seeds=(0, 1))),
    ("pair", "3 timesteps, t=900,950,999", ScoreConfig(timesteps=(900, 950, 999), seeds=(0, 1))),
    ("pair", "3 timesteps, 1 seed (demo)", ScoreConfig(timesteps=(900, 950, 999), seeds=(0,))),
    ("prompt", "first 1 step", ScoreConfig(first_steps=1, seeds=(0, 1, 2, 3))),
    ("prompt", "first 3 steps", ScoreConfig(first_steps=3, seeds=(0, 1, 2, 3))),
]


def quality(model: DiffusionModel, planted: set[str]) -> list[tuple]:
    pairs = tiny_diffusion.read_pairs(tiny_diffusion.SAMPLE)
    labels = np.array([p["key"] in planted for p in pairs])
    pixels = image_pixels([p["image"] for p in pairs], model.resolution)
    captions = [p["caption"] for p in pairs]
    rows = []
    for mode, name, cfg in SETTINGS:
        t0 = time.perf_counter()
        d = (score_pairs(model, pixels, captions, cfg) if mode == "pair" else score_prompts(model, captions, cfg)).mean(1)
        tpr, _ = tpr_at_fpr(d, labels, 0.01)
        rows.append((mode, name, int(labels.sum()), int((~labels).sum()), f"{roc_auc(d, labels):.3f}",
                     f"{tpr:.2f}", f"{len(pairs) / (time.perf_counter() - t0):.0f}"))
    return rows


def throughput(model: DiffusionModel, pairs: int, batch: int) -> float:
    cfg = ScoreConfig(timesteps=(500,), seeds=(0,), batch_rows=2 * batch)
    r = model.resolution
    pixels = torch.rand(pairs, 3, r, r, generator=torch.Generator().manual_seed(0)) * 2 - 1
    captions = [f"a photo of object number {i}" for i in range(pairs)]
    score_pairs(model, pixels[:batch], captions[:batch], cfg)  # warm-up (kernels, allocator)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    score_pairs(model, pixels, captions, cfg)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return pairs / (time.perf_counter() - t0)


def sd15_checkpoint(dest: Path) -> Path:
    """SD-1.5's UNet, VAE and text-encoder shapes (configs as published), random weights. The
    tokenizer is the demo's WordPiece one padded to 77 tokens (CLIP's BPE files are not offline;
    the text encoder's vocabulary is sized to match it, which does not change the UNet's cost)."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                         block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                         down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                         up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
                         ).save_pretrained(str(dest / "unet"), safe_serialization=True)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=512,
                  block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4
                  ).save_pretrained(str(dest / "vae"), safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(str(tiny_diffusion.COMMITTED / "tokenizer"))
    tok.model_max_length = 77
    tok.save_pretrained(str(dest / "tokenizer"))
    CLIPTextModel(CLIPTextConfig(vocab_size=tok.vocab_size, hidden_size=768, intermediate_size=3072,
                                 num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                 bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                                 pad_token_id=tok.pad_token_id)
                  ).save_pretrained(str(dest / "text_encoder"), safe_serialization=True)
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                  steps_offset=1).save_pretrained(str(dest / "scheduler"))
    return dest


def table(headers, rows) -> str:
    w = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    fmt = lambda r: " | ".join(str(x).ljust(n) for x, n in zip(r, w))  # noqa: E731
    return "\n".join([fmt(headers), "-+-".join("-" * n for n in w)] + [fmt(r) for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sd15", action="store_true", help="also time an SD-1.5-shaped model at 512 px")
    ap.add_argument("--sd15-pairs", type=int, default=2048)
    ap.add_argument("--sd15-batch", type=int, default=64, help="pairs per UNet call (2x rows)")
    ap.add_argument("--no-quality", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ck = tiny_diffusion.assemble(Path(tmp) / "tiny-diffusion")
        model = DiffusionModel.load(ck, args.device)
        planted = {p["key"] for p in json.loads((ck / "planted.json").read_text())["planted"]}
        if not args.no_quality:
            print(f"detection quality, tiny demo model {model.model_id} on {args.device}\n")
            print(table(["mode", "setting", "positives", "negatives", "ROC AUC", "TPR@1%FPR", "pairs/s"],
                        quality(model, planted)))
            print()
        rows = [("tiny demo (32 px, pixel space)", args.device, str(model.dtype).replace("torch.", ""),
                 f"{throughput(model, 1024, 128):.0f}")]
        if args.sd15:
            sd = DiffusionModel.load(sd15_checkpoint(Path(tmp) / "sd15-random"), args.device)
            n = args.sd15_pairs if args.device != "cpu" else 4
            b = args.sd15_batch if args.device != "cpu" else 2
            rows.append(("SD-1.5-shaped, random weights (512 px)", args.device, str(sd.dtype).replace("torch.", ""),
                         f"{throughput(sd, n, b):.3g}"))
        print(f"scorer throughput, pair mode, 1 timestep x 1 seed ({torch.get_num_threads()} CPU threads)\n")
        print(table(["model", "device", "dtype", "pairs/s"], rows))


if __name__ == "__main__":
    main()
