"""What a `shardguard run` will do, and what it did.

Input (`plan_run`): the --input pattern, the output folder and the JobConfig. Output: a
`RunPlan` from the completion markers: the shards each per-shard stage still has to process
and whether each corpus step (dedup, memorization flags, perturbation tests) runs; computing
it reads OUT and writes nothing, so the job (pipelines.job) runs it and `run --dry-run`
(pipelines.cli.status_commands) prints it. `RunSummary`: what the run did, filled in by the
job, written as the runs row (pipelines.run_record) and printed by the CLI.
Failure: `UsageError` from expand_input for a pattern that matches no shard or two shards
with one id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from audit.embeddings.stage import EmbedStage
from audit.embeddings.embedder_specs import plan_embedders
from audit.memorization.flags import needs_flagging
from audit.memorization.stage import MemorizationStage
from audit.io.output_dir import OutputDir
from audit.perturbations.config import SANITIZER_FILE, needs_testing
from audit.perturbations.feature_stage import FEATURE_STAGE
from audit.ingest.shard_ingest import STAGE
from audit.ingest.shard_stages import ShardStage
from pipelines.config import JobConfig
from pipelines.shard_uris import expand_input
from pipelines.stage_registry import shard_stages


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
    changes: dict = field(default_factory=dict)  # run_changes summary against the previous run (audit.runs.diff)
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

@dataclass
class RunPlan:
    """What a run does, from the completion markers: the job runs it, `run --dry-run` prints it.
    Every list holds (shard_id, uri); computing it reads OUT and writes nothing."""
    shards: list[tuple[str, str]]  # matched by the input
    todo: list[tuple[str, str]]  # not ingested: ingest, then every per-shard stage
    later: list[tuple[str, str]]  # ingested earlier, missing at least one per-shard stage
    stages: list[ShardStage]  # every per-shard stage the config turns on (pipelines.stage_registry)
    specs: list
    notes: list[str]
    model_ids: list[str]
    mem_id: str
    stage_todo: dict[str, list[str]]  # marker stage -> shard ids this run processes in it
    corpus_steps: dict[str, bool]  # dedup, memorization flags, perturbation tests: whether they run
    dedup_new: set[str] = field(default_factory=set)  # shards completed since the last dedup (incremental: searched)

    def family_todo(self, cls: type) -> list[tuple[str, str]]:
        """Shards ingested earlier that a stage of class `cls` still has to do."""
        ids = {sid for st in self.stages if isinstance(st, cls) for sid in self.stage_todo[st.id]}
        return [(sid, uri) for sid, uri in self.later if sid in ids]

    @property
    def embed_todo(self) -> list[tuple[str, str]]:
        return self.family_todo(EmbedStage)


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
    stages = shard_stages(config)
    todo_ids = {sid for sid, _ in todo}
    ids = lambda pairs: [sid for sid, _ in pairs]  # noqa: E731
    stage_todo = {STAGE: ids(todo)}
    for st in stages:
        stage_todo[st.id] = ids(todo) + [sid for sid, _ in shards if sid not in todo_ids and not out.is_complete(st.id, sid)]
    pending = {sid for st in stages for sid in stage_todo[st.id]}
    later = [(sid, uri) for sid, uri in shards if sid not in todo_ids and sid in pending]
    mem, pert = config.memorization, config.perturbations
    mem_stages = [st.id for st in stages if isinstance(st, MemorizationStage)]
    mem_id = next((st.model_id for st in stages if isinstance(st, MemorizationStage)), "")
    mem_todo = [s for s in later if any(s[0] in stage_todo[i] for i in mem_stages)]
    feat_todo = [s for s in later if pert.features and s[0] in stage_todo[FEATURE_STAGE]]
    embed_todo = [s for s in later if any(s[0] in stage_todo[st.id] for st in stages if isinstance(st, EmbedStage))]
    # the corpus steps read files the per-shard pipeline does not write: decided before it runs
    embed_stages = [st.id for st in stages if isinstance(st, EmbedStage)]
    markers = {st: out.markers(st) for st in [STAGE, FEATURE_STAGE] + embed_stages + mem_stages}
    dedup_new = _completed_since(markers, [STAGE] + embed_stages, _last_run(out, "decisions")) if config.dedup.enabled else set()
    mem_stale = mem.enabled and _completed_since(markers, [STAGE] + mem_stages, _last_run(out, "memorization_runs"))
    tested = out.root / SANITIZER_FILE  # written last by the perturbation tests
    tested_run = json.loads(tested.read_text()).get("run_id", "") if tested.exists() else ""
    pert_stale = pert.tests and _completed_since(markers, [STAGE, FEATURE_STAGE] + embed_stages, tested_run)
    corpus_steps = {
        "dedup": bool(config.dedup.enabled and (todo or embed_todo or dedup_new
                                                or not any(out.table_dir("decisions").glob("run=*/*.parquet")))),
        "memorization flags": bool(mem.enabled and (todo or mem_todo or mem_stale or needs_flagging(out, mem, mem_id))),
        "perturbation tests": bool(pert.tests and (todo or feat_todo or embed_todo or pert_stale or needs_testing(out, pert))),
    }
    return RunPlan(shards, todo, later, stages, specs, notes, model_ids, mem_id, stage_todo, corpus_steps, dedup_new)
