"""A labelled set of monochrome line pictograms: GNOME Adwaita's symbolic icons (1-2 px strokes),
class = the icon context folder (actions, status, devices, ...). A held-out clean set for the
false-alarm rate of the no-reference perturbation screening (issue 21, benchmarks/perturbations.py
--screening): thin-line content of another kind than the rendered letters of glyph_set.py. It was
added before the screening tests were ever run on it, and nothing was chosen by looking at them.

    .venv/bin/python benchmarks/symbolic_icon_set.py              # summary at 32 px
    .venv/bin/python benchmarks/symbolic_icon_set.py --size 16

Source: Debian 12's adwaita-icon-theme (43-1), fetched at run time with `apt-get download` into
.cache/symbolic and unpacked with `dpkg-deb -x` (benchmarks/debian_packages.py; never committed).
Licence (its copyright file): CC-BY-SA-3.0 or LGPL-3, "GNOME Project". Adwaita is not one of the
themes of benchmarks/icon_set.py. It ships its symbolic icons pre-rendered as
`<name>-symbolic.symbolic.png` at 16, 24, 32 and 48 px (the SVGs too, but no SVG renderer is in
the venv). Other Debian themes were checked (`dpkg-deb -c`): Yaru (120 symbolic PNGs, all one
emblem in its colour variants), gnome-icon-theme (7), mate (7), faenza (~250, a few icons in many
size folders), oxygen (8), tango (4); elementary, numix, breeze, suru ship symbolic SVG only.
So this is Adwaita alone, and it is small: distinct icons at 32 px per context are status 155,
actions 134, legacy 51, devices 50, emotes 26, ui 21, categories 20, mimetypes 17, places 13,
emblems 10, apps 1 (the same at 16 px); the default min_count (20) keeps 7 classes, 457 icons
(ideally there would be >= 8 classes of >= 60; only status and actions reach 60).

A .symbolic.png encodes GTK's recolouring: black = foreground, red / green / blue channel = the
success / warning / error colour share, alpha = coverage. It is decoded with Adwaita's GTK 3
colours (FOREGROUND #2e3436, success #33d17a, warning #f57900, error #cc0000, a light theme's
look), then composited on white, RGB uint8. One size folder: the one equal to `size` (no
resampling), else the smallest larger one (resized once, Lanczos); ValueError when none is
>= size (no upscaling). Dropped: files whose name is not *.symbolic.png (a few full-colour icons
share the folders), right-to-left variants (a name with "-rtl": the mirror image of the icon
without it, within RMS 0.03), icons blank on white (icon_set.first_showing), exact pixel
duplicates (the first in (context, name) order keeps it: Adwaita ships aliases as copies, 48 at
32 px). Near copies stay, as the data has them (3 pairs within RMS 0.03 at 32 px,
e.g. network-cellular and -connected).

Output: (x uint8 (N, size, size, 3), y int64 (N,) in 0..K-1, class names (K,) sorted), up to
per_class seeded random icons of every context with >= min_count distinct icons.
Failure: RuntimeError when apt-get download or dpkg-deb fails (run `apt-get update`, or put the
.deb in .cache/symbolic/debs), ValueError for a size with no folder >= it or when no context
reaches min_count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(_REPO))

from benchmarks.debian_packages import unpacked  # noqa: E402
from benchmarks import icon_set  # noqa: E402
from benchmarks.icon_set import draw_contexts, first_showing, near_duplicate_pairs  # noqa: E402

BLANK_LEVEL = icon_set.BLANK_LEVEL  # the blank-on-white cut, shared with the colour icons (first_showing)

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "symbolic"
PACKAGE = "adwaita-icon-theme"
THEME = "usr/share/icons/Adwaita"
FOLDER_SIZES = (16, 24, 32, 48)  # the folders holding *.symbolic.png
FOREGROUND = (0x2E, 0x34, 0x36)
SUCCESS, WARNING, ERROR = (0x33, 0xD1, 0x7A), (0xF5, 0x79, 0x00), (0xCC, 0x00, 0x00)


def theme_root(cache: Path = CACHE) -> Path:
    return unpacked(PACKAGE, cache / "debs", cache / "root" / PACKAGE) / THEME


def decode_symbolic(rgba: np.ndarray) -> np.ndarray:
    """A .symbolic.png's RGBA (H, W, 4) uint8 as GTK draws it on white: RGB uint8 (H, W, 3)."""
    a = rgba[..., 3:].astype(np.float32) / 255
    r, g, b = (rgba[..., i:i + 1].astype(np.float32) / 255 for i in range(3))
    fg = np.clip(1 - r - g - b, 0, 1)
    colour = (fg * np.array(FOREGROUND, np.float32) + r * np.array(SUCCESS, np.float32)
              + g * np.array(WARNING, np.float32) + b * np.array(ERROR, np.float32))
    return np.clip(np.rint(colour * a + 255 * (1 - a)), 0, 255).astype(np.uint8)


