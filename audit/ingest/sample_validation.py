"""Turn one raw webdataset sample into its samples row and, if it failed, its errors row.

Input: `RawSample` (from audit.ingest.tar_samples) and `IngestLimits`.
Output: `(sample_row, error_row | None)` as dicts matching schemas.SAMPLES / schemas.ERRORS.
Failure rows: the first problem found decides the outcome, so a failed sample has exactly
one errors row. Checks, in order, each with its stage:
  read    — reader problems (duplicate key, truncated tar, unsafe name, oversized member or sample),
            no image member (MissingImage);
  decode  — audit.ingest.image_decode rejections (corrupt, bomb, too small, ...);
  caption — MissingCaption, NonUtf8Caption, CaptionHasNul, CaptionTooLong, EmptyCaption;
  meta    — InvalidMeta (.json not an object, not UTF-8, too deeply nested).
Nothing a sample's bytes can cause escapes: any other exception (a bug in a parser, MemoryError)
becomes an errors row of the stage it happened in, error_type 'UnexpectedError', message naming
the exception; the shard and the run go on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from audit.ingest.image_decode import ImageLimits, ImageRejected, decode_image
from audit.io.retrying_reads import ReadRetry
from audit.ingest.tar_samples import RawSample

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
USED_EXTS = IMAGE_EXTS + ("txt", "json")  # the only members ingest reads; others are skipped unread


@dataclass(frozen=True)
class IngestLimits:
    image: ImageLimits = field(default_factory=ImageLimits)
    max_member_bytes: int = 64 << 20
    max_sample_bytes: int = 128 << 20  # members read for one key, together (SampleTooLarge over it)
    require_caption: bool = True
    max_caption_chars: int = 8192
    max_meta_depth: int = 64
    retry: ReadRetry = field(default_factory=ReadRetry)  # transient I/O errors on shard reads
    retry_unreadable: bool = True  # a shard whose read failed on I/O is tried again by the next run
    max_failed_fraction: float = 1.0  # the run stops (TooManyFailures) over this share of failed samples
    max_failed_samples: int = 0  # ... or over this many failed samples (0 = no count limit)

    def __post_init__(self):
        if isinstance(self.max_sample_bytes, bool) or not 1024 <= self.max_sample_bytes <= 1 << 40:
            raise ValueError(f"ingest.max_sample_bytes must be between 1024 and 2**40 (bytes), "
                             f"not {self.max_sample_bytes!r}")


class SampleRejected(Exception):
    def __init__(self, stage: str, error_type: str, message: str):
        super().__init__(message)
        self.stage, self.error_type, self.message = stage, error_type, message


def decode_caption(data: bytes | None, limits: IngestLimits) -> str | None:
    """Strict UTF-8 caption text, BOM and surrounding whitespace removed."""
    if data is None:
        if limits.require_caption:
            raise SampleRejected("caption", "MissingCaption", "the sample has no .txt caption")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SampleRejected("caption", "NonUtf8Caption",
                             f"caption is not valid UTF-8 (byte {e.start}: {data[e.start:e.start + 4]!r})") from None
    text = text.removeprefix("\ufeff").strip()
    if "\x00" in text:
        raise SampleRejected("caption", "CaptionHasNul", "caption contains NUL characters")
    if len(text) > limits.max_caption_chars:
        raise SampleRejected("caption", "CaptionTooLong",
                             f"caption has {len(text)} characters, over {limits.max_caption_chars}")
    if not text and limits.require_caption:
        raise SampleRejected("caption", "EmptyCaption", "caption is empty")
    return text


def json_depth(text: str) -> int:
    """Deepest nesting of [ and { outside strings, counted without parsing (no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def decode_meta(data: bytes | None, max_depth: int = 64) -> tuple[str | None, dict]:
    """(verbatim json text, parsed object); a missing .json is allowed. Nesting deeper than
    `max_depth` is rejected before parsing, so no later json.loads of it can recurse too far."""
    if data is None:
        return None, {}
    try:
        text = data.decode("utf-8")
        if text.count("[") + text.count("{") > max_depth:  # only then can it be too deep
            if (depth := json_depth(text)) > max_depth:
                raise SampleRejected("meta", "InvalidMeta", f".json is nested {depth} deep, over {max_depth}")
        obj = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SampleRejected("meta", "InvalidMeta", f".json is not valid UTF-8 JSON: {str(e)[:200]}") from None
    if not isinstance(obj, dict):
        raise SampleRejected("meta", "InvalidMeta", f".json is a {type(obj).__name__}, not an object")
    if "\\ud" in text.lower():  # a \uD800-\uDFFF escape: valid JSON syntax, but a lone one is no text
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise SampleRejected("meta", "InvalidMeta", ".json has a lone UTF-16 surrogate escape (\\uD800-\\uDFFF)") from None
    return text, obj


def _failed(row: dict, e: SampleRejected) -> tuple[dict, dict]:
    row.update(status="failed", error=f"{e.error_type}: {e.message}")
    error = {"run_id": row["run_id"], "stage": e.stage, "shard": row["shard"], "key": row["key"],
             "error_type": e.error_type, "message": e.message}
    return row, error


def validate_sample(raw: RawSample, shard: str, run_id: str, limits: IngestLimits) -> tuple[dict, dict | None]:
    row, error, _ = validate_and_decode(raw, shard, run_id, limits)
    return row, error


def validate_and_decode(raw: RawSample, shard: str, run_id: str, limits: IngestLimits,
                        keep_image: bool = False) -> tuple[dict, dict | None, object]:
    """validate_sample, plus (keep_image) the decoded, upright image of an ok sample (None when
    failed): the one decode the later per-shard stages prepare their inputs from."""
    row: dict = {"run_id": run_id, "shard": shard, "key": raw.key, "status": "ok", "error": None}
    stage = "read"
    try:
        if raw.problems:
            raise SampleRejected("read", *raw.problems[0])
        ext = next((e for e in IMAGE_EXTS if e in raw.files), None)
        if ext is None:
            raise SampleRejected("read", "MissingImage",
                                 f"no image member ({', '.join(IMAGE_EXTS)}); found {sorted(raw.files) or 'nothing'}")
        data = raw.files[ext]
        row.update(image_ext=ext, image_bytes=len(data), image_offset=raw.offsets.get(ext),
                   byte_hash=hashlib.sha256(data).hexdigest())
        stage = "meta"
        meta_text, meta = decode_meta(raw.files.get("json"), limits.max_meta_depth)
        row["meta_json"] = meta_text
        row["url"] = meta.get("url") if isinstance(meta.get("url"), str) else None
        stage = "caption"
        row["caption"] = decode_caption(raw.files.get("txt"), limits)
        stage = "decode"
        try:
            img = decode_image(data, limits.image, keep_image=keep_image)
        except ImageRejected as e:
            raise SampleRejected("decode", e.error_type, e.message) from None
        row.update(image_format=img.format, width=img.width, height=img.height, pixel_hash=img.pixel_hash)
        return row, None, img.image
    except SampleRejected as e:
        return (*_failed(row, e), None)
    except Exception as e:  # the per-sample boundary: one sample's bytes never end the shard
        return (*_failed(row, SampleRejected(stage, "UnexpectedError", f"{type(e).__name__}: {str(e)[:300]}")), None)
