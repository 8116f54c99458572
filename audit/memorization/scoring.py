"""Memorization scores: Wen et al. (ICLR 2024), "Detecting, Explaining, and Mitigating
Memorization in Diffusion Models".

d = ||eps(x_t, e_caption) - eps(x_t, e_empty)||_2: a model that memorized a caption predicts
noise that points hard at one image whenever the caption is given, so the text-conditional part
of its prediction is large. Two detectors:

- `score_pairs`: with the training image. x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise at each
  configured timestep and noise seed; per-timestep d averaged over seeds. Output (n, T).
  Use high-noise timesteps (the default 900, 950, 999 of 1000), the regime of the first
  generation steps the paper scores: at low noise the unconditional prediction already
  recovers a memorized image from x_t, and d no longer separates (benchmarks/memorization.py:
  ROC AUC 0.27 at t=500 vs 1.00 at t=950 on the demo model).
- `score_prompts`: prompt only (the paper's main detector). The first k denoising steps from
  random latents with several seeds; per-step d averaged over seeds. Output (n, k).

Both run the conditional and unconditional halves in one batched UNet call; `batch_rows` is the
number of UNet rows per call (both halves counted). The noise of seed s is the same tensor for
every pair, so a score does not depend on batching. Failure rows: none here; the Beam stage
turns an exception on a batch into errors rows for its samples.
"""

from __future__ import annotations

import numpy as np
import torch

from audit.memorization.diffusion_sampling import denoise, seed_noise
from audit.memorization.config import MemorizationConfig, ScoreConfig
from audit.memorization.diffusion_models import image_pixels


def _encode(model, captions: list[str], chunk: int = 256) -> torch.Tensor:
    return torch.cat([model.encode_prompts(captions[i:i + chunk]) for i in range(0, len(captions), chunk)])


def score_pairs(model, pixels: torch.Tensor, captions: list[str], cfg: ScoreConfig) -> np.ndarray:
    """(n, len(timesteps)) d per pair and timestep, averaged over seeds; pixels in [-1, 1]."""
    n = len(captions)
    if n == 0:
        return np.zeros((0, len(cfg.timesteps)))
    emb = _encode(model, captions)
    empty = model.empty_embedding()
    x0 = torch.cat([model.to_model_space(pixels[i:i + 64]) for i in range(0, n, 64)])
    noise = seed_noise(model, list(cfg.seeds))
    ts = torch.tensor(cfg.timesteps, device=model.device)
    rows = [(i, j, s) for i in range(n) for j in range(len(ts)) for s in range(len(cfg.seeds))]
    out = np.zeros((n, len(ts)))
    half = cfg.batch_rows // 2
    for start in range(0, len(rows), half):
        chunk = rows[start:start + half]
        i, j, s = (torch.tensor(v, device=model.device) for v in zip(*chunk))
        t = ts[j]
        x_t = model.scheduler.add_noise(x0[i].float(), noise[s], t)
        e = torch.cat([emb[i], empty.expand(len(chunk), -1, -1)])
        with torch.no_grad():
            eps = model.predict_eps(torch.cat([x_t, x_t]), torch.cat([t, t]), e)
        d = (eps[:len(chunk)] - eps[len(chunk):]).flatten(1).norm(dim=1).cpu().numpy()
        np.add.at(out, (i.cpu().numpy(), j.cpu().numpy()), d / len(cfg.seeds))
    return out


def score_prompts(model, prompts: list[str], cfg: ScoreConfig) -> np.ndarray:
    """(n, first_steps) d per prompt and denoising step, averaged over seeds; no image needed."""
    n, seeds = len(prompts), list(cfg.seeds)
    out = np.zeros((n, cfg.first_steps))
    if n == 0:
        return out
    per_call = max(1, cfg.batch_rows // 2 // len(seeds))
    for start in range(0, n, per_call):
        chunk = prompts[start:start + per_call]
        emb = _encode(model, chunk).repeat_interleave(len(seeds), 0)
        _, d = denoise(model, emb, [s for _ in chunk for s in seeds],
                       cfg.sampler, first_steps=cfg.first_steps)
        out[start:start + len(chunk)] = d.reshape(len(chunk), len(seeds), -1).mean(1)
    return out


def score_rows(model, cfg: MemorizationConfig, captions: list[str], images: list | None) -> list[list[float]]:
    """Per-step scores of one batch: pair mode scores images with captions, prompt mode captions."""
    if cfg.mode == "prompt":
        return score_prompts(model, captions, cfg.score).tolist()
    return score_pairs(model, image_pixels(images, model.resolution), captions, cfg.score).tolist()
