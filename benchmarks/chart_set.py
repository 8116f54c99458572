"""A labelled set of small rendered charts (thin axes, lines, markers, tick text), class = the
chart kind. A held-out clean set for the false-alarm rate of the no-reference perturbation
screening (issue 21, benchmarks/perturbations.py --screening): thin-line content of another kind
than the rendered letters of glyph_set.py, and a common kind of web image. It was added before the
screening tests were ever run on it, and nothing was chosen by looking at them.

    .venv/bin/python benchmarks/chart_set.py                     # 10 kinds x 250 at 32 px
    .venv/bin/python benchmarks/chart_set.py --per-class 20 --sheet /tmp/charts.png

Input: size (pixels), per_class, seed. Each chart is drawn by matplotlib (Agg, the venv's
matplotlib, its bundled DejaVu Sans) directly at size x size pixels: dpi 72, so one point is one
pixel and line widths of 0.8-2 pt are 0.8-2 px strokes; no resampling. Chart i of kind k has its
own generator, numpy default_rng((seed, k, i)), for its data and its styling, so a chart does not
depend on how many others are drawn, and the same call gives the same pixels. Styling, within
ordinary ranges: line width 0.8-2, colours from matplotlib's tab10 cycle (random start), grid or
not, top/right spines or not, tick labels (4-6 px text) or not, axis labels and a title as short
random words, sometimes a light grey axes background, random margins. Data: seeded random walks,
sines, normal / gamma / uniform samples, random heights and shares.

Kinds (KINDS): line, scatter, bar, barh, hist, pie, step, stem, area (stacked fill), boxplot.
Output: (x uint8 (N, size, size, 3) RGB, y int64 (N,) in 0..9, KINDS as names). Exact pixel
duplicates are dropped (the later one is redrawn with the next index, up to 4 x per_class tries).
Time: the default 2,500 charts at 32 px take 87 s CPU (about 1,700 charts per CPU minute; 144 s
wall on a shared 2-core machine), one process; the same pixels in a fresh process.
Failure: ValueError for size < 16 (no room for a chart); RuntimeError if a kind cannot reach
per_class distinct charts. Licence: the images are generated here (matplotlib is PSF-style
licensed, DejaVu fonts the Bitstream Vera licence); no external data.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(_REPO))

KINDS = ("line", "scatter", "bar", "barh", "hist", "pie", "step", "stem", "area", "boxplot")
WORDS = ("time", "rate", "size", "cost", "year", "load", "mass", "speed", "count", "value", "score",
         "temp", "loss", "gain", "dose", "day", "price", "sales", "users", "depth", "error", "freq")
TAB10 = matplotlib.colormaps["tab10"].colors
RC = {"font.family": "DejaVu Sans", "axes.unicode_minus": False, "path.simplify": True,
      "text.hinting": "force_autohint", "text.antialiased": True, "lines.antialiased": True}
DPI = 72  # one point = one pixel


def _colours(rng: np.random.Generator, n: int) -> list:
    start = int(rng.integers(len(TAB10)))
    return [TAB10[(start + j) % len(TAB10)] for j in range(n)]


def _style_axes(ax, rng: np.random.Generator, lw: float, ticks: bool, fs: float) -> None:
    if rng.random() < 0.4:
        ax.grid(True, linewidth=float(rng.uniform(0.4, 0.8)), color=str(rng.choice(["#b0b0b0", "#cccccc", "#dddddd"])))
        ax.set_axisbelow(True)
    if rng.random() < 0.5:
        ax.spines[["top", "right"]].set_visible(False)
    for s in ax.spines.values():
        s.set_linewidth(float(rng.uniform(0.6, 1.2)))
    if rng.random() < 0.15:
        ax.set_facecolor(str(rng.choice(["#eaeaf2", "#f0f0f0", "#e5e5e5"])))
    ax.tick_params(labelsize=fs, length=float(rng.uniform(1, 3)), width=float(rng.uniform(0.5, 1)), pad=1,
                   labelbottom=ticks, labelleft=ticks)
    ax.locator_params(nbins=int(rng.integers(3, 6)))
    if rng.random() < 0.3:
        ax.set_xlabel(str(rng.choice(WORDS)), fontsize=fs, labelpad=1)
    if rng.random() < 0.3:
        ax.set_ylabel(str(rng.choice(WORDS)), fontsize=fs, labelpad=1)


def _draw(fig: Figure, kind: str, rng: np.random.Generator) -> None:
    lw = float(rng.uniform(0.8, 2.0))
    ticks = rng.random() < 0.6
    fs = float(rng.uniform(4, 6))
    if kind == "pie":
        ax = fig.add_axes((0.05, 0.05, 0.9, 0.9))
        k = int(rng.integers(3, 8))
        shares = rng.dirichlet(np.full(k, float(rng.uniform(0.7, 3))))
        props = {"linewidth": float(rng.uniform(0.5, 1.2)), "edgecolor": "white"} if rng.random() < 0.6 else {}
        if rng.random() < 0.3:
            props["width"] = float(rng.uniform(0.3, 0.6))  # a donut
        ax.pie(shares, colors=_colours(rng, k), startangle=float(rng.uniform(0, 360)), wedgeprops=props,
               radius=float(rng.uniform(0.8, 1.0)), counterclock=bool(rng.random() < 0.5))
        ax.set_aspect("equal")
        if rng.random() < 0.2:
            ax.set_title(str(rng.choice(WORDS)), fontsize=fs, pad=1)
        return
    left = float(rng.uniform(0.22, 0.32) if ticks else rng.uniform(0.04, 0.12))
    bottom = float(rng.uniform(0.18, 0.28) if ticks else rng.uniform(0.04, 0.12))
    top = float(rng.uniform(0.02, 0.1))
    ax = fig.add_axes((left, bottom, 1 - left - float(rng.uniform(0.02, 0.08)), 1 - bottom - top))
    _style_axes(ax, rng, lw, ticks, fs)
    n_series = int(rng.integers(1, 4))
    cols = _colours(rng, n_series)
    if kind in ("line", "step"):
        n = int(rng.integers(8, 60))
        t = np.arange(n)
        for j in range(n_series):
            if rng.random() < 0.5:
                v = np.cumsum(rng.normal(0, 1, n)) + rng.normal(0, 3)
            else:
                v = np.sin(t * rng.uniform(0.05, 0.5) + rng.uniform(0, 6)) * rng.uniform(0.5, 3) + rng.normal(0, 0.3, n)
            if kind == "line":
                marker = str(rng.choice(["o", "s", "^", "."])) if rng.random() < 0.3 else None
                ax.plot(t, v, color=cols[j], linewidth=lw, marker=marker, markersize=float(rng.uniform(1.5, 3.5)))
            else:
                ax.step(t, np.round(v, int(rng.integers(0, 2))), color=cols[j], linewidth=lw,
                        where=str(rng.choice(["pre", "post", "mid"])))
    elif kind == "scatter":
        for j in range(min(n_series, 2)):
            n = int(rng.integers(15, 150))
            xs = rng.normal(rng.uniform(-2, 2), rng.uniform(0.5, 2), n)
            ys = xs * rng.uniform(-1.5, 1.5) + rng.normal(0, rng.uniform(0.3, 2), n)
            ax.scatter(xs, ys, s=float(rng.uniform(1, 10)), color=cols[j], alpha=float(rng.uniform(0.5, 1)),
                       marker=str(rng.choice(["o", "o", ".", "s", "^", "x"])), linewidths=lw * 0.5)
    elif kind in ("bar", "barh"):
        k = int(rng.integers(3, 11))
        h = rng.gamma(2, 1, k) * rng.uniform(1, 50)
        edge = {"edgecolor": "black", "linewidth": lw * 0.5} if rng.random() < 0.3 else {}
        colour = cols[0] if rng.random() < 0.7 else _colours(rng, k)
        width = float(rng.uniform(0.5, 0.9))
        if kind == "bar":
            ax.bar(np.arange(k), h, width=width, color=colour, **edge)
        else:
            ax.barh(np.arange(k), h, height=width, color=colour, **edge)
    elif kind == "hist":
        n = int(rng.integers(100, 1000))
        draw = rng.integers(3)
        data = (rng.normal(0, 1, n), rng.gamma(rng.uniform(1, 5), 1, n), rng.uniform(0, 1, n))[draw]
        histtype = str(rng.choice(["bar", "bar", "stepfilled", "step"]))
        bins = int(rng.integers(8, 26))
        if histtype == "bar":  # white bar edges (a common look) only where the bars are wider than them
            white = bins <= 15 and rng.random() < 0.4
            ax.hist(data, bins=bins, color=cols[0], histtype=histtype, rwidth=float(rng.uniform(0.8, 1.0)),
                    edgecolor="white" if white else None, linewidth=float(rng.uniform(0.3, 0.6)) if white else 0)
        else:
            ax.hist(data, bins=bins, color=cols[0], histtype=histtype, linewidth=lw)
    elif kind == "stem":
        n = int(rng.integers(6, 26))
        v = rng.normal(0, 1, n) * rng.uniform(0.5, 3) + (rng.uniform(-1, 2) if rng.random() < 0.5 else 0)
        ml, sl, bl = ax.stem(np.arange(n), v)
        sl.set_color(cols[0]); sl.set_linewidth(lw)
        ml.set_color(cols[0]); ml.set_markersize(float(rng.uniform(1.5, 3.5)))
        bl.set_linewidth(lw * 0.7); bl.set_color(str(rng.choice(["C3", "black", "gray"])))
    elif kind == "area":
        n = int(rng.integers(10, 50))
        ys = np.abs(np.cumsum(rng.normal(0, 1, (n_series, n)), axis=1)) + rng.uniform(0.5, 3, (n_series, 1))
        ax.stackplot(np.arange(n), ys, colors=cols, alpha=float(rng.uniform(0.5, 1.0)),
                     **({"edgecolor": "white", "linewidth": lw * 0.5} if rng.random() < 0.3 else {}))
        ax.margins(x=0)
    elif kind == "boxplot":
        k = int(rng.integers(2, 7))
        data = [rng.normal(rng.uniform(-2, 2), rng.uniform(0.3, 1.5), int(rng.integers(20, 120))) for _ in range(k)]
        props = {"linewidth": lw, "color": cols[0]} if rng.random() < 0.5 else {"linewidth": lw}
        ax.boxplot(data, widths=float(rng.uniform(0.4, 0.8)), boxprops=props, whiskerprops=props, capprops=props,
                   medianprops={"linewidth": lw, "color": str(rng.choice(["C1", "C3", "black"]))},
                   flierprops={"markersize": float(rng.uniform(1.5, 3)), "markeredgewidth": lw * 0.5},
                   orientation="vertical" if rng.random() < 0.8 else "horizontal", showfliers=bool(rng.random() < 0.7))
    else:
        raise ValueError(f"unknown chart kind {kind!r}")
    if rng.random() < 0.2:
        ax.set_title(str(rng.choice(WORDS)), fontsize=fs, pad=1)


class ChartRenderer:
    """One reused Agg figure of size x size pixels; render(kind, rng) -> RGB uint8 (size, size, 3)."""

    def __init__(self, size: int):
        if size < 16:
            raise ValueError(f"size must be >= 16, got {size}")
        self.size = size
        self.fig = Figure(figsize=(size / DPI, size / DPI), dpi=DPI, facecolor="white")
        self.canvas = FigureCanvasAgg(self.fig)

    def render(self, kind: str, rng: np.random.Generator) -> np.ndarray:
        self.fig.clear()
        with matplotlib.rc_context(RC):
            _draw(self.fig, kind, rng)
            self.canvas.draw()
        arr = np.asarray(self.canvas.buffer_rgba())[:, :, :3].copy()
        assert arr.shape == (self.size, self.size, 3), arr.shape
        return arr


def charts(size: int = 32, per_class: int = 250, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """per_class distinct charts of every kind (module doc): x uint8 (N, size, size, 3), y int64
    (N,) in 0..len(KINDS)-1 (kind order), names = KINDS."""
    renderer = ChartRenderer(size)
    images, labels, seen = [], [], set()
    for k, kind in enumerate(KINDS):
        got = 0
        for i in range(4 * per_class):
            if got == per_class:
                break
            arr = renderer.render(kind, np.random.default_rng((seed, k, i)))
            digest = hashlib.sha1(arr.tobytes()).digest()
            if digest in seen:
                continue
            seen.add(digest)
            images.append(arr)
            labels.append(k)
            got += 1
        if got < per_class:
            raise RuntimeError(f"{kind}: only {got} distinct charts in {4 * per_class} tries")
    return np.stack(images), np.array(labels, np.int64), list(KINDS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--per-class", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sheet", default="", help="write a contact sheet PNG here")
    args = ap.parse_args()
    t, c = time.perf_counter(), time.process_time()
    x, y, names = charts(args.size, args.per_class, args.seed)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    print(f"charts(size={args.size}, per_class={args.per_class}, seed={args.seed}): {len(y)} images "
          f"{x.shape[1:]} {x.dtype}, {len(names)} classes; {wall:.1f}s wall, {cpu:.1f}s CPU "
          f"({len(y) / cpu * 60:.0f} charts per CPU minute)")
    print("  " + ", ".join(f"{n}: {(y == i).sum()}" for i, n in enumerate(names)))
    if args.sheet:
        from benchmarks.symbolic_icon_set import contact_sheet
        contact_sheet(x, y).save(args.sheet)
        print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
