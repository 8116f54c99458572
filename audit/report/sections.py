"""HTML for each section of the audit report (OUT/reports/index.html).

Input: rows already read from the audit tables (audit/report/run_report.py reads them) and decoded
PIL images keyed by (shard, key). Output: one `<section id=...>` string per section, each with
an <h2> and, when its tables hold nothing, a "nothing found" line that says why. Every data
string (keys, captions, messages, test names, notes) goes through `html_pages.text()`; long
strings are cut before escaping, never after. No failure modes beyond bad row shapes (KeyError).
"""

from __future__ import annotations

from audit.report.finding_pages import memorization_table, replication_pairs_table, replication_summary_table
from audit.report.html_pages import image_tag, table, text

THUMB = 96  # thumbnail side in pixels

STYLE = """nav a{margin-right:12px}section{margin:28px 0;padding-top:4px;border-top:2px solid #eee}
.nothing{color:#777;font-style:italic}.cluster{display:flex;flex-wrap:nowrap;overflow-x:auto;gap:8px;margin:6px 0 18px}
.member{flex:0 0 118px;font-size:12px;padding:4px;border:1px solid #ddd;border-radius:4px;overflow-wrap:anywhere}
.row{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
.member.kept{border:3px solid #2e8b3a;background:#eef8ef}.badge{display:inline-block;padding:0 4px;border-radius:3px;
font-size:11px;color:#fff}.badge.kept{background:#2e8b3a}.badge.dropped{background:#b33}.pass{color:#2e8b3a}
.fail{color:#b33;font-weight:bold}.skipped{color:#777}.chart{border:none;max-width:100%}
.kv td:first-child{font-weight:bold;background:#fafafa}h3{margin:14px 0 4px;font-size:15px}"""


def cut(value, n: int = 160) -> str:
    """Escaped text, shortened to `n` characters first (so no entity is ever split)."""
    s = "" if value is None else str(value)
    return text(s if len(s) <= n else s[: n - 1] + "…")


def num(value, fmt: str = "{:.4g}") -> str:
    return "-" if value is None else fmt.format(value)


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{text(title)}</h2>{body}</section>'


def nothing(message: str) -> str:
    return f'<p class="nothing">Nothing found: {text(message)}</p>'


def nav(sections: list[tuple[str, str]]) -> str:
    return "<nav>" + "".join(f'<a href="#{sid}">{text(title)}</a>' for sid, title in sections) + "</nav>"


def summary_section(run: dict | None, counts: list[tuple[str, int]], by_status: list[dict]) -> str:
    if run is None:
        return section("summary", "Summary", nothing("no runs row in this output folder (run `shardguard run` first)"))
    fields = [("run id", text(run["run_id"])), ("stages", text(run.get("job"))), ("status", text(run.get("status"))),
              ("input", cut(run.get("input_pattern"))), ("started", text(run.get("started_at"))),
              ("finished", text(run.get("finished_at"))), ("wall seconds", num(run.get("wall_seconds"), "{:.1f}")),
              ("runner", text(run.get("runner"))), ("shardguard", text(run.get("shardguard_version"))),
              ("shards matched / skipped / processed",
               f"{num(run.get('n_shards_matched'), '{}')} / {num(run.get('n_shards_skipped'), '{}')} / "
               f"{num(run.get('n_shards_processed'), '{}')}"),
              ("inputs / ok / failed (this run)",
               f"{num(run.get('n_inputs'), '{}')} / {num(run.get('n_ok'), '{}')} / {num(run.get('n_failed'), '{}')}")]
    kv = "<table class='kv'>" + "".join(f"<tr><td>{text(k)}</td><td>{v}</td></tr>" for k, v in fields) + "</table>"
    notes = "".join(f"<li>{cut(n, 400)}</li>" for n in (run.get("notes") or []))
    status = (table(["status", "samples"], [[text(r["status"]), str(r["n"])] for r in by_status])
              if by_status else nothing("no samples rows"))
    tables = table(["table", "rows"], [[f"<span class='mono'>{text(name)}</span>", str(n)] for name, n in counts])
    return section("summary", "Summary",
                   '<div class="row"><div><h3>Latest run</h3>' + kv
                   + (f"<h3>Notes</h3><ul>{notes}</ul>" if notes else "")
                   + "<h3>Samples by status (all shards)</h3>" + status
                   + "</div><div><h3>Rows per table (corpus-level tables: latest run)</h3>" + tables + "</div></div>")


