"""Geometric verification of near-duplicate (SSCD) pairs: is B a copy of A (the same pixels
moved, scaled, cropped, flipped, recoloured or partly covered), or a different picture that
looks alike (another photo of one scene, a stereo twin, a variant of one design)?

SSCD ranks copies well but its cosine alone cannot tell them apart from look-alikes: on the
photo benchmark (benchmarks/photo_set.py, tuning half) a stereo pair scores 0.92 and a
crop keeping 60% of each side 0.63; on clip art, semaphore letters drawn from one figure score
0.80-0.86. What tells them apart is whether one 2-D transform maps one image onto the other
and the pixels then agree. So each pair is aligned and compared:

1. Alignment: RootSIFT keypoints (both images scaled to `MAX_SIDE` px on the longer side,
   keypoints detected at `SIFT_SIDE`),
   Lowe's ratio test (0.8), a RANSAC affine transform (`RANSAC_PX`) from A to B, tried on A
   as is and, when that finds fewer than `CopyRule.min_inliers` inliers, on A mirrored (a
   flipped copy). Copies made by crop, resize, squash, rotation, flip or pasting on a canvas
   are affine images of the source; another photo of a scene has parallax the affine cannot fit.
2. Agreement: A is warped into B's frame (B into A's when A's share of pixels is the smaller:
   the comparison runs where the common content has fewer pixels, so the order of A and B
   does not matter and a crop is not compared against its upscaled source); both are smoothed a little (Gaussian sigma 1.5 px,
   so blur and JPEG count as the same picture), the part of B that A covers is cut into
   `BLOCK` px blocks, and a textured block (pixel std >= `FLAT_STD` in either image) agrees
   when both are textured and their normalized cross-correlation is >= `BLOCK_NCC` (gain and
   offset free: brightness, contrast, grayscale). agreement = agreeing / textured blocks.
   A moved object, a parallax-shifted background or a redrawn arm disagree; an overlay costs
   only the blocks it covers. tone (audit.copy_check.pixels): one gain-bounded tone map must also
   explain the block means outside the disagreeing blocks (an outline drawing and its
   coloured-in version agree block by block, gain-free, but not in tone).
3. Ink overlap (kept from the clip-art check): 'ink' = dark (gray < 200) or strongly coloured
   (max - min channel > 60) pixels; overlap = the larger of the shares of A's ink with B's ink
   within 3 px after alignment, and the other way round. A fit under which no textured block
   overlaps (agreement undefined) is no alignment: RANSAC found a degenerate map.
4. No alignment (flat drawings: flags, pictograms give SIFT too few keypoints): the
   keypoint-free fit of audit.copy_check.alignment_free, frames near the identity (flip, shift, scale
   0.8-1) on 64 px thumbnails, tone within a bounded gain; fit = share of variance explained.

Decision (`CopyRule`, thresholds chosen on the tuning half of the photo benchmark and on the
clip-art benchmark; see benchmarks/dedup_quality.py): a pair SSCD already calls a copy is
vetoed only with evidence: aligned (>= min_inliers) and overlap < min_overlap, agreement <
min_agreement or tone < min_tone (copy_inside.MIN_TONE, the inside search's tone bound), or not aligned, fit < min_fit (0.8; on clip art this vetoes flag and semaphore
look-alikes, and every mild copy of a flat flag fits >= 0.92) and not found inside the other
(audit.copy_check.inside: a heavy crop is no near-identity frame, but it is one picture inside the
other). A pair under SSCD's threshold (a candidate: audit.dedup.copy_detection) is added only with
positive evidence: >= add_inliers inliers and no veto (agreement, overlap, tone), or, when the keypoints neither confirm nor contradict it, found inside the other
with agreement >= min_agreement. The inside search (~25 ms) runs only where it could change
the answer (CopyRule.needs_inside). Failure: undecodable bytes give None from `prepare`; such
pairs keep SSCD's word (never vetoed, never added).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import os

import cv2
import numpy as np

from audit.copy_check import alignment_free as copy_alignment_free, inside as copy_inside
from audit.copy_check.pixels import compare
from audit.copy_check.prepared import Prepared, prepare

RATIO = 0.8
RANSAC_PX = 3.0
INK_RADIUS = 3


@dataclass(frozen=True)
class CopyRule:
    """When a verification says copy. min_inliers: what counts as aligned (evidence to veto);
    add_inliers: alignment strong enough to add a pair SSCD scored under its threshold."""
    min_inliers: int = 8
    min_overlap: float = 0.9
    min_agreement: float = 0.7
    add_inliers: int = 10
    min_fit: float = 0.8
    min_tone: float = copy_inside.MIN_TONE

    def vetoes(self, v: "Verification") -> bool:
        if not v.aligned:  # keypoint-free evidence only: no near-identity fit and not found inside
            return v.fit < self.min_fit and not v.inside >= self.min_agreement
        return v.overlap < self.min_overlap or v.agreement < self.min_agreement or v.tone < self.min_tone

    def confirms(self, v: "Verification") -> bool:
        if v.aligned and v.inliers >= self.add_inliers and not self.vetoes(v):
            return True
        return v.inside >= self.min_agreement and not (v.aligned and self.vetoes(v))

    def needs_inside(self, v: "Verification", candidate: bool) -> bool:
        """Whether the inside search (audit.copy_check.inside) could change the answer: a candidate
        the keypoints neither confirm nor contradict, or an SSCD pair vetoed only for want of
        a near-identity fit."""
        if candidate:
            return not self.confirms(v) and not (v.aligned and self.vetoes(v))
        return not v.aligned and self.vetoes(v)


@dataclass(frozen=True)
class Verification:
    aligned: bool
    inliers: int
    overlap: float            # nan when not aligned
    agreement: float          # nan when not aligned
    mirrored: bool = False
    fit: float = float("nan")  # keypoint-free fit (copy_alignment_free) when not aligned; >= min_fit: a lower bound
    inside: float = float("nan")  # block agreement of one image found inside the other (copy_inside), when searched
    tone: float = float("nan")  # when aligned: the gain-bounded tone fit outside disagreeing blocks (copy_pixels)


def root_sift(desc: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalize, square root; float32 to match."""
    d = desc.astype(np.float32)
    return np.sqrt(d / (d.sum(1, keepdims=True) + 1e-7)).astype(np.float32)


