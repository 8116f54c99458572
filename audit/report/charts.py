"""Charts for the audit report (OUT/reports/index.html), drawn with matplotlib's Agg backend.

Input: plain rows and arrays read from the audit tables (no store access here).
Output: `<img>` tags whose src is a PNG data URI, so the page needs no network and no script;
None when there is nothing to draw (the section then says so). Chart labels come from data
(test and feature names): matplotlib draws them as pixels, and the alt text is escaped.
Failure: matplotlib errors propagate; non-finite values are dropped before drawing.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from audit.report.html_pages import text  # noqa: E402

TESTED_COLOR, REFERENCE_COLOR, THRESHOLD_COLOR = "#d9534f", "#4a7fb5", "#222222"


def figure_tag(fig, alt: str, dpi: int = 80) -> str:
    """A matplotlib figure as an <img> with a PNG data URI (the figure is closed)."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img class="chart" alt="{text(alt)}" src="data:image/png;base64,{data}">'


def _finite(values) -> np.ndarray:
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return a[np.isfinite(a)]


def feature_histograms(tested: dict[str, list], reference: dict[str, list] | None = None,
                       columns: int = 4) -> str | None:
    """One small histogram per feature: tested samples, and the reference shards over them
    (both as densities on shared bins, so sets of different sizes compare). Values beyond the
    central 99% are counted in the outermost bins."""
    names = [n for n in tested if len(_finite(tested[n])) or (reference and len(_finite(reference.get(n, []))))]
    if not names:
        return None
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        t = _finite(tested[name])
        r = _finite(reference.get(name, [])) if reference else np.zeros(0)
        both = np.concatenate([t, r])
        # the central 99% sets the axis (a few extreme samples would squeeze the rest into one bin)
        lo, hi = (float(np.quantile(both, 0.005)), float(np.quantile(both, 0.995))) if len(both) else (0.0, 1.0)
        t, r = np.clip(t, lo, hi), np.clip(r, lo, hi)
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
        if len(t):
            ax.hist(t, bins=bins, density=True, histtype="stepfilled", alpha=0.6, color=TESTED_COLOR, label=f"tested (n={len(t)})")
        if len(r):
            ax.hist(r, bins=bins, density=True, histtype="stepfilled", alpha=0.5, color=REFERENCE_COLOR, label=f"reference (n={len(r)})")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
        ax.legend(fontsize=6, loc="upper right")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return figure_tag(fig, "feature histograms: tested vs reference shards")


def probe_accuracy_chart(rows: list[dict]) -> str | None:
    """Grouped bars: each probe test's held-out accuracy per data version ('original',
    'sanitized:<name>'), with that row's fail threshold as a black tick over its bar."""
    rows = [r for r in rows if r.get("statistic") is not None and np.isfinite(r["statistic"])]
    if not rows:
        return None
    tests = sorted({r["test"] for r in rows})
    versions = sorted({r["data"] for r in rows}, key=lambda d: (d != "original", d))
    width = 0.8 / len(versions)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(tests) + 2), 3.4))
    cmap = plt.get_cmap("tab10")
    by_key = {(r["test"], r["data"]): r for r in rows}
    for j, version in enumerate(versions):
        xs, ys, ths = [], [], []
        for i, test in enumerate(tests):
            r = by_key.get((test, version))
            if r is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(r["statistic"])
            ths.append(r.get("threshold"))
        ax.bar(xs, ys, width=width * 0.9, color=cmap(j % 10), label=version)
        for x, th in zip(xs, ths):
            if th is not None and np.isfinite(th):
                ax.hlines(th, x - width * 0.45, x + width * 0.45, colors=THRESHOLD_COLOR, linewidth=2)
    ax.plot([], [], color=THRESHOLD_COLOR, linewidth=2, label="fail threshold")
    ax.set_xticks(range(len(tests)))
    ax.set_xticklabels(tests, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("held-out accuracy")
    top = max([r["statistic"] for r in rows] + [r["threshold"] for r in rows if r.get("threshold") is not None] + [1.0])
    ax.set_ylim(0, 1.05 * top)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return figure_tag(fig, "probe accuracies vs thresholds")
