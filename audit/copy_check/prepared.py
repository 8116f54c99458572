"""One image made ready for the copy check (audit.copy_check.verification): decoded once, scaled to
`MAX_SIDE` px on the longer side, gray, SIFT keypoints and the ink mask.

Input: encoded image bytes (`prepare`), decoded under ingest's header guards
(audit.ingest.image_decode.open_image). Output: a `Prepared` (gray, keypoint positions in its frame,
uint8 SIFT descriptors, ink mask; its mirror image and 64 px thumbnail made on demand), the
unit that the keypoint check, the inside search (audit.copy_check.inside) and the feature cache
(audit.copy_check.feature_cache) work on. Failure: bytes that do not decode give None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from audit.copy_check import alignment_free as copy_alignment_free
from audit.ingest.image_decode import open_image

MAX_SIDE = 320
N_FEATURES = 600
SIFT_SIDE = 240  # keypoints are detected at this longer side, positions given in the MAX_SIDE frame
PREPARE_VERSION = 3  # bump when prepare()'s output changes at the same constants (feature cache)


@dataclass
class Prepared:
    gray: np.ndarray          # (h, w) uint8, longer side MAX_SIDE
    points: np.ndarray        # (n, 2) float32 keypoint positions (x, y)
    descriptors: np.ndarray | None  # (n, 128) uint8 SIFT (RootSIFT at matching: root_sift)
    ink: np.ndarray           # (h, w) bool
    _mirrored: "Prepared | None" = field(default=None, repr=False)
    _thumb: np.ndarray | None = field(default=None, repr=False)

    def thumbnail(self) -> np.ndarray:
        """copy_alignment_free.thumbnail of `gray`, made once."""
        if self._thumb is None:
            self._thumb = copy_alignment_free.thumbnail(self.gray)
        return self._thumb

    def mirrored(self) -> "Prepared":
        """The same image flipped left-right. SIFT is not flip-invariant, but a flipped patch's
        descriptor is a permutation of the patch's own (`mirror_descriptors`), so the keypoints
        are mirrored rather than detected again (a second SIFT pass would double the cost)."""
        if self._mirrored is None:
            pts = self.points.copy()
            pts[:, 0] = self.gray.shape[1] - 1 - pts[:, 0]
            desc = None if self.descriptors is None else mirror_descriptors(self.descriptors)
            self._mirrored = Prepared(np.ascontiguousarray(self.gray[:, ::-1]), pts, desc,
                                      np.ascontiguousarray(self.ink[:, ::-1]))
        return self._mirrored


def _features(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Keypoint positions (in `gray`'s frame) and their SIFT descriptors as uint8 (OpenCV's are
    whole numbers in [0, 255] held as float32: exact, a quarter of the memory and of the
    feature cache). Detected on `gray` scaled to SIFT_SIDE px: OpenCV's SIFT doubles its input
    first, so its cost grows with the square of the side; 240 instead of 320 costs about half
    as much (the dedup step's CPU on benchmarks/dedup_timing.py's 10k photos: -25%), with the
    same photo tuning-half and clip-art results (benchmarks/dedup_quality.py) and pairwise
    recall on the 10k set 0.856 vs 0.858 (precision 1.000 both; 160 px: 0.850)."""
    scale = SIFT_SIDE / max(gray.shape)
    small = gray if scale >= 1 else cv2.resize(
        gray, (max(8, round(gray.shape[1] * scale)), max(8, round(gray.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    keypoints, desc = cv2.SIFT_create(nfeatures=N_FEATURES).detectAndCompute(small, None)
    if desc is not None:
        desc = np.clip(np.rint(desc), 0, 255).astype(np.uint8)
    pts = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
    if small is not gray:
        pts *= np.array([gray.shape[1] / small.shape[1], gray.shape[0] / small.shape[0]], np.float32)
    return pts, desc


# SIFT's descriptor is a 4x4 grid of 8-bin orientation histograms in the keypoint's own frame
# (rows along its orientation's normal, columns along it, bins counter-clockwise from it). A
# left-right flip mirrors that frame: the grid's rows reverse and bin b becomes bin -b (mod 8).
_MIRROR = np.arange(128).reshape(4, 4, 8)[::-1][:, :, (-np.arange(8)) % 8].reshape(-1)


def mirror_descriptors(desc: np.ndarray) -> np.ndarray:
    """(n, 128) SIFT/RootSIFT descriptors of keypoints -> those of the same keypoints in the
    left-right mirrored image (checked against SIFT run on a mirrored image in the tests)."""
    return np.ascontiguousarray(desc[:, _MIRROR])


def ink_mask(rgb: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """'Ink' (module doc, 3): dark (gray < 200) or strongly coloured (max - min channel > 60)."""
    r, g, b = cv2.split(rgb)
    chroma = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
    return (gray < 200) | (chroma > 60)


def prepare(data: bytes) -> Prepared | None:
    """Decode (first frame, RGB, longer side scaled to MAX_SIDE), keypoints and the ink mask."""
    try:
        with open_image(data) as im:  # ingest's header guards: bomb, format, geometry, memory
            im.draft("RGB", (MAX_SIDE, MAX_SIDE))
            rgb = np.asarray(im.convert("RGB"))
    except Exception:
        return None
    scale = MAX_SIDE / max(rgb.shape[:2])  # one scale for all: keypoint sizes and radii compare
    if scale != 1:
        rgb = cv2.resize(rgb, (max(8, round(rgb.shape[1] * scale)), max(8, round(rgb.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    points, desc = _features(gray)
    return Prepared(gray, points, desc, ink_mask(rgb, gray))
