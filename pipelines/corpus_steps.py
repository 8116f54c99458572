"""Corpus steps of `shardguard run`: the steps over the whole output folder, after the per-shard step.

Each step is one small class with one protocol: `name` (its name in the runs row's error, the
progress log and the stage_timings table), `summary_field` (the RunSummary dict its result is
merged into), `needs_run(ctx) -> bool | str` (False: up to date or disabled; a string: skipped, with
that note) and `run(ctx) -> dict` (its summary, read back from the tables it wrote, so it is the
same on every runner). `CORPUS_STEPS` is the order the job runs them in: a step may read what an
earlier one wrote. Adding a corpus step: a class here (or in its own module) and one line in
CORPUS_STEPS.
Input: a `RunContext` (output folder, run id, config, the run's plan, Beam options, the shards
this run ingested). Failure: a step that finishes without writing its record raises
RuntimeError; the job records any exception as the run's failure (pipelines.run_record).
The step modules (dedup, memorization, perturbations: OpenCV, torch, diffusers) are imported by
the step that runs them, so a run with nothing to do never loads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import apache_beam as beam
import duckdb
import pyarrow.parquet as pq

from audit.dedup.decisions import decisions_stale, write_decisions
from audit.io.output_dir import OutputDir
from audit.perturbations.config import SANITIZER_FILE
from audit.runs.diff import record_changes
from audit.ingest.shard_ingest import STAGE
from audit.io.sql_literals import file_pattern
from pipelines.beam_options import private_tempdir
from pipelines.config import JobConfig
from pipelines.progress import finish_and_log
from pipelines.run_plan import RunPlan


@dataclass
class RunContext:
    out: OutputDir
    run_id: str
    config: JobConfig
    plan: RunPlan
    opts: object  # Beam PipelineOptions
    ingested: set[str]  # shards this run ingested

    def pipeline(self, name: str, build) -> None:
        """Run one Beam pipeline: build(p) adds its steps; a private temp folder under OUT."""
        with private_tempdir(self.out.root):
            p = beam.Pipeline(options=self.opts)
            build(p)
            finish_and_log(p.run(), name)

    def run_file(self, table: str) -> str:
        return file_pattern(self.out.table_dir(table) / f"run={self.run_id}" / "run.parquet")


class Dedup:
    name, summary_field = "dedup", "dedup"

    def needs_run(self, ctx: RunContext) -> bool:
        return ctx.plan.corpus_steps["dedup"]

    def run(self, ctx: RunContext) -> dict:
        from pipelines.dedup import DedupCorpus  # OpenCV and torch: loaded when a step runs, not by the plan
        from pipelines.dedup_scaleout import PartitionedDedup
        cfg, out = ctx.config.dedup, ctx.out
        if cfg.mode == "partitioned":
            done = [sid for sid, _ in ctx.plan.shards if out.is_complete(STAGE, sid)]
            step = PartitionedDedup(str(out.root), ctx.run_id, cfg, done)
        else:
            step = DedupCorpus(str(out.root), ctx.run_id, cfg, ctx.ingested | ctx.plan.dedup_new)
        ctx.pipeline("dedup", lambda p: p | "Dedup" >> step)
        written = out.table_dir("duplicates") / f"run={ctx.run_id}" / "run.parquet"
        if not written.exists():
            raise RuntimeError(f"run {ctx.run_id}: the dedup pipeline finished without writing {written}")
        kinds = duckdb.connect().execute(
            "SELECT kind, count(*), count(DISTINCT cluster) FROM read_parquet(?) GROUP BY kind ORDER BY kind",
            [[ctx.run_file("duplicates")]]).fetchall()
        return {"kinds": {k: {"samples": n, "clusters": c} for k, n, c in kinds}}


class MemorizationFlags:
    name, summary_field = "memorization flags", "memorization"

    def needs_run(self, ctx: RunContext) -> bool | str:
        if not ctx.plan.corpus_steps["memorization flags"]:
            return False
        from pipelines.memorization import flags_skipped
        # nothing to calibrate on (e.g. empty shards): a note, not a failed run
        return flags_skipped(ctx.out, ctx.config.memorization, ctx.plan.mem_id) or True

    def run(self, ctx: RunContext) -> dict:
        from pipelines.memorization import FlagMemorization
        mem, mem_id = ctx.config.memorization, ctx.plan.mem_id
        # calibration needs every shard's scores: after dedup wrote decisions
        ctx.pipeline("memorization flags",
                     lambda p: p | "Memorization" >> FlagMemorization(str(ctx.out.root), ctx.run_id, mem, mem_id))
        path = ctx.out.table_dir("memorization_runs") / f"run={ctx.run_id}" / "run.parquet"
        if not path.exists():
            raise RuntimeError(f"run {ctx.run_id}: the memorization pipeline finished without writing {path}")
        row = pq.read_table(path).to_pylist()[0]
        return {k: row[k] for k in ("model_id", "n_scored", "n_flagged", "threshold", "method", "level", "reference")}


class Decisions:
    """The training filter list, joined once from the findings (audit.dedup.decisions) when dedup or the
    memorization flags wrote newer ones; before the perturbation tests, which read it."""
    name, summary_field = "decisions", "dedup"

    def needs_run(self, ctx: RunContext) -> bool:
        return decisions_stale(ctx.out)

    def run(self, ctx: RunContext) -> dict:
        write_decisions(ctx.out, ctx.run_id)
        if not ctx.plan.corpus_steps["dedup"]:
            return {}  # the run's summary reports kept/dropped with its duplicates
        kept, dropped = duckdb.connect().execute(
            "SELECT count(*) FILTER (keep), count(*) FILTER (NOT keep) FROM read_parquet(?)",
            [[ctx.run_file("decisions")]]).fetchone()
        return {"kept": kept, "dropped": dropped}


class PerturbationTests:
    name, summary_field = "perturbation tests", "perturbations"

    def needs_run(self, ctx: RunContext) -> bool:
        return ctx.plan.corpus_steps["perturbation tests"]

    def run(self, ctx: RunContext) -> dict:
        from pipelines.perturbations import TestPerturbations  # torch
        # the dataset tests need every shard's labels, features and embeddings
        ctx.pipeline("perturbation tests", lambda p: p | "Perturbations" >> TestPerturbations(
            str(ctx.out.root), ctx.run_id, ctx.config.perturbations))
        path = ctx.out.root / SANITIZER_FILE
        record = json.loads(path.read_text()) if path.exists() else {}
        if record.get("run_id") != ctx.run_id:
            raise RuntimeError(f"run {ctx.run_id}: the perturbation pipeline finished without writing {path}")
        return {k: v for k, v in record.items() if k not in ("run_id", "config")}


class RunChanges:
    """run_changes against the previous successful run: after the last step that changes findings."""
    name, summary_field = "run changes", "changes"

    def needs_run(self, ctx: RunContext) -> bool:
        return True

    def run(self, ctx: RunContext) -> dict:
        return record_changes(ctx.out, ctx.run_id)


CORPUS_STEPS = [Dedup(), MemorizationFlags(), Decisions(), PerturbationTests(), RunChanges()]
FINDING_STEPS = {"dedup", "memorization flags", "decisions", "perturbation tests"}  # skipped when too many samples failed
