"""A second way to confirm a copy candidate when keypoints cannot: find one image inside the
other by scaled template matching, refine the fit, and let the pixels decide.

Why: the keypoint check (audit.copy_check.verification) needs `CopyRule.add_inliers` RANSAC inliers.
A tight crop of a smooth photo (an off-centre quarter of a fruit, a sky, a defocused page) has
4-40 SIFT keypoints at 320 px, so it can never get them, although it is an exact piece of the
larger picture. On the tuning half of the photo benchmark (benchmarks/photo_set.py, seeds 0-1)
that was the cause of every missed off-centre crop but one. Crops, resized copies and pastes on
a canvas are one picture inside the other at one scale, so a search over position and scale
finds them without keypoints.

Input: two `Prepared` images (gray at copy_prepared.MAX_SIDE on the longer side).
Output: `inside_agreement` -> the block agreement (audit.copy_check.pixels.agreement)
of the best fit (0 when the fit does not also explain `MIN_TONE` of the variance at a bounded
gain, audit.copy_check.alignment_free.explained: block NCC is gain-free, so two flags of one layout
in other colours would agree), nan when no fit was possible (images too small) or the fit
rests on fewer than `MIN_TEXTURED` textured blocks (a band edge of a flat flag is no evidence).
Failure: an OpenCV error in the refinement keeps the
template match's fit; nothing raises for ordinary images.

Method: the smaller image (by the scale at which it fits inside the larger one) is resized to
`STEPS` scales from "fills the larger image" down to `MIN_KEEP` of its side, matched by
normalized cross-correlation (cv2.matchTemplate) at every position, coarse to fine: all
scales at half resolution, then the best scale again at full resolution within `COARSE` px of
its placement; the best match seeds an affine ECC refinement (cv2.findTransformECC,
`ECC_ITERATIONS` at half resolution, then `FINE_ITERATIONS` at full), and the larger image
warped into the smaller one's frame is compared block by block as in the keypoint check. Both
directions are tried when either image could hold the other. Cost: ~25 ms per pair at 320 px
(the full-resolution search over every scale with 50 full-resolution ECC steps took ~57 ms,
with the same photo tuning-half and clip-art results, benchmarks/dedup_quality.py).
"""

from __future__ import annotations

import cv2
import numpy as np

from audit.copy_check.alignment_free import explained
from audit.copy_check.pixels import block_agreement
from audit.copy_check.prepared import Prepared

STEPS = 12       # template scales tried per direction (geometric, ~10% apart)
MIN_KEEP = 0.3   # the contained image spans at least this share of the larger one's side
MIN_SIDE = 24    # px: a smaller template carries too little to match
COARSE = 3       # px: the full-resolution search around the half-resolution placement
ECC_ITERATIONS = 50  # at half resolution
FINE_ITERATIONS = 10  # then at full resolution
MIN_TEXTURED = 36  # textured 16 px blocks the fit must be checked on (tuning crops: >= 43; flag look-alikes: <= 28)
MIN_TONE = 0.8   # the fit must also explain this share of the variance at a bounded gain (flat drawings)


def _best_match(big: np.ndarray, small: np.ndarray) -> tuple[float, np.ndarray] | None:
    """(ncc, 2x3 map from small's pixels to big's) of the best scaled placement, or None.
    Coarse to fine: every scale is matched at half resolution (a quarter of the cost), then
    the best scale's template is matched again at full resolution within COARSE px of the
    coarse placement."""
    (bh, bw), (h, w) = big.shape, small.shape
    fit = min(bw / w, bh / h)
    big_half = cv2.resize(big, (max(1, bw // 2), max(1, bh // 2)), interpolation=cv2.INTER_AREA)
    best = None
    for s in np.geomspace(fit, fit * MIN_KEEP, STEPS):
        tw, th = int(round(w * s)), int(round(h * s))
        if min(tw, th) < MIN_SIDE or tw > bw or th > bh:
            continue
        hw, hh = max(1, tw // 2), max(1, th // 2)
        if hw > big_half.shape[1] or hh > big_half.shape[0]:
            continue
        tmpl = cv2.resize(small, (hw, hh), interpolation=cv2.INTER_AREA)
        _, val, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(big_half, tmpl, cv2.TM_CCOEFF_NORMED))
        if best is None or val > best[0]:
            best = (float(val), tw, th, 2 * x, 2 * y)
    if best is None:
        return None
    _, tw, th, x, y = best
    tmpl = cv2.resize(small, (tw, th), interpolation=cv2.INTER_AREA if tw < w else cv2.INTER_LINEAR)
    x0, y0 = max(0, x - COARSE), max(0, y - COARSE)
    x1, y1 = min(bw, x + tw + COARSE + 1), min(bh, y + th + COARSE + 1)
    _, val, _, (dx, dy) = cv2.minMaxLoc(cv2.matchTemplate(big[y0:y1, x0:x1], tmpl, cv2.TM_CCOEFF_NORMED))
    return float(val), np.array([[tw / w, 0, x0 + dx], [0, th / h, y0 + dy]], np.float32)


def _ecc(small: np.ndarray, big: np.ndarray, warp: np.ndarray, iterations: int) -> np.ndarray:
    try:
        return cv2.findTransformECC(small.astype(np.float32), big.astype(np.float32), warp, cv2.MOTION_AFFINE,
                                    (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-4), None, 5)[1]
    except cv2.error:  # did not converge: keep the placement it started from
        return warp


def _refine(small: np.ndarray, big: np.ndarray, warp: np.ndarray) -> np.ndarray:
    """Affine ECC refinement of `warp` (small's pixels -> big's): ECC_ITERATIONS at half
    resolution, then FINE_ITERATIONS at full resolution."""
    half = lambda x: cv2.resize(x, (max(1, x.shape[1] // 2), max(1, x.shape[0] // 2)), interpolation=cv2.INTER_AREA)
    scale = np.array([[1, 1, 0.5], [1, 1, 0.5]], np.float32)
    warp = _ecc(half(small), half(big), warp * scale, ECC_ITERATIONS) / scale
    return _ecc(small, big, warp, FINE_ITERATIONS) if FINE_ITERATIONS else warp


def inside_agreement(a: Prepared, b: Prepared) -> float:
    """Block agreement of the best fit of one image inside the other (module doc); nan if none."""
    fits = []
    for big, small in ((a.gray, b.gray), (b.gray, a.gray)):
        found = _best_match(big, small)
        if found is not None:
            fits.append((found[0], big, small, found[1]))
    if not fits:
        return float("nan")
    _, big, small, warp = max(fits, key=lambda f: f[0])
    warp = _refine(small, big, warp)
    h, w = small.shape
    inverse = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(big, warp, (w, h), flags=inverse)
    seen = cv2.warpAffine(np.ones(big.shape, np.uint8), warp, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    seen = cv2.erode(seen, np.ones((5, 5), np.uint8)) > 0
    if seen.any() and explained(warped[seen].astype(np.float32), small[seen].astype(np.float32)) < MIN_TONE:
        return 0.0  # other tones under the fit (two flags of one layout): block NCC alone is gain-free
    agree, textured = block_agreement(warped, small, seen)
    return agree if textured >= MIN_TEXTURED else float("nan")  # too little texture to be evidence
