"""Per-shard stage: one embedding model over a shard's ok samples (SSCD, CLIP image or text, MiniLM).

Input (audit.ingest.shard_stages): batches of ok samples; image models get each image reduced right
after the one decode to what the model resizes from (`prepare`: short side kept >= 2x the
model's input side), or, on a CUDA device, the image bytes (nvJPEG decodes them there); caption
models get the captions. Models load once per worker (audit.embeddings.embedder_specs), one replica per
visible GPU (a batch is split over them) or the CPU; a spec that loads two models (CLIP image
and text) loads once for both stages through the worker's ModelPool.
Output, per shard: OUT/embeddings/<model>/run=<run_id>/<shard>.parquet (row = position in the
vector files), OUT/vectors/<model>/<shard>.npy|.fbin (config embed.vector_files), and the marker
OUT/_manifest/embed/<model>/<shard>.json (written by the runner, last).
Failure rows (stage 'embed', file <shard>.embed-<model>.parquet): images that do not decode
('UndecodableImage'), 'ReadFailed' for images the tar could not give back, every sample of a
batch whose model call raised or gave a malformed output ('EmbedFailed'), non-finite vectors
('NonFiniteEmbedding', `checked_output`).
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from audit.io import atomic_files
from audit.embeddings.config import EmbedConfig
from audit.embeddings.embedder_specs import EmbedderSpec, model_slug, visible_devices
from audit.embeddings.embedders import Embedded
from audit.ingest.image_decode import reduced_rgb
from audit.ingest.shard_stages import ModelPool, Sample, ShardStage, StageRows
from schemas import EMBEDDINGS
from schemas.embeddings import with_dim


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


def stage_id(model_id: str) -> str:
    return f"embed/{model_slug(model_id)}"


def fbin_bytes(m: np.ndarray) -> bytes:
    m = np.ascontiguousarray(m, dtype=np.float32)
    return np.array(m.shape, dtype=np.int32).tobytes() + m.tobytes()


def npy_bytes(m: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, m.astype(np.float16))
    return buf.getvalue()


def write_vectors(out, run_id: str, shard: str, model_id: str, modality: str, dim: int, keys: list[str],
                  matrix: np.ndarray, norms: np.ndarray, files: tuple[str, ...]) -> None:
    """The embeddings table of one (shard, model) and its vector files (atomic each)."""
    slug, n = model_slug(model_id), len(keys)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(matrix.astype(np.float16).ravel(), pa.float16()), dim)
    table = pa.table({
        "run_id": [run_id] * n, "shard": [shard] * n, "key": keys, "model": [model_id] * n,
        "modality": [modality] * n, "row": np.arange(n, dtype=np.int64),
        "norm": np.asarray(norms, np.float32), "vector": vec})
    vdir = out.root / "vectors" / slug
    if "npy" in files:
        atomic_files.write_bytes(vdir / f"{shard}.npy", npy_bytes(matrix))
    if "fbin" in files:
        atomic_files.write_bytes(vdir / f"{shard}.fbin", fbin_bytes(matrix))
    out.write_shard_table(with_dim(EMBEDDINGS, dim), run_id, shard, table, table=f"embeddings/{slug}")


class EmbedStage(ShardStage):
    error_stage = "embed"
    unreadable_type = "UndecodableImage"

    def __init__(self, spec: EmbedderSpec, model_id: str, cfg: EmbedConfig):
        self.spec, self.model_id, self.cfg = spec, model_id, cfg
        slug = model_slug(model_id)
        self.id, self.outputs, self.error_part = stage_id(model_id), (f"embeddings/{slug}",), f"embed-{slug}"
        self.message_prefix, self.batch_size = model_id, cfg.batch_size
        self.accelerator = cfg.accelerator
        self.resources = "gpu" if cfg.accelerator else "cpu"  # gpu: its own Beam step when split (resource hint)
        self.replicas: list = []

    @property
    def label(self) -> str:
        return self.model_id.split(":")[0]

    def setup(self, models: ModelPool) -> None:
        devices = visible_devices(self.cfg.device)
        key = (self.spec.kind, self.spec.model_ids, self.spec.options)
        loaded = [models.get((key, str(d)), lambda d=d: self.spec.load(d)) for d in devices]
        self.use([next(e for e in group if e.model_id == self.model_id) for group in loaded],
                 on_gpu=devices[0].type == "cuda")

    def use(self, replicas: list, on_gpu: bool = False) -> "EmbedStage":
        """Run on these loaded replicas of the model (one per device); `setup` calls it, and plain
        use (audit.embeddings.shard.embed_shard) calls it with models it loaded itself."""
        self.replicas = replicas
        first = replicas[0]
        self.modality, self.dim = first.modality, first.dim
        self.needs_image = first.modality == "image" and not on_gpu
        self.needs_bytes = first.modality == "image" and on_gpu
        self.pool = ThreadPoolExecutor(len(replicas)) if len(replicas) > 1 else None
        return self

    def prepare(self, image, row: dict):
        return reduced_rgb(image, self.replicas[0].input_side)

    def _embed(self, replica, chunk: list[Sample]) -> Embedded:
        if self.modality == "image":
            items = [s.data if self.needs_bytes else s.views[self.id] for s in chunk]
        else:
            items = [s.row.get("caption") or "" for s in chunk]
        try:
            return checked_output(replica.embed(items), len(chunk), self.dim)
        except Exception as e:  # a model failing on one batch: that batch's samples become rows
            return Embedded.empty(self.dim, [(j, "EmbedFailed", f"{type(e).__name__}: {e}") for j in range(len(chunk))])

    def process(self, shard: str, run_id: str, batch: list[Sample]) -> StageRows:
        n = len(self.replicas)
        step = -(-len(batch) // n)  # contiguous parts: the shard's row order does not depend on the GPUs
        parts = [batch[i:i + step] for i in range(0, len(batch), step)] if n > 1 else [batch]
        outs = list(self.pool.map(self._embed, self.replicas[:len(parts)], parts)) if self.pool else [self._embed(self.replicas[0], batch)]
        result = StageRows()
        for chunk, out in zip(parts, outs):
            norms = out.norms if out.norms is not None else np.linalg.norm(out.vectors, axis=1)
            result.rows.extend((chunk[j].key, v, nv) for j, v, nv in zip(out.index, out.vectors, norms))
            result.errors.extend(self.error_row(run_id, shard, chunk[j].key, et, msg) for j, et, msg in out.errors)
        return result

    def write(self, out, run_id: str, shard: str, rows: list) -> dict:
        keys = [k for k, _, _ in rows]
        matrix = np.stack([v for _, v, _ in rows]).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)
        norms = np.array([nv for _, _, nv in rows], np.float32)
        write_vectors(out, run_id, shard, self.model_id, self.modality, self.dim, keys, matrix, norms,
                      self.cfg.vector_files)
        return {"model": self.model_id}


def embed_stages(specs: list[EmbedderSpec], cfg: EmbedConfig) -> list[EmbedStage]:
    """One stage per model id of the planned specs (audit.embeddings.embedder_specs.plan_embedders)."""
    return [EmbedStage(spec, m, cfg) for spec in specs for m in spec.model_ids]
