"""Run-to-run changes: what a scheduled (nightly) run changed compared with the previous run.

Written once per run to OUT/run_changes/run=<run_id>/run.parquet by the run that computed it.
The DuckDB view shows the latest run's changes; `run_changes_history` keeps every run's.
"""

import pyarrow as pa

from schemas.declare import column, table

RUN_CHANGES = table(
    "run_changes", "One row per thing a run changed against the previous successful run on the same output folder.", 1,
    column("run_id", pa.string(), "Run that found the change.", False),
    column("previous_run_id", pa.string(), "The run compared against (null for the first run: everything is new)."),
    column("change", pa.string(), "'new_shard', 'new_error', 'new_duplicate' (a sample that joined a duplicate "
                                  "cluster), 'new_drop' / 'new_keep' (the keep decision flipped), 'new_flag' / "
                                  "'cleared_flag' (memorization or perturbation flag), 'changed_verdict' "
                                  "(a perturbation test's verdict); 'no_changes' (the run's only row when it "
                                  "changed nothing, so the latest view shows this run).", False),
    column("source_table", pa.string(), "Table the change was read from (decisions, duplicates, memorization, "
                                        "perturbation_flags, perturbation_tests, errors, shards; runs for "
                                        "'no_changes').", False),
    column("shard", pa.string(), "Shard of the sample (null for dataset-level changes)."),
    column("key", pa.string(), "Sample key (null for shard- and dataset-level changes)."),
    column("before", pa.string(), "Value in the previous run (null when absent)."),
    column("after", pa.string(), "Value in this run (null when gone)."),
    column("detail", pa.string(), "Human-readable explanation: the duplicate's kind and nearest key, the test name, "
                                  "the error type."),
    latest_only=True,
)
