"""Generated img2dataset shards for benchmarks/load.py (and benchmarks/dedup_timing.py).

Input: the committed demo sample (infra/demo/sample/*.tar: real img2dataset output, 1000
samples, broken ones included), read with the real reader (audit.ingest.tar_samples).
Output (`generate`): N samples in N / per_shard shards in img2dataset's format (NNNNN.tar with
key.jpg/.txt/.json, NNNNN.parquet, NNNNN_stats.json), each drawn (seeded) from the demo samples as
either an exact byte copy (copy_share of them; broken demo samples are always copied, so the
errors tables get real failures) or a variant: a random crop (80-100% per side), a resize
(60-100%), a re-encode at a random JPEG quality (40-95), and for half of them a caption suffix;
broken_share of the images are cut in half. `write_large_shard`: one shard of large images (half
8000x8000 palette PNGs with transparency, half 7000x7000 JPEGs, every other one with EXIF
orientation 6). Generation runs on every core. Returns the sample count per shard.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import random
import sys
import tarfile
import time
from pathlib import Path

SUFFIXES = [", high quality", ", stock image", " (copy)", ", 4k wallpaper", ", trending", ", vector art"]


def demo_samples(sample_dir: Path) -> list[dict]:
    """Every sample of the demo tars as {key, jpg, txt, json} (members may be missing)."""
    from audit.ingest.tar_samples import TarSamples
    out = []
    for tar in sorted(sample_dir.glob("*.tar")):
        with open(tar, "rb") as f:
            for s in TarSamples(f):
                out.append({"key": s.key, **{e: s.files.get(e) for e in ("jpg", "txt", "json")}})
    if not out:
        sys.exit(f"no demo samples in {sample_dir}")
    return out


def variant(src: dict, rng: random.Random) -> tuple[bytes, int, int]:
    """(jpeg bytes, width, height) of a cropped, resized, re-encoded copy."""
    from PIL import Image
    img = Image.open(io.BytesIO(src["jpg"])).convert("RGB")
    w, h = img.size
    cw, ch = max(16, int(w * rng.uniform(0.8, 1.0))), max(16, int(h * rng.uniform(0.8, 1.0)))
    x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
    img = img.crop((x, y, x + cw, y + ch))
    s = rng.uniform(0.6, 1.0)
    img = img.resize((max(16, int(cw * s)), max(16, int(ch * s))), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(40, 95))
    return buf.getvalue(), img.width, img.height


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tf.addfile(info, io.BytesIO(data))


_SOURCES: list[dict] = []


def write_shard(args: tuple[Path, int, int, int, float, float]) -> int:
    """Write shard `index` (img2dataset layout) with `n` samples; returns n."""
    dest, index, n, seed, copy_share, broken_share = args
    rng = random.Random(seed * 1_000_003 + index)
    t0, samples, name = time.time(), [], f"{index:05d}"
    for i in range(n):
        src = rng.choice(_SOURCES)
        key = f"{name}{i:04d}"
        meta = json.loads(src["json"]) if src["json"] else {}
        caption = (src["txt"] or b"").decode("utf-8", "replace")
        image, width, height = src["jpg"], meta.get("width"), meta.get("height")
        if image is not None and rng.random() >= copy_share:
            try:
                image, width, height = variant(src, rng)
                if rng.random() < 0.5:
                    caption += rng.choice(SUFFIXES)
            except Exception:  # a broken demo image stays a byte copy (a failed sample)
                pass
        if image is not None and rng.random() < broken_share:
            image = image[: len(image) // 2]  # cut short in transfer: a CorruptImage row
        meta.update(key=key, caption=caption, width=width, height=height, source_key=src["key"])
        samples.append({"key": key, "jpg": image, "txt": caption if src["txt"] is not None else None, "meta": meta})
    return write_samples(dest, name, samples, t0)


def write_samples(dest: Path, name: str, samples: list[dict], t0: float | None = None) -> int:
    """One img2dataset-format shard: dest/<name>.tar (per sample <key>.jpg when `jpg` is not
    None, <key>.txt when `txt` is not None, <key>.json from `meta`), <name>.parquet (one
    'success' row per sample, url/width/height/original_* from `meta`) and <name>_stats.json.
    samples: [{key, jpg: bytes | None, txt: str | None, meta: dict}]; t0: when writing began
    (the stats' start_time; default now). Returns the number of samples."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    t0 = time.time() if t0 is None else t0
    rows = []
    with tarfile.open(dest / f"{name}.tar", "w", format=tarfile.GNU_FORMAT) as tf:
        for s in samples:
            key, meta = s["key"], s["meta"]
            if s["jpg"] is not None:
                _add(tf, f"{key}.jpg", s["jpg"])
            if s["txt"] is not None:
                _add(tf, f"{key}.txt", s["txt"].encode("utf-8"))
            _add(tf, f"{key}.json", json.dumps(meta).encode("utf-8"))
            rows.append({"key": key, "url": meta.get("url"), "caption": meta.get("caption"), "status": "success",
                         "error_message": None, "width": meta.get("width"), "height": meta.get("height"),
                         "original_width": meta.get("original_width"), "original_height": meta.get("original_height")})
    n = len(samples)
    pq.write_table(pa.Table.from_pylist(rows), dest / f"{name}.parquet")
    (dest / f"{name}_stats.json").write_text(json.dumps({
        "count": n, "successes": n, "failed_to_download": 0, "failed_to_resize": 0,
        "duration": time.time() - t0, "start_time": t0, "end_time": time.time(), "status_dict": {"success": n}}))
    return n


def write_large_shard(dest: Path, index: int, n: int) -> int:
    """Shard `index` with n large images (see the module docstring), img2dataset layout; returns n."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from tests.image_mutations import large_palette_png, orientation_exif
    name, rows = f"{index:05d}", []
    with tarfile.open(dest / f"{name}.tar", "w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(n):
            key = f"{name}{i:04d}"
            if i % 2 == 0:
                ext, image, side = "png", large_palette_png(8000), 8000
            else:
                src = _SOURCES[(i * 7) % len(_SOURCES)]
                img = Image.open(io.BytesIO(src["jpg"])).convert("RGB").resize((7000, 7000), Image.BILINEAR)
                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=85, **({"exif": orientation_exif(6)} if i % 4 == 1 else {}))
                ext, image, side = "jpg", buf.getvalue(), 7000
            caption = f"a large image {i}"
            meta = {"key": key, "caption": caption, "width": side, "height": side}
            _add(tf, f"{key}.{ext}", image)
            _add(tf, f"{key}.txt", caption.encode("utf-8"))
            _add(tf, f"{key}.json", json.dumps(meta).encode("utf-8"))
            rows.append({"key": key, "url": None, "caption": caption, "status": "success", "error_message": None,
                         "width": side, "height": side, "original_width": side, "original_height": side})
    pq.write_table(pa.Table.from_pylist(rows), dest / f"{name}.parquet")
    (dest / f"{name}_stats.json").write_text(json.dumps({"count": n, "successes": n, "status_dict": {"success": n}}))
    return n


def generate(dest: Path, n_samples: int, per_shard: int, seed: int, copy_share: float,
             broken_share: float, sample_dir: Path) -> list[int]:
    """Write the shards; returns the number of samples written per shard, in shard order."""
    global _SOURCES
    _SOURCES = demo_samples(sample_dir)
    dest.mkdir(parents=True, exist_ok=True)
    sizes = [per_shard] * (n_samples // per_shard) + ([n_samples % per_shard] if n_samples % per_shard else [])
    jobs = [(dest, i, n, seed, copy_share, broken_share) for i, n in enumerate(sizes)]
    with mp.get_context("fork").Pool(mp.cpu_count()) as pool:
        return pool.map(write_shard, jobs, chunksize=1)
