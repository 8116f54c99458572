"""The audit job (`shardguard run`): ingest, embed, memorization scores, dedup, flags, record.

Stages: shards not yet ingested are ingested, embedded and (with memorization.model set)
scored for memorization in one Beam pipeline (shards ingested earlier but missing a configured
model are embedded or scored too); then, when the corpus changed, a second Beam pipeline finds
duplicates over the whole output folder (it needs every shard's embeddings), and a third
calibrates the memorization scores and flags (it needs every shard's scores); when either wrote
findings, the decisions are computed once from them (audit.dedup.decisions), before the perturbation
tests (which read them). Each stage skips work its completion markers say is done.

Input: an --input pattern, an output folder, a JobConfig and Beam pipeline flags (passed
through unchanged: --runner, --direct_num_workers, --direct_running_mode, ...).
Output: `RunSummary`; side effects: the per-shard tables, the runs row, OUT/audit.duckdb,
the run_changes table (audit.runs.diff, after the corpus steps) and, with `clean.to` set, the
new kept samples appended to that clean destination (pipelines.scheduled_run), and (config
`report`, default on) the HTML report OUT/reports/index.html (audit.report.run_report; a rerun that found
nothing new keeps the report it has: `shardguard report` redraws it).
While it runs, OUT/_manifest/_running.json says what it is doing (audit.runs.status: run id,
pid, host, the to-do shards per stage); it is removed when the run ends.
Failure: `OutputLocked` when another run holds OUT; `UsageError` (a ValueError) for an input
that matches no shard or has two shards with one id, and for an --out folder that is not empty
and not ours (audit.io.folder_ownership: nothing in it is written or deleted). Bad samples never fail the job: they are rows (see pipelines.ingest), unless more
than `ingest.max_failed_fraction` (or `max_failed_samples`) of the run's samples failed: then,
after the per-shard pipeline, the corpus steps are skipped, the runs row says 'failed' and
`audit.runs.failure_threshold.TooManyFailures` is raised (CLI exit code 4). Any other exception in
a step of the run (a pipeline, a corpus step, the views, the report) is recorded before it
propagates: the runs row says 'failed' and `error` names the step and the exception.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from audit.io import folder_ownership, store
from audit.runs import status as run_status
from audit.runs.failure_threshold import over_threshold, tally_run
from audit.io.output_dir import OutputDir
from audit.runs.ids import new_run_id
from audit.embeddings.stage import stage_id as embed_stage
from audit.report.run_report import write_report
from audit.runs.stage_timings import write_timings
from audit.ingest.shard_ingest import STAGE, retry_unreadable
from pipelines.beam_options import pipeline_options, private_tempdir
from pipelines.config import JobConfig
from pipelines.corpus_steps import CORPUS_STEPS, FINDING_STEPS, RunContext
from pipelines.shard_stages import ShardStages
from pipelines.shard_uris import open_uri
from pipelines.progress import ProgressMonitor, StageCounter, finish_and_log
from pipelines.run_plan import RunSummary, plan_run
from pipelines.run_record import record_failure, write_runs_row
from pipelines.scheduled_run import clean_after_audit
from schemas import TABLES

log = logging.getLogger("shardguard.job")


def run_ingest(input_pattern: str, out_root: str, config: JobConfig | None = None,
               beam_args: list[str] | None = None) -> RunSummary:
    config = config or JobConfig()
    out = OutputDir(folder_ownership.claim(out_root, "audit"))  # refuses a folder that is not ours
    out.lock()
    try:
        summary = _run_locked(input_pattern, out, config, beam_args or [])
        summary.clean = clean_after_audit(out.root, config, beam_args or [], summary.run_id)
        return summary
    finally:
        run_status.clear_running(out.root)  # a run killed before this line leaves it: 'interrupted'
        out.unlock()


def _run_locked(input_pattern: str, out: OutputDir, config: JobConfig, beam_args: list[str]) -> RunSummary:
    t0, started = time.perf_counter(), datetime.now(timezone.utc)
    out.remove_leftovers(TABLES)  # our temp files and private temp dirs of killed runs (we hold the lock)
    retried = retry_unreadable(out) if config.ingest.retry_unreadable else []  # storage was down last time
    plan = plan_run(input_pattern, out, config)
    shards, todo, stages, notes, model_ids = plan.shards, plan.todo, plan.stages, plan.notes, plan.model_ids
    todo_ids = {sid for sid, _ in todo}
    run_id = new_run_id()
    out.adopt_legacy_files()  # a folder of an older version: record its table files once (audit.io.output_dir)
    run_status.write_running(out.root, run_id, input_pattern, plan.stage_todo)
    summary = RunSummary(run_id, str(out.root), len(shards), len(shards) - len(todo), notes=notes)
    if retried:
        summary.notes.append(f"retrying {len(retried)} shard(s) whose read failed last time: {', '.join(sorted(retried)[:5])}")
    log.info("run %s: %d shards matched, %d already complete, %d to do",
             run_id, len(shards), summary.n_shards_skipped, len(todo))
    track = {"step": "ingest/embed", "runner": "", "t0": t0}  # where a failed run stopped, for its runs row
    try:
        opts = pipeline_options(beam_args)
        track["runner"] = str(opts.view_as(StandardOptions).runner)
        if todo or plan.later:
            counters = [StageCounter("ingest", out.manifest_dir(STAGE), run_id, len(todo))]
            counters += [StageCounter(st.label, out.manifest_dir(st.id), run_id, len(plan.stage_todo[st.id]))
                         for st in stages]
            with ProgressMonitor(counters, config.progress_seconds), private_tempdir(out.root):
                p = beam.Pipeline(options=opts)
                # one read and one decode of each shard feed ingest and every per-shard stage
                # (pipelines.shard_stages); split_gpu_stages: GPU stages as their own step, fed from the store
                split = config.split_gpu_stages and any(st.resources == "gpu" for st in stages)
                first = [st for st in stages if not (split and st.resources == "gpu")]
                done = (p | "Shards" >> beam.Create(todo + plan.later)
                          | "Stages" >> ShardStages(str(out.root), run_id, first, config.ingest, True, config.embed.batch_size))
                if split:
                    _ = done | "GpuStages" >> ShardStages(str(out.root), run_id, [st for st in stages if st not in first],
                                                          config.ingest, False, config.embed.batch_size)
                finish_and_log(p.run(), "ingest/embed")
        summary.shards = [m for m in out.markers(STAGE) if m.get("run_id") == run_id]
        missing = {sid for sid, _ in todo} - {m["shard"] for m in summary.shards}
        if missing:
            raise RuntimeError(f"run {run_id}: the pipeline finished but {len(missing)} shards have no "
                               f"completion marker: {sorted(missing)[:5]}")
        corpus_seconds: dict[str, float] = {}  # corpus step -> seconds (the stage_timings table)
        stop = over_threshold(tally_run(out, run_id, summary.shards), config.ingest.max_failed_fraction,
                              config.ingest.max_failed_samples, run_id)  # TooManyFailures or None
        if stop:  # the finished shards stay complete; no corpus step runs on a failing input
            log.error("%s", stop)
            summary.notes.append(str(stop))
        ctx = RunContext(out, run_id, config, plan, opts, todo_ids)
        for step in CORPUS_STEPS:  # pipelines.corpus_steps: each reads what the earlier ones wrote
            track["step"], clock = step.name, time.perf_counter()
            why = not (stop and step.name in FINDING_STEPS) and step.needs_run(ctx)
            if isinstance(why, str):  # skipped with a note (e.g. nothing to calibrate on)
                summary.notes.append(why)
            elif why:
                setattr(summary, step.summary_field, {**getattr(summary, step.summary_field), **step.run(ctx)})
                corpus_seconds[step.name] = time.perf_counter() - clock
        track["step"] = "stage timings"
        write_timings(out, run_id, [STAGE] + [st.id for st in stages], corpus_seconds)
        for m in model_ids:
            done = [r for r in out.markers(embed_stage(m)) if r.get("run_id") == run_id]
            if done:
                summary.embeddings[m] = {k: sum(r[k] for r in done) for k in ("n_inputs", "n_ok", "n_failed")}
        summary.wall_seconds = time.perf_counter() - t0
        track["step"] = "runs row"
        write_runs_row(out, summary, input_pattern, started, config, track, plan, status="failed" if stop else "succeeded",
                        error=str(stop) if stop else None)
        track["step"] = "views"
        store.refresh_views(out, TABLES)
        track["step"] = "report"
        report = out.root / "reports" / "index.html"
        idle = not (todo or plan.later or set(corpus_seconds) - {"run changes"})  # nothing new: findings as before
        if config.report and idle and report.exists():  # it shows every finding already: kept, not redrawn
            summary.report = str(report)
        elif config.report:  # OUT/reports/index.html over the whole folder (audit.report.run_report); a failed run too
            summary.report = write_report(out.root, opener=open_uri)
    except Exception as e:
        record_failure(out, summary, input_pattern, started, config, track, plan, e)
        raise
    if stop:
        raise stop
    return summary
