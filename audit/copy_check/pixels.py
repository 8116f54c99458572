"""Block-wise pixel agreement of two aligned grayscale images: the copy checks' last word
(audit.copy_check.verification after a keypoint alignment, audit.copy_check.inside after a template fit).

agreement(warped, target, seen): both are smoothed a little (Gaussian sigma `SMOOTH_SIGMA` px,
so blur and JPEG count as the same picture), the part of target that `seen` covers is cut into
`BLOCK` px blocks, and a textured block (pixel std >= `FLAT_STD` in either image) agrees when
both are textured and their normalized cross-correlation is >= `BLOCK_NCC` (gain and offset
free: brightness, contrast, grayscale). Output: agreeing / textured blocks, nan when no block
under `seen` is textured. Input: two 2-D arrays of one shape and a bool mask of it.

tone (`compare`): block NCC is gain-free per block, so an outline drawing agrees with its
coloured-in version (every edge is where it was; only the flat fills changed level). The
tone is the share of variance of the block means that one gain-bounded tone map explains
(audit.copy_check.alignment_free.explained: gain in [1/2, 2], any offset), over the blocks that do
not disagree (agreeing textured blocks and blocks flat in both) inside the convex hull of the
agreeing blocks, leaving out the disagreeing blocks and their 8 neighbours. So an overlay (a
caption bar, text) costs the blocks it covers and the flat parts of it next to them, not the
tone; the flat background around a picture pasted on two canvases of other colours is outside
the hull (the shared picture), while the fills of a drawing lie inside its outline; and block
means, not pixels, so that blur (which lowers a fine texture's variance) is no tone change.
Measured on the pairs the check accepted before this test (benchmarks/dedup_quality.py sets,
without the hull): copies score >= 0.90 on clip art and >= 0.87 on the photo tuning half but
for one caption-bar copy at 0.74 (block agreement 0.70); an outline drawing against its
coloured version 0.55-0.73, two glossy buttons of one design in other shades 0.64-0.78
(clip-art sources 29/76 and 20/28). Without the hull, 456 pairs of two canvas pastes of one
photo were refused on benchmarks/dedup_timing.py's 10k photos; with it, about a quarter of them.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from audit.copy_check.alignment_free import explained

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
    c = compare(warped, target, seen)
    return c.agreement, c.textured


def _hull(blocks: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows * cols,) bool: the blocks inside the convex hull of the given block indices."""
    out = np.zeros((rows, cols), np.uint8)
    if len(blocks):
        pts = np.stack([blocks % cols, blocks // cols], 1).astype(np.int32)
        cv2.fillConvexPoly(out, cv2.convexHull(pts), 1)
    return out.reshape(-1) > 0


class Comparison(NamedTuple):
    agreement: float  # agreeing / textured blocks; nan when none is textured
    textured: int     # textured blocks under seen
    tone: float       # module doc; nan when no block is textured


def compare(warped: np.ndarray, target: np.ndarray, seen: np.ndarray) -> Comparison:
    """Block agreement and tone of two aligned images under `seen` (module doc)."""
    rows, cols = seen.shape[0] // BLOCK, seen.shape[1] // BLOCK
    a = _blocks(cv2.GaussianBlur(warped.astype(np.float32), (0, 0), SMOOTH_SIGMA))
    b = _blocks(cv2.GaussianBlur(target.astype(np.float32), (0, 0), SMOOTH_SIGMA))
    inside = _blocks(seen).all(1)
    a, b = a[inside], b[inside]
    if not len(a):
        return Comparison(float("nan"), 0, float("nan"))
    ca = a - a.mean(1, keepdims=True)
    cb = b - b.mean(1, keepdims=True)
    sa, sb = np.sqrt((ca * ca).mean(1)), np.sqrt((cb * cb).mean(1))
    textured = (sa >= FLAT_STD) | (sb >= FLAT_STD)
    if not textured.any():
        return Comparison(float("nan"), 0, float("nan"))
    ncc = (ca * cb).mean(1) / np.maximum(sa * sb, 1e-6)
    agree = (sa >= FLAT_STD) & (sb >= FLAT_STD) & (ncc >= BLOCK_NCC)
    bad = np.zeros(rows * cols, np.uint8)
    bad[np.flatnonzero(inside)] = textured & ~agree
    near_bad = cv2.dilate(bad.reshape(rows, cols), np.ones((3, 3), np.uint8)).reshape(-1)[inside] > 0
    keep = ~near_bad & _hull(np.flatnonzero(inside)[agree], rows, cols)[inside]
    tone = explained(a[keep].mean(1), b[keep].mean(1)) if keep.any() else float("nan")
    return Comparison(float(agree[textured].mean()), int(textured.sum()), tone)