def _covered(ink: np.ndarray, other: np.ndarray, seen: np.ndarray) -> float:
    """Share of `ink` pixels inside `seen` that have `other` ink within INK_RADIUS px."""
    k = 2 * INK_RADIUS + 1
    grown = cv2.dilate(other.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    mine = ink & seen
    return float((mine & grown).sum() / mine.sum()) if mine.any() else float("nan")


def _align(a: Prepared, b: Prepared) -> tuple[int, np.ndarray | None]:
    if a.descriptors is None or b.descriptors is None or len(a.points) < 3 or len(b.points) < 3:
        return 0, None
    matches = cv2.BFMatcher(cv2.NORM_L2).knnMatch(root_sift(a.descriptors), root_sift(b.descriptors), k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < 3:
        return 0, None
    src = a.points[[m.queryIdx for m in good]]
    dst = b.points[[m.trainIdx for m in good]]
    m, inl = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX)
    return (int(inl.sum()), m) if m is not None and inl is not None else (0, None)


def verify(a: Prepared, b: Prepared, rule: CopyRule = CopyRule(), candidate: bool = False) -> Verification:
    """Keypoint evidence (`keypoint_verify`), then, where it could change the answer
    (CopyRule.needs_inside; `candidate`: a pair under SSCD's threshold), the inside search."""
    v = keypoint_verify(a, b, rule)
    if rule.needs_inside(v, candidate):
        v = dataclasses.replace(v, inside=copy_inside.inside_agreement(a, b))
    return v


def keypoint_verify(a: Prepared, b: Prepared, rule: CopyRule = CopyRule()) -> Verification:
    """Align A to B and compare (see module doc); when that does not show a copy, A mirrored
    too (a flipped copy of a symmetric picture can align, wrongly, unmirrored), keeping the
    better of the two; without an alignment, the keypoint-free fit."""
    if min(len(a.points), len(b.points)) < rule.min_inliers:  # too few keypoints to align, mirrored or not
        return _unaligned(a, b, rule, 0)
    first = _compare(a, b, rule, False)
    if first.aligned and not rule.vetoes(first):
        return first
    second = _compare(a.mirrored(), b, rule, True)
    if not second.aligned:
        return first if first.aligned else _unaligned(a, b, rule, max(first.inliers, second.inliers))
    if not first.aligned or rule.vetoes(first) and not rule.vetoes(second):
        return second
    return first


def _unaligned(a: Prepared, b: Prepared, rule: CopyRule, inliers: int) -> Verification:
    """No keypoint alignment: the keypoint-free fit is the evidence (module doc, 4)."""
    fit = copy_alignment_free.fit(a.thumbnail(), b.thumbnail(), enough=rule.min_fit)
    return Verification(False, inliers, float("nan"), float("nan"), False, fit)


def _compare(src: Prepared, b: Prepared, rule: CopyRule, mirrored: bool) -> Verification:
    n, m = _align(src, b)
    if m is None or n < rule.min_inliers:
        return Verification(False, n, float("nan"), float("nan"), mirrored)
    frm, to = src, b
    if abs(np.linalg.det(m[:, :2])) > 1:  # compare in the frame where the shared content has fewer
        frm, to, m = b, src, cv2.invertAffineTransform(m)  # pixels: either order gives one answer
    h, w = to.gray.shape
    warped = cv2.warpAffine(frm.gray, m, (w, h), flags=cv2.INTER_LINEAR)
    seen = cv2.warpAffine(np.ones(frm.gray.shape, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST)
    seen = cv2.erode(seen, np.ones((5, 5), np.uint8)) > 0
    ink = cv2.warpAffine(frm.ink.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0
    both = [v for v in (_covered(ink, to.ink, seen), _covered(to.ink, ink, seen)) if not np.isnan(v)]
    c = compare(warped, to.gray, seen)
    if np.isnan(c.agreement):  # nothing textured where the fit lays them over: a degenerate fit, no alignment
        return Verification(False, n, float("nan"), float("nan"), mirrored)
    return Verification(True, n, max(both) if both else float("nan"), c.agreement, mirrored, tone=c.tone)


class PairVerifier:
    """Verifies pairs of corpus rows, preparing each image once (LRU of `cache` images).
    fetch(row) -> image bytes or None (then the pair keeps SSCD's word). `prefetch(rows)`
    prepares images ahead on a thread pool, and `speculate(pairs)` verifies pairs ahead on it
    (decoding, SIFT, matching and warping release the GIL); fetching stays on the calling
    thread. A speculated pair is only counted (checked / rejected / added) when its answer is
    asked for; `cancel` drops one that is no longer needed. `features`
    (audit.copy_check.feature_cache.FeatureCache, optional): asked before an image is prepared
    (`cache_hits`; else `prepared`), and given each image this verifier prepared when it leaves
    the LRU or at `save_features()`."""

    def __init__(self, fetch: Callable[[int], bytes | None], rule: CopyRule = CopyRule(), cache: int = 4096,
                 threads: int = 0, features=None):
        self.fetch, self.rule, self.cache, self.features = fetch, rule, cache, features
        self.threads = max(1, threads or (os.cpu_count() or 1))
        self._prepared: OrderedDict[int, Future] = OrderedDict()
        self._ahead: dict[tuple[int, int], Future] = {}
        self._fresh: set[int] = set()  # rows prepared here (not from `features`): saved when they leave
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="copy-check")
        self.checked = self.rejected = self.added = self.prepared = self.cache_hits = 0

    def prefetch(self, rows: Iterable[int]) -> None:
        for row in rows:
            self._future(row)

    def _future(self, row: int) -> Future:
        fut = self._prepared.get(row)
        if fut is not None:
            self._prepared.move_to_end(row)
            return fut
        hit = self.features.get(row) if self.features is not None else None
        if hit is not None:
            self.cache_hits += 1
            fut = _done(hit)
        else:
            data = self.fetch(row)
            fut = self._pool.submit(prepare, data) if data is not None else _done(None)
            if self.features is not None:
                self._fresh.add(row)
            self.prepared += data is not None
        self._prepared[row] = fut
        if len(self._prepared) > self.cache:
            self._save(*self._prepared.popitem(last=False))
        return fut

    def _save(self, row: int, fut: Future) -> None:
        if row in self._fresh:
            self._fresh.discard(row)
            p = fut.result() if fut.exception() is None else None
            if p is not None:  # the mirrored image too, when a check computed it
                self.features.put(row, p)

    def save_features(self) -> None:
        """Hands every image prepared here to `features` and closes it (its file is committed)."""
        if self.features is not None:
            for row, fut in list(self._prepared.items()):
                self._save(row, fut)
            self.features.close()

    def speculate(self, pairs: Iterable[tuple[int, int]], candidate: bool = False) -> None:
        """Start verifying these pairs on the pool (after their images: the pool is FIFO, so a
        verification never waits on a preparation that no thread has started). `candidate`:
        they will be asked `confirms`, else `same_picture`."""
        for i, j in pairs:
            if (i, j, candidate) not in self._ahead:
                a, b = self._future(i), self._future(j)
                self._ahead[(i, j, candidate)] = self._pool.submit(_verify_prepared, a, b, self.rule, candidate)

    def cancel(self, i: int, j: int, candidate: bool = False) -> None:
        fut = self._ahead.pop((i, j, candidate), None)
        if fut is not None:
            fut.cancel()

    def _verify(self, i: int, j: int, candidate: bool = False) -> Verification | None:
        fut = self._ahead.pop((i, j, candidate), None)
        if fut is None:
            fut = _done(_verify_prepared(self._future(i), self._future(j), self.rule, candidate))
        self.checked += 1
        return fut.result()

    def same_picture(self, i: int, j: int) -> bool:
        """A pair SSCD calls a copy: False only with evidence against it (CopyRule.vetoes)."""
        v = self._verify(i, j)
        keep = v is None or not self.rule.vetoes(v)
        self.rejected += not keep
        return keep

    def confirms(self, i: int, j: int) -> bool:
        """A candidate under SSCD's threshold: True only with evidence for it (CopyRule.confirms)."""
        v = self._verify(i, j, candidate=True)
        ok = v is not None and self.rule.confirms(v)
        self.added += ok
        return ok


def _verify_prepared(fa: Future, fb: Future, rule: CopyRule, candidate: bool = False) -> Verification | None:
    a, b = fa.result(), fb.result()
    if a is None or b is None:
        return None
    try:
        return verify(a, b, rule, candidate)
    except (cv2.error, ValueError, np.linalg.LinAlgError):  # a degenerate image: no evidence either way
        return None


def _done(value) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut
