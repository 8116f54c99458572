"""Beam stage: embed ingested shards with every configured model (SSCD, CLIP, MiniLM).

Input: a PCollection of `(shard_id, uri)` whose ingest is complete (each element = one shard,
embedded in batches of `embed.batch_size`).
Output: one dict per (shard, model) done. Side effects per shard and model, atomic:
OUT/embeddings/<model>/run=<run_id>/<shard>.parquet, OUT/vectors/<model>/<shard>.npy|.fbin,
OUT/errors/run=<run_id>/<shard>.embed-<model>.parquet, then the completion marker
OUT/_manifest/embed/<model>/<shard>.json. Models load once per worker in `setup`, one replica
per visible GPU (or the CPU). `resource_hints` ask runners for GPU workers when configured.
Failure rows: images a model cannot decode or embed, and whole batches whose model call
raised, are errors rows with stage 'embed'; the run goes on. Transient read errors are retried
(`retry`: the job passes config `ingest.retry`), logged and counted in
`shardguard/embed_read_retries`; a read failing for good gives 'ReadFailed' rows.
"""

from __future__ import annotations

import io
import logging

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audit import atomic_files
from audit.embedder_specs import EmbedConfig, EmbedderSpec, model_slug, visible_devices
from audit.output_dir import OutputDir
from audit.retrying_reads import ReadRetry, log_retry
from audit.shard_embed import ModelResult, embed_shard
from pipelines.ingest import open_uri
from pipelines.progress import ShardCounters, counter
from schemas import EMBEDDINGS, ERRORS
from schemas.embeddings import with_dim

log = logging.getLogger("shardguard.embed")


def stage(model_id: str) -> str:
    return f"embed/{model_slug(model_id)}"


def ok_rows(out: OutputDir, shard: str) -> list[dict]:
    files = out.shard_files("samples", shard)
    if not files:
        return []
    cols = ["key", "image_offset", "image_bytes", "caption", "status"]
    t = pq.read_table(files[-1], columns=cols)
    return [r for r in t.to_pylist() if r["status"] == "ok"]


def fbin_bytes(m: np.ndarray) -> bytes:
    m = np.ascontiguousarray(m, dtype=np.float32)
    return np.array(m.shape, dtype=np.int32).tobytes() + m.tobytes()


def npy_bytes(m: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, m.astype(np.float16))
    return buf.getvalue()


def write_model_result(out: OutputDir, run_id: str, shard: str, res: ModelResult, files: tuple[str, ...]) -> None:
    slug = model_slug(res.model_id)
    m = res.matrix()
    n = len(res.keys)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(m.astype(np.float16).ravel(), pa.float16()), res.dim)
    table = pa.table({
        "run_id": [run_id] * n, "shard": [shard] * n, "key": res.keys, "model": [res.model_id] * n,
        "modality": [res.modality] * n, "row": np.arange(n, dtype=np.int64),
        "norm": res.norm_array().astype(np.float32), "vector": vec})
    vdir = out.root / "vectors" / slug
    if "npy" in files:
        atomic_files.write_bytes(vdir / f"{shard}.npy", npy_bytes(m))
    if "fbin" in files:
        atomic_files.write_bytes(vdir / f"{shard}.fbin", fbin_bytes(m))
    out.write_shard_table(with_dim(EMBEDDINGS, res.dim), run_id, shard, table, table=f"embeddings/{slug}")
    out.write_shard_table(ERRORS, run_id, shard, res.errors, part=f"embed-{slug}")
    out.mark_complete(stage(res.model_id), shard, {
        "run_id": run_id, "shard": shard, "model": res.model_id, "n_inputs": n + len(res.errors),
        "n_ok": n, "n_failed": len(res.errors)})


class EmbedShardFn(beam.DoFn):
    def __init__(self, out_root: str, run_id: str, specs: list[EmbedderSpec], cfg: EmbedConfig,
                 retry: ReadRetry = ReadRetry()):
        self.out_root, self.run_id, self.specs, self.cfg, self.retry = out_root, run_id, specs, cfg, retry
        self.counts = ShardCounters("embed")  # per (shard, model)
        self.read_retries = counter("embed_read_retries")

    def setup(self):
        self.out = OutputDir(self.out_root)
        devices = visible_devices(self.cfg.device)
        # replicas[d] = all embedders on device d, in one fixed order
        self.replicas = [[e for spec in self.specs for e in spec.load(d)] for d in devices]
        log.info("embedders loaded on %s: %s", [str(d) for d in devices],
                 [e.model_id for e in self.replicas[0]])

    def process(self, element):
        shard, uri = element
        todo = [i for i, e in enumerate(self.replicas[0]) if not self.out.is_complete(stage(e.model_id), shard)]
        if not todo:
            return
        for i in todo:
            slug = model_slug(self.replicas[0][i].model_id)
            self.out.remove_orphans(shard, [f"embeddings/{slug}"])
            self.out.remove_orphans(shard, ["errors"], part=f"embed-{slug}")
        replicas = [[r[i] for i in todo] for r in self.replicas]
        retries: list[int] = []  # reads run on a prefetch thread: Beam counts only on this one
        results = embed_shard(shard, uri, ok_rows(self.out, shard), replicas, open_uri, self.run_id,
                              self.cfg.batch_size, self.retry, lambda *a: (retries.append(1), log_retry(*a)))
        self.read_retries.inc(len(retries))
        for res in results.values():
            write_model_result(self.out, self.run_id, shard, res, self.cfg.vector_files)
            self.counts.record(len(res.keys) + len(res.errors), len(res.keys), len(res.errors))
            yield {"shard": shard, "model": res.model_id, "n_ok": len(res.keys), "n_failed": len(res.errors)}


class EmbedShards(beam.PTransform):
    def __init__(self, out_root: str, run_id: str, specs: list[EmbedderSpec], cfg: EmbedConfig,
                 retry: ReadRetry = ReadRetry()):
        super().__init__()
        self.fn = EmbedShardFn(out_root, run_id, specs, cfg, retry)
        self.accelerator = cfg.accelerator

    def expand(self, pcoll):
        pardo = beam.ParDo(self.fn)
        if self.accelerator:  # Dataflow and portable runners place this step on GPU workers
            pardo = pardo.with_resource_hints(accelerator=self.accelerator)
        return pcoll | "Embed" >> pardo
