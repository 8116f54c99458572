"""Embed the ok samples of one shard with every configured model.

Input: the shard's URI, its ok samples rows (key, image_offset, image_bytes, caption) from
the samples table, an opener, and the loaded embedders (per device, for one replica per GPU).
Image bytes are read by offset (no tar scan), in batches, by a background thread that stays
one batch ahead of the models, so I/O overlaps compute.
Output: one `ModelResult` per model id: keys, vectors (float32, L2-normalized), norms, and
errors rows (stage 'embed') for samples a model could not embed. For every model,
n_ok_samples = len(keys) + len(errors): `check()` asserts it.
Failure rows, the shard always finishes: a model call that raises on a batch makes that batch's
samples errors rows for that model ('EmbedFailed', message = model id, exception type and
message), and the next batch goes on; so does an output that does not match its batch
(wrong shape, positions missing or repeated). Non-finite vectors are 'NonFiniteEmbedding'
rows. Reads retry transient I/O errors (`retry`, audit.io.retrying_reads: reopen and seek, so no
image is read twice or skipped); a read still failing after its retries makes that batch and
every later one 'ReadFailed' rows for the image models (the file is not read again), while
caption models still embed the captions, which come from the samples table.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from audit.embeddings.embedders import Embedded, Embedder
from audit.io.retrying_reads import ReadRetry, RetryHook, retrying_opener
from audit.ingest.sample_store import image_batches, prefetch


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


def checked_output(out: Embedded, n_items: int, dim: int) -> Embedded:
    """`out` if it accounts for each of the batch's items once with `dim`-wide vectors, its
    non-finite vectors moved to errors; ValueError (a failed batch) when it does not."""
    vectors = np.asarray(out.vectors)
    positions = sorted(list(out.index) + [j for j, _, _ in out.errors])
    if positions != list(range(n_items)) or vectors.shape != (len(out.index), dim):
        raise ValueError(f"malformed output: {vectors.shape} vectors, {len(out.index)} positions and "
                         f"{len(out.errors)} errors for a batch of {n_items} (dim {dim})")
    finite = np.isfinite(vectors).all(axis=1)
    if finite.all():
        return out
    norms = out.norms if out.norms is not None else np.linalg.norm(vectors, axis=1)
    bad = [(j, "NonFiniteEmbedding", "the model returned NaN or infinite values")
           for j, ok in zip(out.index, finite) if not ok]
    return Embedded(vectors[finite], [j for j, ok in zip(out.index, finite) if ok], list(out.errors) + bad,
                    np.asarray(norms)[finite])


def embed_shard(shard: str, uri: str, rows: list[dict], replicas: list[list[Embedder]], opener: Callable,
                run_id: str, batch_size: int = 64, retry: ReadRetry = ReadRetry(),
                on_retry: RetryHook | None = None) -> dict[str, ModelResult]:
    """`replicas[d]` holds the embedders loaded on device d (same models, same order)."""
    rows = sorted(rows, key=lambda r: r["image_offset"])
    first = replicas[0]
    results = {e.model_id: ModelResult(e.model_id, e.modality, e.dim) for e in first}
    pool = ThreadPoolExecutor(len(replicas)) if len(replicas) > 1 else None

    def run_batch(args):
        d, (chunk, images, read_error) = args
        outs = []
        for emb in replicas[d]:
            if emb.modality == "image" and images is None:
                outs.append(Embedded.empty(emb.dim, [(j, "ReadFailed", read_error) for j in range(len(chunk))]))
                continue
            items = images if emb.modality == "image" else [r.get("caption") or "" for r in chunk]
            try:
                outs.append(checked_output(emb.embed(items), len(chunk), emb.dim))
            except Exception as e:  # a model failing on one batch: that batch's samples become rows
                outs.append(Embedded.empty(emb.dim, [(j, "EmbedFailed", f"{type(e).__name__}: {e}")
                                                     for j in range(len(chunk))]))
        return chunk, outs

    need_images = any(e.modality == "image" for e in first)
    work = enumerate(prefetch(image_batches(uri, rows, retrying_opener(opener, retry, on_retry), batch_size,
                                            need_images)))
    work = ((i % len(replicas), b) for i, b in work)
    done = pool.map(run_batch, work) if pool else map(run_batch, work)
    for chunk, outs in done:
        for emb, out in zip(first, outs):
            res = results[emb.model_id]
            res.keys.extend(chunk[j]["key"] for j in out.index)
            res.vectors.append(out.vectors)
            res.norms.append(out.norms if out.norms is not None else np.linalg.norm(out.vectors, axis=1))
            res.errors.extend({"run_id": run_id, "stage": "embed", "shard": shard, "key": chunk[j]["key"],
                               "error_type": et, "message": f"{emb.model_id}: {msg}"} for j, et, msg in out.errors)
    if pool:
        pool.shutdown()
    for res in results.values():
        res.check(len(rows))
    return results
