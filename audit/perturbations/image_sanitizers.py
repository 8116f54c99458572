"""Sanitizers that remove availability ("unlearnable") poisons from images before training.

Input (dataset level): float images x of shape (N, H, W, C), C in {1, 3} (RGB), values in [0, 1];
`orthogonal_projection` also takes the labels y (N,). Output: a new float32 array of the same
shape in [0, 1] (the input is never modified); `orthogonal_projection` returns (x, info).
Single images for the clean-shard writer: `sanitize_image(uint8 HxWx3 (or HxW), name, **params)`
returns uint8 of the same shape, for the image-level sanitizers only.
Failure: ValueError with a message for a wrong rank, channel count or value range, an unknown
sanitizer or parameter, and for orthogonal projection asked per image or given fewer than two
classes.

Sanitizers, their defaults and the poison families they target (`TARGETS`):
- jpeg(quality=10): JPEG re-encode (libjpeg-turbo, 4:2:0, bit-identical to Pillow's). Image
  Shortcut Squeezing (Liu et al. 2023, ICML) uses q=10 against L-inf additive noise:
  error-minimizing, class-wise additive, autoregressive.
- grayscale(): BT.601 luma replicated to every channel (ISS's grayscale squeezing) against
  colour-coded L2/patch noise: synthetic linearly separable noise (LSP, Yu et al. 2022),
  class-wise additive colour noise.
- bit_depth(bits=2): 2**bits evenly spaced levels (round(x (L-1)) / (L-1)), ISS's low-bit
  squeezing against small L-inf noise.
- median_filter(size=3): per-channel median (border replicated) against isolated pixels:
  one-pixel shortcuts, sparse patch noise.
- sharpen_lowpass(amount=1.0, keep=0.5, sigma=1.0): unsharp mask x + amount (x - G_sigma x),
  then an orthonormal DCT-II low-pass over each image/channel that keeps the lowest `keep`
  fraction of frequencies along each axis; against convolution-based poisons (class-wise 3x3
  blur filters, CUDA, Sadasivan et al. 2023) and the high-frequency part of additive noise.
  With a clean labelled reference, audit/perturbations/class_deconvolution.py inverts each class's fitted
  kernel instead, which recovers far more of a CUDA poison's damage.
- orthogonal_projection (dataset level only): Sandoval-Segura et al. 2023, "What Can We Learn
  from Unlearnable Datasets?" (NeurIPS), reference code psandovalsegura/learn-from-unlearnable
  (orthogonal_projection_step_1.py, utils_projection.py). As there: a bias-free linear model on
  the flattened [0, 1] images, SGD lr 0.1, batch 1024, 20 epochs, lr x0.1 at 50% and 75% of the
  epochs, cross-entropy; the class weight vectors are normalized, orthonormalized by QR and
  every image is replaced by x - Q Q^T x. Differences, all deliberate: zero initial weights
  (deterministic; the weight rows then sum to zero, so the learned span has rank K-1 and QR
  with column pivoting keeps only the numerically independent directions, where the reference
  also removes its random init's direction); a seeded shuffle each epoch (the reference's loader
  does not shuffle; a dataset sorted by class would break minibatch SGD); train accuracy is
  measured after training, not as a running mean; the result is clipped to [0, 1] (the
  reference trains on the unclipped projection; clip=False keeps it exactly orthogonal). Targets additive class-wise perturbations: LSP, OPS, class-wise
  additive (not CUDA's convolutions, which are not a fixed additive direction).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import scipy.fft
import scipy.linalg
import scipy.ndimage
import torch

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as Pillow's "L"
IMAGE_LEVEL = ("jpeg", "grayscale", "bit_depth", "median_filter", "sharpen_lowpass")


def _checked(x: np.ndarray) -> np.ndarray:
    """float32 (N, H, W, C) view/copy of x, or ValueError."""
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise ValueError(f"expected images (N, H, W, C) with C in {{1, 3}}, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected float images in [0, 1], got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
        raise ValueError("image values must be finite and lie in [0, 1]")
    return x


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def jpeg(x: np.ndarray, quality: int = 10) -> np.ndarray:
    """JPEG re-encode and decode each image at `quality` (pixels rounded to uint8 first)."""
    x = _checked(x)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    out = np.empty_like(x)
    for i, img in enumerate(x):
        u8 = _to_uint8(img)
        u8 = cv2.cvtColor(u8, cv2.COLOR_RGB2BGR) if u8.shape[2] == 3 else u8[:, :, 0]
        ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise ValueError(f"JPEG encode failed for image {i} of shape {img.shape}")
        dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        dec = cv2.cvtColor(dec, cv2.COLOR_BGR2RGB) if dec.ndim == 3 else dec[:, :, None]
        out[i] = dec.astype(np.float32) / 255.0
    return out


def grayscale(x: np.ndarray) -> np.ndarray:
    """BT.601 luma replicated to every channel (C is kept; 1-channel input is returned as a copy)."""
    x = _checked(x)
    if x.shape[3] == 1:
        return x.copy()
    luma = np.clip(x @ LUMA_WEIGHTS, 0.0, 1.0)
    return np.repeat(luma[..., None], 3, axis=3)


def bit_depth(x: np.ndarray, bits: int = 2) -> np.ndarray:
    """Quantize to 2**bits evenly spaced levels in [0, 1]."""
    x = _checked(x)
    if not 1 <= int(bits) <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    levels = float(2 ** int(bits) - 1)
    return (np.rint(x * levels) / levels).astype(np.float32)


def median_filter(x: np.ndarray, size: int = 3) -> np.ndarray:
    """Per-channel size x size median, borders replicated (OpenCV for sizes 3 and 5, SciPy else)."""
    x = _checked(x)
    if int(size) < 1 or int(size) % 2 == 0:
        raise ValueError(f"median size must be a positive odd integer, got {size}")
    size = int(size)
    if size == 1:
        return x.copy()
    if size in (3, 5):
        out = np.empty_like(x)
        for i, img in enumerate(x):
            out[i] = cv2.medianBlur(np.ascontiguousarray(img), size).reshape(img.shape)
        return out
    return scipy.ndimage.median_filter(x, size=(1, size, size, 1), mode="nearest").astype(np.float32)


def sharpen_lowpass(x: np.ndarray, amount: float = 1.0, keep: float = 0.5, sigma: float = 1.0) -> np.ndarray:
    """Unsharp-mask sharpening, then keep the lowest `keep` fraction of DCT frequencies per axis.

    The DCT-II (orthonormal) runs over H and W of the whole batch at once; coefficients with row
    index >= ceil(keep H) or column index >= ceil(keep W) are zeroed. keep=1, amount=0 is the
    identity up to float rounding."""
    x = _checked(x)
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    if amount < 0 or sigma <= 0:
        raise ValueError(f"amount must be >= 0 and sigma > 0, got amount={amount}, sigma={sigma}")
    y = x
    if amount > 0:
        blurred = scipy.ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="reflect")
        y = x + np.float32(amount) * (x - blurred)
    if keep < 1.0:
        h, w = x.shape[1:3]
        coef = scipy.fft.dctn(y, type=2, axes=(1, 2), norm="ortho", workers=1)
        coef[:, int(np.ceil(keep * h)):] = 0.0
        coef[:, :, int(np.ceil(keep * w)):] = 0.0
        y = scipy.fft.idctn(coef, type=2, axes=(1, 2), norm="ortho", workers=1)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def fit_linear_classifier(
    x: np.ndarray, y: np.ndarray, epochs: int = 20, lr: float = 0.1, batch_size: int = 1024, seed: int = 0,
    threads: int | None = 1,
) -> tuple[np.ndarray, float, int]:
    """(weights (K, D) float32, train accuracy, steps) of a bias-free multinomial logistic
    regression on flattened x (N, D) with labels 0..K-1: zero init, SGD on seeded shuffles,
    lr x0.1 at 50% and 75% of the epochs (the reference recipe).

    `threads`: torch intra-op threads while fitting, restored afterwards (1 by default: the
    steps are small matrix products that extra threads slow down on a busy machine, and the
    result does not depend on the machine's core count; None keeps torch's setting)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _fit(x, y, epochs, lr, batch_size, seed)
    finally:
        torch.set_num_threads(previous)


