"""Counterfactual check of a data attribution, within CPU reach: fine-tune the diffusion model
briefly WITHOUT a query's top-k attributed training samples, and again without k random ones;
if the attribution is right, the model's denoising loss on the query rises more in the first
case (the retraining test of the attribution literature, shrunk to a short fine-tune).

Input: a DiffusionModel (its UNet is copied, never changed), the training set as model-space
pixels and prompt embeddings (aligned rows), the rows to leave out, the query's pixels and
prompt embedding, `FineTune` settings. Both arms of one comparison see the same stream of
training rows (one seeded permutation, the left-out rows skipped), the same timesteps and the
same noise, so the difference between them is the left-out data.
Output: `denoising_loss` (mean epsilon MSE over fixed (timestep, noise) draws);
`compare` -> {base, without_topk, without_random, without_random_2} losses on the query
(two random arms: their gap is the noise floor).
Failure: ValueError when leaving the rows out empties the training set.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class FineTune:
    steps: int = 30
    batch: int = 16
    lr: float = 5e-4
    seed: int = 0
    eval_draws: int = 64  # (timestep, noise) draws the query's loss averages over


def denoising_loss(model, unet, x0: torch.Tensor, emb: torch.Tensor, draws: int, seed: int = 0) -> float:
    """Mean squared error of unet's epsilon on x0 (1, C, h, w, model space) under prompt emb
    (1, L, D), over `draws` seeded (timestep, noise) pairs: the same draws for every unet."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, model.scheduler.config.num_train_timesteps, (draws,), generator=g)
    noise = torch.randn((draws, *x0.shape[1:]), generator=g)
    x0, noise, t = x0.to(model.device).expand(draws, -1, -1, -1), noise.to(model.device), t.to(model.device)
    x_t = model.scheduler.add_noise(x0, noise, t)
    with torch.no_grad():
        out = unet(x_t, t, encoder_hidden_states=emb.to(model.device).expand(draws, -1, -1)).sample
    return float(torch.nn.functional.mse_loss(model.as_eps(out.float(), x_t, t), noise))


def fine_tune(model, x0: torch.Tensor, emb: torch.Tensor, leave_out, cfg: FineTune):
    """A copy of model.unet trained cfg.steps steps on the rows of (x0, emb) not in leave_out."""
    n = len(x0)
    keep = np.ones(n, bool)
    keep[np.asarray(list(leave_out), np.int64)] = False
    if not keep.any():
        raise ValueError("leaving those rows out leaves nothing to fine-tune on")
    rng = np.random.default_rng(cfg.seed)
    stream = np.concatenate([rng.permutation(n) for _ in range(cfg.steps * cfg.batch // n + 2)])
    stream = stream[keep[stream]]
    while len(stream) < cfg.steps * cfg.batch:  # a small kept set: repeat it
        stream = np.concatenate([stream, stream])
    unet = copy.deepcopy(model.unet).float().train().requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=1e-2)
    g = torch.Generator().manual_seed(cfg.seed)
    for step in range(cfg.steps):
        idx = torch.from_numpy(stream[step * cfg.batch:(step + 1) * cfg.batch])
        batch = x0[idx].to(model.device)
        noise = torch.randn(batch.shape, generator=g).to(model.device)
        t = torch.randint(0, model.scheduler.config.num_train_timesteps, (len(idx),), generator=g).to(model.device)
        x_t = model.scheduler.add_noise(batch, noise, t)
        out = unet(x_t, t, encoder_hidden_states=emb[idx].to(model.device)).sample
        loss = torch.nn.functional.mse_loss(model.as_eps(out, x_t, t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
    return unet.eval().requires_grad_(False)


def compare(model, x0: torch.Tensor, emb: torch.Tensor, topk_rows, query_x0: torch.Tensor,
            query_emb: torch.Tensor, cfg: FineTune = FineTune()) -> dict:
    """The query's loss before fine-tuning (`base`), after fine-tuning without its top-k rows
    (`without_topk`), and after fine-tuning without k random other rows, twice with different
    rows (`without_random`, `without_random_2`; seeded by cfg.seed): the gap between the two
    random arms is the noise floor of the top-k-minus-random difference."""
    topk_rows = sorted(set(int(i) for i in topk_rows))
    others = np.setdiff1d(np.arange(len(x0)), topk_rows)
    k = min(len(topk_rows), len(others))
    randoms = [np.random.default_rng(cfg.seed + j).choice(others, k, replace=False).tolist() for j in (1, 2)]
    loss = lambda unet: denoising_loss(model, unet, query_x0, query_emb, cfg.eval_draws, cfg.seed)  # noqa: E731
    return {"base": loss(model.unet),
            "without_topk": loss(fine_tune(model, x0, emb, topk_rows, cfg)),
            "without_random": loss(fine_tune(model, x0, emb, randoms[0], cfg)),
            "without_random_2": loss(fine_tune(model, x0, emb, randoms[1], cfg))}
