"""A second way to confirm a copy candidate when keypoints cannot: find one image inside the
other by scaled template matching, refine the fit, and let the pixels decide.

Why: the keypoint check (audit.copy_verification) needs `CopyRule.add_inliers` RANSAC inliers.
A tight crop of a smooth photo (an off-centre quarter of a fruit, a sky, a defocused page) has
4-40 SIFT keypoints at 320 px, so it can never get them, although it is an exact piece of the
larger picture. On the tuning half of the photo benchmark (benchmarks/photo_set.py, seeds 0-1)
that was the cause of every missed off-centre crop but one. Crops, resized copies and pastes on
a canvas are one picture inside the other at one scale, so a search over position and scale
finds them without keypoints.

Input: two `Prepared` images (gray at copy_verification.MAX_SIDE on the longer side).
Output: `inside_agreement` -> the block agreement (audit.copy_pixels.agreement)
of the best fit (0 when the fit does not also explain `MIN_TONE` of the variance at a bounded
gain, audit.copy_alignment_free.explained: block NCC is gain-free, so two flags of one layout
in other colours would agree), nan when no fit was possible (images too small) or the fit
rests on fewer than `MIN_TEXTURED` textured blocks (a band edge of a flat flag is no evidence).
Failure: an OpenCV error in the refinement keeps the
template match's fit; nothing raises for ordinary images.

Method: the smaller image (by the scale at which it fits inside the larger one) is resized to
`STEPS` scales from "fills the larger image" down to `MIN_KEEP` of its side, matched by
normalized cross-correlation (cv2.matchTemplate) at every position; the best match seeds an
affine ECC refinement (cv2.findTransformECC), and the larger image warped into the smaller
one's frame is compared block by block as in the keypoint check. Both directions are tried
when either image could hold the other. Cost: ~10-40 ms per pair at 320 px.
"""

from __future__ import annotations

import cv2
import numpy as np

from typing import TYPE_CHECKING

from audit.copy_alignment_free import explained
from audit.copy_pixels import block_agreement

if TYPE_CHECKING:
    from audit.copy_verification import Prepared

STEPS = 12       # template scales tried per direction (geometric, ~10% apart)
MIN_KEEP = 0.3   # the contained image spans at least this share of the larger one's side
MIN_SIDE = 24    # px: a smaller template carries too little to match
ECC_ITERATIONS = 50
MIN_TEXTURED = 36  # textured 16 px blocks the fit must be checked on (tuning crops: >= 43; flag look-alikes: <= 28)
MIN_TONE = 0.8   # the fit must also explain this share of the variance at a bounded gain (flat drawings)


def _best_match(big: np.ndarray, small: np.ndarray) -> tuple[float, np.ndarray] | None:
    """(ncc, 2x3 map from small's pixels to big's) of the best scaled placement, or None."""
    (bh, bw), (h, w) = big.shape, small.shape
    fit = min(bw / w, bh / h)
    best = None
    for s in np.geomspace(fit, fit * MIN_KEEP, STEPS):
        tw, th = int(round(w * s)), int(round(h * s))
        if min(tw, th) < MIN_SIDE or tw > bw or th > bh:
            continue
        tmpl = cv2.resize(small, (tw, th), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        _, val, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(big, tmpl, cv2.TM_CCOEFF_NORMED))
        if best is None or val > best[0]:
            best = (float(val), np.array([[tw / w, 0, x], [0, th / h, y]], np.float32))
    return best


def inside_agreement(a: "Prepared", b: "Prepared") -> float:
    """Block agreement of the best fit of one image inside the other (module doc); nan if none."""
    fits = []
    for big, small in ((a.gray, b.gray), (b.gray, a.gray)):
        found = _best_match(big, small)
        if found is not None:
            fits.append((found[0], big, small, found[1]))
    if not fits:
        return float("nan")
    _, big, small, warp = max(fits, key=lambda f: f[0])
    try:
        _, warp = cv2.findTransformECC(small.astype(np.float32), big.astype(np.float32), warp, cv2.MOTION_AFFINE,
                                       (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, 1e-4),
                                       None, 5)
    except cv2.error:  # did not converge: keep the template match's placement
        pass
    h, w = small.shape
    inverse = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(big, warp, (w, h), flags=inverse)
    seen = cv2.warpAffine(np.ones(big.shape, np.uint8), warp, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    seen = cv2.erode(seen, np.ones((5, 5), np.uint8)) > 0
    if seen.any() and explained(warped[seen].astype(np.float32), small[seen].astype(np.float32)) < MIN_TONE:
        return 0.0  # other tones under the fit (two flags of one layout): block NCC alone is gain-free
    agree, textured = block_agreement(warped, small, seen)
    return agree if textured >= MIN_TEXTURED else float("nan")  # too little texture to be evidence
