"""The audit report: one self-contained HTML page over an output folder (OUT/reports/index.html).

Input: an output folder written by `shardguard run` (its Parquet tables, read with DuckDB
through `OutputDir.read_sql`; corpus-level tables filtered to their latest run as audit/io/store.py
does) and an opener for shard URIs (training images are read back from the tars by offset).
Output: `write_report(...)` writes the page atomically and returns its path. Sections: summary,
duplicates, memorization, perturbations, replication, errors, changes; each says "nothing
found" when its tables are empty or absent. Images and charts are inlined as data URIs, CSS is
inline, there is no script: the page opens offline. Every data string is escaped.
Failure: a table that is missing or empty is an empty section, not an error; a shard tar that
cannot be opened any more leaves its thumbnails as "(no image)" with a note; DuckDB and
matplotlib errors propagate.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import pyarrow as pa

from audit.report import sections
from audit.io import sql_literals
from audit.report.finding_pages import decode_or_none, read_training_images
from audit.io.folder_ownership import claim
from audit.report.html_pages import write_page
from audit.io.output_dir import PERTURBATION_EXPORT, OutputDir
from audit.memorization.replication import read_image_file
from audit.io.store import scan
from schemas import PERTURBATION_SAMPLES, TABLES

log = logging.getLogger("shardguard.report")

SECTIONS = [("summary", "Summary"), ("duplicates", "Duplicates"), ("memorization", "Memorization"),
            ("perturbations", "Perturbations"), ("replication", "Replication"), ("errors", "Errors"),
            ("changes", "Changes"), ("timings", "Timings")]
MEMBERS_PER_CLUSTER = 8
HISTOGRAM_SAMPLE = 20000  # feature rows drawn (reservoir sample) for the histograms
FEATURES = [f.name for f in PERTURBATION_SAMPLES.schema if pa.types.is_floating(f.type) or pa.types.is_integer(f.type)]


def local_open(uri: str):
    return open(uri, "rb")


class ReportData:
    """Reads the tables of one output folder; `source()` is None for a table with no files."""

    def __init__(self, out: OutputDir, opener: Callable):
        self.out, self.opener = out, opener
        self.notes: list[str] = []

    def source(self, table: str, latest: bool | None = None) -> str | None:
        files = self.out.written_files(table)
        if not files:
            return None
        src = sql_literals.read_parquet(files)
        if latest if latest is not None else TABLES[table].latest_only:
            src = f"(SELECT * FROM {src} WHERE run_id = (SELECT max(run_id) FROM {src}))"
        return src

    def rows(self, table: str, sql: str, params: list | None = None, latest: bool | None = None) -> list[dict]:
        """`sql` reads the table as `t`, e.g. "SELECT count(*) AS n FROM t"; [] without files."""
        src = self.source(table, latest)
        return scan(f"WITH t AS (SELECT * FROM {src}) {sql}", params) if src else []

    def images(self, keys: list[tuple[str, str]]) -> dict:
        try:
            return read_training_images(self.out, keys, self.opener)
        except (OSError, KeyError) as e:  # tars moved or deleted since the run: thumbnails only
            self.notes.append(f"training images could not be read back: {type(e).__name__}: {e}")
            log.warning("report: %s", self.notes[-1])
            return {}


def summary(data: ReportData) -> str:
    run = next(iter(data.rows("runs", "SELECT * FROM t ORDER BY run_id DESC LIMIT 1", latest=False)), None)
    sources = {name: data.source(name) for name in TABLES}
    parts = [f"SELECT {sql_literals.string_literal(name)} AS name, count(*) AS n FROM {src}"
             for name, src in sources.items() if src]
    got = {r["name"]: r["n"] for r in scan(" UNION ALL ".join(parts))} if parts else {}
    counts = [(name, got.get(name, 0)) for name in TABLES]
    by_status = data.rows("samples", "SELECT status, count(*) AS n FROM t GROUP BY status ORDER BY n DESC")
    return sections.summary_section(run, counts, by_status)


def duplicates(data: ReportData, top: int) -> str:
    heads = data.rows("duplicates", """
        SELECT kind, cluster, max(cluster_size) AS size, any_value(repeat_type) AS repeat_type,
               max(distinct_captions) AS distinct_captions, count(*) OVER () AS n_clusters
        FROM t GROUP BY kind, cluster ORDER BY size DESC, kind, cluster LIMIT ?""", [top])
    if not heads:
        return sections.duplicates_section([], {}, 0, top)
    wanted = [f"{h['kind']}/{h['cluster']}" for h in heads]
    members = data.rows("duplicates", """
        SELECT kind, cluster, shard, key, similarity, is_representative FROM t
        WHERE kind || '/' || cluster IN (SELECT unnest(?::VARCHAR[]))
        QUALIFY row_number() OVER (PARTITION BY kind, cluster
                                   ORDER BY is_representative DESC NULLS LAST, similarity DESC NULLS LAST, shard, key) <= ?
        """, [wanted, MEMBERS_PER_CLUSTER])
    keys = sorted({f"{m['shard']}/{m['key']}" for m in members})
    captions = {(r["shard"], r["key"]): r["caption"] for r in data.rows(
        "samples", "SELECT shard, key, caption FROM t WHERE shard || '/' || key IN (SELECT unnest(?::VARCHAR[]))", [keys])}
    keep = {(r["shard"], r["key"]): r for r in data.rows(
        "decisions", "SELECT shard, key, keep, reasons[1] AS reason FROM t "
                     "WHERE shard || '/' || key IN (SELECT unnest(?::VARCHAR[]))", [keys])}
    clusters = []
    for h in heads:
        mine = [m for m in members if (m["kind"], m["cluster"]) == (h["kind"], h["cluster"])]
        for m in mine:
            decision = keep.get((m["shard"], m["key"]), {})
            m["caption"], m["keep"], m["reason"] = captions.get((m["shard"], m["key"])), decision.get("keep"), decision.get("reason")
        mine.sort(key=lambda m: (not m["is_representative"], -(m["similarity"] or 0), m["shard"], m["key"]))
        clusters.append({**h, "members": mine})
    notes_before = len(data.notes)
    images = data.images([(m["shard"], m["key"]) for m in members])
    return sections.duplicates_section(clusters, images, heads[0]["n_clusters"], top,
                                       " ".join(data.notes[notes_before:]))


def memorization(data: ReportData, top: int) -> str:
    run = next(iter(data.rows("memorization_runs", "SELECT * FROM t LIMIT 1")), None)
    flagged = data.rows("memorization", "SELECT shard, key, caption, score, trigger_tokens FROM t WHERE flagged "
                                        "ORDER BY score DESC, shard, key LIMIT ?", [top])
    notes_before = len(data.notes)
    images = data.images([(r["shard"], r["key"]) for r in flagged])
    return sections.memorization_section(run, flagged, images, " ".join(data.notes[notes_before:]))


def reference_shards(data: ReportData) -> list[str]:
    """The perturbations config's reference shards of the latest run that tested perturbations."""
    got = data.rows("runs", "SELECT config_json FROM t WHERE perturbations_json NOT IN ('', '{}') "
                            "ORDER BY run_id DESC LIMIT 1", latest=False)
    if not got:
        return []
    return list(json.loads(got[0]["config_json"]).get("perturbations", {}).get("reference_shards", []))


