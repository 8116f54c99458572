"""The `dedup:` config section (`DedupConfig`), plain values, importable without OpenCV or torch
(the job config parses it; audit.dedup.duplicate_clusters, the dedup pipelines and contamination use it).

Failure: none at construction; pipelines.config range-checks every numeric key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from audit.dedup.vector_index import IndexConfig


@dataclass(frozen=True)
class DedupConfig:
    enabled: bool = True
    near_threshold: float = 0.75  # SSCD: a copy at 90% precision on DISC2021 (Pizzi et al. 2022)
    semantic_threshold: float = 0.95  # CLIP image cosine (SemDeDup-style semantic duplicates)
    caption_threshold: float = 0.95  # MiniLM cosine: the same caption up to punctuation and word order
    drop_kinds: tuple[str, ...] = ("exact", "near")  # kinds whose non-representatives are dropped
    keep_policy: str = "largest"  # 'largest' (pixels, then bytes), 'clip_score', 'earliest'
    mode: str = "global"  # 'global' (all vectors on one worker) or 'partitioned' (SemDeDup-style, Beam)
    n_centroids: int = 0  # partitioned mode: k-means centroids (0 = about 50k vectors per group)
    top_centroids: int = 2  # partitioned mode: groups each vector joins
    incremental: bool = False  # search only new samples, against the saved index of the accepted corpus
    near_verify: bool = True  # geometric check (audit.copy_check.verification) of close calls, every mode and contamination
    near_verify_below: float = 0.97  # SSCD cosine from which a near pair is taken without the check
    near_verify_overlap: float = 0.9  # aligned pairs whose ink overlap is under this are different pictures
    near_candidate_threshold: float = 0.3  # candidates under near_threshold: added only when the check confirms them
    near_candidates: int = 3  # nearest neighbours per sample tried as candidates (0 = none)
    near_feature_cache: bool = True  # keep the check's prepared images in OUT/features (audit.copy_check.feature_cache)
    index: IndexConfig = field(default_factory=IndexConfig)

    def copy_detection(self):
        """The near kind's rule (audit.dedup.copy_detection.CopyDetection), the same in every mode."""
        from audit.dedup.copy_detection import CopyDetection  # OpenCV: the check, only where dedup runs
        from audit.copy_check.verification import CopyRule
        return CopyDetection(self.near_threshold, self.near_verify, self.near_verify_below,
                             self.near_candidate_threshold, self.near_candidates,
                             CopyRule(min_overlap=self.near_verify_overlap))

    def threshold(self, kind: str) -> float:
        return {"near": self.near_threshold, "semantic": self.semantic_threshold,
                "caption": self.caption_threshold}[kind]
