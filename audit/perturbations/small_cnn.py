"""A small CNN and its training loop: the learning-speed test and the accuracy measurements.

Input: float32 images (N, H, W, C) in [0, 1] and int64 labels. Output: a trained model, the
per-batch training accuracy of every epoch (how fast the data is learned), optionally the accuracy
on a held-out set after every epoch (its peak: early stopping, audit.perturbations.early_stopping),
per-sample losses and held-out accuracy. Runs on CUDA when asked and present, on CPU otherwise; deterministic for a
seed on CPU. Nothing here reads files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


def small_cnn(channels: int, n_classes: int) -> nn.Module:
    """Three conv blocks (16-32-64, BatchNorm, ReLU, two 2x2 max-pools), 4x4 adaptive pooling
    that keeps coarse position, then a linear head. About 24k parameters + 1k per class: small
    enough to train in seconds on one CPU core, big enough for 98% on MNIST."""
    def block(i, o, pool):
        layers = [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
        return layers + ([nn.MaxPool2d(2)] if pool else [])
    return nn.Sequential(*block(channels, 16, True), *block(16, 32, True), *block(32, 64, False),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, n_classes))


def to_tensor(x: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """(N, H, W, C) float array -> (N, C, H, W) float32 tensor on `device`."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2).to(device)


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class TrainResult:
    model: nn.Module
    batch_accuracy: list[list[float]] = field(default_factory=list)   # per epoch, per batch
    epoch_accuracy: list[float] = field(default_factory=list)  # on `evaluate`'s set after each epoch (when given)


def train(x: np.ndarray, y: np.ndarray, n_classes: int, *, epochs: int = 5, batch: int = 64,
          lr: float = 2e-3, seed: int = 0, device: str = "auto", augment: bool = False,
          flip: bool = True, cosine: bool = False,
          evaluate: tuple[np.ndarray, np.ndarray] | None = None) -> TrainResult:
    """Adam on cross-entropy; `augment` adds 4-pixel-padded random crops and (with `flip`)
    horizontal flips, the papers' CIFAR recipe, for the accuracy measurements (no flips for
    digits). `cosine` anneals the learning rate to 0 over the run (per step): the final model
    then varies far less with the seed, which the accuracy measurements need. `evaluate` = (x, y):
    the accuracy on that set after every epoch (evaluation draws no random numbers, so training
    is the same with or without it)."""
    dev = pick_device(device)
    torch.manual_seed(seed)
    model = small_cnn(x.shape[-1], n_classes).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = to_tensor(x, dev), torch.from_numpy(np.asarray(y, dtype=np.int64)).to(dev)
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * -(-len(xt) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    result = TrainResult(model)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen).to(dev)
        accs = []
        for i in range(0, len(xt), batch):
            idx = order[i:i + batch]
            xb, yb = xt[idx], yt[idx]
            if augment:
                xb = random_crop_flip(xb, gen, flip=flip)
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            accs.append(float((logits.argmax(1) == yb).float().mean()))
        result.batch_accuracy.append(accs)
        if evaluate is not None:
            model.eval()
            result.epoch_accuracy.append(accuracy(model, *evaluate))
    model.eval()
    return result


def random_crop_flip(xb: torch.Tensor, gen: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    n, _, h, w = xb.shape
    if flip:
        flips = torch.rand(n, generator=gen) < 0.5
        xb = torch.where(flips.to(xb.device)[:, None, None, None], xb.flip(3), xb)
    padded = nn.functional.pad(xb, (pad, pad, pad, pad), mode="reflect")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    return padded[:, :, dy:dy + h, dx:dx + w]


@torch.no_grad()
def per_sample_loss(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 512) -> np.ndarray:
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(x), batch):
        logits = model(to_tensor(x[i:i + batch], dev))
        yb = torch.from_numpy(np.asarray(y[i:i + batch], dtype=np.int64)).to(dev)
        out.append(nn.functional.cross_entropy(logits, yb, reduction="none").cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Predicted class index per image (int64)."""
    dev = next(model.parameters()).device
    out = [model(to_tensor(x[i:i + batch], dev)).argmax(1).cpu().numpy() for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 512) -> float:
    return float((predict(model, x, batch) == np.asarray(y)).mean()) if len(x) else 0.0
