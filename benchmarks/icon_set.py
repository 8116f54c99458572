"""A labelled icon set from Debian icon themes: class = the freedesktop icon context (actions,
apps, devices, mimetypes, places, status, ...), a third clean dataset for the unlearnable-data
benchmark next to MNIST-5k and the openclipart categories (benchmarks/perturbations.py).

    .venv/bin/python benchmarks/icon_set.py              # summary at 32 px
    .venv/bin/python benchmarks/icon_set.py --size 64

Sources (fetched at run time with `apt-get download` into .cache/icons, unpacked with
`dpkg-deb -x`, never committed). No single theme here has >= 8 contexts with >= 100 distinct
PNGs at 32-64 px once copies are dropped (oxygen at 32 px: actions 633, mimetypes 167, apps 161,
the rest 12-79; Paper's 1,162 apps are 373 distinct pictures), so the classes pool six themes:

| package (Debian 12) | theme | licence (the package's copyright file) |
| --- | --- | --- |
| oxygen-icon-theme | oxygen/base | LGPL-3+ (KDE Oxygen, David Miller et al.) |
| faenza-icon-theme | Faenza | GPL-3+ (Matthieu James) |
| mate-icon-theme | mate | LGPL-3+ or CC-BY-SA (MATE, from GNOME 2's icons) |
| elementary-xfce-icon-theme | elementary-xfce | GPL-2+ (one emblem CC-BY-SA-2.0) |
| tango-icon-theme | Tango | public domain |
| lxde-icon-theme | nuoveXT2 | LGPL-3+ |

gnome-icon-theme is left out: 197 of its 325 distinct 32 px icons are near copies (RMS < 0.03)
of MATE's (MATE forked them). Papirus and Breeze ship SVG only, Paper and Moka mostly copies of
a few pictures per context (their symlinks are shipped as files).

Per theme, one size folder: the one whose size equals `size` (no resampling), else the
smallest larger one (resized once, Lanczos); a theme with no folder >= `size` is skipped
(no upscaling: at 64 px MATE comes from 256x256 and Tango, 32 px at most, is left out). A PNG
whose own size differs from its folder's (a few 22 px files in oxygen's 32x32/mimetypes) is
resized too. Contexts: elementary-xfce's "mimes" is read as "mimetypes"; every other folder
name is a context. Alpha is composited on white, RGB uint8. Dropped: broken symlinks; a
symlink or file resolving to a file already read; an icon name already seen in another context
of the same theme (the first context in sorted order keeps it); icons blank on white (no pixel
below 255 - BLANK_LEVEL in every channel: white panel glyphs drawn for dark panels, e.g. Faenza's
*-panel status icons); exact pixel duplicates across
everything read (the first in (theme order, context, name) order keeps it). Then every context
with >= min_count distinct icons is a class, and up to per_class random icons of it are drawn.

Failure: RuntimeError when apt-get download or dpkg-deb fails (run `apt-get update`, or put the
.deb files in .cache/icons/debs), ValueError when no context reaches min_count.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from dataclasses import dataclass
import sys
from pathlib import Path

import numpy as np
from PIL import Image

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(_REPO))

from benchmarks.debian_packages import unpacked  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "icons"


@dataclass(frozen=True)
class Theme:
    package: str
    folder: str  # under usr/share/icons
    layout: str  # "size/context" (32x32/apps) or "context/size" (apps/32)


THEMES = (
    Theme("oxygen-icon-theme", "oxygen/base", "size/context"),
    Theme("faenza-icon-theme", "Faenza", "context/size"),
    Theme("mate-icon-theme", "mate", "size/context"),
    Theme("elementary-xfce-icon-theme", "elementary-xfce", "context/size"),
    Theme("tango-icon-theme", "Tango", "size/context"),
    Theme("lxde-icon-theme", "nuoveXT2", "size/context"),
)
CONTEXT_ALIASES = {"mimes": "mimetypes"}
BLANK_LEVEL = 24  # an icon no pixel of which is this far below white is blank on white (white panel icons)
SIZE_DIR = re.compile(r"^(\d+)(?:x(\d+))?$")  # "32x32" or "32"; "32x32@2x", "scalable" are not


def fetch(package: str, cache: Path = CACHE) -> Path:
    """The folder `package` is unpacked in (benchmarks.debian_packages, cached)."""
    return unpacked(package, cache / "debs", cache / "root" / package)


def _size_of(name: str) -> int | None:
    m = SIZE_DIR.match(name)
    return int(m.group(1)) if m and (m.group(2) is None or m.group(2) == m.group(1)) else None


def context_folders(theme_root: Path, layout: str, size: int) -> tuple[int | None, dict[str, Path]]:
    """(chosen folder size, {context: folder}) for one theme: the size equal to `size`, else the
    smallest larger one; (None, {}) when the theme has nothing >= size."""
    if layout == "size/context":
        sizes = {s: theme_root / d.name for d in theme_root.iterdir() if d.is_dir() and (s := _size_of(d.name))}
    else:
        sizes = {}
        for ctx in theme_root.iterdir():
            for d in ctx.iterdir() if ctx.is_dir() else ():
                if d.is_dir() and (s := _size_of(d.name)):
                    sizes.setdefault(s, {})[ctx.name] = d
    larger = sorted(s for s in sizes if s >= size)
    if not larger:
        return None, {}
    chosen = larger[0]
    if layout == "size/context":
        folders = {d.name: d for d in sizes[chosen].iterdir() if d.is_dir()}
    else:
        folders = sizes[chosen]
    out: dict[str, Path] = {}
    for name in sorted(folders):
        out.setdefault(CONTEXT_ALIASES.get(name, name), folders[name])
    return chosen, out


def _load(path: Path, size: int) -> np.ndarray:
    im = Image.open(path).convert("RGBA")
    im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.LANCZOS)
    return np.asarray(im)


def icon_index(size: int = 32, cache: Path = CACHE) -> tuple[np.ndarray, list[dict], dict[str, int]]:
    """Every distinct icon of every theme at `size`: (x uint8 (N, size, size, 3), records with
    theme, context, name, folder_size, resized; dropped counts by reason)."""
    images, records, seen_files, seen_pixels = [], [], set(), set()
    dropped = {"broken link": 0, "same file": 0, "same name, other context": 0, "blank on white": 0,
               "same pixels": 0}
    for theme in THEMES:
        theme_root = fetch(theme.package, cache) / "usr/share/icons" / theme.folder
        folder_size, folders = context_folders(theme_root, theme.layout, size)
        names: set[str] = set()
        for ctx, folder in folders.items():
            for path in sorted(folder.glob("*.png")):
                if not path.exists():
                    dropped["broken link"] += 1
                    continue
                real = path.resolve()
                if real in seen_files:
                    dropped["same file"] += 1
                    continue
                seen_files.add(real)
                if path.name in names:
                    dropped["same name, other context"] += 1
                    continue
                names.add(path.name)
                arr = _load(path, size)
                if not first_showing(arr, seen_pixels, dropped):
                    continue
                images.append(arr)
                records.append({"theme": theme.folder.split("/")[0], "context": ctx, "name": path.stem,
                                "folder_size": folder_size, "resized": folder_size != size})
    return np.stack(images), records, dropped


def icon_categories(size: int = 32, per_class: int = 250, min_count: int = 80, seed: int = 0,
                    cache: Path = CACHE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Icon contexts as classes: every context with >= min_count distinct icons (icon_index),
    up to per_class random icons each (seeded). Returns x uint8 (N, size, size, 3), y int64
    (N,) in 0..K-1, names (K,) the contexts in sorted order."""
    x, y, names, _ = _categories(size, per_class, min_count, seed, cache)
    return x, y, names


