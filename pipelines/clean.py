"""The clean job: training-ready shards from an audit output, decisions and captions applied.

Input: an audit output folder (OUT) with samples and, normally, decisions; a destination
folder; the `clean:` config (shard size, caption policy, which samples it applies to, epochs).
Output: img2dataset-format shards in the destination (audit.clean.shards), one completion
marker per output shard (DEST/_manifest/clean/), and the caption_variants table in OUT.
Beam: one element per output shard (`WriteCleanShardFn`, caption vocabulary loaded once per
worker in setup). Append-only (audit.clean.ledger): a rerun into the same destination plans
only the kept samples no earlier run planned, into new output shards after the last one;
earlier shards are never rewritten and no sample is written twice; a run killed mid-way is
finished with the same plan. A destination built with other settings is refused, not mixed.
Counts reconcile and are returned: input = kept + dropped; written + failed (all shards in
DEST) = kept + no_longer_kept (written on an earlier run, dropped since: they stay where they are).
Images: copied byte for byte, or, when the perturbation audit found poisons (`clean.sanitize:
auto`) or a sanitizer is configured, re-encoded through it (`chosen_sanitizer`). A source image
whose bytes no longer hash to the audited byte_hash is not written: it is a failed row of its
output shard (parquet, stats) and an errors row (stage 'clean') in OUT; the result counts it.
Failure: `UsageError` (exit 2, nothing created) for a --from that is not an audit output
folder or has no samples, and for a destination that is, contains or is inside an input shard
folder or OUT, or holds a file no clean run of ours wrote (audit.clean.destination);
`ValueError` for a destination built differently.
"""

from __future__ import annotations

import dataclasses
import json

import apache_beam as beam
import duckdb

from audit.io import store
from audit.captions.strategies import apply, minilm_vocab
from audit.clean.destination import check_destination
from audit.clean.ledger import load_ledger, plan_append, settings_id, unwritten_shards, write_batch
from audit.clean.shards import CleanConfig, SampleRef, write_clean_shard
from audit.io.folder_ownership import check_claimable, claim, require_existing
from audit.dedup.decisions import latest_flagged
from audit.io.output_dir import OutputDir
from audit.perturbations.config import SANITIZER_FILE
from audit.runs.ids import new_run_id
from audit.io.user_errors import UsageError
from pipelines.beam_options import pipeline_options, private_tempdir
from pipelines.shard_uris import open_uri
from schemas import CAPTION_VARIANTS, ERRORS, TABLES

STAGE = "clean"


def kept_samples(out: OutputDir) -> tuple[list[SampleRef], int, str | None, set[tuple[str, str]]]:
    """(kept samples in (shard, key) order, input count, decisions run id, flagged keys)."""
    con = duckdb.connect()
    try:
        samples, shards = out.read_sql("samples"), out.read_sql("shards")
        n_input = con.execute(f"SELECT count(*) FROM {samples}").fetchone()[0]
        if not n_input:
            raise UsageError(f"{out.root} has no ingested samples; run `shardguard run` into it first")
        has_dec = any(out.table_dir("decisions").glob("run=*/*.parquet"))
        dec_run, keep_sql, flagged = None, "s.status = 'ok'", set()
        if has_dec:
            dec = out.read_sql("decisions")
            dec_run = con.execute(f"SELECT max(run_id) FROM {dec}").fetchone()[0]
            keep_sql = (f"s.status = 'ok' AND (s.shard, s.key) IN (SELECT (shard, key) FROM {dec} "
                        "WHERE run_id = $dec_run AND keep)")
            dup = out.read_sql("duplicates")
            flagged = set(con.execute(
                f"SELECT shard, key FROM {dup} WHERE run_id = (SELECT max(run_id) FROM {dup}) "
                f"AND kind IN ('exact', 'near', 'semantic') AND repeat_type = 'same_caption'").fetchall())
        flagged |= {(s, k) for s, k, *_ in latest_flagged(out)[0]}  # memorized pairs kept (action: keep)
        rows = con.execute(f"""
            SELECT s.shard, s.key, sh.uri, s.image_ext, s.image_offset, s.image_bytes, s.caption, s.meta_json,
                   s.width, s.height, s.byte_hash
            FROM {samples} s JOIN (SELECT DISTINCT shard, uri FROM {shards}) sh USING (shard)
            WHERE {keep_sql} ORDER BY s.shard, s.key""", {"dec_run": dec_run} if has_dec else None).fetchall()
    finally:
        con.close()
    return [SampleRef(*r) for r in rows], n_input, dec_run, flagged