def _member(m: dict, images: dict) -> str:
    kept = m.get("keep") if m.get("keep") is not None else m.get("is_representative")
    badge = ('<span class="badge kept">kept</span>' if kept else
             f'<span class="badge dropped" title="{cut(m.get("reason"), 300)}">dropped</span>')
    rep = " representative" if m.get("is_representative") else ""
    return (f'<div class="member{" kept" if kept else ""}">{image_tag(images.get((m["shard"], m["key"])), THUMB)}'
            f'<br>{badge}{text(rep)}<br><span class="mono">{cut(m["shard"] + "/" + m["key"], 60)}</span>'
            f'<br>sim {num(m.get("similarity"), "{:.3f}")}<br>{cut(m.get("caption"), 120)}'
            + (f'<br><span class="muted">{cut(m["reason"], 60)}</span>' if not kept and m.get("reason") else "")
            + "</div>")


def duplicates_section(clusters: list[dict], images: dict, n_clusters: int, top: int, note: str = "") -> str:
    """`clusters`: {kind, cluster, size, repeat_type, distinct_captions, members: [rows]}, largest first."""
    if not clusters:
        return section("duplicates", "Duplicates", nothing("no duplicate clusters in the latest dedup run "
                                                           "(or dedup has not run)"))
    head = (f"<p>{n_clusters} duplicate clusters in the latest run; the {len(clusters)} largest are shown "
            f"(top {top}). The kept sample (decisions.keep, else the cluster's representative) is outlined "
            f"green.{' ' + text(note) if note else ''}</p>")
    parts = []
    for c in clusters:
        more = c["size"] - len(c["members"])
        repeat = f"{text(c['repeat_type'])}, " if c.get("repeat_type") else ""
        parts.append(f"<h3>{text(c['kind'])} cluster {c['cluster']}: {c['size']} samples, "
                     f"{repeat}{num(c.get('distinct_captions'), '{}')} distinct captions"
                     f"{f', {more} more not shown' if more > 0 else ''}</h3>"
                     f'<div class="cluster">{"".join(_member(m, images) for m in c["members"])}</div>')
    return section("duplicates", "Duplicates", head + "".join(parts))


def memorization_section(run: dict | None, flagged: list[dict], images: dict, note: str = "") -> str:
    if run is None:
        return section("memorization", "Memorization risk",
                       nothing("no memorization run (set memorization.model or --diffusion-model)"))
    head = (f"<p>Model <span class='mono'>{text(run['model_id'])}</span>, mode {text(run['mode'])}: "
            f"{run['n_flagged']} of {run['n_scored']} pairs flagged at d &ge; {run['threshold']:.4g} "
            f"({text(run['method'])} {run['level']} on {cut(run['reference'], 200)}). Darker words triggered the "
            f"memorization more (Wen et al., ICLR 2024).{' ' + text(note) if note else ''}</p>")
    if not flagged:
        return section("memorization", "Memorization risk", head + nothing("no pair over the threshold"))
    return section("memorization", "Memorization risk",
                   head + f"<p>Top {len(flagged)} by score:</p>" + memorization_table(flagged, images, THUMB))


def _verdict(v) -> str:
    return f'<span class="{text(v)}">{text(v)}</span>'


