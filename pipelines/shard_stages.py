"""Beam step: ingest and every per-shard stage, one generic DoFn for any list of stages.

Input: a PCollection of `(shard_id, uri)`; each element is a whole shard, so Beam's per-element
cost is paid once per shard. Output: the same `(shard_id, uri)` once the shard is done (a later
step, e.g. the GPU stages when split, takes it from there).
The DoFn holds only paths, limits and the stages' plain settings; `setup` loads each stage's
models once per worker process (apache_beam.utils.shared: threads of one worker share them).
Per shard it calls audit.ingest.shard_runner.run_shard: one read and one decode per sample feed every
stage whose marker is missing (ingest first, when `ingest` is set); the runner writes the
tables, errors rows and markers. Failure rows: see audit.ingest.shard_runner and each stage.
Metrics: `shardguard/ingest_{shards,samples,ok,failed}` and `<stage>_...` per stage family
('embed', 'memorization', 'perturbation_features'; names in pipelines.progress.COUNTERS), and
`shardguard/ingest_read_retries` (ingest's read) and `store_read_retries` (stored samples read back).
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.utils import shared

from audit.io.output_dir import OutputDir
from audit.io.retrying_reads import log_retry
from audit.ingest.sample_validation import IngestLimits
from audit.ingest.shard_ingest import STAGE as INGEST_STAGE
from audit.ingest.shard_runner import run_shard
from audit.ingest.shard_stages import ModelPool, ShardStage
from pipelines.shard_uris import open_uri
from pipelines.progress import ShardCounters, counter

log = logging.getLogger("shardguard.stages")


class ShardStagesFn(beam.DoFn):
    def __init__(self, out_root: str, run_id: str, stages: list[ShardStage], limits: IngestLimits,
                 ingest: bool = True, batch_size: int = 64):
        self.out_root, self.run_id, self.stages, self.limits = out_root, run_id, stages, limits
        self.ingest, self.batch_size = ingest, batch_size
        self.models = shared.Shared()
        self.counts = {name: ShardCounters(name) for name in
                       ["ingest"] * ingest + sorted({st.error_stage for st in stages})}
        self.read_retries = counter("ingest_read_retries")
        self.store_retries = counter("store_read_retries")

    def setup(self):
        self.out = OutputDir(self.out_root)
        pool = self.models.acquire(ModelPool)
        for st in self.stages:
            st.setup(pool)

    def _on_retry(self, *args):  # ingest's own read, or (shard ingested earlier) the stored samples' read
        self.read_retries.inc()
        log_retry(*args)

    def _on_store_retry(self, *args):
        self.store_retries.inc()
        log_retry(*args)

    def process(self, element):
        shard, uri = element
        ingested = self.out.is_complete(INGEST_STAGE, shard)
        run = run_shard(self.out, shard, uri, self.run_id, self.stages, open_uri, self.limits, self.ingest,
                        self.batch_size, self._on_store_retry if ingested else self._on_retry)
        if run.ingest:
            s = run.ingest
            self.counts["ingest"].record(s["n_inputs"], s["n_ok"], s["n_failed"])
            log.info("shard %s %s: %d samples, %d ok, %d failed (ingest %.1fs)",
                     shard, s["status"], s["n_inputs"], s["n_ok"], s["n_failed"], s["seconds"])
        family = {st.id: st.error_stage for st in self.stages}
        for stage_id, r in run.stages.items():
            self.counts[family[stage_id]].record(r["n_inputs"], r["n_ok"], r["n_failed"])
        if run.stages:
            log.info("shard %s: %s", shard, ", ".join(f"{k} {r['n_ok']} ok/{r['n_failed']} failed ({r['seconds']:.1f}s)"
                                                     for k, r in run.stages.items()))
        yield shard, uri


class ShardStages(beam.PTransform):
    """(shard_id, uri) -> the same, after ingest (when `ingest`) and `stages` ran on the shard.
    A stage list with an accelerator gets it as the step's resource hint (Dataflow GPU workers)."""

    def __init__(self, out_root: str, run_id: str, stages: list[ShardStage], limits: IngestLimits,
                 ingest: bool = True, batch_size: int = 64, spread: bool = True):
        super().__init__()
        self.fn = ShardStagesFn(out_root, run_id, stages, limits, ingest, batch_size)
        self.accelerator = next((st.accelerator for st in stages if st.accelerator), "")
        self.spread = spread

    def expand(self, pcoll):
        step = beam.ParDo(self.fn)
        if self.accelerator:
            step = step.with_resource_hints(accelerator=self.accelerator)
        if self.spread:
            pcoll = pcoll | "SpreadShards" >> beam.Reshuffle()
        return pcoll | "RunStages" >> step
