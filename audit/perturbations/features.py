"""Per-sample pixel statistics that availability ("unlearnable") poisons shift, for the ingest pass.

Input: one decoded image, a uint8 numpy array HxWx3 (RGB), HxWx1 or HxW (gray), at its native
resolution: nothing is ever resampled, because resampling destroys the pixel-level
perturbations these features look for. An image larger than `max_side` (default 512) on either
side is analysed on its central max_side x max_side crop (the crop's offsets are rounded down to
multiples of 8 so that it keeps the image's JPEG 8x8 grid); every feature then describes that
crop, and `extreme_positions` are reported in the ORIGINAL image's coordinates.
Output: a dict with the scalar columns named in `FEATURE_COLUMNS` (Python floats, except the int
`n_isolated_extreme`) and the list `extreme_positions`, ready to become table columns.
Failure: raises ValueError with a message for anything it cannot analyse: a wrong dtype or
channel count, or a side shorter than `MIN_SIDE` (8) pixels; the caller turns it into an errors row.
Speed: about 3 ms per 256x256x3 image on one core (3 grayscale JPEG round trips are a third of
it); OpenCV may add threads of its own, so ingest workers call cv2.setNumThreads(1).

Features (all on the BT.601 luma in 0-255 units unless said otherwise):
- jpeg_residual_q{90,75,50}: mean |luma - decode(encode(luma, q))| with OpenCV's libjpeg-turbo
  (grayscale JPEG, 4:0:0). Additive noise that JPEG cannot represent raises it (Liu et al. 2023,
  "Image Shortcut Squeezing" show JPEG removes most additive poisons).
- hf_energy_ratio: share of the AC energy of the 8x8 block DCT (on the JPEG grid, full blocks
  only) in coefficients with u + v >= 8. High for additive/patch noise, low for blurred (CUDA,
  Sadasivan et al. 2023) images.
- laplacian_mean_abs, laplacian_std, laplacian_kurtosis: 3x3 Laplacian (4-neighbour) on interior
  pixels; excess kurtosis (0 for a Gaussian; 0.0 when the Laplacian is constant).
- noise_sigma: Immerkaer (1996) "Fast noise variance estimation": sqrt(pi/2) / (6 (W-2)(H-2))
  * sum |luma * N| with N = [1,-2,1]^T [1,-2,1].
- extreme_low_fraction / extreme_high_fraction: share of channel values exactly 0 / 255.
- n_isolated_extreme, extreme_positions: the one-pixel-shortcut signature (Wu et al. 2023, "One-
  Pixel Shortcut"): pixels whose every channel is 0 or 255 (a corner colour of {0,255}^C) and
  whose L-inf distance to the channel-wise median of their 8 neighbours (mirrored at the border as
  OpenCV's BORDER_REFLECT_101; median of 8 = mean of the 4th and 5th values) is >= `ISOLATION_CONTRAST` (64). Up to
  `MAX_POSITIONS` of them, highest contrast first (ties: row, then column), as
  {"row", "col", "color" ("#rrggbb"; gray v -> "#vvvvvv"), "contrast"}.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

MAX_SIDE = 512
MIN_SIDE = 8
JPEG_QUALITIES = (90, 75, 50)
HF_MIN_FREQ = 8  # u + v >= 8 counts as high frequency
ISOLATION_CONTRAST = 64
MAX_POSITIONS = 8

FEATURE_COLUMNS: tuple[str, ...] = (
    "jpeg_residual_q90",
    "jpeg_residual_q75",
    "jpeg_residual_q50",
    "hf_energy_ratio",
    "laplacian_mean_abs",
    "laplacian_std",
    "laplacian_kurtosis",
    "noise_sigma",
    "extreme_low_fraction",
    "extreme_high_fraction",
    "n_isolated_extreme",
)


def _dct_basis(n: int = 8) -> np.ndarray:
    """Orthonormal DCT-II matrix D (rows = frequencies): coefficients = D @ block @ D.T."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)


_DCT8_T = np.ascontiguousarray(_dct_basis().T)
_UV = np.add.outer(np.arange(8), np.arange(8))
_HF_MASK = (_UV >= HF_MIN_FREQ).astype(np.float32)  # (v, u) symmetric
_IMMERKAER_K = np.array([1.0, -2.0, 1.0], dtype=np.float32)
_EXTREME_LUT = np.zeros(256, np.uint8)
_EXTREME_LUT[[0, 255]] = 255