def _fit(
    x: np.ndarray, y: np.ndarray, epochs: int, lr: float, batch_size: int, seed: int
) -> tuple[np.ndarray, float, int]:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    k = int(yt.max()) + 1
    w = torch.zeros(k, xt.shape[1], dtype=torch.float32, requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(epochs * 0.5), int(epochs * 0.75)], gamma=0.1)
    gen = torch.Generator().manual_seed(seed)
    steps = 0
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            loss = torch.nn.functional.cross_entropy(xt[idx] @ w.T, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        sched.step()
    with torch.no_grad():
        acc = float((torch.cat([(b @ w.T).argmax(1) for b in xt.split(8192)]) == yt).float().mean())
    return w.detach().numpy().copy(), acc, steps


def class_basis(weights: np.ndarray, rtol: float = 1e-4) -> np.ndarray:
    """Orthonormal basis (D, rank) of the span of the class weight vectors: rows normalized,
    QR with column pivoting, directions with |R_ii| <= rtol |R_00| dropped as dependent."""
    w = np.asarray(weights, dtype=np.float64)
    norms = np.linalg.norm(w, axis=1)
    w = w[norms > 0] / norms[norms > 0, None]
    if len(w) == 0:
        return np.zeros((weights.shape[1], 0), np.float32)
    q, r, _ = scipy.linalg.qr(w.T, mode="economic", pivoting=True)
    d = np.abs(np.diag(r))
    rank = int(np.count_nonzero(d > rtol * d[0]))
    return q[:, :rank].astype(np.float32)


def project_out(x: np.ndarray, basis: np.ndarray, clip: bool = True, chunk: int = 4096) -> np.ndarray:
    """x - Q Q^T x on flattened images (any (N, ...) float array), optionally clipped to [0, 1]."""
    flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    out = np.empty_like(flat)
    for s in range(0, len(flat), chunk):
        b = flat[s: s + chunk]
        out[s: s + chunk] = b - (b @ basis) @ basis.T
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out.reshape(np.shape(x))


def orthogonal_projection(
    x: np.ndarray, y: np.ndarray, epochs: int = 20, lr: float = 0.1, batch_size: int = 1024,
    seed: int = 0, clip: bool = True, threads: int | None = 1,
) -> tuple[np.ndarray, dict]:
    """Sandoval-Segura et al. 2023 orthogonal projection (see the module docstring).

    Returns (projected x, info) with info = {"train_accuracy": accuracy of the fitted linear model
    on (x, y) before projection, "rank": number of directions removed, "basis": (D, rank) float32
    orthonormal directions (flattened H*W*C order), "classes": the label values in model order,
    "steps": SGD steps}."""
    x = _checked(x)
    y = np.asarray(y)
    if y.shape != (len(x),):
        raise ValueError(f"labels must have shape ({len(x)},), got {y.shape}")
    classes, yi = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"orthogonal projection needs at least 2 classes, got {len(classes)}")
    flat = x.reshape(len(x), -1)
    weights, acc, steps = fit_linear_classifier(
        flat, yi, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, threads=threads)
    basis = class_basis(weights)
    out = project_out(x, basis, clip=clip)
    info = {"train_accuracy": acc, "rank": int(basis.shape[1]), "basis": basis, "classes": classes, "steps": steps}
    return out, info


