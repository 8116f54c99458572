"""The no-reference screening table of benchmarks/perturbations.py (`--screening`; issue 21):
the datasets it screens, the pseudo-labels standing in for the pipeline's k-means, and the
flagged-run counts per poison and label mode. Data, splits, poisons and the method are described
in benchmarks/perturbations.py's module doc, which runs this with `--screening`.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from audit.perturbations.perturbation_audit import ImageSet, PerturbationConfig, audit, center_crop, subsample
from audit.perturbations.screening import kept_view
from benchmarks.chart_set import charts
from benchmarks.glyph_set import glyph_letters
from benchmarks.icon_set import icon_categories
from benchmarks.perturbations import mnist, openclipart_categories, poison, table, three_way
from benchmarks.photo_crops import photo_crops
from benchmarks.symbolic_icon_set import symbolic_icons


def pseudo_labels(x: np.ndarray, crop: int, k: int = 10, seed: int = 0) -> np.ndarray:
    """k-means (spherical, faiss) on the kept view of the analysis crops: labels the audit was not given."""
    import faiss
    crops = np.stack([center_crop(im, crop) for im in x])
    v = kept_view(crops.reshape(len(x), crop, crop, -1)).reshape(len(x), -1).astype(np.float32)
    v -= v.mean(0)
    v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-8
    km = faiss.Kmeans(v.shape[1], k, niter=25, seed=seed, spherical=True, verbose=False)
    km.train(v)
    return km.index.search(v, 1)[1][:, 0].astype(np.int64)


def screen_dataset(name: str, x: np.ndarray, y: np.ndarray, shares, args) -> list[list[str]]:
    """The screening rows of one dataset (module doc): per poison (or none) and label mode."""
    _, _, pool = three_way(y, shares, seed=0)
    crop = min(32, x.shape[1])
    cfg = PerturbationConfig(crop=crop, sanitize=False, device=args.device, alpha=args.alpha)
    half = len(pool) // 2
    rows, t0 = [], time.perf_counter()
    for fam in ["none (clean)"] + args.screen_families:
        clean = fam == "none (clean)"
        n_runs = args.clean_seeds if clean else args.seeds
        for mode in ("labels", "no labels"):
            flagged, fails, class_flags, class_tests = 0, set(), 0, 0
            for s in range(n_runs):
                idx = pool[subsample(y[pool], half, (1000 if clean else 2000) + s)]
                xs = x[idx] if clean else poison(fam, x[idx], y[idx], seed=s)
                labels = y[idx] if mode == "labels" else pseudo_labels(xs, crop, 10, s)
                o = audit(ImageSet(list(xs), labels, pseudo=mode != "labels"), None, cfg)
                flagged += bool(o.failed)
                fails |= set(o.failed)
                screened = [v for v in o.verdicts if v.verdict in ("pass", "fail")]
                class_flags += sum(len(v.affected) for v in screened)
                class_tests += sum(len(v.result.details.get("class_p_values", {})) for v in screened)
            rows.append([name, fam, mode, len(idx), f"{flagged}/{n_runs}", f"{class_flags}/{class_tests}",
                         ",".join(sorted(fails)) or "-"])
            print(f"  [{name}] {fam} {mode}: {flagged}/{n_runs} flagged {sorted(fails)} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    return rows


def screening_sets() -> dict:
    """--datasets name -> (loader returning (x, y, class names), row label from the names)."""
    return {
        "mnist": (lambda: (*mnist(), None), lambda names: "MNIST-5k"),
        "demo": (openclipart_categories, lambda names: f"clipart ({len(names)} cats)"),
        "icons": (icon_categories, lambda names: f"icons ({len(names)} contexts)"),
        "photos": (photo_crops, lambda names: f"photo crops ({len(names)} packages)"),
        "glyphs": (glyph_letters, lambda names: "glyphs A-J"),
        "symbolic": (symbolic_icons, lambda names: f"symbolic icons ({len(names)} contexts, held out)"),
        "charts": (charts, lambda names: f"charts ({len(names)} kinds, held out)"),
    }


def screening_main(args) -> None:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    sets, rows = screening_sets(), []
    for ds in args.datasets.split(","):
        if ds not in sets:
            raise SystemExit(f"unknown dataset {ds!r}; choose from {', '.join(sets)}")
        load, label = sets[ds]
        x, y, names = load()
        rows += screen_dataset(label(names), x, y, (0.2, 0.4), args)
    print()
    print(f"Screening without a reference (alpha {args.alpha:g}, Holm): flagged runs")
    print(table(["data", "poison", "labels", "samples/run", "flagged runs", "flagged class tests", "failing tests"],
                rows))