def _validated(img: np.ndarray) -> np.ndarray:
    """HxWxC uint8 (C in {1, 3}) view of the input, or ValueError."""
    if not isinstance(img, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"expected HxW gray or HxWx3 RGB, got shape {img.shape}")
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"image {h}x{w} is too small to analyse (each side needs >= {MIN_SIDE} px)")
    return img


def crop_offsets(h: int, w: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(row, col) of the central max_side crop of an h x w image, rounded down to a multiple of 8
    (keeps the JPEG grid); 0 on a side that is not longer than max_side."""
    r0 = ((h - max_side) // 2) // 8 * 8 if h > max_side else 0
    c0 = ((w - max_side) // 2) // 8 * 8 if w > max_side else 0
    return r0, c0


def central_crop(img: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, int, int]:
    """(crop, row offset, col offset): the central max_side crop on sides longer than max_side
    (`crop_offsets`); the image itself otherwise."""
    r0, c0 = crop_offsets(*img.shape[:2], max_side)
    return img[r0: r0 + max_side, c0: c0 + max_side], r0, c0


def jpeg_residuals(luma: np.ndarray, qualities: Iterable[int] = JPEG_QUALITIES) -> dict[str, float]:
    """Mean |luma - JPEG(luma, q)| per quality (uint8 2-D luma, grayscale libjpeg-turbo)."""
    n = luma.size
    out = {}
    for q in qualities:
        ok, buf = cv2.imencode(".jpg", luma, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        if not ok:
            raise ValueError(f"JPEG encode failed at quality {q} for a {luma.shape} image")
        dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        out[f"jpeg_residual_q{q}"] = float(cv2.norm(luma, dec, cv2.NORM_L1) / n)
    return out


def hf_energy_ratio(luma: np.ndarray) -> float:
    """Share of block-DCT AC energy with u + v >= 8, over the full 8x8 blocks of a float32 luma.
    Two matrix products with the DCT basis on reshaped views (no per-block calls)."""
    h, w = (luma.shape[0] // 8) * 8, (luma.shape[1] // 8) * 8
    a = luma[:h, :w]
    bh, bw = h // 8, w // 8
    # horizontal transform: every 8-pixel row segment of every block
    t = a.reshape(-1, 8) @ _DCT8_T  # (h * bw, 8): [row, block col, u]
    # vertical transform: bring the 8 rows of each block to the last axis
    t = t.reshape(bh, 8, bw, 8).transpose(0, 2, 3, 1).reshape(-1, 8) @ _DCT8_T  # [bh, bw, u, v]
    energy = (t * t).reshape(-1, 64).sum(axis=0).reshape(8, 8)
    ac = float(energy.sum() - energy[0, 0])
    if ac <= 0.0:
        return 0.0
    return float((energy * _HF_MASK).sum() / ac)


def laplacian_stats(luma: np.ndarray) -> dict[str, float]:
    """Mean |L|, std and excess kurtosis of the 3x3 Laplacian on interior pixels."""
    lap = np.ascontiguousarray(cv2.Laplacian(luma, cv2.CV_32F, ksize=1)[1:-1, 1:-1])
    n = lap.size
    mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(lap))
    d2 = lap - np.float32(mean)
    d2 *= d2
    d2 = d2.ravel()
    m2 = float(d2.sum()) / n  # numpy's pairwise float32 sum
    kurt = float(np.dot(d2, d2)) / n / (m2 * m2) - 3.0 if m2 > 1e-12 else 0.0
    return {"laplacian_mean_abs": float(cv2.norm(lap, cv2.NORM_L1)) / n, "laplacian_std": std,
            "laplacian_kurtosis": kurt}


def noise_sigma(luma: np.ndarray) -> float:
    """Immerkaer (1996) noise standard deviation of a float32 luma (0-255 units)."""
    h, w = luma.shape
    r = cv2.sepFilter2D(luma, cv2.CV_32F, _IMMERKAER_K, _IMMERKAER_K)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2.0) * cv2.norm(r, cv2.NORM_L1) / (6.0 * (w - 2) * (h - 2)))


def _hex(color: np.ndarray) -> str:
    c = [int(v) for v in color]
    if len(c) == 1:
        c = c * 3
    return "#" + "".join(f"{v:02x}" for v in c)


def isolated_extremes(img: np.ndarray, row_offset: int = 0, col_offset: int = 0) -> tuple[int, list[dict]]:
    """(count, up to MAX_POSITIONS positions) of isolated corner-colour pixels in HxWxC uint8.

    A cheap necessary condition prunes first: contrast >= 64 on a channel at 255 needs at least
    4 of the 8 neighbours <= 191 there, so 255 - (3x3 minimum) >= 64 (for a 0: the 3x3 maximum
    >= 64); the exact 8-neighbour median is computed for the survivors only. All full-image
    steps are OpenCV calls on uint8 planes."""
    img = np.ascontiguousarray(img)
    c = img.shape[2]
    planes = cv2.split(img) if c > 1 else [img[:, :, 0]]
    corner = cv2.LUT(planes[0], _EXTREME_LUT)
    for p in planes[1:]:
        corner = cv2.bitwise_and(corner, cv2.LUT(p, _EXTREME_LUT))
    if cv2.countNonZero(corner) == 0:
        return 0, []
    k = np.ones((3, 3), np.uint8)
    emin = cv2.erode(img, k, borderType=cv2.BORDER_REFLECT_101)
    emax = cv2.dilate(img, k, borderType=cv2.BORDER_REFLECT_101)
    dev = cv2.max(cv2.subtract(img, emin), cv2.subtract(emax, img))  # saturating: one side is 0
    devs = cv2.split(dev) if c > 1 else [dev.reshape(img.shape[:2])]
    most = devs[0]
    for d in devs[1:]:
        most = cv2.max(most, d)
    _, strong = cv2.threshold(most, ISOLATION_CONTRAST - 1, 255, cv2.THRESH_BINARY)
    found = cv2.findNonZero(cv2.bitwise_and(corner, strong))
    if found is None:
        return 0, []
    cols, rows = found[:, 0, 0], found[:, 0, 1]
    pad = cv2.copyMakeBorder(img, 1, 1, 1, 1, cv2.BORDER_REFLECT_101).reshape(
        img.shape[0] + 2, img.shape[1] + 2, c)
    neigh = np.stack([pad[rows + 1 + dr, cols + 1 + dc]
                      for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc], axis=1)  # (n, 8, C)
    neigh.sort(axis=1)
    med = (neigh[:, 3].astype(np.float32) + neigh[:, 4]) / 2.0
    centre = img[rows, cols].astype(np.float32)
    contrast = np.abs(centre - med).max(axis=1)
    keep = contrast >= ISOLATION_CONTRAST
    rows, cols, contrast = rows[keep], cols[keep], contrast[keep]
    order = np.lexsort((cols, rows, -contrast))[:MAX_POSITIONS]
    positions = [
        {"row": int(rows[i]) + row_offset, "col": int(cols[i]) + col_offset,
         "color": _hex(img[rows[i], cols[i]]), "contrast": float(contrast[i])}
        for i in order
    ]
    return int(rows.size), positions


def sample_features(img: np.ndarray, max_side: int = MAX_SIDE, offset: tuple[int, int] = (0, 0)) -> dict:
    """All features of one uint8 image (see the module docstring); ValueError if it cannot be analysed.
    `offset`: where `img` lies in a larger image it was cropped from (positions are reported there)."""
    img = _validated(img)
    if max_side < MIN_SIDE:
        raise ValueError(f"max_side must be >= {MIN_SIDE}, got {max_side}")
    crop, r0, c0 = central_crop(img, max_side)
    crop = np.ascontiguousarray(crop)
    if crop.shape[2] == 3:
        luma8 = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        luma = cv2.cvtColor(crop.astype(np.float32), cv2.COLOR_RGB2GRAY)
    else:
        luma8 = np.ascontiguousarray(crop[:, :, 0])
        luma = luma8.astype(np.float32)
    feats: dict = jpeg_residuals(luma8)
    feats["hf_energy_ratio"] = hf_energy_ratio(luma)
    feats.update(laplacian_stats(luma))
    feats["noise_sigma"] = noise_sigma(luma)
    n = crop.size
    feats["extreme_low_fraction"] = float(np.count_nonzero(crop == 0) / n)
    feats["extreme_high_fraction"] = float(np.count_nonzero(crop == 255) / n)
    count, positions = isolated_extremes(crop, r0 + offset[0], c0 + offset[1])
    feats["n_isolated_extreme"] = count
    feats["extreme_positions"] = positions
    return feats


def feature_batch(images: Iterable[np.ndarray], max_side: int = MAX_SIDE) -> list[dict]:
    """`sample_features` for each image, in order; the first image that cannot be analysed
    raises its ValueError (callers that want per-image error rows call sample_features)."""
    return [sample_features(im, max_side) for im in images]
