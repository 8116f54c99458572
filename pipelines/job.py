"""The audit job (`shardguard run`): ingest, embed, memorization scores, dedup, flags, record.

Stages: shards not yet ingested are ingested, embedded and (with memorization.model set)
scored for memorization in one Beam pipeline (shards ingested earlier but missing a configured
model are embedded or scored too); then, when the corpus changed, a second Beam pipeline finds
duplicates over the whole output folder (it needs every shard's embeddings), and a third
calibrates the memorization scores and flags (it needs every shard's scores). Each stage skips
work its completion markers say is done.

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

import contextlib
import json
import logging
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from audit import folder_ownership, run_status, store
from audit.embedder_specs import plan_embedders
from audit.failure_threshold import over_threshold, tally_run
from audit.output_dir import OutputDir
from pipelines.config import JobConfig
from pipelines.dedup import DedupCorpus
from pipelines.dedup_scaleout import PartitionedDedup
from pipelines.embed import EmbedShards, stage as embed_stage
from audit.shard_ingest import STAGE, retry_unreadable
from pipelines.ingest import IngestShards
from pipelines.memorization import FlagMemorization, ScoreMemorization, flags_skipped, model_id_of, needs_flagging
from pipelines.memorization import stage as mem_stage
from pipelines.perturbations import FEATURE_STAGE, SANITIZER_FILE, PerturbationFeatures, TestPerturbations, needs_testing
from pipelines.progress import ProgressMonitor, StageCounter, finish_and_log
from pipelines.run_record import record_failure, write_runs_row
from pipelines.shard_uris import expand_input
from schemas import TABLES

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
    changes: dict = field(default_factory=dict)  # run_changes summary against the previous run (audit.run_diff)
    clean: dict = field(default_factory=dict)  # clean.to set: what the append to the clean destination did
    report: str = ""  # path of the HTML report (config `report: false`: not written)

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
    from audit.sql_literals import file_pattern
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
    """UTC time to the microsecond, then a random suffix: ids sort in time order (every "latest
    run" query takes max(run_id)), also for two runs within one second, which second-resolution
    ids ordered by their random suffix."""
    global _last_run_time
    now = max(datetime.now(timezone.utc), _last_run_time + timedelta(microseconds=1))
    _last_run_time = now  # strictly increasing within a process, even within one microsecond
    return now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond:06d}Z-" + secrets.token_hex(3)


_last_run_time = datetime.min.replace(tzinfo=timezone.utc)


DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"  # not in Beam's short-name list


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Beam flags -> options; `--runner dask` (or DaskRunner) means Beam's DaskRunner, whose
    elements (whole shards) then default to one per Dask partition so shards spread over workers."""
    opts = PipelineOptions(beam_args)
    std = opts.view_as(StandardOptions)
    std.runner = std.runner or "DirectRunner"
    if std.runner.lower() in ("dask", "daskrunner"):
        std.runner = DASK_RUNNER
    if std.runner == DASK_RUNNER:
        from apache_beam.runners.dask.dask_runner import DaskOptions
        dask = opts.view_as(DaskOptions)
        if dask.npartitions is None and dask.partition_size is None:
            dask.partition_size = 1
    return opts


@contextlib.contextmanager
def private_tempdir(root: Path):
    """Beam's local job server leaves an empty 'beam-temp*' folder per run in the temp dir:
    give the run its own temp dir under OUT (OUT/_tmp/sg-run-<hex>) and remove it afterwards."""
    out = OutputDir(root)
    path = out.new_private_tmp()
    saved, tempfile.tempdir = tempfile.tempdir, str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = saved
        out.remove_private_tmp(path)


@dataclass
class RunPlan:
    """What a run does, from the completion markers: the job runs it, `run --dry-run` prints it.
    Every list holds (shard_id, uri); computing it reads OUT and writes nothing."""
    shards: list[tuple[str, str]]  # matched by the input
    todo: list[tuple[str, str]]  # not ingested: ingest, then every per-shard stage
    embed_todo: list[tuple[str, str]]  # ingested earlier, missing a configured model
    mem_todo: list[tuple[str, str]]  # ingested earlier, not scored with this model and config
    feat_todo: list[tuple[str, str]]  # ingested earlier, no perturbation features
    specs: list
    notes: list[str]
    model_ids: list[str]
    mem_id: str
    stage_todo: dict[str, list[str]]  # marker stage -> shard ids this run processes in it
    corpus_steps: dict[str, bool]  # dedup, memorization flags, perturbation tests: whether they run
    dedup_new: set[str] = field(default_factory=set)  # shards completed since the last dedup (incremental: searched)


def _last_run(out: OutputDir, table: str) -> str:
    """Run id of the newest whole run-level file of `table` ('' when none)."""
    return max((p.parent.name.removeprefix("run=") for p in out.table_dir(table).glob("run=*/run.parquet")), default="")


def _completed_since(markers: dict[str, list[dict]], stages: list[str], last_run: str) -> set[str]:
    """Shards a per-shard stage completed in a run after `last_run` (run ids sort by start time).
    A run killed between its per-shard pipeline and a corpus step leaves these for the next run,
    whose own to-do lists are then empty: without this, the corpus step would never see them.
    `markers`: stage -> its completion markers (read once per plan)."""
    return {m["shard"] for st in stages for m in markers[st] if m.get("run_id", "") > last_run}


def plan_run(input_pattern: str, out: OutputDir, config: JobConfig) -> RunPlan:
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
    ids = lambda pairs: [sid for sid, _ in pairs]  # noqa: E731
    stage_todo = {STAGE: ids(todo)}
    for m in model_ids:
        stage_todo[embed_stage(m)] = ids(todo) + [s for s in ids(embed_todo) if not out.is_complete(embed_stage(m), s)]
    if mem.enabled:
        stage_todo[mem_stage(mem, mem_id)] = ids(todo) + ids(mem_todo)
    if pert.features:
        stage_todo[FEATURE_STAGE] = ids(todo) + ids(feat_todo)
    # the corpus steps read files the per-shard pipeline does not write: decided before it runs
    embed_stages = [embed_stage(m) for m in model_ids]
    markers = {st: out.markers(st) for st in [STAGE, FEATURE_STAGE] + embed_stages
               + ([mem_stage(mem, mem_id)] if mem.enabled else [])}
    dedup_new = _completed_since(markers, [STAGE] + embed_stages, _last_run(out, "decisions")) if config.dedup.enabled else set()
    mem_stale = mem.enabled and _completed_since(markers, [STAGE, mem_stage(mem, mem_id)], _last_run(out, "memorization_runs"))
    tested = out.root / SANITIZER_FILE  # written last by the perturbation tests
    tested_run = json.loads(tested.read_text()).get("run_id", "") if tested.exists() else ""
    pert_stale = pert.tests and _completed_since(markers, [STAGE, FEATURE_STAGE] + embed_stages, tested_run)
    corpus_steps = {
        "dedup": bool(config.dedup.enabled and (todo or embed_todo or dedup_new
                                                or not any(out.table_dir("decisions").glob("run=*/*.parquet")))),
        "memorization flags": bool(mem.enabled and (todo or mem_todo or mem_stale or needs_flagging(out, mem, mem_id))),
        "perturbation tests": bool(pert.tests and (todo or feat_todo or embed_todo or pert_stale or needs_testing(out, pert))),
    }
    return RunPlan(shards, todo, embed_todo, mem_todo, feat_todo, specs, notes, model_ids, mem_id,
                   stage_todo, corpus_steps, dedup_new)


def run_ingest(input_pattern: str, out_root: str, config: JobConfig | None = None,
               beam_args: list[str] | None = None) -> RunSummary:
    config = config or JobConfig()
    out = OutputDir(folder_ownership.claim(out_root, "audit"))  # refuses a folder that is not ours
    out.lock()
    try:
        summary = _run_locked(input_pattern, out, config, beam_args or [])
        from pipelines.scheduled_run import clean_after_audit
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
            written = out.table_dir("decisions") / f"run={run_id}" / "run.parquet"
            if not written.exists():
                raise RuntimeError(f"run {run_id}: the dedup pipeline finished without writing {written}")
            summary.dedup = _dedup_summary(out, run_id)
        track["step"] = "memorization flags"
        skip_flags = plan.corpus_steps["memorization flags"] and flags_skipped(out, mem, mem_id)
        if skip_flags:  # nothing to calibrate on (e.g. empty shards): a note, not a failed run
            summary.notes.append(skip_flags)
        elif plan.corpus_steps["memorization flags"]:
            # calibration needs every shard's scores: a third pipeline, after dedup wrote decisions
            with private_tempdir(out.root):
                p = beam.Pipeline(options=opts)
                _ = p | "Memorization" >> FlagMemorization(str(out.root), run_id, mem, mem_id)
                finish_and_log(p.run(), "memorization flags")
            summary.memorization = _memorization_summary(out, run_id)
        track["step"] = "perturbation tests"
        if plan.corpus_steps["perturbation tests"]:
            # the dataset tests need every shard's labels, features and embeddings: a fourth pipeline
            with private_tempdir(out.root):
                p = beam.Pipeline(options=opts)
                _ = p | "Perturbations" >> TestPerturbations(str(out.root), run_id, pert)
                finish_and_log(p.run(), "perturbation tests")
            summary.perturbations = _perturbation_summary(out, run_id)
        track["step"] = "run changes"
        from audit.run_diff import record_changes
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
            from audit.run_report import write_report
            from pipelines.ingest import open_uri
            summary.report = write_report(out.root, opener=open_uri)
    except Exception as e:
        record_failure(out, summary, input_pattern, started, config, track, plan, e)
        raise
    if stop:
        raise stop
    return summary