def symbolic_index(size: int = 32, cache: Path = CACHE) -> tuple[np.ndarray, list[dict], dict[str, int]]:
    """Every distinct symbolic icon at `size`: (x uint8 (N, size, size, 3), records with context,
    name, folder_size; dropped counts by reason)."""
    larger = [s for s in FOLDER_SIZES if s >= size]
    if size < 1 or not larger:
        raise ValueError(f"size must be in 1..{max(FOLDER_SIZES)} (no upscaling), got {size}")
    folder_size = larger[0]
    root = theme_root(cache) / f"{folder_size}x{folder_size}"
    images, records, seen = [], [], set()
    dropped = {"not symbolic": 0, "rtl mirror": 0, "blank on white": 0, "same pixels": 0}
    for ctx_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        for path in sorted(ctx_dir.glob("*.png")):
            if not path.name.endswith(".symbolic.png"):
                dropped["not symbolic"] += 1
                continue
            if "-rtl" in path.name:
                dropped["rtl mirror"] += 1
                continue
            im = Image.open(path).convert("RGBA")
            if im.size != (size, size):
                im = im.resize((size, size), Image.LANCZOS)
            arr = decode_symbolic(np.asarray(im))
            if not first_showing(arr, seen, dropped):
                continue
            images.append(arr)
            records.append({"context": ctx_dir.name, "name": path.name[:-len(".symbolic.png")],
                            "folder_size": folder_size})
    return np.stack(images), records, dropped


def symbolic_icons(size: int = 32, per_class: int = 250, min_count: int = 20, seed: int = 0,
                   cache: Path = CACHE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Contexts as classes: every context with >= min_count distinct icons (symbolic_index), up to
    per_class seeded random icons each. Returns x uint8 (N, size, size, 3), y int64 (N,), names."""
    x, y, names, _ = _categories(size, per_class, min_count, seed, cache)
    return x, y, names


def _categories(size, per_class, min_count, seed, cache):
    xs, records, _ = symbolic_index(size, cache)
    return draw_contexts(xs, records, min_count, per_class, seed,
                         f"no context has >= {min_count} distinct symbolic icons at {size} px")


def contact_sheet(x: np.ndarray, y: np.ndarray, per_class: int = 12, scale: int = 3) -> Image.Image:
    """One row per class, the first per_class images of it, each scaled up `scale` times (nearest)."""
    k, s = int(y.max()) + 1, x.shape[1]
    sheet = np.full((k * (s + 2), per_class * (s + 2), 3), 128, np.uint8)
    for c in range(k):
        for j, i in enumerate(np.flatnonzero(y == c)[:per_class]):
            sheet[c * (s + 2) + 1:c * (s + 2) + 1 + s, j * (s + 2) + 1:j * (s + 2) + 1 + s] = x[i]
    im = Image.fromarray(sheet)
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--per-class", type=int, default=250)
    ap.add_argument("--min-count", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sheet", default="", help="write a contact sheet PNG here")
    args = ap.parse_args()
    t = time.perf_counter()
    _, records, dropped = symbolic_index(args.size)
    counts = {c: sum(r["context"] == c for r in records) for c in sorted({r["context"] for r in records})}
    print(f"distinct symbolic icons at {args.size} px (folder {records[0]['folder_size']} px): {len(records)}; "
          "dropped: " + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    print("  " + ", ".join(f"{c} {n}" for c, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    x, y, names, _ = _categories(args.size, args.per_class, args.min_count, args.seed, CACHE)
    print(f"symbolic_icons(size={args.size}, per_class={args.per_class}, min_count={args.min_count}, "
          f"seed={args.seed}): {len(y)} images {x.shape[1:]} {x.dtype}, {len(names)} classes "
          f"({time.perf_counter() - t:.1f}s)")
    print("  " + ", ".join(f"{n}: {(y == i).sum()}" for i, n in enumerate(names)))
    pairs = near_duplicate_pairs(x)
    print(f"near-duplicate pairs (RMS < 0.03): {len(pairs)} ({sum(y[i] != y[j] for i, j, _ in pairs)} across classes)")
    if args.sheet:
        contact_sheet(x, y).save(args.sheet)
        print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
