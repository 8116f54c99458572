"""The audit job (`shardguard run`): ingest, embed, memorization scores, dedup, flags, record.

Stages: shards not yet ingested are ingested, embedded and (with memorization.model set)
scored for memorization in one Beam pipeline (shards ingested earlier but missing a configured
model are embedded or scored too); then, when the corpus changed, a second Beam pipeline finds
duplicates over the whole output folder (it needs every shard's embeddings), and a third
calibrates the memorization scores and flags (it needs every shard's scores). Each stage skips
work its completion markers say is done.

Input: an --input pattern, an output folder, a JobConfig and Beam pipeline flags (passed
through unchanged: --runner, --direct_num_workers, --direct_running_mode, ...).
Output: `RunSummary`; side effects: the per-shard tables, the runs row, OUT/audit.duckdb.
Failure: `OutputLocked` when another run holds OUT; `ValueError` for an input that matches
no shard. Bad samples never fail the job: they are rows (see pipelines.ingest).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from importlib.metadata import PackageNotFoundError, version

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from audit import atomic_files, store
from audit.embedder_specs import plan_embedders
from audit.output_dir import OutputDir
from pipelines.config import JobConfig
from pipelines.dedup import DedupCorpus
from pipelines.dedup_scaleout import PartitionedDedup
from pipelines.embed import EmbedShards, stage as embed_stage
from audit.shard_ingest import STAGE
from pipelines.ingest import IngestShards
from pipelines.memorization import FlagMemorization, ScoreMemorization, model_id_of, needs_flagging
from pipelines.memorization import stage as mem_stage
from pipelines.perturbations import FEATURE_STAGE, SANITIZER_FILE, PerturbationFeatures, TestPerturbations, needs_testing
from pipelines.progress import ProgressMonitor, StageCounter
from pipelines.shard_uris import expand_input
from schemas import RUNS, TABLES

log = logging.getLogger("shardguard.job")


@dataclass
class RunSummary:
    run_id: str
    out: str
    n_shards_matched: int
    n_shards_skipped: int
    shards: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0
    embeddings: dict[str, dict] = field(default_factory=dict)  # model id -> totals of this run
    dedup: dict = field(default_factory=dict)  # kinds, kept, dropped (empty: not recomputed)
    memorization: dict = field(default_factory=dict)  # scored, flagged, threshold (empty: not run)
    perturbations: dict = field(default_factory=dict)  # label source, failed tests, sanitizer (empty: not run)
    notes: list[str] = field(default_factory=list)

    @property
    def n_inputs(self) -> int:
        return sum(s["n_inputs"] for s in self.shards)

    @property
    def n_ok(self) -> int:
        return sum(s["n_ok"] for s in self.shards)

    @property
    def n_failed(self) -> int:
        return sum(s["n_failed"] for s in self.shards)


def _dedup_summary(out: OutputDir, run_id: str) -> dict:
    """Counts read back from the tables the dedup stage wrote (runner-independent)."""
    import duckdb
    base = out.root
    con = duckdb.connect()
    try:
        kept, dropped = con.execute(
            f"SELECT count(*) FILTER (keep), count(*) FILTER (NOT keep) FROM "
            f"'{base}/decisions/run={run_id}/run.parquet'").fetchone()
        kinds = con.execute(
            f"SELECT kind, count(*), count(DISTINCT cluster) FROM '{base}/duplicates/run={run_id}/run.parquet' "
            f"GROUP BY kind ORDER BY kind").fetchall()
    finally:
        con.close()
    return {"kept": kept, "dropped": dropped,
            "kinds": {k: {"samples": n, "clusters": c} for k, n, c in kinds}}


def _memorization_summary(out: OutputDir, run_id: str) -> dict:
    """The memorization_runs row this run wrote (runner-independent)."""
    path = out.table_dir("memorization_runs") / f"run={run_id}" / "run.parquet"
    if not path.exists():
        raise RuntimeError(f"run {run_id}: the memorization pipeline finished without writing {path}")
    import pyarrow.parquet as pq
    row = pq.read_table(path).to_pylist()[0]
    return {k: row[k] for k in ("model_id", "n_scored", "n_flagged", "threshold", "method", "level", "reference")}


def _perturbation_summary(out: OutputDir, run_id: str) -> dict:
    """What the perturbation step recorded for this run (runner-independent)."""
    path = out.root / SANITIZER_FILE
    record = json.loads(path.read_text()) if path.exists() else {}
    if record.get("run_id") != run_id:
        raise RuntimeError(f"run {run_id}: the perturbation pipeline finished without writing {path}")
    return {k: v for k, v in record.items() if k not in ("run_id", "config")}


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def shardguard_version() -> str:
    try:
        return version("shardguard")
    except PackageNotFoundError:
        return "unknown"


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    opts = PipelineOptions(beam_args)
    std = opts.view_as(StandardOptions)
    std.runner = std.runner or "DirectRunner"
    return opts


@contextlib.contextmanager
def private_tempdir(root: Path):
    """Beam's local job server leaves an empty 'beam-temp*' folder per run in the temp dir:
    give the run its own temp dir under OUT and remove it afterwards."""
    path = root / "_tmp" / secrets.token_hex(4)
    path.mkdir(parents=True, exist_ok=True)
    saved, tempfile.tempdir = tempfile.tempdir, str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when no other run's temp dir is in it


def run_ingest(input_pattern: str, out_root: str, config: JobConfig | None = None,
               beam_args: list[str] | None = None) -> RunSummary:
    config = config or JobConfig()
    out = OutputDir(out_root)
    out.lock()
    try:
        return _run_locked(input_pattern, out, config, beam_args or [])
    finally:
        out.unlock()


def _run_locked(input_pattern: str, out: OutputDir, config: JobConfig, beam_args: list[str]) -> RunSummary:
    t0, started = time.perf_counter(), datetime.now(timezone.utc)
    atomic_files.remove_stale_temps(out.root)
    shards = expand_input(input_pattern)
    todo = [(sid, uri) for sid, uri in shards if not out.is_complete(STAGE, sid)]
    specs, notes = plan_embedders(config.embed)
    model_ids = [m for spec in specs for m in spec.model_ids]
    todo_ids = {sid for sid, _ in todo}
    embed_todo = [(sid, uri) for sid, uri in shards if sid not in todo_ids
                  and any(not out.is_complete(embed_stage(m), sid) for m in model_ids)]
    mem = config.memorization
    mem_id = model_id_of(mem) if mem.enabled else ""
    mem_todo = [(sid, uri) for sid, uri in shards if mem.enabled and sid not in todo_ids
                and not out.is_complete(mem_stage(mem, mem_id), sid)]
    pert = config.perturbations
    feat_todo = [(sid, uri) for sid, uri in shards if pert.features and sid not in todo_ids
                 and not out.is_complete(FEATURE_STAGE, sid)]
    run_id = new_run_id()
    summary = RunSummary(run_id, str(out.root), len(shards), len(shards) - len(todo), notes=notes)
    log.info("run %s: %d shards matched, %d already complete, %d to do",
             run_id, len(shards), summary.n_shards_skipped, len(todo))
    opts = pipeline_options(beam_args)
    if todo or embed_todo or mem_todo or feat_todo:
        counters = [StageCounter("ingest", out.manifest_dir(STAGE), run_id, len(todo))]
        counters += [StageCounter(m.split(":")[0], out.manifest_dir(embed_stage(m)), run_id,
                                  len(todo) + len(embed_todo)) for m in model_ids]
        if mem.enabled:
            counters.append(StageCounter("memorization", out.manifest_dir(mem_stage(mem, mem_id)), run_id,
                                         len(todo) + len(mem_todo)))
        if pert.features:
            counters.append(StageCounter("perturbation features", out.manifest_dir(FEATURE_STAGE), run_id,
                                         len(todo) + len(feat_todo)))
        with ProgressMonitor(counters, config.progress_seconds), private_tempdir(out.root):
            p = beam.Pipeline(options=opts)
            ingested = (p | "Shards" >> beam.Create(todo)
                          | "Ingest" >> IngestShards(str(out.root), run_id, config.ingest))
            fresh = ingested | "ShardUri" >> beam.Map(lambda s: (s["shard"], s["uri"]))
            if specs:
                earlier = p | "IngestedEarlier" >> beam.Create(embed_todo)
                _ = ((fresh, earlier) | "ToEmbed" >> beam.Flatten()
                     | "Embed" >> EmbedShards(str(out.root), run_id, specs, config.embed))
            if mem.enabled:
                unscored = p | "IngestedUnscored" >> beam.Create(mem_todo)
                _ = ((fresh, unscored) | "ToScore" >> beam.Flatten()
                     | "Memorization" >> ScoreMemorization(str(out.root), run_id, mem, mem_id))
            if pert.features:
                unfeatured = p | "IngestedUnfeatured" >> beam.Create(feat_todo)
                _ = ((fresh, unfeatured) | "ToFeatures" >> beam.Flatten()
                     | "PerturbationFeatures" >> PerturbationFeatures(str(out.root), run_id))
            p.run().wait_until_finish()
    summary.shards = [m for m in out.markers(STAGE) if m.get("run_id") == run_id]
    missing = {sid for sid, _ in todo} - {m["shard"] for m in summary.shards}
    if missing:
        raise RuntimeError(f"run {run_id}: the pipeline finished but {len(missing)} shards have no "
                           f"completion marker: {sorted(missing)[:5]}")
    if config.dedup.enabled and (todo or embed_todo or not any(out.table_dir("decisions").glob("run=*/*.parquet"))):
        # the dedup pipeline needs every shard's embeddings: it runs after the first pipeline
        with private_tempdir(out.root):
            p = beam.Pipeline(options=opts)
            if config.dedup.mode == "partitioned":
                done = [sid for sid, _ in shards if out.is_complete(STAGE, sid)]
                _ = p | "Dedup" >> PartitionedDedup(str(out.root), run_id, config.dedup, done)
            else:
                _ = p | "Dedup" >> DedupCorpus(str(out.root), run_id, config.dedup, todo_ids)
            p.run().wait_until_finish()
        written = out.table_dir("decisions") / f"run={run_id}" / "run.parquet"
        if not written.exists():
            raise RuntimeError(f"run {run_id}: the dedup pipeline finished without writing {written}")
        summary.dedup = _dedup_summary(out, run_id)
    if mem.enabled and (todo or mem_todo or needs_flagging(out, mem, mem_id)):
        # calibration needs every shard's scores: a third pipeline, after dedup wrote decisions
        with private_tempdir(out.root):
            p = beam.Pipeline(options=opts)
            _ = p | "Memorization" >> FlagMemorization(str(out.root), run_id, mem, mem_id)
            p.run().wait_until_finish()
        summary.memorization = _memorization_summary(out, run_id)
    if pert.tests and (todo or feat_todo or embed_todo or needs_testing(out, pert)):
        # the dataset tests need every shard's labels, features and embeddings: a fourth pipeline
        with private_tempdir(out.root):
            p = beam.Pipeline(options=opts)
            _ = p | "Perturbations" >> TestPerturbations(str(out.root), run_id, pert)
            p.run().wait_until_finish()
        summary.perturbations = _perturbation_summary(out, run_id)
    for m in model_ids:
        done = [r for r in out.markers(embed_stage(m)) if r.get("run_id") == run_id]
        if done:
            summary.embeddings[m] = {k: sum(r[k] for r in done) for k in ("n_inputs", "n_ok", "n_failed")}
    summary.wall_seconds = time.perf_counter() - t0
    out.write_run_table(RUNS, run_id, [{
        "run_id": run_id, "job": "+".join([name for name, ran in (("ingest", todo), ("embed", specs and (todo or embed_todo)),
                                                                   ("memorization", summary.memorization), ("dedup", summary.dedup),
                                                                   ("perturbations", summary.perturbations)) if ran]) or "nothing to do",
        "status": "succeeded", "input_pattern": input_pattern,
        "started_at": started, "finished_at": datetime.now(timezone.utc),
        "runner": str(opts.view_as(StandardOptions).runner), "shardguard_version": shardguard_version(),
        "config_json": config.to_json(), "n_shards_matched": summary.n_shards_matched,
        "n_shards_skipped": summary.n_shards_skipped, "n_shards_processed": len(summary.shards),
        "n_inputs": summary.n_inputs, "n_ok": summary.n_ok, "n_failed": summary.n_failed,
        "wall_seconds": summary.wall_seconds, "notes": summary.notes,
        "embeddings_json": json.dumps(summary.embeddings, sort_keys=True),
        "dedup_json": json.dumps(summary.dedup, sort_keys=True),
        "memorization_json": json.dumps(summary.memorization, sort_keys=True),
        "perturbations_json": json.dumps(summary.perturbations, sort_keys=True),
    }])
    store.refresh_views(out, TABLES)
    return summary
