"""The runs row: one per `shardguard run`, saying what the run did and whether it succeeded.

Input: the run's summary and plan (pipelines.run_plan), where it stopped (`track`: step, runner,
start time). Output: OUT/runs/run=<run_id>/run.parquet, rewritten whole when a later step of
the same run fails, so the row always says what really happened: 'succeeded', or 'failed'
with `error` = '<step>: <ExceptionType>: <first line of the message>' (the failure threshold's
message for TooManyFailures). `record_failure` never raises: the run's own exception is what
propagates, and a failure to record it is logged.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

from audit.io import store
from audit.io.output_dir import OutputDir
from audit.ingest.shard_ingest import STAGE
from pipelines.config import JobConfig
from pipelines.run_plan import RunPlan, RunSummary
from schemas import RUNS, TABLES

log = logging.getLogger("shardguard.job")


def shardguard_version() -> str:
    try:
        return version("shardguard")
    except PackageNotFoundError:
        return "unknown"



def write_runs_row(out: OutputDir, summary: RunSummary, input_pattern: str, started: datetime, config: JobConfig,
                    track: dict, plan: RunPlan, status: str, error: str | None) -> None:
    """The run's row of the runs table (rewritten whole when a later step of the run fails)."""
    ran = (("ingest", plan.todo), ("embed", plan.specs and (plan.todo or plan.embed_todo)),
           ("memorization", summary.memorization), ("dedup", summary.dedup), ("perturbations", summary.perturbations))
    out.write_run_table(RUNS, summary.run_id, [{
        "run_id": summary.run_id, "job": "+".join([name for name, did in ran if did]) or "nothing to do",
        "status": status, "error": error, "input_pattern": input_pattern,
        "started_at": started, "finished_at": datetime.now(timezone.utc),
        "runner": track["runner"], "shardguard_version": shardguard_version(),
        "config_json": config.to_json(), "n_shards_matched": summary.n_shards_matched,
        "n_shards_skipped": summary.n_shards_skipped, "n_shards_processed": len(summary.shards),
        "n_inputs": summary.n_inputs, "n_ok": summary.n_ok, "n_failed": summary.n_failed,
        "wall_seconds": summary.wall_seconds, "notes": summary.notes,
        "embeddings_json": json.dumps(summary.embeddings, sort_keys=True),
        "dedup_json": json.dumps(summary.dedup, sort_keys=True),
        "memorization_json": json.dumps(summary.memorization, sort_keys=True),
        "perturbations_json": json.dumps(summary.perturbations, sort_keys=True),
    }])


def record_failure(out: OutputDir, summary: RunSummary, input_pattern: str, started: datetime, config: JobConfig,
                    track: dict, plan: RunPlan, exc: Exception) -> None:
    """A step of the run raised: its runs row says 'failed', in which step and why, and the
    views are refreshed to show it (best effort: the original exception is what propagates)."""
    error = f"{track['step']}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    summary.wall_seconds = time.perf_counter() - track["t0"]
    try:
        if not summary.shards:  # failed in the per-shard pipeline: count the shards it completed
            summary.shards = [m for m in out.markers(STAGE) if m.get("run_id") == summary.run_id]
        write_runs_row(out, summary, input_pattern, started, config, track, plan, "failed", error)
        store.refresh_views(out, TABLES)
    except Exception as e:  # noqa: BLE001 - the run already failed; say so, raise the first error
        log.error("run %s failed (%s) and its failure could not be fully recorded: %s: %s",
                  summary.run_id, error, type(e).__name__, e)
