"""Training-time memorization filter (Wen et al., ICLR 2024, Sec. 5): inside a training step,
drop from the loss the pairs whose text-conditional noise prediction is too large.

Input per step: the UNet's conditional prediction for the batch, its unconditional prediction
(same x_t, empty prompt; no gradient needed) and the batch's timesteps. d = ||eps_c - eps_u||_2
per sample is compared with the calibrated threshold of the nearest calibrated timestep (the
memorization run's step_thresholds), or with the run's overall threshold when it has none.
Output: a keep mask, and a loss averaged over the kept samples only. Predictions must be
epsilon (convert v-predictions first, as DiffusionModel.as_eps does).

    filt = MemorizationFilter.from_store("demo-out")        # the latest memorization run
    pred = unet(x_t, t, encoder_hidden_states=cond).sample
    with torch.no_grad():
        uncond = unet(x_t, t, encoder_hidden_states=empty.expand_as(cond)).sample
    loss = filtered_loss(pred, noise, filt.keep(pred.detach(), uncond, t))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from audit.io.output_dir import OutputDir
from audit.io.store import scan


class MemorizationFilter:
    def __init__(self, threshold: float, timesteps: Sequence[int] = (), step_thresholds: Sequence[float] = ()):
        if len(timesteps) != len(step_thresholds):
            raise ValueError("timesteps and step_thresholds must have the same length")
        self.threshold = float(threshold)
        self.timesteps = torch.tensor(list(timesteps), dtype=torch.long)
        self.step_thresholds = torch.tensor(list(step_thresholds), dtype=torch.float32)

    @classmethod
    def from_store(cls, out_dir: str | Path, model_id: str | None = None) -> "MemorizationFilter":
        """The calibration of the latest memorization run (of `model_id`, when given) in OUT."""
        out = OutputDir(out_dir)
        if not any(out.table_dir("memorization_runs").glob("run=*/*.parquet")):
            raise FileNotFoundError(f"{out_dir} has no memorization run: run `shardguard run --diffusion-model ...` first")
        where = "WHERE model_id = ?" if model_id else ""
        rows = scan(f"SELECT threshold, mode, timesteps, step_thresholds FROM {out.read_sql('memorization_runs')} "
                    f"{where} ORDER BY run_id DESC LIMIT 1", [model_id] if model_id else [])
        if not rows:
            raise LookupError(f"no memorization run of model {model_id!r} in {out_dir}")
        threshold, mode, timesteps, steps = rows[0].values()
        if mode != "pair":  # prompt-mode thresholds are per denoising step, not per training timestep
            return cls(threshold)
        return cls(threshold, timesteps or (), steps or ())

    def thresholds_for(self, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1).long().cpu()
        if len(self.timesteps) == 0:
            return torch.full(t.shape, self.threshold)
        nearest = (t[:, None] - self.timesteps[None, :]).abs().argmin(1)
        return self.step_thresholds[nearest]

    @staticmethod
    def scores(eps_cond: torch.Tensor, eps_uncond: torch.Tensor) -> torch.Tensor:
        return (eps_cond.detach().float() - eps_uncond.detach().float()).flatten(1).norm(dim=1)

    def keep(self, eps_cond: torch.Tensor, eps_uncond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Boolean mask (on the predictions' device): True = train on this pair this step."""
        d = self.scores(eps_cond, eps_uncond)
        return d < self.thresholds_for(t).to(d.device)


def filtered_loss(pred: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the kept samples (zero, still differentiable, when none is kept)."""
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    kept = keep.to(per_sample.device)
    if not kept.any():
        return per_sample.sum() * 0.0
    return per_sample[kept].mean()


def load_key_list(path: str | Path) -> set[tuple[str, str]]:
    """The exported sample list (OUT/exports/memorized_samples.jsonl) as a set of (shard, key), to
    skip samples in a loader (a webdataset loader knows both: the shard id is the tar's name
    without .tar). Keys repeat across shards: a key alone names no sample."""
    rows = (json.loads(line) for line in Path(path).read_text().split("\n") if line.strip())
    return {(r["shard"], r["key"]) for r in rows}
