"""Beam corpus step: memorization calibration and flags. (The per-shard scores are a stage of the
one-read per-shard step: audit.memorization.stage, run by pipelines.shard_stages.)

FlagMemorization. Input: the output folder (one element). Output: a summary dict. Calibrates on
the reference scores, flags, computes trigger tokens for the highest flagged captions, and
writes memorization, memorization_runs and exports/memorized_samples.jsonl (the job then computes
the decisions from them, audit.dedup.decisions).
"""

from __future__ import annotations

import logging

import apache_beam as beam

from audit.memorization.diffusion_models import DiffusionModel, image_pixels
from audit.report.finding_pages import memorization_page, read_training_images
from audit.memorization.flags import calibrate_scores, export_keys, flag_rows, run_row, summary, to_explain
from audit.memorization.shard import MemorizationConfig
from audit.memorization.stage import load_model, slug, stage_id as stage
from audit.io import sql_literals
from audit.io.output_dir import OutputDir
from audit.io.store import scan
from audit.memorization.trigger_tokens import token_influence
from pipelines.shard_uris import open_uri
from pipelines.progress import counter
from schemas import MEMORIZATION, MEMORIZATION_RUNS

log = logging.getLogger("shardguard.memorization")


def scored_rows(out: OutputDir, cfg: MemorizationConfig, model_id: str) -> list[dict]:
    """Every scored shard's rows for this model and config, with captions from samples."""
    files = out.written_files(f"memorization_scores/{slug(cfg, model_id)}")
    if not files:
        return []
    q = (f"SELECT m.shard, m.key, m.score, m.step_scores, s.caption "
         f"FROM {sql_literals.read_parquet(files)} m JOIN {out.read_sql('samples')} s "
         f"ON s.shard = m.shard AND s.key = m.key ORDER BY m.shard, m.key")
    return scan(q)


def flags_skipped(out: OutputDir, cfg: MemorizationConfig, model_id: str) -> str:
    """Why the corpus step has nothing to calibrate on ('' when it has): no sample was scored
    (empty or tiny input), or the reference shards were scored and hold no score. Reference
    shards that were never scored stay an error (calibrate_scores): a misnamed reference."""
    files = out.written_files(f"memorization_scores/{slug(cfg, model_id)}")
    counts = {r["shard"]: r["n"] for r in scan(
        f"SELECT shard, count(*) AS n FROM {sql_literals.read_parquet(files)} GROUP BY shard")} if files else {}
    if not sum(counts.values()):
        return "memorization flags skipped: no sample was scored (no ok samples)"
    ref = set(cfg.reference_shards)
    scored = {m["shard"] for m in out.markers(stage(cfg, model_id))}
    if ref and ref <= scored and not any(counts.get(s) for s in ref):
        return f"memorization flags skipped: the reference shards {sorted(ref)} hold no scored sample"
    return ""


def explain(model: DiffusionModel, cfg: MemorizationConfig, out: OutputDir, rows: list[dict], batch: int = 8) -> None:
    """Fill trigger_tokens of `rows` in place (pair mode reads their images again, once; a row
    whose image no longer decodes keeps trigger_tokens null)."""
    images = (read_training_images(out, [(r["shard"], r["key"]) for r in rows], open_uri)
              if cfg.mode == "pair" else {})
    rows = [r for r in rows if cfg.mode != "pair" or (r["shard"], r["key"]) in images]
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        pixels = (image_pixels([images[(r["shard"], r["key"])] for r in chunk], model.resolution)
                  if cfg.mode == "pair" else None)
        for r, toks in zip(chunk, token_influence(model, [r["caption"] or "" for r in chunk], cfg.score, pixels)):
            r["trigger_tokens"] = [{"token": t, "score": s} for t, s in toks]


def flag_and_record(out: OutputDir, run_id: str, cfg: MemorizationConfig, model_id: str,
                    model: DiffusionModel | None = None) -> dict:
    scores = scored_rows(out, cfg, model_id)
    cal = calibrate_scores(scores, cfg)
    rows = flag_rows(scores, cal, run_id, model_id, cfg.mode)
    targets = to_explain(rows, cfg.trigger_tokens_max)
    if targets:
        model = model or load_model(cfg)
        explain(model, cfg, out, targets)  # fills trigger_tokens of these rows
    timesteps = list(cfg.score.timesteps) if cfg.mode == "pair" else []
    out.write_run_table(MEMORIZATION, run_id, MEMORIZATION.from_rows(rows))
    keys_file = export_keys(out, rows)
    run = run_row(run_id, model_id, cfg, cal, rows, timesteps)
    page = memorization_page(out, run, rows, open_uri)
    # written last: the record that this run's memorization results are complete
    out.write_run_table(MEMORIZATION_RUNS, run_id, [run])
    return {**summary(rows, cal), "model_id": model_id, "explained": len(targets), "keys_file": keys_file,
            "page": page}


class FlagFn(beam.DoFn):
    def __init__(self, run_id: str, cfg: MemorizationConfig, model_id: str):
        self.run_id, self.cfg, self.model_id = run_id, cfg, model_id
        self.flagged = counter("memorization_flagged")

    def process(self, out_root: str):
        result = flag_and_record(OutputDir(out_root), self.run_id, self.cfg, self.model_id)
        self.flagged.inc(result["flagged"])
        yield result


class FlagMemorization(beam.PTransform):
    def __init__(self, out_root: str, run_id: str, cfg: MemorizationConfig, model_id: str):
        super().__init__()
        self.out_root, self.fn = out_root, FlagFn(run_id, cfg, model_id)

    def expand(self, pbegin):
        return pbegin | "Corpus" >> beam.Create([self.out_root]) | "Flag" >> beam.ParDo(self.fn)
