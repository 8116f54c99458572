"""The clip-art copy-detection benchmark set (benchmarks/dedup_quality.py's second table).

Data: `n_sources` real images drawn (seeded) from the committed demo sample's distinct images
(infra/demo/sample, openclipart via img2dataset, <= 256 px, white backgrounds; its all-white
images are left out of the pool: they carry nothing to copy and all look alike). Each source
gets one copy per transform: center crops keeping 50/70/80/90% of each side, resize x0.5 and
x1.5, JPEG q20/50/90, colour jitter (brightness, contrast, saturation each x U[0.8, 1.2]),
horizontal flip, rotation by +-5 and +-10 degrees (sign random, expand=False, white fill), a
caption-like text overlay (another source's caption, PIL default font at 1/9 of the height,
across the middle), Gaussian blur r=2, grayscale, and "mixed" (crop 80% then JPEG q50).
Copies other than the JPEG ones are stored as lossless PNG so only the named transform acts.
Clipart is often a small drawing on a big white canvas, or fills it: a crop (also the crop in
"mixed") that would remove more than 10% of the drawn pixels (grayscale < 245) is skipped and
counted, so crop rows hold only drawings that sit well inside the canvas.
Ground truth: two images are a true pair when they come from the same source, or when their
decoded pixels are identical (`decode_image(b).pixel_hash`; such sources' groups are merged).
The clip-art set was used while choosing the copy rule (it is no held-out evidence).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from audit.ingest.image_decode import ImageRejected, decode_image, to_rgb
from benchmarks.photo_set import CopySet
from tests.demo_images import demo_images

CROPS = {"crop50": 0.5, "crop70": 0.7, "crop80": 0.8, "crop90": 0.9}
TRANSFORMS = ["crop50", "crop70", "crop80", "crop90", "resize0.5", "resize1.5", "jpeg20", "jpeg50", "jpeg90",
              "jitter", "hflip", "rot5", "rot10", "text", "blur2", "gray", "mixed"]
MILD = ["jpeg50", "jpeg90", "resize0.5", "resize1.5", "crop80", "crop90", "hflip"]
WHITE = (255, 255, 255)


def encode(img: Image.Image, fmt: str = "PNG", quality: int = 95) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def crop_box(img: Image.Image, frac: float) -> tuple[int, int, int, int]:
    w, h = img.size
    cw, ch = max(1, round(w * frac)), max(1, round(h * frac))
    x, y = (w - cw) // 2, (h - ch) // 2
    return x, y, x + cw, y + ch


def crop_keeps_content(img: Image.Image, frac: float, keep: float = 0.9) -> bool:
    """True when the center crop keeps >= `keep` of the drawn (grayscale < 245) pixels."""
    drawn = np.asarray(img.convert("L")) < 245
    total = drawn.sum()
    if total == 0:
        return True
    x0, y0, x1, y1 = crop_box(img, frac)
    return drawn[y0:y1, x0:x1].sum() >= keep * total


def text_overlay(img: Image.Image, text: str) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(10, img.height // 9))
    while len(text) > 4 and draw.textlength(text, font=font) > 0.95 * img.width:
        text = text[:-1]
    draw.text((img.width * 0.025, img.height * 0.45), text, fill=(220, 20, 20), font=font,
              stroke_width=1, stroke_fill=(0, 0, 0))
    return out


def transform(name: str, img: Image.Image, rng: np.random.Generator, caption: str) -> bytes | None:
    """Encoded copy of `img` under transform `name`; None when a crop would cut the drawing."""
    if name in CROPS or name == "mixed":
        frac = CROPS.get(name, 0.8)
        if not crop_keeps_content(img, frac):
            return None
        cropped = img.crop(crop_box(img, frac))
        return encode(cropped, "JPEG", 50) if name == "mixed" else encode(cropped)
    if name.startswith("resize"):
        s = float(name[6:])
        return encode(img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BICUBIC))
    if name.startswith("jpeg"):
        return encode(img, "JPEG", int(name[4:]))
    if name == "jitter":
        for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enh(img).enhance(rng.uniform(0.8, 1.2))
        return encode(img)
    if name == "hflip":
        return encode(ImageOps.mirror(img))
    if name.startswith("rot"):
        angle = float(name[3:]) * rng.choice([-1, 1])
        return encode(img.rotate(angle, resample=Image.BICUBIC, expand=False, fillcolor=WHITE))
    if name == "text":
        return encode(text_overlay(img, caption))
    if name == "blur2":
        return encode(img.filter(ImageFilter.GaussianBlur(2)))
    if name == "gray":
        return encode(img.convert("L"))
    raise ValueError(name)


def clipart_set(n_sources: int = 200, seed: int = 0) -> tuple[CopySet, dict[str, int], int, int]:
    """(the set, skipped crops per transform, merged source groups, all-white images left out)."""
    pool = demo_images(100_000)
    drawn = [(np.asarray(to_rgb(Image.open(io.BytesIO(b))).convert("L")) < 245).any() for _, b, _, _ in pool]
    blank = len(pool) - sum(drawn)  # all-white images: nothing to copy, all alike
    pool = [p for p, d in zip(pool, drawn) if d]
    rng = np.random.default_rng(seed)
    picked = [pool[k] for k in sorted(rng.choice(len(pool), min(n_sources, len(pool)), replace=False))]
    captions = [c for _, _, c, _ in pool]
    datas, group, family = [], [], []
    for s, (_, data, _, _) in enumerate(picked):
        datas.append(data), group.append(s), family.append(-1)
    skipped: dict[str, int] = {}
    for s, (_, data, _, _) in enumerate(picked):
        img = to_rgb(Image.open(io.BytesIO(data)))
        for t, name in enumerate(TRANSFORMS):
            copy = transform(name, img, rng, captions[rng.integers(len(captions))])
            if copy is None:
                skipped[name] = skipped.get(name, 0) + 1
                continue
            datas.append(copy), group.append(s), family.append(t)
    # Pixel-identical images are the same picture: merge their groups (union-find).
    parent = list(range(len(picked)))

    def root(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g
    first: dict[str, int] = {}
    for k, data in enumerate(datas):
        try:
            h = decode_image(data, keep_rgb=False).pixel_hash
        except ImageRejected:
            continue
        if h in first:
            parent[root(group[k])] = root(group[first[h]])
        else:
            first[h] = k
    merged = sum(1 for g in range(len(picked)) if root(g) != g)
    group = np.array([root(g) for g in group], np.int64)
    names = [f"clipart:{k}" if f < 0 else f"clipart:{k}:{TRANSFORMS[f]}" for k, f in zip(group, family)]
    cs = CopySet("clipart", datas, group, np.array(family, np.int64), names, len(picked), 0)
    return cs, skipped, merged, blank