SANITIZERS: dict[str, Callable[..., np.ndarray | tuple[np.ndarray, dict]]] = {
    "jpeg": jpeg,  # quality=10
    "grayscale": grayscale,  # no parameters
    "bit_depth": bit_depth,  # bits=2
    "median_filter": median_filter,  # size=3
    "sharpen_lowpass": sharpen_lowpass,  # amount=1.0, keep=0.5, sigma=1.0
    "orthogonal_projection": orthogonal_projection,  # (x, y) -> (x, info); dataset level only
}

TARGETS: dict[str, tuple[str, ...]] = {
    "jpeg": ("error_minimizing", "classwise_additive", "autoregressive"),
    "grayscale": ("lsp", "classwise_additive"),
    "bit_depth": ("error_minimizing", "classwise_additive"),
    "median_filter": ("one_pixel", "lsp"),
    "sharpen_lowpass": ("cuda_blur", "classwise_additive"),
    "orthogonal_projection": ("lsp", "one_pixel", "classwise_additive"),
}


def sanitize_image(img: np.ndarray, name: str, **params) -> np.ndarray:
    """One uint8 image (HxWx3 RGB, HxWx1 or HxW gray) through an image-level sanitizer; uint8
    of the same shape. ValueError for dataset-level or unknown sanitizers and bad input."""
    if name == "orthogonal_projection":
        raise ValueError("orthogonal_projection is dataset-level (it fits a model on all images and "
                         "labels): call orthogonal_projection(x, y) on the whole dataset")
    if name not in IMAGE_LEVEL:
        raise ValueError(f"unknown sanitizer {name!r}; image-level ones: {', '.join(IMAGE_LEVEL)}")
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise ValueError(f"expected a uint8 HxWx3 or HxW image, got {img.dtype} {img.shape}")
    x = (img.reshape(img.shape[0], img.shape[1], -1).astype(np.float32) / 255.0)[None]
    try:
        out = SANITIZERS[name](x, **params)
    except TypeError as e:  # unknown keyword
        raise ValueError(f"bad parameters for {name}: {e}") from e
    return _to_uint8(out[0]).reshape(img.shape)
