"""A labelled set of rendered letters (notMNIST-like) for the perturbation benchmark: the letters
A-J drawn in the fonts of Debian font packages, labelled by the letter.

    .venv/bin/python benchmarks/glyph_set.py      # prints the fonts, classes and counts

Data: every TrueType/OpenType file of the packages in FONT_PACKAGES (fetched with apt-get
download into REPO/.cache/fonts and unpacked with dpkg-deb -x; never committed) plus the DejaVu
fonts the system has. Each font draws each letter `per_font` times, in black on white, at a
seeded random size (14-26 px) and a random offset that keeps the glyph inside a size x size
canvas (PIL's renderer, anti-aliased). Fonts that cannot draw a letter (an empty glyph) are
left out; exact pixel duplicates are dropped. Class = the letter (10 classes).
Licences: fonts-liberation (OFL 1.1), fonts-freefont-ttf (GPL-3+ with font exception),
fonts-croscore (Apache 2.0), fonts-crosextra-carlito and -caladea (OFL 1.1 / Apache 2.0),
fonts-linuxlibertine (GPL-2 with font exception / OFL), fonts-ebgaramond (OFL 1.1), DejaVu
(Bitstream Vera licence).

Output: (x uint8 (N, size, size, 3), y int64 (N,), class names). Used by
`benchmarks/perturbations.py --screening` as the held-out clean set: it was added after the
screening tests' design was final and was not looked at while choosing anything.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(_REPO))

from benchmarks.debian_packages import unpacked  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "fonts"
FONT_PACKAGES = ("fonts-liberation", "fonts-freefont-ttf", "fonts-croscore", "fonts-crosextra-carlito",
                 "fonts-crosextra-caladea", "fonts-linuxlibertine", "fonts-ebgaramond")
LETTERS = "ABCDEFGHIJ"


def font_files() -> list[Path]:
    """The packages' font files (fetched and unpacked once) plus the system's DejaVu fonts."""
    roots = [unpacked(p, CACHE / "debs", CACHE / "root" / p) for p in FONT_PACKAGES]
    files = [p for root in roots for ext in ("ttf", "otf") for p in root.rglob(f"*.{ext}") if not p.is_symlink()]
    files += sorted(Path("/usr/share/fonts/truetype/dejavu").glob("*.ttf"))
    return sorted(set(files))


def glyph_letters(size: int = 32, per_font: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    images, labels, seen = [], [], set()
    for path in font_files():
        for k, letter in enumerate(LETTERS):
            for _ in range(per_font):
                pt = int(rng.integers(14, 27))
                try:
                    font = ImageFont.truetype(str(path), pt)
                    left, top, right, bottom = font.getbbox(letter)
                except OSError:
                    break
                w, h = right - left, bottom - top
                if w <= 1 or h <= 1 or w > size or h > size:
                    continue
                canvas = Image.new("L", (size, size), 255)
                x0 = int(rng.integers(0, size - w + 1)) - left
                y0 = int(rng.integers(0, size - h + 1)) - top
                ImageDraw.Draw(canvas).text((x0, y0), letter, font=font, fill=0)
                arr = np.asarray(canvas)
                digest = hashlib.sha1(arr.tobytes()).hexdigest()
                if arr.min() > 128 or digest in seen:
                    continue
                seen.add(digest)
                images.append(np.repeat(arr[:, :, None], 3, axis=2))
                labels.append(k)
    return np.stack(images), np.array(labels, np.int64), list(LETTERS)


if __name__ == "__main__":
    fonts = font_files()
    x, y, names = glyph_letters()
    print(f"{len(fonts)} font files; {len(y)} images {x.shape[1:]} in {len(names)} classes:")
    print("  " + ", ".join(f"{n}: {(y == i).sum()}" for i, n in enumerate(names)))
