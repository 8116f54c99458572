"""Plain use (notebooks, tests, benchmarks): embed the ok samples of one shard with models
already loaded, through the job's own per-shard stage (audit.embeddings.stage.EmbedStage run
by audit.ingest.shard_runner.stage_rows), so plain use and the job read, decode and fail alike.

Input: the shard's URI, its ok samples rows (key, image_offset, image_bytes, caption) from
the samples table, an opener, and the loaded embedders (per device, for one replica per GPU:
a batch is split over them). Image bytes are read by offset (no tar scan), one batch ahead of
the models (audit.ingest.sample_store), and decoded once under ingest's guards; image models on
a CUDA device get the bytes (nvJPEG).
Output: one `ModelResult` per model id: keys (in the shard's byte order), vectors (float32,
L2-normalized), norms, and errors rows (stage 'embed') for samples a model could not embed.
For every model, n_ok_samples = len(keys) + len(errors): `check()` asserts it.
Failure rows, the shard always finishes: an image that no longer decodes ('UndecodableImage'),
a model call that raises on a batch or gives an output that does not match it ('EmbedFailed'
for that batch's samples; the next batch goes on), non-finite vectors ('NonFiniteEmbedding').
Reads retry transient I/O errors (`retry`, audit.io.retrying_reads: reopen and seek, so no
image is read twice or skipped); a read still failing after its retries makes that batch and
every later one 'ReadFailed' rows for the image models (the file is not read again), while
caption models still embed the captions, which come from the samples table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from audit.embeddings.config import EmbedConfig
from audit.embeddings.embedders import Embedder
from audit.embeddings.stage import EmbedStage
from audit.io.retrying_reads import ReadRetry, RetryHook
from audit.ingest.sample_validation import IngestLimits
from audit.ingest.shard_runner import stage_rows


@dataclass
class ModelResult:
    model_id: str
    modality: str
    dim: int
    keys: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    norms: list[np.ndarray] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    def matrix(self) -> np.ndarray:
        return np.concatenate(self.vectors) if self.vectors else np.zeros((0, self.dim), np.float32)

    def norm_array(self) -> np.ndarray:
        return np.concatenate(self.norms) if self.norms else np.zeros(0, np.float32)

    def check(self, n_samples: int) -> None:
        if len(self.keys) + len(self.errors) != n_samples or len(self.matrix()) != len(self.keys):
            raise AssertionError(f"{self.model_id}: {len(self.keys)} vectors + {len(self.errors)} errors "
                                 f"!= {n_samples} samples")


def _on_gpu(embedder: Embedder) -> bool:
    device = getattr(embedder, "device", None)
    return getattr(device, "type", None) == "cuda"


def embed_shard(shard: str, uri: str, rows: list[dict], replicas: list[list[Embedder]], opener: Callable,
                run_id: str, batch_size: int = 64, retry: ReadRetry = ReadRetry(),
                on_retry: RetryHook | None = None) -> dict[str, ModelResult]:
    """`replicas[d]` holds the embedders loaded on device d (same models, same order)."""
    cfg = EmbedConfig(batch_size=batch_size)
    stages = [EmbedStage(None, e.model_id, cfg).use([group[m] for group in replicas], _on_gpu(e))
              for m, e in enumerate(replicas[0])]
    try:
        got = stage_rows(stages, shard, uri, rows, run_id, opener, IngestLimits(retry=retry), batch_size, on_retry)
    finally:
        for st in stages:  # the replicas' thread pool (two or more devices) ends with the call
            if st.pool is not None:
                st.pool.shutdown()
    results = {}
    for st in stages:
        res = results[st.model_id] = ModelResult(st.model_id, st.modality, st.dim)
        out = got[st.id]
        res.keys = [k for k, _, _ in out.rows]
        if out.rows:
            res.vectors = [np.stack([v for _, v, _ in out.rows]).astype(np.float32)]
            res.norms = [np.array([n for _, _, n in out.rows], np.float32)]
        res.errors = out.errors
        res.check(len(rows))
    return results
