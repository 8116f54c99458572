"""The run's failure threshold: stop a run whose input is mostly failing, before corpus steps.

Input: the output folder, the run id, the ingest completion markers of the shards this run
ingested, and the limits `ingest.max_failed_fraction` / `ingest.max_failed_samples`.
Output: `FailureTally` (samples in, samples failed, top error types) and, when a limit is
exceeded, a `TooManyFailures` to raise; its message names the fraction, the threshold and the
top error types.
Counting: a sample failed when this run wrote at least one keyed errors row for it, at any
stage of the per-shard pipeline (ingest, embed, memorization scores, features), so a sample
failing in two models counts once. A shard that could not be read to its end (truncated,
unreadable, ReadFailed) adds the samples it did not deliver as failed when img2dataset's
stats file says how many it had (`n_expected`); without one only its shard-level errors row
shows, except that a run where nothing at all could be read counts as failed entirely.
When: once, after the per-shard pipeline (every shard ingested, embedded, scored) and before
the corpus steps (dedup, memorization flags, perturbation tests). Beam gives the driver no
global view while a pipeline runs, and a worker stopping on its own partial counts would make
the verdict depend on scheduling. Every shard this run finished keeps its tables and marker.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from audit.io.output_dir import OutputDir
from audit.io.sql_literals import file_pattern


class TooManyFailures(RuntimeError):
    """More of the run's samples failed than the job config allows (CLI exit code 4)."""

    def __init__(self, message: str, tally: "FailureTally"):
        super().__init__(message)
        self.tally = tally


@dataclass
class FailureTally:
    n_inputs: int
    n_failed: int
    error_types: Counter = field(default_factory=Counter)  # error_type -> rows (keyed and shard-level)

    @property
    def fraction(self) -> float:
        if self.n_inputs:
            return self.n_failed / self.n_inputs
        return 1.0 if self.error_types else 0.0  # nothing readable at all

    def top(self, n: int = 3) -> str:
        return ", ".join(f"{t} ({c})" for t, c in self.error_types.most_common(n)) or "none"


def tally_run(out: OutputDir, run_id: str, shards: list[dict]) -> FailureTally:
    """Failures of this run in the shards it ingested (`shards`: their ingest markers)."""
    undelivered = sum(max(0, (s.get("n_expected") or 0) - s["n_inputs"]) for s in shards
                      if s.get("status") != "complete")
    n_inputs = sum(s["n_inputs"] for s in shards) + undelivered
    run_dir = out.table_dir("errors") / f"run={run_id}"
    files = [file_pattern(p) for p in out.written_files("errors") if p.parent == run_dir]
    if not shards or not files:
        return FailureTally(n_inputs, undelivered)
    con = duckdb.connect()
    try:  # one scan over the run's errors files (one per shard and stage), in DuckDB
        con.register("ran", pa.table({"shard": sorted({s["shard"] for s in shards})}))
        con.execute("CREATE TEMP TABLE e AS SELECT shard, key, error_type FROM read_parquet(?) "
                    "WHERE shard IN (SELECT shard FROM ran)", [files])
        [(n_failed,)] = con.execute("SELECT count(*) FROM (SELECT DISTINCT shard, key FROM e WHERE key IS NOT NULL)").fetchall()
        types = Counter(dict(con.execute("SELECT error_type, count(*) FROM e GROUP BY ALL").fetchall()))
    finally:
        con.close()
    return FailureTally(n_inputs, n_failed + undelivered, types)


def over_threshold(tally: FailureTally, max_fraction: float, max_samples: int, run_id: str) -> TooManyFailures | None:
    """The error to raise when the tally is over a limit (`max_samples` 0 = no count limit)."""
    over_fraction = tally.fraction > max_fraction
    over_count = max_samples > 0 and tally.n_failed > max_samples
    if not (over_fraction or over_count):
        return None
    limit = (f"ingest.max_failed_fraction = {max_fraction:.1%}" if over_fraction
             else f"ingest.max_failed_samples = {max_samples}")
    return TooManyFailures(
        f"run {run_id}: {tally.n_failed} of {tally.n_inputs} samples failed ({tally.fraction:.1%}), over "
        f"{limit}; top error types: {tally.top()}. The run stopped before the corpus steps; the shards "
        f"it finished keep their tables (see the errors table for run_id '{run_id}').", tally)
