"""Run-to-run diff: what a run changed against the previous successful run on the same folder.

Input: an output folder after a run's corpus steps (before its runs row is written) and the
run's id. The previous run is the latest 'succeeded' runs row with a smaller run id.
Per-shard tables (shards, errors) carry the run that wrote each row: rows written after the
previous successful run (by this run, or by a failed run since) are new.
Corpus tables (duplicates, decisions, memorization, perturbation_flags, perturbation_tests)
are written per run under OUT/<table>/run=<run_id>/run.parquet, and only by runs whose corpus
step ran: the state "as of" a run is the latest such file at or before it, so a run that
recomputed nothing compares equal and adds no rows.
Output: OUT/run_changes/run=<run_id>/run.parquet (schemas/run_changes.py), one row per change:
new_shard, new_error, new_duplicate (per sample and kind), new_drop / new_keep (keep flipped),
new_flag / cleared_flag (memorization, perturbation_flags), changed_verdict
(perturbation_tests). A run that changed nothing writes one 'no_changes' row, so the
`run_changes` view (latest run) shows this run and not an older one's changes.
Returns a summary dict with the counts and a one-line text for the CLI.
Failure: DuckDB errors propagate (a corrupt Parquet file); missing tables are just empty.
"""

from __future__ import annotations

from audit.io.output_dir import OutputDir
from audit.io.store import scan
from schemas import RUN_CHANGES

def _has(out: OutputDir, table: str) -> bool:
    return any(p.name != "_schema.parquet" for p in out.table_dir(table).rglob("*.parquet"))


def previous_run_id(out: OutputDir, run_id: str) -> str | None:
    if not _has(out, "runs"):
        return None
    rows = scan(f"SELECT max(run_id) AS r FROM {out.read_sql('runs')} WHERE status = 'succeeded' AND run_id < ?",
                [run_id])
    return rows[0]["r"] if rows else None


def state_run(out: OutputDir, table: str, as_of: str | None) -> str | None:
    """The run whose rows of a corpus table were current as of run `as_of` (None: none yet)."""
    if as_of is None or not _has(out, table):
        return None
    return scan(f"SELECT max(run_id) AS r FROM {out.read_sql(table)} WHERE run_id <= ?", [as_of])[0]["r"]


def _rows(out: OutputDir, table: str, run: str | None, columns: str) -> list[dict]:
    if run is None:
        return []
    return scan(f"SELECT {columns} FROM {out.read_sql(table)} WHERE run_id = ?", [run])


def _change(run_id, prev, change, table, shard=None, key=None, before=None, after=None, detail=None) -> dict:
    return {"run_id": run_id, "previous_run_id": prev, "change": change, "source_table": table, "shard": shard,
            "key": key, "before": before, "after": after, "detail": detail}


def _pairs(out: OutputDir, table: str, run_id: str, prev: str | None, columns: str):
    """(rows now, rows before) of a corpus table; ([], []) when it was not recomputed since."""
    now, before = state_run(out, table, run_id), state_run(out, table, prev)
    if now is None or now == before:
        return [], []
    return _rows(out, table, now, columns), _rows(out, table, before, columns)


def _since(out: OutputDir, table: str, run_id: str, prev: str | None, columns: str) -> list[dict]:
    """Per-shard rows written after the previous successful run, up to this one (a failed run's
    shards count as new for the next successful run)."""
    if not _has(out, table):
        return []
    return scan(f"SELECT {columns} FROM {out.read_sql(table)} WHERE run_id <= ? AND run_id > ? "
                "ORDER BY shard, run_id", [run_id, prev or ""])


def shard_changes(out: OutputDir, run_id: str, prev: str | None) -> list[dict]:
    rows = []
    for r in _since(out, "shards", run_id, prev, "shard, status, error, n_inputs, n_ok, n_failed"):
        rows.append(_change(run_id, prev, "new_shard", "shards", r["shard"], after=r["status"],
                            detail=f"{r['n_inputs']} samples ({r['n_ok']} ok, {r['n_failed']} failed)"
                                   + (f": {r['error']}" if r["error"] else "")))
    for r in _since(out, "errors", run_id, prev, "stage, shard, key, error_type, message"):
        rows.append(_change(run_id, prev, "new_error", "errors", r["shard"], r["key"], after=r["error_type"],
                            detail=f"{r['stage']}: {r['message']}"))
    return rows


def duplicate_changes(out: OutputDir, run_id: str, prev: str | None) -> list[dict]:
    cols = "shard, key, kind, cluster, cluster_size, nearest_shard, nearest_key, similarity"
    now, before = _pairs(out, "duplicates", run_id, prev, cols)
    seen = {(r["shard"], r["key"], r["kind"]) for r in before}
    out_rows = []
    for r in sorted(now, key=lambda r: (r["shard"], r["key"], r["kind"])):
        if (r["shard"], r["key"], r["kind"]) in seen:
            continue
        sim = f" (similarity {r['similarity']:.3f})" if r["similarity"] is not None else ""
        out_rows.append(_change(run_id, prev, "new_duplicate", "duplicates", r["shard"], r["key"],
                                after=f"{r['kind']} cluster {r['cluster']} of {r['cluster_size']}",
                                detail=f"{r['kind']} duplicate of {r['nearest_shard']}/{r['nearest_key']}{sim}"))
    return out_rows


