"""Real images from the committed demo sample, for model tests: (key, jpeg bytes, caption, category)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tests.conftest import DEMO_SAMPLE
from tests.job_outputs import read_samples


def demo_images(n: int, sample: Path = DEMO_SAMPLE) -> list[tuple[str, bytes, str, str]]:
    """The first n samples with distinct image bytes and distinct captions, across shards."""
    out, seen_bytes, seen_caps = [], set(), set()
    for tar in sorted(sample.glob("*.tar")):
        for key, files in read_samples(tar).items():
            if "jpg" not in files:
                continue
            cap = files.get("txt", b"").decode()
            meta = json.loads(files.get("json", b"{}"))
            if files["jpg"] in seen_bytes or cap in seen_caps:
                continue
            seen_bytes.add(files["jpg"])
            seen_caps.add(cap)
            out.append((key, files["jpg"], cap, meta.get("category", "")))
            if len(out) == n:
                return out
    return out


def jpeg(img, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# Copies for the SSCD copy test and benchmarks/sscd_copies.py: (PIL image) -> jpeg bytes
COPY_TRANSFORMS = {
    "jpeg_q30": lambda im: jpeg(im, 30),
    "crop_80": lambda im: jpeg(im.crop((im.width // 10, im.height // 10, im.width * 9 // 10, im.height * 9 // 10))),
    "half_size": lambda im: jpeg(im.resize((im.width // 2, im.height // 2), Image.BICUBIC)),
    "flip": lambda im: jpeg(ImageOps.mirror(im)),
}


def content_inside_crop(data: bytes) -> float:
    """Share of the drawn (non-white) pixels that an 80% center crop keeps."""
    a = np.asarray(Image.open(io.BytesIO(data)).convert("L")) < 245
    h, w = a.shape
    return a[h // 10: h * 9 // 10, w // 10: w * 9 // 10].sum() / max(a.sum(), 1)
