"""`shardguard status` and the `--dry-run` listing of `shardguard run`: what the CLI prints.

  shardguard status --out DIR [--format table|json] [--runs N]

status: per shard and stage, done / failed / running / interrupted / pending (audit.runs.status
has the rules and reads the folder), totals per stage, the running run if any, the last runs,
and stray Parquet files in table folders that the job did not write (audit.io.output_dir; ignored).
Reads only; works while a run holds the lock. Exit 2 when DIR is not an output folder.
dry-run: the job's own plan (pipelines.run_plan.plan_run: the same to-do computation the job runs),
per stage the shards that would be processed and which corpus steps would run; `clean
--dry-run` likewise from pipelines.clean.plan_clean. Neither writes anything.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from audit.runs import status as run_status
from audit.io.folder_ownership import check_claimable
from audit.io.output_dir import OutputDir
from audit.runs.stage_timings import stage_totals
from audit.io.user_errors import UsageError
from pipelines.clean import check_folders, plan_clean
from pipelines.cli.query_output import format_table, visible
from pipelines.run_plan import plan_run
from pipelines.shard_uris import expand_input
from schemas import TABLES

EXAMPLES_STATUS = """examples:
  shardguard status --out demo-out
  shardguard status --out demo-out --format json | jq '.stages'
States: done, failed (the shard's tar was truncated or unreadable: its marker says so),
running (in the to-do list of the run holding the lock), interrupted (its run was killed),
pending (matched by the last run's --input, no marker yet)."""


def add_parsers(sub) -> None:
    s = sub.add_parser("status", help="per shard and stage: done, failed, running, interrupted or pending",
                       epilog=EXAMPLES_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--out", required=True, help="output folder of `shardguard run`")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.add_argument("--runs", type=int, default=5, metavar="N", help="last runs shown (5)")


def status_report(out: str, n_runs: int = 5) -> dict:
    """Everything `status` prints, as one JSON-able dict."""
    if not (Path(out) / "_manifest").is_dir() and not (Path(out) / "runs").is_dir():
        raise UsageError(f"{out} is not a ShardGuard output folder (no _manifest/ or runs/); "
                         "pass the --out of `shardguard run`")
    notes, matched = [], None
    pattern = run_status.last_input_pattern(out)
    if pattern:
        try:
            matched = [sid for sid, _ in expand_input(pattern)]
        except (ValueError, OSError) as e:
            notes.append(f"the last run's input {pattern!r} no longer expands ({e}): pending shards not listed")
    rows = run_status.shard_rows(out, matched)
    running = run_status.running_run(out)
    if running:
        running = {k: v for k, v in running.items() if k != "stages"} | {
            "to_do": {s: len(ids) for s, ids in (running.get("stages") or {}).items()}}
    strays = [str(p.relative_to(Path(out).resolve())) for p in OutputDir(out).stray_files(TABLES)]
    if strays:
        notes.append(f"{len(strays)} Parquet file(s) in table folders were not written by ShardGuard and are "
                     f"not read by any view or step: {', '.join(strays[:10])}{' ...' if len(strays) > 10 else ''}")
    return {"out": str(Path(out).resolve()), "input_pattern": pattern, "running": running,
            "stages": run_status.stage_totals(rows), "shards": rows,
            "runs": run_status.recent_runs(out, n_runs), "timings": stage_totals(OutputDir(out)),
            "stray_files": strays, "notes": notes}


def cmd_status(args) -> int:
    rep = status_report(args.out, args.runs)
    if args.format == "json":
        print(json.dumps(rep, default=str, indent=1))
        return 0
    run = rep["running"]
    if run:
        print(f"run {run.get('run_id')}: {run['state']} (pid {run.get('pid')} on {run.get('host')}, "
              f"started {run.get('started_at')}, input {run.get('input_pattern')!r})")
    else:
        print("no run in progress")
    cols = ["shard", "stage", "state", "run_id", "n_ok", "n_failed", "detail"]
    print(format_table(cols, [tuple(r[c] for c in cols) for r in rep["shards"]]))
    print("\nper stage:")
    tcols = ["stage", "shards", "done", "failed", "running", "interrupted", "pending", "n_inputs", "n_ok", "n_failed"]
    print(format_table(tcols, [tuple(t[c] for c in tcols) for t in rep["stages"]]))
    print("\nlast runs:")
    rcols = ["run_id", "job", "status", "started_at", "wall_seconds", "n_shards_processed", "n_inputs", "n_failed"]
    print(format_table(rcols, [tuple(r[c] for c in rcols) for r in rep["runs"]]))
    if rep["timings"]:
        print(f"\nstage timings of run {rep['timings'][0]['run_id']}:")
        mcols = ["kind", "stage", "shards", "seconds", "samples", "samples_per_s"]
        print(format_table(mcols, [tuple(round(t[c], 2) if isinstance(t[c], float) else t[c] for c in mcols)
                                   for t in rep["timings"]]))
    for note in rep["notes"]:
        print(f"note: {visible(note)}")
    return 0


def print_run_plan(input_pattern: str, out: str, config) -> int:
    """`shardguard run --dry-run`: the job's plan, printed; nothing is written."""
    check_claimable(out, "audit")  # the run would refuse a folder that is not ours: so does its dry run
    plan = plan_run(input_pattern, OutputDir(out), config)
    print(f"dry run: {len(plan.shards)} shards match {input_pattern!r}; {len(plan.shards) - len(plan.todo)} "
          f"already ingested in {out}; nothing was written")
    for stage, ids in plan.stage_todo.items():
        print(f"{stage}: {len(ids)} to do" + (f": {', '.join(ids)}" if ids else ""))
    enabled = {"dedup": config.dedup.enabled, "memorization flags": config.memorization.enabled,
               "perturbation tests": config.perturbations.tests}
    for step, runs in plan.corpus_steps.items():
        print(f"{step}: {'would run' if runs else 'up to date (skipped)' if enabled.get(step, True) else 'disabled'}")
    for note in plan.notes:
        print(f"note: {note}")
    return 0


def print_clean_plan(src: str, dest: str, cfg) -> int:
    """`shardguard clean --dry-run`: the output shards the clean job would write; nothing is written."""
    plan = plan_clean(check_folders(src, dest), OutputDir(dest), cfg)
    print(f"dry run: {plan.n_input} input samples, {len(plan.samples)} kept "
          f"(decisions of run {plan.dec_run or 'none: every ok sample kept'}); nothing was written")
    print(f"clean: {len(plan.to_write)} output shards to write into {dest} "
          f"({len(plan.new_plan)} new, {len(plan.to_write) - len(plan.new_plan)} planned earlier and unwritten)")
    for out_shard, samples in plan.to_write:
        print(f"  {out_shard}: {len(samples)} samples from {', '.join(sorted({s.shard for s in samples}))}")
    print(f"images: {'sanitized with ' + plan.sanitizer['name'] if plan.sanitizer else 'copied unchanged'} ({plan.why})")
    return 0
