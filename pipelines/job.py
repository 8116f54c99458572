"""The audit job (`shardguard run`): ingest, embed, memorization scores, dedup, flags, record.

Stages: shards not yet ingested are ingested, embedded and (with memorization.model set)
scored for memorization in one Beam pipeline (shards ingested earlier but missing a configured
model are embedded or scored too); then, when the corpus changed, a second Beam pipeline finds
duplicates over the whole output folder (it needs every shard's embeddings), and a third
calibrates the memorization scores and flags (it needs every shard's scores); when either wrote
findings, the decisions are computed once from them (audit.decisions), before the perturbation
tests (which read them). Each stage skips work its completion markers say is done.

Input: an --input pattern, an output folder, a JobConfig and Beam pipeline flags (passed
through unchanged: --runner, --direct_num_workers, --direct_running_mode, ...).
Output: `RunSummary`; side effects: the per-shard tables, the runs row, OUT/audit.duckdb,
the run_changes table (audit.run_diff, after the corpus steps) and, with `clean.to` set, the
new kept samples appended to that clean destination (pipelines.scheduled_run), and (config
`report`, default on) the HTML report OUT/reports/index.html (audit.run_report).
While it runs, OUT/_manifest/_running.json says what it is doing (audit.run_status: run id,
pid, host, the to-do shards per stage); it is removed when the run ends.
Failure: `OutputLocked` when another run holds OUT; `UsageError` (a ValueError) for an input
that matches no shard or has two shards with one id, and for an --out folder that is not empty
and not ours (audit.folder_ownership: nothing in it is written or deleted). Bad samples never fail the job: they are rows (see pipelines.ingest), unless more
than `ingest.max_failed_fraction` (or `max_failed_samples`) of the run's samples failed: then,
after the per-shard pipeline, the corpus steps are skipped, the runs row says 'failed' and
`audit.failure_threshold.TooManyFailures` is raised (CLI exit code 4). Any other exception in
a step of the run (a pipeline, a corpus step, the views, the report) is recorded before it
propagates: the runs row says 'failed' and `error` names the step and the exception.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone

import apache_beam as beam
import duckdb
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import StandardOptions

from audit import folder_ownership, run_status, store
from audit.decisions import decisions_stale, write_decisions
from audit.failure_threshold import over_threshold, tally_run
from audit.output_dir import OutputDir
from audit.run_diff import record_changes
from audit.run_ids import new_run_id
from audit.run_report import write_report
from audit.shard_ingest import STAGE, retry_unreadable
from audit.sql_literals import file_pattern
from pipelines.beam_options import pipeline_options, private_tempdir
from pipelines.config import JobConfig
from pipelines.dedup import DedupCorpus
from pipelines.dedup_scaleout import PartitionedDedup
from pipelines.embed import EmbedShards, stage as embed_stage
from pipelines.ingest import IngestShards, open_uri
from pipelines.memorization import FlagMemorization, ScoreMemorization, flags_skipped
from pipelines.memorization import stage as mem_stage
from pipelines.perturbations import FEATURE_STAGE, SANITIZER_FILE, PerturbationFeatures, TestPerturbations
from pipelines.progress import ProgressMonitor, StageCounter, finish_and_log
from pipelines.run_plan import RunSummary, plan_run
from pipelines.run_record import record_failure, write_runs_row
from pipelines.scheduled_run import clean_after_audit
from schemas import TABLES

log = logging.getLogger("shardguard.job")


def _dedup_summary(out: OutputDir, run_id: str) -> dict:
    """Counts read back from the tables the dedup stage wrote (runner-independent)."""
    run_file = lambda table: [file_pattern(out.table_dir(table) / f"run={run_id}" / "run.parquet")]  # noqa: E731
    con = duckdb.connect()
    try:
        kept, dropped = con.execute(
            "SELECT count(*) FILTER (keep), count(*) FILTER (NOT keep) FROM read_parquet(?)",
            [run_file("decisions")]).fetchone()
        kinds = con.execute(
            "SELECT kind, count(*), count(DISTINCT cluster) FROM read_parquet(?) GROUP BY kind ORDER BY kind",
            [run_file("duplicates")]).fetchall()
    finally:
        con.close()
    return {"kept": kept, "dropped": dropped,
            "kinds": {k: {"samples": n, "clusters": c} for k, n, c in kinds}}


def _memorization_summary(out: OutputDir, run_id: str) -> dict:
    """The memorization_runs row this run wrote (runner-independent)."""
    path = out.table_dir("memorization_runs") / f"run={run_id}" / "run.parquet"
    if not path.exists():
        raise RuntimeError(f"run {run_id}: the memorization pipeline finished without writing {path}")
    row = pq.read_table(path).to_pylist()[0]
    return {k: row[k] for k in ("model_id", "n_scored", "n_flagged", "threshold", "method", "level", "reference")}


def _perturbation_summary(out: OutputDir, run_id: str) -> dict:
    """What the perturbation step recorded for this run (runner-independent)."""
    path = out.root / SANITIZER_FILE
    record = json.loads(path.read_text()) if path.exists() else {}
    if record.get("run_id") != run_id:
        raise RuntimeError(f"run {run_id}: the perturbation pipeline finished without writing {path}")
    return {k: v for k, v in record.items() if k not in ("run_id", "config")}


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
    shards, todo, embed_todo, mem_todo, feat_todo = plan.shards, plan.todo, plan.embed_todo, plan.mem_todo, plan.feat_todo
    specs, notes, model_ids, mem_id = plan.specs, plan.notes, plan.model_ids, plan.mem_id
    mem, pert, todo_ids = config.memorization, config.perturbations, {sid for sid, _ in todo}
    run_id = new_run_id()
    out.adopt_legacy_files()  # a folder of an older version: record its table files once (audit.output_dir)
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
                ends = [fresh]  # every branch ends in one final step: the DaskRunner computes only the last one's inputs
                if specs:
                    earlier = p | "IngestedEarlier" >> beam.Create(embed_todo)
                    ends.append((fresh, earlier) | "ToEmbed" >> beam.Flatten()
                         | "Embed" >> EmbedShards(str(out.root), run_id, specs, config.embed, config.ingest.retry))
                if mem.enabled:
                    unscored = p | "IngestedUnscored" >> beam.Create(mem_todo)
                    ends.append((fresh, unscored) | "ToScore" >> beam.Flatten()
                         | "Memorization" >> ScoreMemorization(str(out.root), run_id, mem, mem_id, config.ingest.retry))
                if pert.features:
                    unfeatured = p | "IngestedUnfeatured" >> beam.Create(feat_todo)
                    ends.append((fresh, unfeatured) | "ToFeatures" >> beam.Flatten()
                         | "PerturbationFeatures" >> PerturbationFeatures(str(out.root), run_id, config.ingest.retry))
                _ = tuple(ends) | "AllStages" >> beam.Flatten()
                finish_and_log(p.run(), "ingest/embed")
        summary.shards = [m for m in out.markers(STAGE) if m.get("run_id") == run_id]
        missing = {sid for sid, _ in todo} - {m["shard"] for m in summary.shards}
        if missing:
            raise RuntimeError(f"run {run_id}: the pipeline finished but {len(missing)} shards have no "
                               f"completion marker: {sorted(missing)[:5]}")
        stop = over_threshold(tally_run(out, run_id, summary.shards), config.ingest.max_failed_fraction,
                              config.ingest.max_failed_samples, run_id)  # TooManyFailures or None
        if stop:  # the finished shards stay complete; no corpus step runs on a failing input
            log.error("%s", stop)
            summary.notes.append(str(stop))
            plan.corpus_steps = dict.fromkeys(plan.corpus_steps, False)
        track["step"] = "dedup"
        if plan.corpus_steps["dedup"]:
            # the dedup pipeline needs every shard's embeddings: it runs after the first pipeline
            with private_tempdir(out.root):
                p = beam.Pipeline(options=opts)
                if config.dedup.mode == "partitioned":
                    done = [sid for sid, _ in shards if out.is_complete(STAGE, sid)]
                    _ = p | "Dedup" >> PartitionedDedup(str(out.root), run_id, config.dedup, done)
                else:
                    _ = p | "Dedup" >> DedupCorpus(str(out.root), run_id, config.dedup, todo_ids | plan.dedup_new)
                finish_and_log(p.run(), "dedup")
            written = out.table_dir("duplicates") / f"run={run_id}" / "run.parquet"
            if not written.exists():
                raise RuntimeError(f"run {run_id}: the dedup pipeline finished without writing {written}")
        track["step"] = "memorization flags"
        skip_flags = plan.corpus_steps["memorization flags"] and flags_skipped(out, mem, mem_id)
        if skip_flags:  # nothing to calibrate on (e.g. empty shards): a note, not a failed run
            summary.notes.append(skip_flags)
        elif plan.corpus_steps["memorization flags"]:
            # calibration needs every shard's scores: a third pipeline, after dedup
            with private_tempdir(out.root):
                p = beam.Pipeline(options=opts)
                _ = p | "Memorization" >> FlagMemorization(str(out.root), run_id, mem, mem_id)
                finish_and_log(p.run(), "memorization flags")
            summary.memorization = _memorization_summary(out, run_id)
        track["step"] = "decisions"
        if not stop and decisions_stale(out):  # dedup or flags wrote findings: join them once (audit.decisions)
            write_decisions(out, run_id)
        if plan.corpus_steps["dedup"]:
            summary.dedup = _dedup_summary(out, run_id)
        track["step"] = "perturbation tests"
        if plan.corpus_steps["perturbation tests"]:
            # the dataset tests need every shard's labels, features and embeddings: a fourth pipeline
            with private_tempdir(out.root):
                p = beam.Pipeline(options=opts)
                _ = p | "Perturbations" >> TestPerturbations(str(out.root), run_id, pert)
                finish_and_log(p.run(), "perturbation tests")
            summary.perturbations = _perturbation_summary(out, run_id)
        track["step"] = "run changes"
        summary.changes = record_changes(out, run_id)  # after the last corpus step, before the runs row
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
        if config.report:  # OUT/reports/index.html over the whole folder (audit.run_report); a failed run too
            summary.report = write_report(out.root, opener=open_uri)
    except Exception as e:
        record_failure(out, summary, input_pattern, started, config, track, plan, e)
        raise
    if stop:
        raise stop
    return summary
