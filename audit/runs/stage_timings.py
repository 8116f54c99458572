"""The stage_timings table (schemas/timings.py): seconds per (shard, per-shard stage) and per corpus step.

Input: the output folder, a run id, the marker stages of the run's per-shard stages, and the
seconds of the corpus steps the job timed. Output (`write_timings`): OUT/stage_timings/
run=<run_id>/run.parquet, rows from this run's completion markers (each holds its stage's
`seconds`; markers of older versions without it are skipped) and one row per corpus step; not
written when the run did nothing but compare itself with the previous run. `stage_totals` sums a run's rows per stage for `shardguard
status`, the report and benchmarks/load.py.
Failure: none of its own; a marker without seconds is not a row.
"""

from __future__ import annotations

from audit.io.store import scan
from schemas import STAGE_TIMINGS


def timing_rows(out, run_id: str, stages: list[str], corpus_seconds: dict[str, float]) -> list[dict]:
    rows = []
    for stage in stages:
        for m in out.markers(stage):
            if m.get("run_id") == run_id and isinstance(m.get("seconds"), (int, float)):
                rows.append({"run_id": run_id, "kind": "shard", "stage": stage, "shard": m["shard"],
                             "seconds": float(m["seconds"]), "n_inputs": m.get("n_inputs"),
                             "n_ok": m.get("n_ok"), "n_failed": m.get("n_failed")})
    rows += [{"run_id": run_id, "kind": "corpus", "stage": step, "shard": None, "seconds": float(sec),
              "n_inputs": None, "n_ok": None, "n_failed": None} for step, sec in corpus_seconds.items()]
    return rows


ALWAYS_RUNS = {"run changes"}  # steps every run does, even with nothing new: alone they are no reason for a file


def write_timings(out, run_id: str, stages: list[str], corpus_seconds: dict[str, float]) -> int:
    rows = timing_rows(out, run_id, stages, corpus_seconds)
    if any(r["kind"] == "shard" or r["stage"] not in ALWAYS_RUNS for r in rows):
        out.write_run_table(STAGE_TIMINGS, run_id, STAGE_TIMINGS.from_rows(rows))
    return len(rows)


def stage_totals(out, run_id: str | None = None) -> list[dict]:
    """Per stage of one run (default: the newest run with timings): kind, stage, shards, seconds,
    samples (n_inputs) and samples/s; per-shard stages first, ingest first."""
    files = out.written_files("stage_timings")
    if not files:
        return []
    src = out.read_sql("stage_timings")
    run = run_id or scan(f"SELECT max(run_id) AS r FROM {src}")[0]["r"]
    return scan(f"""SELECT run_id, kind, stage, count(shard) AS shards, sum(seconds) AS seconds,
                           sum(n_inputs) AS samples, sum(n_inputs) / nullif(sum(seconds), 0) AS samples_per_s
                    FROM {src} WHERE run_id = ? GROUP BY run_id, kind, stage
                    ORDER BY kind DESC, min(CASE WHEN stage = 'ingest' THEN 0 ELSE 1 END), stage""", [run])