def perturbations(data: ReportData) -> str:
    tests = data.rows("perturbation_tests", "SELECT * FROM t ORDER BY scope, data <> 'original', data, test, label")
    flags = data.rows("perturbation_flags", "SELECT count(*) FILTER (WHERE flagged) AS n FROM t")
    reference = reference_shards(data)
    cols = ", ".join(f'"{c}"' for c in FEATURES)
    feats = data.rows("perturbation_samples", f"SELECT shard, {cols} FROM t USING SAMPLE reservoir({HISTOGRAM_SAMPLE} "
                                              f"ROWS) REPEATABLE (0)", latest=False)
    from audit.report.charts import feature_histograms, probe_accuracy_chart  # matplotlib: when a report is drawn
    hist = None
    if feats:
        tested = {c: [r[c] for r in feats if r["shard"] not in reference] for c in FEATURES}
        ref = {c: [r[c] for r in feats if r["shard"] in reference] for c in FEATURES} if reference else None
        hist = feature_histograms(tested, ref)
    probes = [t for t in tests if t["scope"] == "dataset" and "probe" in t["test"]]
    return sections.perturbations_section(tests, flags[0]["n"] if flags else None, hist,
                                          probe_accuracy_chart(probes), reference, training_recommendation(data))


def training_recommendation(data: ReportData) -> dict | None:
    """The perturbation export's early-stopping recommendation (a dict), or None."""
    path = data.out.root / PERTURBATION_EXPORT
    try:
        rec = json.loads(path.read_text()).get("training_recommendation") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        data.notes.append(f"{PERTURBATION_EXPORT} could not be read")
        return None
    if not isinstance(rec, dict):
        return None
    numbers = {k: rec.get(k) for k in ("stop_at_epoch", "of_epochs", "reference_accuracy_at_peak",
                                       "final_reference_accuracy")}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers.values()):
        return None
    curve = [a for a in rec.get("epoch_accuracy") or [] if isinstance(a, (int, float))]
    return {**numbers, "data": str(rec.get("data", "")), "epoch_accuracy": curve}


