"""The training filter list (the decisions table) as a join of the per-kind findings.

Every finding is written by its own step; the decisions are computed once per run, at its
end, from the latest of each, and written nowhere else:
- ingest failures: samples rows with status 'failed' -> 'ingest_failed:<ErrorType>';
- duplicates (audit.dedup.duplicate_clusters): rows whose `drops` is true (a drop kind, the sample
  not its image cluster's representative) -> '<kind>_duplicate_of:<shard>/<key>';
- memorization (audit.memorization.flags): flagged rows of the latest memorization run, when
  its action is 'drop' -> 'memorized:<model_id>:d=<score>>=<threshold>'.
Perturbation flags never drop a sample (the perturbation tests read the decisions instead).
A sample is kept when it has no reason. Its reasons are all of them, in the fixed order
REASON_ORDER (ingest_failed, the duplicate kinds in DUPLICATE_KINDS order, memorized), so
the result does not depend on which step ran last or on the order of the input rows.

`decide` is the pure function (rows in, decision rows out, sorted by (shard, key));
`findings` reads the latest findings of an output folder; `write_decisions` writes the
decisions of run R to OUT/decisions/run=<R>/run.parquet; `decisions_stale` says whether a
finding is newer than the latest decisions (the job then writes them; otherwise nothing).
Failure: a duplicates or memorization row for a sample that is not in `samples` is ignored
(there is one decision per input sample).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from audit.io import sql_literals
from audit.io.output_dir import OutputDir
from audit.io.store import scan
from schemas import DECISIONS

DUPLICATE_KINDS = ("exact", "near", "semantic", "caption")  # the duplicate reasons' order
REASON_ORDER = ("ingest_failed", *(f"{k}_duplicate_of" for k in DUPLICATE_KINDS), "memorized")
FINDING_TABLES = ("duplicates", "memorization_runs")  # corpus findings; samples change only with them
SAMPLE_COLUMNS = "shard, key, status, error"


def ingest_reason(error: str | None) -> str:
    return f"ingest_failed:{(error or 'Error').split(':')[0]}"


def duplicate_reason(kind: str, representative: str) -> str:
    return f"{kind}_duplicate_of:{representative}"


def _rank(reason: str) -> tuple[int, str]:
    head = reason.split(":", 1)[0]
    return (REASON_ORDER.index(head) if head in REASON_ORDER else len(REASON_ORDER), reason)


def decide(samples: Iterable[dict], duplicates: Iterable[dict], memorized: dict[tuple[str, str], str],
           run_id: str) -> list[dict]:
    """One decisions row per sample (schemas.DECISIONS), sorted by (shard, key).

    `samples`: rows with shard, key, status ('ok' / 'failed') and error. `duplicates`: rows
    with shard, key, kind, image_cluster, representative and drops (schemas.DUPLICATES).
    `memorized`: (shard, key) -> its 'memorized:...' reason, for the flagged samples that are
    dropped. image_cluster and representative come from the sample's duplicates rows."""
    reasons: dict[tuple[str, str], list[str]] = {}
    cluster: dict[tuple[str, str], tuple[int, str]] = {}
    for d in duplicates:
        sample = (d["shard"], d["key"])
        if d.get("image_cluster") is not None:
            cluster[sample] = (d["image_cluster"], d["representative"])
        if d.get("drops"):
            reasons.setdefault(sample, []).append(duplicate_reason(d["kind"], d["representative"]))
    rows = []
    for s in samples:
        sample = (s["shard"], s["key"])
        found = list(reasons.get(sample, []))
        if s["status"] != "ok":
            found.append(ingest_reason(s.get("error")))
        if sample in memorized:
            found.append(memorized[sample])
        found.sort(key=_rank)
        image_cluster, representative = cluster.get(sample, (None, None))
        rows.append({"run_id": run_id, "shard": s["shard"], "key": s["key"], "keep": not found,
                     "reasons": found, "image_cluster": image_cluster, "representative": representative})
    return sorted(rows, key=lambda r: (r["shard"], r["key"]))


