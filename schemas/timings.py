"""Seconds each step of a run took: per (shard, per-shard stage) and per corpus step.

Written once per run, after its corpus steps, to OUT/stage_timings/run=<run_id>/run.parquet by
the job (pipelines.job) from the completion markers of this run (each per-shard stage's marker
holds its `seconds`) and the corpus steps it timed. The view shows every run; `shardguard
status`, the report and benchmarks/load.py show sums per stage.
"""

import pyarrow as pa

from schemas.declare import column, table

STAGE_TIMINGS = table(
    "stage_timings", "One row per (shard, per-shard stage) a run did and per corpus step it ran: the seconds it took.", 1,
    column("run_id", pa.string(), "Run that did the work.", False),
    column("kind", pa.string(), "'shard' (a per-shard stage on one shard) or 'corpus' (a step over the whole folder).", False),
    column("stage", pa.string(), "Per-shard: the stage's marker id ('ingest', 'embed/<model>', 'memorization/<model>-<config>', "
                                 "'perturbations/features'); corpus: 'dedup', 'memorization flags', 'perturbation tests', "
                                 "'decisions', 'run changes'.", False),
    column("shard", pa.string(), "Shard id (null for corpus steps)."),
    column("seconds", pa.float64(), "Wall seconds of the stage's own work: ingest = reading, validating and decoding the "
                                    "shard; a stage = preparing its inputs from the one decode, its model or features, "
                                    "and writing its tables; a corpus step = the whole step.", False),
    column("n_inputs", pa.int64(), "Samples the stage was given (null for corpus steps)."),
    column("n_ok", pa.int64(), "Samples it produced rows for."),
    column("n_failed", pa.int64(), "Samples that became its errors rows."),
)