def caption_fn_for(cfg: CleanConfig, flagged: set[tuple[str, str]], vocab: list[str]):
    """The clean shards' caption function: a sample is (shard, key), never its key alone (keys
    repeat across shards)."""
    c = cfg.caption
    label = c.strategy if c.strategy in ("none", "mc") else f"{c.strategy}(p={c.p},n={c.n})"

    def fn(shard: str, key: str, caption: str, meta: dict) -> list[tuple[str, str, bool]]:
        applies = cfg.apply_to == "all" or (cfg.apply_to == "flagged" and (shard, key) in flagged)
        out = []
        for epoch in range(max(1, cfg.epochs)):
            if not applies or cfg.caption.strategy == "none":
                out.append((caption, "none", False))
                continue
            v = apply(cfg.caption, f"{shard}/{key}", caption, meta, epoch, vocab)
            out.append((v.new, label, v.changed))
        return out
    return fn


def chosen_sanitizer(out: OutputDir, cfg: CleanConfig) -> tuple[dict | None, str]:
    """({'name', 'params'} or None, why). 'auto' follows the latest perturbation audit
    (OUT/exports/perturbation_sanitizer.json): its sanitizer when the verdict was 'perturbed'
    against reference-calibrated thresholds (a screening result is not trusted to rewrite every
    image), and the sanitizer works per image (orthogonal projection is learned on analysis crops and
    is not applied to full images: the note says so)."""
    if cfg.sanitize == "none":
        return None, "sanitize: none"
    from audit.perturbations.image_sanitizers import IMAGE_LEVEL  # torch, OpenCV: only when a sanitizer may apply
    from audit.perturbations.perturbation_audit import SANITIZER_PARAMS
    if cfg.sanitize != "auto":
        if cfg.sanitize not in IMAGE_LEVEL:
            raise ValueError(f"clean.sanitize must be 'auto', 'none' or one of {IMAGE_LEVEL}, not {cfg.sanitize!r}")
        return {"name": cfg.sanitize, "params": SANITIZER_PARAMS.get(cfg.sanitize, {})}, "configured"
    path = out.root / SANITIZER_FILE
    if not path.exists():
        return None, "no perturbation audit in this output"
    record = json.loads(path.read_text())
    chosen = record.get("sanitizer")
    if record.get("verdict") != "perturbed" or not chosen:
        return None, f"perturbation verdict {record.get('verdict')!r}: images copied unchanged"
    if record.get("thresholds") != "reference":
        return None, ("perturbation verdict came from screening, not a clean reference: images copied "
                      f"unchanged (set perturbations.reference_shards, or clean.sanitize: {chosen['name']})")
    if chosen["name"] == "class_deconvolution" and not chosen.get("params", {}).get("label_field"):
        return None, ("audit chose class_deconvolution on k-means pseudo-labels: a new image's class is unknown, "
                      "images copied unchanged (set perturbations.label_field)")
    if chosen["name"] not in IMAGE_LEVEL and chosen["name"] != "class_deconvolution":
        return None, f"audit chose {chosen['name']}, which is dataset-level: images copied unchanged"
    chosen = {"name": chosen["name"], "params": chosen.get("params", {})}
    return chosen, f"perturbation audit run {record['run_id']} found {', '.join(record.get('failed', []))}"


class WriteCleanShardFn(beam.DoFn):
    def __init__(self, dest: str, out_root: str, run_id: str, cfg: CleanConfig, flagged, plan_id: str,
                 sanitizer: dict | None = None):
        self.dest, self.out_root, self.run_id, self.cfg = dest, out_root, run_id, cfg
        self.flagged, self.plan_id, self.sanitizer = flagged, plan_id, sanitizer

    def setup(self):
        self.vocab = minilm_vocab() if self.cfg.caption.strategy in ("rc", "rt") else []
        from audit.clean.encoders import sanitizing_encoder  # torch, OpenCV
        self.image_fn = sanitizing_encoder(**self.sanitizer) if self.sanitizer else None

    def process(self, element):
        out_shard, samples = element
        dest = OutputDir(self.dest)
        if dest.is_complete(STAGE, out_shard):
            return
        fn = caption_fn_for(self.cfg, self.flagged, self.vocab)
        note = json.dumps(self.sanitizer, sort_keys=True) if self.sanitizer else ""
        stats, variants = write_clean_shard(dest.root, out_shard, samples, open_uri, fn, self.run_id,
                                            self.image_fn, note)
        for v in variants:
            v["seed"] = self.cfg.caption.seed
        audit_out = OutputDir(self.out_root)
        audit_out.write_shard_table(CAPTION_VARIANTS, self.run_id, out_shard, variants)
        failed = stats["shardguard"]["failed"]
        if failed:  # source bytes changed since the audit: errors rows in OUT, next to the ingest's
            audit_out.write_shard_table(ERRORS, self.run_id, out_shard, [
                {"run_id": self.run_id, "stage": STAGE, **f} for f in failed], part=STAGE)
        dest.mark_complete(STAGE, out_shard, {"run_id": self.run_id, "plan": self.plan_id, "count": stats["count"],
                                              "failed": len(failed), "captions_changed": len(variants)})
        yield stats


