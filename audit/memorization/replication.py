"""Replication audit of generated images (Somepalli et al., CVPR 2023, "Diffusion Art or Digital
Forgery?"): does a model's output copy its training data?

Input: generated images (a folder of image files, each with an optional same-name .txt
prompt, or webdataset shards/tars with key.jpg|png + key.txt) and the training set's audit
output (OUT), whose SSCD vectors are the index. Output: per generated image the top-1 SSCD
cosine to the training set; statistics (replication rate = share with top-1 > threshold,
mean, 95th percentile) for the generated set and, as the baseline, for training images
against the rest of the training set (train-vs-train). Failure rows: an image that does not
decode is a row with `error` set and no similarity; it counts in no statistic. Images are
decoded under ingest's guards (audit.ingest.image_decode via the SSCD embedder: bomb, format, geometry
and decode-memory checks from the header), and a file over `ImageLimits.max_bytes` is not read
at all: both are rows with `error` set, never a crash or a huge allocation.
Shared with attribution (audit.memorization.attribution): `read_generated`, `image_index` (the
audit's stored image vectors of one model family, SSCD or CLIP) and `embed_chunks`.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from audit.dedup.corpus import model_dirs, shard_vectors
from audit.ingest.image_decode import ImageLimits
from audit.io.output_dir import OutputDir
from audit.ingest.tar_samples import TarSamples
from audit.dedup.vector_index import top1

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


@dataclass
class Generated:
    name: str
    data: bytes | None
    prompt: str | None
    error: str | None = None


def read_image_file(path: Path, limits: ImageLimits = ImageLimits()) -> tuple[bytes | None, str | None]:
    """(bytes, None), or (None, why) for a file over the byte limit (not read) or unreadable."""
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            return None, f"ImageTooLarge: {size} bytes, over the limit of {limits.max_bytes}"
        return path.read_bytes(), None
    except OSError as e:
        return None, f"UnreadableFile: {type(e).__name__}: {e}"


def _from_tar(path: str) -> list[Generated]:
    out = []
    with open(path, "rb") as f:
        for s in TarSamples(f, max_member_bytes=ImageLimits().max_bytes, extensions=IMAGE_EXTS + ("txt",),
                            max_sample_bytes=2 * ImageLimits().max_bytes):
            ext = next((e for e in IMAGE_EXTS if e in s.files), None)
            prompt = s.files.get("txt", b"").decode("utf-8", "replace").strip() or None
            name = f"{Path(path).stem}/{s.key}"
            error = (": ".join(s.problems[0]) if s.problems else None if ext else "no image member in the sample")
            out.append(Generated(name, s.files.get(ext) if ext and not error else None, prompt, error))
    return out


def read_generated(source: str) -> list[Generated]:
    """Images from a folder, a tar, or a glob of tars; sorted by name."""
    if os.path.isdir(source):
        items = []
        for p in sorted(Path(source).rglob("*")):
            if p.suffix.lower().lstrip(".") in IMAGE_EXTS and p.is_file():
                txt = p.with_suffix(".txt")
                prompt = txt.read_text("utf-8", "replace").strip() if txt.exists() else None
                data, error = read_image_file(p)
                items.append(Generated(str(p.relative_to(source)), data, prompt, error))
        tars = sorted(Path(source).glob("*.tar"))
        for t in tars:
            items.extend(_from_tar(str(t)))
    else:
        paths = sorted(glob.glob(source)) or ([source] if os.path.isfile(source) else [])
        items = [g for p in paths if p.endswith(".tar") for g in _from_tar(p)]
    if not items:
        raise FileNotFoundError(f"no generated images found in {source!r} (a folder of images, a .tar, or a glob of tars)")
    return items


@dataclass
class TrainIndex:
    model_id: str
    shards: list[str]
    keys: list[str]
    vectors: np.ndarray


def image_models(out: OutputDir) -> dict[str, object]:
    """Image embedding models whose vectors OUT holds: model id -> its embeddings folder."""
    found = {}
    for d in model_dirs(out):
        files = sorted(d.glob("run=*/*.parquet"))
        if files:
            t = pq.read_table(files[0], columns=["model", "modality"]).slice(0, 1).to_pylist()
            if t and t[0]["modality"] == "image":
                found[t[0]["model"]] = d
    return found


def image_index(out: OutputDir, family: str = "sscd") -> TrainIndex:
    """The training set's stored image vectors (every shard) of the first model whose id starts
    with `family` ('sscd', 'clip'). Failure: FileNotFoundError naming the image models OUT has."""
    models = image_models(out)
    ids = sorted(m for m in models if m.startswith(family))
    if not ids:
        has = ", ".join(sorted(models)) or "none"
        raise FileNotFoundError(f"{out.root} has no {family.upper()} image embeddings (it has: {has}): "
                                f"run `shardguard run` with {family.upper()} on first")
    d = models[ids[0]]
    shards = sorted({p.stem for p in d.glob("run=*/*.parquet")})
    model, sh, keys, vecs = "", [], [], []
    for shard in shards:
        m, _, k, v = shard_vectors(out, d, shard)
        model = model or m
        sh += [shard] * len(k)
        keys += k
        vecs.append(v)
    return TrainIndex(model, sh, keys, np.concatenate(vecs) if vecs else np.zeros((0, 512), np.float32))


def sscd_index(out: OutputDir) -> TrainIndex:
    """The training set's SSCD vectors (every shard of the first SSCD model in OUT)."""
    return image_index(out, "sscd")


