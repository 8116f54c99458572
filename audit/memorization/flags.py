"""Corpus-level memorization results: calibrate, flag, explain, and hand training a filter.

Input: every shard's raw scores (memorization_scores rows) and a MemorizationConfig.
Output: memorization rows (score, threshold, flagged, trigger tokens), the memorization_runs
row that stores the calibration with the run (audit.dedup.decisions reads the latest run's flags back
as 'memorized:...' reasons and joins them into the decisions), and the exported sample list OUT/exports/memorized_samples.jsonl (one flagged sample per line,
{"shard": ..., "key": ...}, sorted: keys repeat across shards, so a key alone names no sample).
Failure: no reference scores (e.g. reference_shards names shards that were never scored) is
a ValueError, never a default threshold.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

from audit.io import atomic_files
from audit.memorization.config import MemorizationConfig
from audit.io.output_dir import OutputDir
from audit.memorization.score_calibration import Calibration, calibrate
from audit.io.store import scan

EXPORT = "exports/memorized_samples.jsonl"


def calibrate_scores(rows: list[dict], cfg: MemorizationConfig) -> Calibration:
    ref_shards = set(cfg.reference_shards)
    ref = [r for r in rows if not ref_shards or r["shard"] in ref_shards]
    where = f"shards {', '.join(sorted(ref_shards))}" if ref_shards else "the scored set (every shard)"
    if not ref:
        raise ValueError(f"memorization: no scores in the reference set ({where}); "
                         "memorization.reference_shards must name scored shards")
    return calibrate([r["score"] for r in ref], cfg.calibration_method, cfg.calibration_level, where,
                     reference_columns=[r["step_scores"] for r in ref])


def flag_rows(rows: list[dict], cal: Calibration, run_id: str, model_id: str, mode: str) -> list[dict]:
    out = []
    for r in sorted(rows, key=lambda r: (r["shard"], r["key"])):
        out.append({"run_id": run_id, "shard": r["shard"], "key": r["key"], "model_id": model_id,
                    "mode": mode, "caption": r.get("caption"), "score": r["score"],
                    "step_scores": r["step_scores"], "threshold": cal.threshold,
                    "flagged": bool(r["score"] >= cal.threshold), "trigger_tokens": None})
    return out


def run_row(run_id: str, model_id: str, cfg: MemorizationConfig, cal: Calibration, rows: list[dict],
            timesteps: list[int]) -> dict:
    return {"run_id": run_id, "model_id": model_id, "model_path": cfg.model, "mode": cfg.mode,
            "config": cfg.digest(), "settings_json": json.dumps(asdict(cfg), sort_keys=True),
            "method": cal.method, "level": cal.level, "threshold": cal.threshold,
            "step_thresholds": list(cal.column_thresholds), "timesteps": [int(t) for t in timesteps],
            "reference": cal.reference, "reference_count": cal.reference_count,
            "n_scored": len(rows), "n_flagged": sum(r["flagged"] for r in rows)}


def to_explain(rows: list[dict], limit: int) -> list[dict]:
    """Flagged rows whose trigger tokens are computed: the highest scores first."""
    flagged = [r for r in rows if r["flagged"]]
    return sorted(flagged, key=lambda r: -r["score"])[:limit]


def export_keys(out: OutputDir, rows: list[dict]) -> str:
    """Write the flagged samples as JSON lines (a key may hold any character, newlines too)."""
    keys = sorted((r["shard"], r["key"]) for r in rows if r["flagged"])
    path = out.root / EXPORT
    lines = "".join(json.dumps({"shard": s, "key": k}, ensure_ascii=True) + "\n" for s, k in keys)
    atomic_files.write_bytes(path, lines.encode())
    return str(path)


def summary(rows: list[dict], cal: Calibration) -> dict:
    scores = np.array([r["score"] for r in rows]) if rows else np.zeros(0)
    return {"scored": len(rows), "flagged": int(sum(r["flagged"] for r in rows)),
            "threshold": cal.threshold, "method": cal.method, "level": cal.level,
            "median_score": float(np.median(scores)) if len(scores) else None}


def needs_flagging(out: OutputDir, cfg: MemorizationConfig, model_id: str) -> bool:
    """True unless the latest memorization run used this model, score config and calibration."""
    d = out.table_dir("memorization_runs")
    if not any(d.glob("run=*/*.parquet")):
        return True
    src = out.read_sql("memorization_runs")
    last = scan(f"SELECT model_id, config, settings_json FROM {src} ORDER BY run_id DESC LIMIT 1")[0]
    return tuple(last.values()) != (model_id, cfg.digest(), json.dumps(asdict(cfg), sort_keys=True))