def with_outcome(duplicates: list[dict], decisions: Iterable[dict]) -> list[dict]:
    """Duplicates rows written before the table recorded the keep policy's outcome (image_cluster,
    representative, drops all null) take it from the decisions of the run that wrote them."""
    by_sample = {(d["shard"], d["key"]): d for d in decisions}
    filled = []
    for d in duplicates:
        dec = by_sample.get((d["shard"], d["key"]), {})
        if d.get("drops") is None:
            prefix = f"{d['kind']}_duplicate_of:"
            d = {**d, "image_cluster": dec.get("image_cluster"), "representative": dec.get("representative"),
                 "drops": any(r.startswith(prefix) for r in dec.get("reasons") or [])}
        filled.append(d)
    return filled


def last_run(out: OutputDir, table: str) -> str:
    """Run id of the newest run file (run=<id>/run.parquet) of a corpus table ('' when none)."""
    return max((p.parent.name.removeprefix("run=") for p in out.written_files(table) if p.name == "run.parquet"),
               default="")


def run_rows(out: OutputDir, table: str, run_id: str, columns: str = "*") -> list[dict]:
    """Rows of one run file of a corpus table ([] when the run wrote none)."""
    path = out.table_dir(table) / f"run={run_id}" / "run.parquet"
    if not run_id or path not in out.written_files(table):
        return []
    return scan(f"SELECT {columns} FROM {sql_literals.read_parquet([path])}")


MEMORIZED_PREFIX = "memorized:"  # decisions reason of a memorized pair (audit.memorization.flags flags it)


def reason(model_id: str, score: float, threshold: float) -> str:
    return f"{MEMORIZED_PREFIX}{model_id}:d={score:.4g}>={threshold:.4g}"


def latest_flagged(out: OutputDir) -> tuple[list[tuple], str]:
    """(flagged (shard, key, model_id, score, threshold) rows, action) of the latest memorization run."""
    if not any(out.table_dir("memorization_runs").glob("run=*/*.parquet")):
        return [], "drop"
    runs, src = out.read_sql("memorization_runs"), out.read_sql("memorization")
    last = scan(f"SELECT run_id, settings_json FROM {runs} ORDER BY run_id DESC LIMIT 1")[0]
    rows = scan(f"SELECT shard, key, model_id, score, threshold FROM {src} WHERE run_id = ? AND flagged", [last["run_id"]])
    return [tuple(r.values()) for r in rows], json.loads(last["settings_json"]).get("action", "drop")


def latest_flags(out: OutputDir) -> dict[tuple[str, str], str]:
    """(shard, key) -> decision reason from the latest memorization run, when its action is
    'drop' (empty when there is none, or when flagged pairs are kept)."""
    rows, action = latest_flagged(out)
    if action != "drop":
        return {}
    return {(s, k): reason(m, sc, th) for s, k, m, sc, th in rows}


def findings(out: OutputDir) -> tuple[list[dict], list[dict], dict[tuple[str, str], str]]:
    """(samples, latest duplicates run's rows, memorized reasons of the latest memorization run)."""
    samples = (scan(f"SELECT {SAMPLE_COLUMNS} FROM {out.read_sql('samples')} ORDER BY shard, key")
               if out.written_files("samples") else [])
    dup_run = last_run(out, "duplicates")
    duplicates = run_rows(out, "duplicates", dup_run)
    if any(d.get("drops") is None for d in duplicates):  # written by an older version
        duplicates = with_outcome(duplicates, run_rows(out, "decisions", dup_run))
    return samples, duplicates, latest_flags(out)


def decisions_stale(out: OutputDir) -> bool:
    """True when a finding table has a run newer than the latest decisions (or there are
    findings and no decisions): a step that feeds the decisions ran since they were written."""
    latest = last_run(out, "decisions")
    return any(last_run(out, t) > latest for t in FINDING_TABLES)


def write_decisions(out: OutputDir, run_id: str) -> Path:
    """Compute the decisions of run `run_id` from OUT's latest findings and write them to
    OUT/decisions/run=<run_id>/run.parquet (atomic). Returns the path."""
    samples, duplicates, memorized = findings(out)
    return out.write_run_table(DECISIONS, run_id, decide(samples, duplicates, memorized, run_id))