@dataclasses.dataclass
class CleanPlan:
    """What a clean run writes, computed without writing: run_clean runs it, `clean --dry-run` prints it."""
    samples: list[SampleRef]
    n_input: int
    dec_run: str | None
    flagged: set
    sanitizer: dict | None
    why: str
    plan_id: str
    ledger: object  # audit.clean.ledger.Ledger before this run
    new_plan: list  # new output shards (appended batch)
    to_write: list  # (out_shard, samples): planned earlier and unwritten, then the new ones


def plan_clean(out: OutputDir, dest: OutputDir, cfg: CleanConfig) -> CleanPlan:
    samples, n_input, dec_run, flagged = kept_samples(out)
    sanitizer, why = chosen_sanitizer(out, cfg)
    plan_id = settings_id(cfg, sanitizer)
    ledger = load_ledger(dest.root)
    done_before = dest.markers(STAGE)
    if any(m.get("plan") != plan_id for m in done_before) or ledger.plans - {plan_id} \
            or (done_before and not ledger.rows):
        raise ValueError(f"{dest.root} holds clean shards built from other decisions or settings; "
                         "clean into a new --to folder")
    new_plan = plan_append(samples, ledger, cfg.shard_size)
    to_write = unwritten_shards(ledger, samples, lambda o: dest.is_complete(STAGE, o)) + new_plan
    return CleanPlan(samples, n_input, dec_run, flagged, sanitizer, why, plan_id, ledger, new_plan, to_write)


def input_uris(out: OutputDir) -> list[str]:
    """Every shard URI the audit read (the shards table)."""
    if not any(out.table_dir("shards").glob("run=*/*.parquet")):
        return []
    con = duckdb.connect()
    try:
        return [u for (u,) in con.execute(f"SELECT DISTINCT uri FROM {out.read_sql('shards')}").fetchall()]
    finally:
        con.close()


def check_folders(from_out: str, to_dir: str) -> OutputDir:
    """The audit folder, once --from is an audit of ours and --to may be written (UsageError
    otherwise; nothing is created or changed)."""
    out = OutputDir(require_existing(from_out, "audit"))
    check_destination(to_dir, out.root, input_uris(out))
    check_claimable(to_dir, "clean")
    return out


def run_clean(from_out: str, to_dir: str, cfg: CleanConfig = CleanConfig(), beam_args: list[str] | None = None,
              run_id: str | None = None) -> dict:
    out = check_folders(from_out, to_dir)
    dest = OutputDir(claim(to_dir, "clean"))
    run_id = run_id or new_run_id()
    dest.lock()
    try:
        plan = plan_clean(out, dest, cfg)
        samples, n_input, dec_run, flagged = plan.samples, plan.n_input, plan.dec_run, plan.flagged
        sanitizer, why, plan_id, ledger, new_plan = plan.sanitizer, plan.why, plan.plan_id, plan.ledger, plan.new_plan
        if new_plan:  # the batch is on disk before any of its shards: a killed run resumes it unchanged
            write_batch(dest.root, ledger, new_plan, plan_id, run_id)
            ledger = load_ledger(dest.root)
        todo = unwritten_shards(ledger, samples, lambda o: dest.is_complete(STAGE, o))
        if todo:
            with private_tempdir(dest.root):
                p = beam.Pipeline(options=pipeline_options(beam_args or []))
                _ = (p | "OutputShards" >> beam.Create(todo) | beam.Reshuffle()
                     | "Write" >> beam.ParDo(WriteCleanShardFn(str(dest.root), str(out.root), run_id, cfg,
                                                                flagged, plan_id, sanitizer)))
                p.run().wait_until_finish()
        markers = dest.markers(STAGE)
        in_shards = sum(m["count"] for m in markers)  # written or failed (source changed since the audit)
        failed = sum(m.get("failed", 0) for m in markers)
        planned = ledger.planned()
        kept_keys = {(s.shard, s.key) for s in samples}
        no_longer_kept = len(planned - kept_keys)  # written on an earlier night, dropped since: they stay
        if in_shards != len(planned) or len(markers) != len(ledger.shards()) or not kept_keys <= planned \
                or in_shards != len(samples) + no_longer_kept:
            raise RuntimeError(f"clean run {run_id}: {in_shards} samples in shards, {len(planned)} planned, "
                               f"{len(samples)} kept, {no_longer_kept} planned earlier and dropped since")
        store.refresh_views(out, TABLES)
        return {"run_id": run_id, "input": n_input, "kept": len(samples), "dropped": n_input - len(samples),
                "written": in_shards - failed, "failed": failed,
                "failed_this_run": sum(m.get("failed", 0) for m in markers if m["run_id"] == run_id),
                "shards": len(markers), "shards_skipped": len(markers) - len(todo),
                "appended": sum(len(x) for _, x in todo), "appended_shards": [o for o, _ in todo],
                "no_longer_kept": no_longer_kept,
                "captions_changed": sum(m["captions_changed"] for m in markers if m["run_id"] == run_id),
                "decisions_run": dec_run, "dest": str(dest.root),
                "sanitizer": sanitizer["name"] if sanitizer else None, "sanitizer_reason": why}
    finally:
        dest.unlock()