def decision_changes(out: OutputDir, run_id: str, prev: str | None) -> list[dict]:
    now, before = _pairs(out, "decisions", run_id, prev, "shard, key, keep, reasons")
    was = {(r["shard"], r["key"]): r["keep"] for r in before}
    rows = []
    for r in sorted(now, key=lambda r: (r["shard"], r["key"])):
        old = was.get((r["shard"], r["key"]))
        if old is None or old == r["keep"]:
            continue  # new samples are not flips: their drops show as new_duplicate / new_error / new_flag
        rows.append(_change(run_id, prev, "new_keep" if r["keep"] else "new_drop", "decisions", r["shard"], r["key"],
                            "keep" if old else "drop", "keep" if r["keep"] else "drop",
                            "; ".join(r["reasons"] or []) or None))
    return rows


def flag_changes(out: OutputDir, run_id: str, prev: str | None) -> list[dict]:
    rows = []
    for table, cols, describe, ident in (
            ("memorization", "shard, key, model_id, flagged, score, threshold",
             lambda r: f"memorization d={r['score']:.4g} vs threshold {r['threshold']:.4g} ({r['model_id']})",
             lambda r: (r["shard"], r["key"], r["model_id"])),
            ("perturbation_flags", "shard, key, flagged, reasons",
             lambda r: "perturbation: " + (", ".join(r["reasons"] or []) or "no reason"),
             lambda r: (r["shard"], r["key"]))):
        now, before = _pairs(out, table, run_id, prev, cols)
        was = {ident(r): r["flagged"] for r in before}
        for r in sorted(now, key=ident):
            old = was.get(ident(r))
            if r["flagged"] and not old:
                change = "new_flag"
            elif old and not r["flagged"]:
                change = "cleared_flag"
            else:
                continue
            rows.append(_change(run_id, prev, change, table, r["shard"], r["key"],
                                None if old is None else ("flagged" if old else "not flagged"),
                                "flagged" if r["flagged"] else "not flagged", describe(r)))
    return rows


def verdict_changes(out: OutputDir, run_id: str, prev: str | None) -> list[dict]:
    now, before = _pairs(out, "perturbation_tests", run_id, prev,
                         "data, scope, label, test, verdict, statistic, threshold")
    ident = lambda r: (r["data"], r["scope"], r["label"] or "", r["test"])  # noqa: E731
    was, cur = {ident(r): r for r in before}, {ident(r): r for r in now}
    rows = []
    for k in sorted(set(was) | set(cur)):
        old, new = was.get(k), cur.get(k)
        if (old or {}).get("verdict") == (new or {}).get("verdict"):
            continue
        r = new or old
        stat = (f": {r['statistic']:.4g} vs threshold {r['threshold']:.4g}"
                if r["statistic"] is not None and r["threshold"] is not None else "")
        rows.append(_change(run_id, prev, "changed_verdict", "perturbation_tests",
                            before=old and old["verdict"], after=new and new["verdict"],
                            detail=f"{r['scope']} test {r['test']}" + (f" class {r['label']}" if r["label"] else "")
                                   + f" on {r['data']} data{stat}"))
    return rows


def compute_changes(out: OutputDir, run_id: str) -> tuple[str | None, list[dict]]:
    prev = previous_run_id(out, run_id)
    rows = (shard_changes(out, run_id, prev) + duplicate_changes(out, run_id, prev)
            + decision_changes(out, run_id, prev) + flag_changes(out, run_id, prev)
            + verdict_changes(out, run_id, prev))
    return prev, rows


def summarize(out: OutputDir, run_id: str, prev: str | None, rows: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["change"]] = counts.get(r["change"], 0) + 1
    dup_samples = len({(r["shard"], r["key"]) for r in rows if r["change"] == "new_duplicate"})
    new_shards = [r["shard"] for r in rows if r["change"] == "new_shard"]
    n_samples = 0
    if new_shards:
        n_samples = sum(r["n_inputs"] or 0 for r in _since(out, "shards", run_id, prev, "shard, n_inputs"))
    parts = []
    plural = lambda n, word: f"{n} {word}{'s' * (n != 1)}"  # noqa: E731
    if new_shards:
        parts.append(f"{n_samples} new samples in {plural(len(new_shards), 'new shard')}")
    by_kind: dict[str, set] = {}
    for r in rows:
        if r["change"] == "new_duplicate":
            by_kind.setdefault(r["after"].split()[0], set()).add((r["shard"], r["key"]))
    kinds = ", ".join(f"{k} {len(v)}" for k, v in sorted(by_kind.items()))
    for n, word in ((counts.get("new_error", 0), "new error"), (dup_samples, "new duplicate"),
                    (counts.get("new_drop", 0), "new drop"), (counts.get("new_keep", 0), "new keep"),
                    (counts.get("new_flag", 0), "new flag"), (counts.get("cleared_flag", 0), "cleared flag"),
                    (counts.get("changed_verdict", 0), "changed verdict")):
        if n:
            parts.append(plural(n, word) + (f" ({kinds})" if word == "new duplicate" else ""))
    head = f"changes since run {prev}" if prev else "changes (first run on this folder: everything is new)"
    return {"previous_run_id": prev, "counts": counts, "new_samples": int(n_samples), "new_duplicate_samples": dup_samples,
            "line": f"{head}: {', '.join(parts) or 'none'} (table 'run_changes')"}


def record_changes(out: OutputDir, run_id: str) -> dict:
    """Compute this run's changes, write its run_changes file, return the summary."""
    prev, rows = compute_changes(out, run_id)
    written = rows or [_change(run_id, prev, "no_changes", "runs",
                               detail=f"nothing changed since run {prev}" if prev else "nothing to compare")]
    out.write_run_table(RUN_CHANGES, run_id, written)
    return summarize(out, run_id, prev, rows)
