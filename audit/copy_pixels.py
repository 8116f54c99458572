"""Block-wise pixel agreement of two aligned grayscale images: the copy checks' last word
(audit.copy_verification after a keypoint alignment, audit.copy_inside after a template fit).

agreement(warped, target, seen): both are smoothed a little (Gaussian sigma `SMOOTH_SIGMA` px,
so blur and JPEG count as the same picture), the part of target that `seen` covers is cut into
`BLOCK` px blocks, and a textured block (pixel std >= `FLAT_STD` in either image) agrees when
both are textured and their normalized cross-correlation is >= `BLOCK_NCC` (gain and offset
free: brightness, contrast, grayscale). Output: agreeing / textured blocks, nan when no block
under `seen` is textured. Input: two 2-D arrays of one shape and a bool mask of it.
"""

from __future__ import annotations

import cv2
import numpy as np

BLOCK = 16
FLAT_STD = 4.0
BLOCK_NCC = 0.6
SMOOTH_SIGMA = 1.5


def _blocks(x: np.ndarray) -> np.ndarray:
    h, w = (x.shape[0] // BLOCK) * BLOCK, (x.shape[1] // BLOCK) * BLOCK
    return x[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).swapaxes(1, 2).reshape(-1, BLOCK * BLOCK)


def agreement(warped: np.ndarray, target: np.ndarray, seen: np.ndarray) -> float:
    """Share of the textured blocks under `seen` whose smoothed pixels correlate (module doc)."""
    return block_agreement(warped, target, seen)[0]


def block_agreement(warped: np.ndarray, target: np.ndarray, seen: np.ndarray) -> tuple[float, int]:
    """(agreement, number of textured blocks it rests on)."""
    a = _blocks(cv2.GaussianBlur(warped.astype(np.float32), (0, 0), SMOOTH_SIGMA))
    b = _blocks(cv2.GaussianBlur(target.astype(np.float32), (0, 0), SMOOTH_SIGMA))
    inside = _blocks(seen).all(1)
    a, b = a[inside], b[inside]
    if not len(a):
        return float("nan"), 0
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    sa, sb = np.sqrt((a * a).mean(1)), np.sqrt((b * b).mean(1))
    textured = (sa >= FLAT_STD) | (sb >= FLAT_STD)
    if not textured.any():
        return float("nan"), 0
    ncc = (a * b).mean(1) / np.maximum(sa * sb, 1e-6)
    agree = (sa >= FLAT_STD) & (sb >= FLAT_STD) & (ncc >= BLOCK_NCC)
    return float(agree[textured].mean()), int(textured.sum())
