"""Keypoint-free evidence for the copy check (audit.copy_check.verification): does any frame close
to the identity map one image onto the other so that their pixels agree?

Flat drawings (flags, pictograms, signal figures drawn from one template) give SIFT too few
keypoints to align, so the keypoint check has no evidence and SSCD, which confuses such
drawings at cosine 0.75-0.9, would keep its word. Small images of flat colour need no
keypoints to be compared: at `THUMB` px a mild copy (resize, JPEG, blur, flip, a crop keeping
>= 80% of each side, brightness/contrast/grayscale) is the same picture up to a shift, a scale
near 1 and a tone change, and another drawing is not.

fit(a, b): both grayscale thumbnails (longer side THUMB px, Gaussian sigma 1 px) are tried
mirrored and not, the one shrunk by each of `SCALES` inside the other (edge-replicated when it
does not fit), the shift found by template matching (zero-mean NCC). At the best shift of each
trial, B's window is fitted on A by least squares with the gain clamped to [1/MAX_GAIN,
MAX_GAIN] (jitter, grayscale and JPEG change the tone a little; two unrelated two-tone stripes
correlate perfectly but need any gain), and fit = the largest share of variance explained, 1 -
SSE / max(var B, var(gain * A)), over the trials. 1 is a copy, <= 0 no relation.
Input: two 2-D uint8 arrays (any sizes >= 1 px). Output: a float in (-inf, 1], nan when both
thumbnails are flat (nothing to compare). Cost: ~1-2 ms per pair (10 template matches at 64 px).
Heavy crops, rotations and pastes are not in this family: this evidence is only used when
keypoints cannot align the pair, and only to veto (CopyRule.min_fit), never to add a pair.
"""

from __future__ import annotations

import cv2
import numpy as np

THUMB = 64
SCALES = (1.0, 0.9, 0.8)
MAX_GAIN = 2.0


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """(h, w) uint8 -> float32 thumbnail, longer side THUMB px, lightly smoothed."""
    h, w = gray.shape
    s = THUMB / max(h, w)
    t = cv2.resize(gray, (max(2, round(w * s)), max(2, round(h * s))), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(t.astype(np.float32), (0, 0), 1.0)


def explained(a: np.ndarray, b: np.ndarray) -> float:
    """Share of B's variance explained by gain * A + offset, gain clamped to [1/MAX_GAIN,
    MAX_GAIN]; nan when both are flat. a, b: float arrays of one shape."""
    da, db = a - a.mean(), b - b.mean()
    va, vb = float((da * da).mean()), float((db * db).mean())
    if va < 1e-3 and vb < 1e-3:
        return float("nan")
    g = float(np.clip((da * db).mean() / max(va, 1e-6), 1 / MAX_GAIN, MAX_GAIN))
    r = db - g * da
    return 1.0 - float((r * r).mean()) / max(vb, va * g * g, 1e-6)


def _best_window(small: np.ndarray, big: np.ndarray, scale: float) -> float:
    if scale != 1.0:
        h, w = small.shape
        small = cv2.resize(small, (max(2, round(w * scale)), max(2, round(h * scale))), interpolation=cv2.INTER_AREA)
    ph, pw = max(0, small.shape[0] - big.shape[0]), max(0, small.shape[1] - big.shape[1])
    if ph or pw:
        big = cv2.copyMakeBorder(big, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2, cv2.BORDER_REPLICATE)
    res = cv2.matchTemplate(big, small, cv2.TM_CCOEFF_NORMED)
    x, y = cv2.minMaxLoc(res)[3]
    return explained(small, big[y:y + small.shape[0], x:x + small.shape[1]])


def fit(ta: np.ndarray, tb: np.ndarray, enough: float = float("inf")) -> float:
    """Best explained variance of B by A over the near-identity frames (module doc); ta and tb
    are `thumbnail`s. Stops at the first frame that reaches `enough` (then returns that
    frame's value: a lower bound of the best, as good as the best for a threshold <= enough)."""
    best = float("nan")
    for a in (ta, np.ascontiguousarray(ta[:, ::-1])):
        for s in SCALES:
            for small, big in ((a, tb), (tb, a)) if s != 1.0 else ((a, tb),):
                v = _best_window(small, big, s)
                if not np.isnan(v) and not v <= best:
                    best = v
                    if best >= enough:
                        return best
    return best