def _categories(size, per_class, min_count, seed, cache):
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    xs, records, _ = icon_index(size, cache)
    return draw_contexts(xs, records, min_count, per_class, seed, f"no icon context has >= {min_count} distinct icons "
                                                                   f"at {size} px")


def first_showing(arr: np.ndarray, seen: set, dropped: dict) -> bool:
    """True for a picture to keep: not blank on white (no pixel below 255 - BLANK_LEVEL) and
    pixels not seen before (`seen` gains its digest). Otherwise False, counted in `dropped`."""
    if int(arr.min()) >= 255 - BLANK_LEVEL:
        dropped["blank on white"] += 1
        return False
    digest = hashlib.sha1(arr.tobytes()).digest()
    if digest in seen:
        dropped["same pixels"] += 1
        return False
    seen.add(digest)
    return True


def draw_contexts(xs: np.ndarray, records: list[dict], min_count: int, per_class: int, seed: int,
                  none_message: str) -> tuple[np.ndarray, np.ndarray, list[str], list[dict]]:
    """Every context (record["context"]) with >= min_count images is a class (sorted names), up
    to per_class seeded random images of it, in index order within a class. Returns x, y, names
    and the drawn records; ValueError(none_message) when no context qualifies."""
    contexts = np.array([r["context"] for r in records])
    names = sorted(str(c) for c in set(contexts) if (contexts == c).sum() >= min_count)
    if not names:
        raise ValueError(none_message)
    rng = np.random.default_rng(seed)
    picked, labels = [], []
    for k, ctx in enumerate(names):
        idx = rng.permutation(np.flatnonzero(contexts == ctx))[:per_class]
        picked += sorted(idx.tolist())
        labels += [k] * len(idx)
    return xs[picked], np.array(labels, np.int64), names, [records[i] for i in picked]