def sscd_embedder(model_id: str, torchscript: str | None = None):
    """An embedder that computes the same SSCD descriptors as the training run did."""
    from audit.embeddings.sscd_models import SscdOnnx, SscdTorchScript  # torch, onnxruntime
    parts = model_id.split(":")
    if parts[:1] == ["sscd"] and len(parts) == 4 and parts[2] == "onnx":
        return SscdOnnx(parts[1], int(parts[3]))
    if parts[:2] == ["sscd", "torchscript"]:
        if not torchscript:
            raise ValueError(f"training vectors came from {model_id}: pass the same TorchScript file (--sscd-torchscript)")
        return SscdTorchScript(torchscript, size=int(parts[-1]))
    raise ValueError(f"not an SSCD model id: {model_id!r}")


def stats(sims: np.ndarray, threshold: float) -> dict:
    sims = np.asarray(sims, float)
    if len(sims) == 0:
        return {"n": 0, "replication_rate": None, "mean_similarity": None, "p95_similarity": None}
    return {"n": int(len(sims)), "replication_rate": float((sims > threshold).mean()),
            "mean_similarity": float(sims.mean()), "p95_similarity": float(np.percentile(sims, 95))}


def train_vs_train(index: TrainIndex, n: int, seed: int = 0) -> np.ndarray:
    """Top-1 cosine of up to n random training images to the rest of the training set."""
    if len(index.keys) < 2:
        return np.zeros(0)
    pick = np.sort(np.random.default_rng(seed).choice(len(index.keys), min(n, len(index.keys)), replace=False))
    _, sims = top1(index.vectors[pick], index.vectors, exclude=pick)
    return sims


def embed_chunks(items: list[Generated], embedder, batch: int = 64):
    """Yield (chunk, vectors, errors) per `batch` items: vectors maps a position in the chunk to
    its float32 vector, errors a position to why the embedder rejected it (items that were
    never read, `data is None`, are in neither: their own `error` says why)."""
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        ok = [i for i, g in enumerate(chunk) if g.data is not None]
        emb = embedder.embed([chunk[i].data for i in ok]) if ok else None
        vec_of, err_of = {}, {}
        if emb is not None:
            for pos, j in enumerate(emb.index):
                vec_of[ok[j]] = emb.vectors[pos]
            for j, et, msg in emb.errors:
                err_of[ok[j]] = f"{et}: {msg}"
        yield chunk, vec_of, err_of


def match_generated(items: list[Generated], index: TrainIndex, embedder, threshold: float,
                    batch: int = 64) -> list[dict]:
    """One row per generated image (see schemas.memorization.REPLICATION, without run_id)."""
    rows = []
    for chunk, vec_of, err_of in embed_chunks(items, embedder, batch):
        have = sorted(vec_of)
        found = top1(np.stack([vec_of[i] for i in have]), index.vectors) if have else ([], [])
        best = {i: (int(b), float(s)) for i, b, s in zip(have, *found)}
        for i, g in enumerate(chunk):
            row = {"generated": g.name, "prompt": g.prompt, "model": index.model_id,
                   "error": g.error or err_of.get(i)}
            if i in best:
                b, s = best[i]
                row.update(top1_shard=index.shards[b], top1_key=index.keys[b], top1_similarity=s,
                           replicated=s > threshold)
            rows.append(row)
    return rows
