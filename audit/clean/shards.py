"""Training-ready shards in img2dataset's format, with the audit's decisions applied.

Input: the kept samples (from the decisions and samples tables, in (shard, key) order), the
source shard URIs, an opener (read through audit.ingest.sample_store.StoredImages by location, one
open handle per source tar), and a caption function `(shard, key, caption, meta) -> [(new, strategy,
changed) per epoch]`.
Output, per output shard NNNNN (atomic: temp files, then rename; the completion marker last):
  NNNNN.tar          key.jpg (the source image bytes, copied byte for byte by offset; or,
                     with a sanitizer, the sanitized image: key.jpg for JPEG-q, else key.png),
                     key.txt (the caption to train on), key.json (the source json plus
                     original_caption, caption_strategy, caption_changed, source_shard,
                     source_key, shardguard_run)
  NNNNN.parquet      img2dataset's columns (key, url, caption, status, error_message, width,
                     height, ...) plus original_caption and source_shard/source_key
  NNNNN_stats.json   img2dataset's stats fields (count, successes, failed_*) plus ShardGuard's
                     (the clean run id lives here only, so the tar and parquet are byte-identical
                     across runs with the same decisions, settings and seed)
Keys are renumbered img2dataset-style (shard index, then index in shard) so they are unique
whatever the sources were; the source key stays in the json and parquet.
`plan_shards` splits the kept list deterministically, so a rerun maps every sample to the
same output shard and completed shards can be skipped.
Failure: a source image whose bytes changed since the audit (short read, or a sha256 other
than the audited byte_hash) is not written: its parquet row has status 'failed_to_download'
and an error_message, the stats count it in failed_to_download, and
stats['shardguard']['failed'] lists it (shard, key, error_type 'SourceChanged', message) for
the caller's errors rows. A source that cannot be opened or read (I/O) raises, naming the
sample, so the shard is redone by the next run: cleaning never silently loses a kept sample.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from audit.io import atomic_files
from audit.captions.strategies import CaptionPolicy
from audit.ingest.sample_store import StoredImages

# (shard, key, caption, meta) -> one (new caption, strategy, changed) per epoch; epoch 0 goes in .txt
CaptionFn = Callable[[str, str, str, dict], list[tuple[str, str, bool]]]


@dataclass(frozen=True)
class CleanConfig:
    shard_size: int = 10_000  # samples per output shard
    apply_to: str = "flagged"  # captions changed for: 'all', 'flagged' (images repeated with one caption), 'none'
    epochs: int = 1  # caption variants per sample: epoch 0 in .txt, the others in the json
    caption: CaptionPolicy = field(default_factory=CaptionPolicy)
    sanitize: str = "auto"  # images: 'auto' = the perturbation audit's chosen sanitizer when it found poisons, 'none', or a sanitizer name
    to: str = ""  # destination folder; set, `shardguard run` appends the new kept samples there after the audit


@dataclass(frozen=True)
class SampleRef:
    shard: str
    key: str
    uri: str
    image_ext: str
    image_offset: int
    image_bytes: int
    caption: str
    meta_json: str | None
    width: int
    height: int
    byte_hash: str | None = None  # sha256 hex of the image bytes at ingest (samples.byte_hash)


def source_change(s: SampleRef, image: bytes) -> str | None:
    """Why `image` is not the sample the audit saw, or None when it is."""
    if len(image) != s.image_bytes:
        return f"the source tar {s.uri} ended early ({len(image)} of {s.image_bytes} bytes): it changed since the audit"
    if s.byte_hash is not None and hashlib.sha256(image).hexdigest() != s.byte_hash:
        return (f"the image bytes in {s.uri} at offset {s.image_offset} no longer match the audited sha256 "
                f"{s.byte_hash[:16]}...: the source changed since the audit")
    return None


def plan_shards(samples: list[SampleRef], shard_size: int) -> list[tuple[str, list[SampleRef]]]:
    """[(output shard id 'NNNNN', its samples)], deterministic for a given sample list."""
    width = max(5, len(str(max(0, (len(samples) - 1) // max(shard_size, 1)))))
    return [(f"{i // shard_size:0{width}d}", samples[i:i + shard_size]) for i in range(0, len(samples), shard_size)]


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tf.addfile(info, io.BytesIO(data))


# (image bytes, the sample's metadata) -> (new bytes, new extension): a sanitizer applied to the
# pixels; (the same bytes, None) when it leaves this image as it is
ImageFn = Callable[[bytes, dict], tuple[bytes, str | None]]


def write_clean_shard(dest: Path, out_shard: str, samples: list[SampleRef], opener: Callable,
                      caption_fn: CaptionFn, run_id: str, image_fn: ImageFn | None = None,
                      image_note: str = "") -> tuple[dict, list[dict]]:
    """Write one output shard; returns (its stats, the caption-variant rows). `image_fn`
    replaces each image (a sanitizer), `image_note` names it in each sample's json."""
    t0 = time.perf_counter()
    key_digits = max(4, len(str(len(samples) - 1)))
    rows, variants, failed = [], [], []
    with StoredImages(None, opener) as sources:  # one open handle per source tar
        with atomic_files.writing(dest / f"{out_shard}.tar") as raw, \
                tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
            for i, s in enumerate(samples):
                image = sources.read(s.uri, s.image_offset, s.image_bytes)
                key = f"{out_shard}{i:0{key_digits}d}"
                changed_source = source_change(s, image)
                if changed_source:  # not the audited bytes: never written, one failed row
                    failed.append({"shard": s.shard, "key": s.key, "error_type": "SourceChanged",
                                   "message": changed_source})
                    rows.append({"key": key, "url": None, "caption": None, "status": "failed_to_download",
                                 "error_message": changed_source, "width": None, "height": None,
                                 "original_width": None, "original_height": None, "original_caption": s.caption,
                                 "caption_strategy": None, "source_shard": s.shard, "source_key": s.key})
                    continue
                meta = json.loads(s.meta_json) if s.meta_json else {}
                epochs = caption_fn(s.shard, s.key, s.caption, meta)
                new, strategy, changed = epochs[0]
                meta.update(key=key, caption=new, original_caption=s.caption, caption_strategy=strategy,
                            caption_changed=changed, source_shard=s.shard, source_key=s.key)
                if len(epochs) > 1:
                    meta["caption_epochs"] = [e[0] for e in epochs[1:]]
                ext = s.image_ext
                if image_fn is not None:
                    image, new_ext = image_fn(image, meta)
                    if new_ext is not None:
                        ext = new_ext
                        meta["sanitizer"] = image_note
                _add(tf, f"{key}.{ext}", image)
                _add(tf, f"{key}.txt", new.encode("utf-8"))
                _add(tf, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
                rows.append({"key": key, "url": meta.get("url"), "caption": new, "status": "success",
                             "error_message": None, "width": s.width, "height": s.height,
                             "original_width": meta.get("original_width"), "original_height": meta.get("original_height"),
                             "original_caption": s.caption, "caption_strategy": strategy,
                             "source_shard": s.shard, "source_key": s.key})
                variants.extend({"run_id": run_id, "shard": s.shard, "key": s.key, "clean_key": key, "epoch": ep,
                                 "strategy": st, "original": s.caption, "new": nc}
                                for ep, (nc, st, ch) in enumerate(epochs) if ch)
    table = pa.Table.from_pylist(rows) if rows else pa.table({"key": pa.array([], pa.string())})
    pq_buf = io.BytesIO()
    pq.write_table(table, pq_buf)
    ok = len(samples) - len(failed)
    stats = {"count": len(samples), "successes": ok, "failed_to_download": len(failed), "failed_to_resize": 0,
             "duration": time.perf_counter() - t0,
             "status_dict": {"success": ok} | ({"failed_to_download": len(failed)} if failed else {}),
             "shardguard": {"run_id": run_id, "captions_changed": len(variants), "failed": failed}}
    atomic_files.write_bytes(dest / f"{out_shard}.parquet", pq_buf.getvalue())
    atomic_files.write_json(dest / f"{out_shard}_stats.json", stats)
    return stats, variants
