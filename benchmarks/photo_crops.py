"""A labelled set of real photographs for the perturbation benchmark: small crops of the photos of
benchmarks/photo_set.py, labelled by the Debian package they come from.

    .venv/bin/python benchmarks/photo_crops.py      # prints the classes and counts

Data: every photo of photo_set.PHOTOS (role "src" and the hard negatives alike; fetched with
apt-get download and cached like the copy benchmark; licences in the README), loaded at most
768 px, resized once so that its longer side is `side` (256: a web thumbnail; area resampling),
then `per_photo` crops of `size` x `size` pixels at seeded random positions (no resampling
after the one resize). Class = the package (opencv-doc, scikit-image's photos, the wallpaper
packages...); packages with fewer than `min_count` crops are left out. Crops of one photo share
its content, as images of one series or one site do in a scraped set.

Output: (x uint8 (N, size, size, 3), y int64 (N,), class names). Used by
`benchmarks/perturbations.py --screening` as a clean set of a different kind (real photos). It
was meant to be held out; its first run flagged 2 of 10 clean runs (the spectrum test: the
packages differ in camera noise and compression), and the acquisition features joined the
baselines after that.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.photo_set import PHOTOS, fetch_packages, load_photo  # noqa: E402


def photo_crops(size: int = 32, side: int = 256, per_photo: int = 24, min_count: int = 100,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    roots = fetch_packages()
    rng = np.random.default_rng(seed)
    by_package: dict[str, list[np.ndarray]] = {}
    for pkg, (_, files) in PHOTOS.items():
        for rel in sorted(files):
            path = roots[pkg] / rel
            if not path.exists():
                continue
            im = load_photo(path)
            scale = side / max(im.size)
            im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))), Image.BOX)
            arr = np.asarray(im)
            for _ in range(per_photo):
                r = int(rng.integers(0, arr.shape[0] - size + 1))
                c = int(rng.integers(0, arr.shape[1] - size + 1))
                by_package.setdefault(pkg, []).append(arr[r:r + size, c:c + size])
    names = sorted(p for p, crops in by_package.items() if len(crops) >= min_count)
    x = np.stack([c for p in names for c in by_package[p]])
    y = np.array([i for i, p in enumerate(names) for _ in by_package[p]], np.int64)
    return x, y, names


if __name__ == "__main__":
    x, y, names = photo_crops()
    print(f"{len(y)} crops {x.shape[1:]} in {len(names)} classes:")
    for i, n in enumerate(names):
        print(f"  {n}: {(y == i).sum()}")