def near_duplicate_pairs(x: np.ndarray, rms: float = 0.03) -> list[tuple[int, int, float]]:
    """Pairs (i, j, distance) with i < j whose per-pixel RMS difference (values in [0, 1]) is
    below `rms`: pictures that differ only by a badge, a tint or a few pixels."""
    f = x.reshape(len(x), -1).astype(np.float32) / 255
    sq = (f ** 2).sum(1)
    out = []
    for lo in range(0, len(f), 512):
        d2 = np.maximum(sq[lo:lo + 512, None] + sq[None] - 2 * f[lo:lo + 512] @ f.T, 0) / f.shape[1]
        for a, b in zip(*np.nonzero(np.sqrt(d2) < rms)):
            if lo + a < b:
                out.append((int(lo + a), int(b), float(np.sqrt(d2[a, b]))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--per-class", type=int, default=250)
    ap.add_argument("--min-count", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    _, records, dropped = icon_index(args.size)
    themes = [t.folder.split("/")[0] for t in THEMES]
    all_ctx = sorted({r["context"] for r in records})
    print(f"distinct icons at {args.size} px: {len(records)}; dropped: "
          + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    folder = {r["theme"]: r["folder_size"] for r in records}
    print("theme folders: " + ", ".join(f"{t} {folder[t]} px" if t in folder else f"{t} none >= {args.size} px"
                                         for t in themes))
    print(f"{'context':12s}" + "".join(f"{t[:9]:>10s}" for t in themes) + f"{'total':>8s}")
    for ctx in all_ctx:
        row = [sum(r["theme"] == t and r["context"] == ctx for r in records) for t in themes]
        print(f"{ctx:12s}" + "".join(f"{n:10d}" for n in row) + f"{sum(row):8d}")
    x, y, names, picked = _categories(args.size, args.per_class, args.min_count, args.seed, CACHE)
    print(f"\nicon_categories(size={args.size}, per_class={args.per_class}, min_count={args.min_count}, "
          f"seed={args.seed}): {len(y)} images {x.shape[1:]} {x.dtype}, {len(names)} classes")
    for k, ctx in enumerate(names):
        by_theme = {t: sum(r["theme"] == t for r, yy in zip(picked, y) if yy == k) for t in themes}
        print(f"  {k} {ctx:10s} {int((y == k).sum()):4d}  (" + ", ".join(f"{t} {n}" for t, n in by_theme.items() if n)
              + ")")
    pairs = near_duplicate_pairs(x)
    cross = sum(y[i] != y[j] for i, j, _ in pairs)
    print(f"near-duplicate pairs (RMS < 0.03) in the set: {len(pairs)} ({cross} across classes)")
    for i, j, d in pairs[:10]:
        a, b = picked[i], picked[j]
        print(f"  {a['theme']}/{a['context']}/{a['name']} ~ {b['theme']}/{b['context']}/{b['name']} ({d:.3f})")


if __name__ == "__main__":
    main()
