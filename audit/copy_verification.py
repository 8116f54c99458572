"""Geometric verification of near-duplicate (SSCD) pairs: is B the same picture as A, or a
different picture that shares most of its drawing?

SSCD is trained to ignore colour, crops and small edits, so two different pictures built from
one drawing (semaphore letters signalled by the same figure, one button in two shades, flags of
one layout) score 0.80-0.86, inside the copy band. Local features then align them well (the
shared figure), so the inlier count alone cannot tell them apart either (benchmarks/
dedup_quality.py: false pairs median 12 SIFT inliers, true pairs' 10th percentile 6). What
differs is the rest of the drawing: after alignment, part of one picture's ink has nothing
under it in the other (the arms and flags moved).

Method (per pair, both images scaled to `MAX_SIDE` px on their longer side): SIFT keypoints, Lowe's ratio test (0.8),
a RANSAC similarity transform (rotation, uniform scale, translation; cv2.estimateAffinePartial2D,
4 px) from A to B, tried on A and on A mirrored (a flipped copy), the one with more inliers
kept. With at least `min_inliers` inliers the pair is 'aligned', and its overlap is the larger
of: the share of A's ink (warped into B's frame, where B sees it) with B ink within `radius` px,
and the same for B's ink in A. 'Ink' = dark (gray < 200) or strongly coloured (max - min
channel > 60) pixels: the drawn part of a white-canvas picture, and most of a photo. The larger
of the two directions keeps copies with added content (a caption overlay adds ink to one side
only) while a picture whose drawing moved loses ink both ways.

Decision (audit.duplicate_clusters): a near pair with cosine below `verify_below` is dropped
when it is aligned and its overlap is under `min_overlap`; pairs that cannot be aligned (too
few keypoints: flat shapes, heavy edits) keep SSCD's word. Failure: undecodable bytes give
None from `prepare`, and such pairs are kept (no evidence against them).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from audit.image_decode import open_image

MAX_SIDE = 256
RATIO = 0.8
RANSAC_PX = 4.0


@dataclass
class Prepared:
    points: np.ndarray        # (n, 2) float32 keypoint positions (x, y)
    descriptors: np.ndarray | None
    ink: np.ndarray           # (h, w) bool


@dataclass(frozen=True)
class Verification:
    aligned: bool
    inliers: int
    overlap: float            # nan when not aligned


def prepare(data: bytes) -> Prepared | None:
    """Decode (first frame, RGB, longer side scaled to MAX_SIDE), SIFT keypoints and the ink mask."""
    try:
        with open_image(data) as im:  # ingest's header guards: bomb, format, geometry, memory
            im.draft("RGB", (MAX_SIDE, MAX_SIDE))
            rgb = np.asarray(im.convert("RGB"))
    except Exception:
        return None
    scale = MAX_SIDE / max(rgb.shape[:2])  # one scale for all: keypoint sizes and the radius compare
    if scale != 1:
        rgb = cv2.resize(rgb, (max(8, round(rgb.shape[1] * scale)), max(8, round(rgb.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    keypoints, desc = cv2.SIFT_create().detectAndCompute(gray, None)
    ink = (gray < 200) | (rgb.max(2).astype(np.int16) - rgb.min(2) > 60)
    return Prepared(np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2), desc, ink)


def _covered(ink: np.ndarray, other: np.ndarray, seen: np.ndarray, radius: int) -> float:
    """Share of `ink` pixels inside `seen` that have `other` ink within radius px."""
    grown = cv2.dilate(other.astype(np.uint8), np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)) > 0
    mine = ink & seen
    return float((mine & grown).sum() / mine.sum()) if mine.any() else float("nan")


def verify(a: Prepared, b: Prepared, min_inliers: int = 6, radius: int = 3) -> Verification:
    """Align A to B (as is and mirrored) and measure the ink overlap (see module doc)."""
    if a.descriptors is None or b.descriptors is None or len(a.points) < 3 or len(b.points) < 3:
        return Verification(False, 0, float("nan"))
    matches = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < max(3, min_inliers):
        return Verification(False, len(good), float("nan"))
    src = a.points[[m.queryIdx for m in good]]
    dst = b.points[[m.trainIdx for m in good]]
    best = None
    for mirrored in (False, True):
        pts, ink = src.copy(), a.ink
        if mirrored:
            pts[:, 0] = a.ink.shape[1] - 1 - pts[:, 0]
            ink = a.ink[:, ::-1]
        m, inl = cv2.estimateAffinePartial2D(pts, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX)
        n = int(inl.sum()) if inl is not None else 0
        if m is not None and n >= min_inliers and (best is None or n > best[0]):
            best = (n, m, np.ascontiguousarray(ink))
    if best is None:
        return Verification(False, len(good), float("nan"))
    n, m, ink = best
    h, w = b.ink.shape
    warped = cv2.warpAffine(ink.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0
    seen = cv2.warpAffine(np.ones(ink.shape, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0
    both = [v for v in (_covered(warped, b.ink, seen, radius), _covered(b.ink, warped, seen, radius))
            if not np.isnan(v)]
    return Verification(True, n, max(both) if both else float("nan"))


class PairVerifier:
    """Verifies pairs of corpus rows, preparing each image once (LRU of `cache` images).
    fetch(row) -> image bytes or None (then the pair is kept)."""

    def __init__(self, fetch: Callable[[int], bytes | None], min_overlap: float = 0.9, cache: int = 4096):
        self.fetch, self.min_overlap, self.cache = fetch, min_overlap, cache
        self._prepared: OrderedDict[int, Prepared | None] = OrderedDict()
        self.checked = self.rejected = 0

    def _get(self, row: int) -> Prepared | None:
        if row in self._prepared:
            self._prepared.move_to_end(row)
            return self._prepared[row]
        data = self.fetch(row)
        p = prepare(data) if data is not None else None
        self._prepared[row] = p
        if len(self._prepared) > self.cache:
            self._prepared.popitem(last=False)
        return p

    def same_picture(self, i: int, j: int) -> bool:
        """False only when the pair aligns and its ink overlap is under min_overlap."""
        a, b = self._get(i), self._get(j)
        self.checked += 1
        if a is None or b is None:
            return True
        v = verify(a, b)
        keep = not (v.aligned and v.overlap < self.min_overlap)
        self.rejected += not keep
        return keep


def stored_image_fetcher(out, keys: Sequence[tuple[str, str]], opener: Callable) -> Callable[[int], bytes | None]:
    """fetch(row) -> the image bytes of sample keys[row] = (shard, key), read back from its
    ingested tar by (image_offset, image_bytes); None when the sample or its shard cannot be
    read. `out` is an OutputDir, `opener(uri)` a binary file opener. Each shard's locations are
    looked up once, when one of its samples is first fetched."""
    from audit.shard_ingest import STAGE as INGEST_STAGE
    from audit.store import scan
    located: dict[str, dict[str, tuple[int, int]]] = {}
    uris: dict[str, str] = {}
    samples: list[str] = []  # the samples table's file list, listed once (not once per shard)

    def fetch(row: int) -> bytes | None:
        shard, key = (str(v) for v in keys[row])
        if not uris:
            uris.update({m["shard"]: m["uri"] for m in out.markers(INGEST_STAGE)})
        if not samples:
            samples.append(out.read_sql("samples"))
        if shard not in located:
            located[shard] = {r["key"]: (int(r["image_offset"]), int(r["image_bytes"])) for r in scan(
                f"SELECT key, image_offset, image_bytes FROM {samples[0]} "
                "WHERE shard = ? AND status = 'ok' AND image_offset IS NOT NULL", [shard])}
        loc, uri = located[shard].get(key), uris.get(shard)
        if loc is None or uri is None:
            return None
        try:
            with opener(uri) as f:
                f.seek(loc[0])
                return f.read(loc[1])
        except OSError:
            return None
    return fetch