def replication(data: ReportData, top: int) -> str:
    summary_rows = data.rows("replication_summary", "SELECT * FROM t ORDER BY set")
    pairs = data.rows("replication", "SELECT * FROM t WHERE top1_similarity IS NOT NULL "
                                     "ORDER BY top1_similarity DESC, generated LIMIT ?", [top])
    generated = {}
    folder = Path(summary_rows[0]["generated_from"] or "") if summary_rows else None
    for r in pairs:  # generated images from a folder (or given as file paths) are shown while still there
        paths = ([folder / r["generated"]] if folder and folder.is_dir() else []) + [Path(r["generated"])]
        path = next((p for p in paths if p.is_file()), None)
        generated[r["generated"]] = decode_or_none(read_image_file(path)[0]) if path else None
    images = data.images([(r["top1_shard"], r["top1_key"]) for r in pairs])
    return sections.replication_section(summary_rows, pairs, generated, images)


def errors(data: ReportData) -> str:
    groups = data.rows("errors", "SELECT stage, error_type, count(*) AS n FROM t GROUP BY ALL ORDER BY n DESC, stage, error_type")
    examples: dict = {}
    for r in data.rows("errors", """
            SELECT stage, error_type, coalesce(shard || '/' || key, shard) AS "where", message FROM t
            QUALIFY row_number() OVER (PARTITION BY stage, error_type ORDER BY shard, key NULLS FIRST) <= 3"""):
        examples.setdefault((r["stage"], r["error_type"]), []).append(r)
    return sections.errors_section(groups, examples)


def timings(data: ReportData) -> str:
    """Seconds per stage of the newest run that recorded timings (audit.runs.stage_timings)."""
    rows = data.rows("stage_timings", """
        SELECT run_id, kind, stage, count(shard) AS shards, sum(seconds) AS seconds, sum(n_inputs) AS samples
        FROM t WHERE run_id = (SELECT max(run_id) FROM t) GROUP BY run_id, kind, stage
        ORDER BY kind DESC, min(CASE WHEN stage = 'ingest' THEN 0 ELSE 1 END), stage""")
    return sections.timings_section(rows)


def changes(data: ReportData, top: int) -> str:
    counts = data.rows("run_changes", "SELECT change, source_table, count(*) AS n FROM t GROUP BY ALL ORDER BY n DESC, change")
    first = data.rows("run_changes", "SELECT * FROM t ORDER BY change, source_table, shard, key LIMIT ?", [top])
    previous = first[0]["previous_run_id"] if first else None
    return sections.changes_section(counts, first, previous)


def write_report(out_dir, report_dir=None, top: int = 20, opener: Callable | None = None) -> str:
    """Write `index.html` into `report_dir` (default OUT/reports) and return its path. A
    `report_dir` of its own must be new, empty or marked as a report folder (audit.io.folder_ownership:
    UsageError otherwise, nothing written).
    `top`: clusters, memorization pairs, replication pairs and change rows shown at most."""
    out = OutputDir(out_dir)
    if not out.root.is_dir():
        raise FileNotFoundError(f"no output folder at {out.root}: run `shardguard run --out {out_dir}` first")
    data = ReportData(out, opener or local_open)
    body = (sections.nav(SECTIONS) + summary(data) + duplicates(data, top) + memorization(data, top)
            + perturbations(data) + replication(data, top) + errors(data) + changes(data, top) + timings(data))
    path = out.root / "reports"
    if report_dir and Path(report_dir).resolve() != path:  # a folder of its own: new, empty or a report's
        path = claim(report_dir, "report")
    return write_page(path / "index.html", f"ShardGuard audit report: {out.root.name}", body, sections.STYLE)
