"""Classifier-free-guided denoising from random latents, recording Wen et al.'s d at each step.

Input: a DiffusionModel, prompt embeddings (n, L, D) and one seed per row. Each step runs the
conditional and the unconditional half in one batched UNet call, records
d = ||eps(x_t, e_prompt) - eps(x_t, e_empty)||_2 per row, and steps the sampler with the
guided prediction. `first_steps` stops early (prompt-only memorization detection needs only
the first steps); running all steps generates images. The starting latents depend only on the
row's seed, so a prompt's scores do not depend on how rows are batched.
"""

from __future__ import annotations

import numpy as np
import torch

from audit.memorization.config import SamplerConfig


def make_sampler(model, cfg: SamplerConfig):
    import diffusers
    if cfg.sampler == "checkpoint":
        cls = type(model.scheduler)
    else:
        cls = getattr(diffusers, cfg.sampler, None)
        if cls is None or not hasattr(cls, "set_timesteps"):
            raise ValueError(f"unknown diffusers scheduler {cfg.sampler!r}")
    sched = cls.from_config(model.scheduler.config)
    sched.set_timesteps(cfg.inference_steps)
    return sched


def seed_noise(model, seeds: list[int]) -> torch.Tensor:
    """(len(seeds), C, h, w) standard normal latents; row i depends on seeds[i] only."""
    out = [torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(out).to(model.device)


def denoise(model, emb: torch.Tensor, seeds: list[int], cfg: SamplerConfig,
            first_steps: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """(final latents, d of shape (rows, steps run)) for rows (emb[i], seeds[i])."""
    sched = make_sampler(model, cfg)
    steps = list(sched.timesteps)[: first_steps or len(sched.timesteps)]
    x = seed_noise(model, seeds) * sched.init_noise_sigma
    empty = model.empty_embedding().expand(len(emb), -1, -1)
    both = torch.cat([emb.to(model.dtype), empty])
    d = np.zeros((len(emb), len(steps)))
    for j, t in enumerate(steps):
        inp = sched.scale_model_input(x, t)
        with torch.no_grad():
            raw = model.predict(torch.cat([inp, inp]), t, both)
        n = len(emb)
        eps = model.as_eps(raw, torch.cat([inp, inp]), torch.as_tensor(t))
        d[:, j] = (eps[:n] - eps[n:]).flatten(1).norm(dim=1).cpu().numpy()
        cond, uncond = raw[:n].float(), raw[n:].float()
        guided = uncond + cfg.guidance_scale * (cond - uncond)
        x = sched.step(guided, t, x).prev_sample
    return x, d


def generate(model, prompts: list[str], seeds: list[int], cfg: SamplerConfig, batch: int = 32) -> np.ndarray:
    """(n, R, R, 3) uint8 images sampled for rows (prompts[i], seeds[i]) with every step."""
    out = []
    for i in range(0, len(prompts), batch):
        emb = model.encode_prompts(prompts[i:i + batch])
        x, _ = denoise(model, emb, seeds[i:i + batch], cfg)
        out.append(model.to_pixels(x))
    return np.concatenate(out) if out else np.zeros((0, model.resolution, model.resolution, 3), np.uint8)