def perturbations_section(tests: list[dict], n_flagged: int | None, histograms: str | None,
                          probe_chart: str | None, reference: list[str], stop: dict | None = None) -> str:
    if not tests and not histograms:
        return section("perturbations", "Perturbations (unlearnable data)",
                       nothing("no perturbation features or tests (perturbations.features / .tests off, "
                               "or too few labelled samples)"))
    dataset = [t for t in tests if t["scope"] == "dataset"]
    failing_classes = [t for t in tests if t["scope"] == "class" and t["verdict"] == "fail"]
    screening = any(t.get("mode") == "screening" for t in dataset)
    rows = [[text(t["data"]), text(t["test"]), num(t.get("statistic")), num(t.get("threshold")),
             num(t.get("p_value"), "{:.2g}"), num(t.get("p_adjusted"), "{:.2g}"), text(t.get("threshold_source")),
             _verdict(t["verdict"]), cut(", ".join(t.get("affected_classes") or []), 200),
             num(t.get("n_located"), "{}"), num(t.get("n_samples"), "{}")] for t in dataset]
    how = (f"Reference shards: {text(', '.join(reference))}: verdicts against thresholds from their bootstrap."
           if reference else "No reference shards: <b>screening</b>. Each screening test's p-value comes from a null "
           "made from the data itself (the class signal of what a content-keeping sanitizer removes vs of the content "
           "it keeps; a pixel's colour vs its neighbours'), and a test fails when Holm's step-down rejects it at the "
           "configured family-wise level (perturbations.alpha). A screening result is evidence to look at, not "
           "proof; 'context' rows have no data-derived null and no verdict.")
    body = (f"<p>{'Screening results' if screening else 'Verdicts'} of the latest test run; "
            f"{num(n_flagged, '{}')} samples flagged (perturbation_flags). {how}</p>")
    body += (table(["data", "test", "statistic", "threshold", "p", "p (Holm)", "from", "verdict", "affected classes",
                    "located", "samples"], rows) if rows else nothing("no test verdicts (tests skipped or not run)"))
    if failing_classes:
        body += "<h3>Failing per-class tests</h3>" + table(
            ["data", "test", "class", "statistic", "threshold"],
            [[text(t["data"]), text(t["test"]), cut(t.get("label"), 80), num(t.get("statistic")), num(t.get("threshold"))]
             for t in failing_classes[:50]])
    if stop:  # exports/perturbation_sanitizer.json's training_recommendation (audit.perturbations.early_stopping)
        curve = stop.get("epoch_accuracy") or []
        body += ("<h3>Training recommendation: early stopping</h3><p>The data failed against the reference. "
                 "Trained on it, the small CNN's accuracy on the clean reference peaks at the epoch below; stopping "
                 "there is a defence against poisons that take hold late (the peak, not the final accuracy, is "
                 "what such data teaches). From exports/perturbation_sanitizer.json (training_recommendation: "
                 "for the data the clean job writes).</p>" + table(
                     ["data", "stop at epoch", "reference accuracy at the peak", "at the last epoch", "curve"],
                     [[text(stop.get("data")), f"{num(stop.get('stop_at_epoch'), '{}')} of {num(stop.get('of_epochs'), '{}')}",
                       num(stop.get("reference_accuracy_at_peak")), num(stop.get("final_reference_accuracy")),
                       text(" ".join(f"{a:.2f}" for a in curve))]]))
    body += "<h3>Probe accuracies vs thresholds</h3>" + (probe_chart or nothing("no probe test rows"))
    body += ("<h3>Per-sample feature histograms (tested vs reference shards)</h3>"
             + (histograms or nothing("no perturbation_samples rows")))
    return section("perturbations", "Perturbations (unlearnable data)", body)


def replication_section(summary: list[dict], pairs: list[dict], generated: dict, images: dict) -> str:
    if not summary and not pairs:
        return section("replication", "Replication", nothing("no replication check (run `shardguard replication`)"))
    body = replication_summary_table(summary) if summary else ""
    body += ("<h3>Most similar pairs (generated | nearest training image)</h3>"
             + replication_pairs_table(pairs, generated, images, THUMB)) if pairs else nothing("no checked images")
    return section("replication", "Replication", body)


def errors_section(groups: list[dict], examples: dict) -> str:
    """`groups`: {stage, error_type, n}; `examples`: (stage, error_type) -> [{where, message}]."""
    if not groups:
        return section("errors", "Errors", nothing("no errors rows"))
    rows = [[text(g["stage"]), text(g["error_type"]), str(g["n"]),
             "<br>".join(f"<span class='mono'>{cut(e['where'], 80)}</span>: {cut(e['message'], 200)}"
                         for e in examples.get((g["stage"], g["error_type"]), []))] for g in groups]
    return section("errors", "Errors", table(["stage", "error type", "count", "examples"], rows))


def timings_section(rows: list[dict]) -> str:
    """`rows`: {run_id, kind, stage, shards, seconds, samples} of one run (audit.runs.stage_timings)."""
    if not rows:
        return section("timings", "Stage timings", nothing("no stage_timings rows"))
    body = f"<p>Run <span class='mono'>{text(rows[0]['run_id'])}</span>: seconds of each stage's own work.</p>"
    body += table(["kind", "stage", "shards", "seconds", "samples", "samples/s"], [
        [text(r["kind"]), text(r["stage"]), str(r["shards"] or ""), f"{r['seconds']:.2f}",
         str(r["samples"] or ""), f"{r['samples'] / r['seconds']:.1f}" if r["samples"] and r["seconds"] else ""]
        for r in rows])
    return section("timings", "Stage timings", body)


def changes_section(counts: list[dict], first: list[dict], previous: str | None) -> str:
    if not counts:
        return section("changes", "Changes since the previous run", nothing("no run_changes rows for the latest run"))
    body = f"<p>Compared with run <span class='mono'>{text(previous or 'none (first run)')}</span>.</p>"
    body += table(["change", "source table", "rows"], [[text(c["change"]), text(c["source_table"]), str(c["n"])]
                                                       for c in counts])
    body += f"<h3>First {len(first)} changes</h3>" + table(
        ["change", "table", "sample", "before", "after", "detail"],
        [[text(r["change"]), text(r["source_table"]),
          cut("/".join(x for x in (r.get("shard"), r.get("key")) if x), 80),
          cut(r.get("before"), 80), cut(r.get("after"), 80), cut(r.get("detail"), 200)] for r in first])
    return section("changes", "Changes since the previous run", body)
