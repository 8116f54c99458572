"""Hostile captions, metadata and keys through the real validation, the Parquet writers and
one short run of the ingest job.

Invalid UTF-8, NUL bytes, byte-order marks and very long text in captions; .json nested
100k levels deep, not UTF-8, not an object; keys with undecodable bytes and NULs. For every
input: nothing raises, a failed sample has exactly one errors row with the expected type,
the rows are writable to Parquet, and the job writes nothing outside its output folder.
"""

import json
import os
import random
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from audit.embeddings.embedder_specs import EmbedConfig
from audit.io.output_dir import OutputDir
from audit.ingest.sample_validation import IngestLimits, SampleRejected, decode_caption, decode_meta, validate_sample
from audit.io.store import query
from audit.ingest.tar_samples import RawSample
from pipelines.config import JobConfig
from pipelines.job import run_ingest
from schemas import ERRORS, SAMPLES
from tests.hostile_tars import build_tar, escaped, expected_keys, member_headers, set_field, small_jpeg

FUZZ = settings(max_examples=80, deadline=5000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LIMITS = IngestLimits(max_caption_chars=300)
IMAGE = small_jpeg(7)

CAPTION_BYTES = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.tuples(st.sampled_from([b"", b"\xef\xbb\xbf", b"  \n"]), st.text(max_size=50).map(str.encode),
              st.sampled_from([b"", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00\x00tail"]),
              st.integers(0, 400)).map(lambda t: t[0] + t[1] + t[2] + b"x" * t[3]),
)


def _expected_caption(data: bytes, limits: IngestLimits) -> str:
    """The rule from the module docstring, applied independently: the outcome's name or 'ok'."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "NonUtf8Caption"
    text = text.removeprefix("\ufeff").strip()
    if "\x00" in text:
        return "CaptionHasNul"
    if len(text) > limits.max_caption_chars:
        return "CaptionTooLong"
    return "EmptyCaption" if not text else "ok"


@pytest.mark.slow
@FUZZ
@given(data=CAPTION_BYTES)
def test_caption_bytes_give_the_documented_outcome(data):
    want = _expected_caption(data, LIMITS)
    try:
        text = decode_caption(data, LIMITS)
        got = "ok"
        assert "\x00" not in text and len(text) <= LIMITS.max_caption_chars and text == text.strip()
        text.encode("utf-8")
    except SampleRejected as e:
        got = e.error_type
        assert e.stage == "caption"
    assert got == want


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


JSON_BYTES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda d, k: _nested(d, k), st.integers(1, 200), st.sampled_from(["list", "dict"])),
    st.sampled_from([_nested(100_000, "list"), _nested(100_000, "dict"), b"1" * 5000, b'{"a": 1e999999}',
                     b'{"url": "\\ud800"}', b'{"a": "\x00"}', b'{"url": 5}', b"null", b'"text"',
                     b'{"s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}']),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                 max_leaves=20).map(lambda o: json.dumps({"v": o}).encode()),
)

KEYS = st.one_of(st.from_regex(r"\A[0-9a-z_]{1,12}\Z"),
                 st.binary(min_size=1, max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape")),
                 st.text(min_size=1, max_size=12))


@pytest.mark.slow
@FUZZ
@given(key=KEYS, caption=CAPTION_BYTES, meta=JSON_BYTES, with_image=st.booleans())
@example(key="\x00", caption=b"", meta=b'{"url":"\\ud800"}', with_image=True)  # found in CI: a lone surrogate escape
def test_any_sample_gives_one_row_one_error_and_writes_to_parquet(tmp_path_factory, key, caption, meta,
                                                                  with_image):
    raw = RawSample(escaped(key), files={"txt": caption, "json": meta, **({"jpg": IMAGE} if with_image else {})},
                    offsets={"jpg": 512})
    row, err = validate_sample(raw, "fz", "run", LIMITS)
    assert (row["status"] == "ok") == (err is None)
    if err is not None:
        assert row["error"] == f"{err['error_type']}: {err['message']}" and err["key"] == row["key"]
    elif with_image:
        assert _expected_caption(caption, LIMITS) == "ok"
        obj = json.loads(meta)  # what passed is parseable again, at any stack depth we run at
        assert isinstance(obj, dict) and row["meta_json"] == meta.decode("utf-8")
    out = OutputDir(tmp_path_factory.mktemp("pq"))
    path = out.write_shard_table(SAMPLES, "run", "fz", [row])
    out.write_shard_table(ERRORS, "run", "fz", [err] if err else [])
    assert pq.read_table(path).to_pylist()[0]["key"] == row["key"]


def test_json_nested_100k_deep_is_invalid_meta_quickly():
    for kind in ("list", "dict"):
        try:
            decode_meta(_nested(100_000, kind))
            raise AssertionError("accepted")
        except SampleRejected as e:
            assert e.error_type == "InvalidMeta" and "nested" in e.message
    assert decode_meta(b'{"a":' * 63 + b"1" + b"}" * 63)[1]  # 63 objects in the top one: depth 64
    assert decode_meta(b'{"a": "' + b"[" * 500 + b'"}')[1] == {"a": "[" * 500}  # brackets in strings


def test_long_caption_fails_and_limit_is_inclusive():
    limits = IngestLimits()
    assert decode_caption(b"x" * limits.max_caption_chars, limits) == "x" * limits.max_caption_chars
    try:
        decode_caption(b"y" * (10 << 20), limits)
        raise AssertionError("accepted")
    except SampleRejected as e:
        assert e.error_type == "CaptionTooLong"


def _fuzzed_shard(seed: int) -> list[tuple[str, str, bytes]]:
    """A shard with two samples of every hostile kind (and two good ones), shuffled by seed."""
    rng = random.Random(seed)
    kinds = ["good", "nonutf8_caption", "nul_caption", "long_caption", "deep_json", "bad_json", "traversal",
             "symlink", "device", "nonutf8_key", "no_image", "corrupt_image"]
    order = kinds * 2  # every kind twice, in a different order per seed
    rng.shuffle(order)
    members = []
    for i, kind in enumerate(order):
        k = f"{i:03d}"
        img, cap, meta = small_jpeg(i), f"caption {i}".encode(), b'{"url": "http://x/%d"}' % i
        if kind == "nonutf8_caption":
            cap = b"bad \xff\xfe" + bytes(rng.randrange(256) for _ in range(8))
        elif kind == "nul_caption":
            cap = b"a\x00b"
        elif kind == "long_caption":
            cap = b"w" * 20_000
        elif kind == "deep_json":
            meta = _nested(rng.choice([100, 100_000]), rng.choice(["list", "dict"]))
        elif kind == "bad_json":
            meta = bytes(rng.randrange(256) for _ in range(30))
        elif kind == "traversal":
            k = rng.choice(["../../" + k, "/tmp/" + k, "a/../../" + k])
        elif kind == "nonutf8_key":
            k = k + b"\xff\x00".decode("utf-8", "surrogateescape")[:1]
        elif kind == "corrupt_image":
            img = img[: len(img) // 2] + bytes(rng.randrange(256) for _ in range(50))
        if kind == "symlink":
            members.append((f"{k}.jpg", "symlink", b""))
        elif kind == "device":
            members.append((f"{k}.jpg", rng.choice(["chr", "blk", "fifo"]), b""))
        elif kind != "no_image":
            members.append((f"{k}.jpg", "file", img))
        members += [(f"{k}.txt", "file", cap), (f"{k}.json", "file", meta)]
    return members


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root: files with size and mtime, folders by existence only."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        out.update((os.path.join(dirpath, d), ()) for d in dirnames)
        for name in filenames:
            st_ = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st_.st_size, st_.st_mtime_ns)
    return out


@pytest.mark.beam
def test_ingest_job_on_fuzzed_tars_reconciles_and_writes_only_into_out(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    whole = build_tar(_fuzzed_shard(1), tarfile.PAX_FORMAT)
    (inp / "00000.tar").write_bytes(whole)
    cut = build_tar(_fuzzed_shard(2))
    cut_at = random.Random(3).randrange(len(cut) // 3, len(cut) // 2)
    (inp / "00001.tar").write_bytes(cut[:cut_at])
    bad = build_tar(_fuzzed_shard(4))
    (inp / "00002.tar").write_bytes(set_field(bad, member_headers(bad)[5].offset, "size", b"\xff" * 12))
    before = _snapshot(tmp_path.parent)
    cwd_before = _snapshot(Path.cwd() / "tests")

    run_ingest(str(inp), str(out), JobConfig(progress_seconds=0, embed=EmbedConfig(enabled=False), report=False))

    changed = {p for p, t in _snapshot(tmp_path.parent).items() if before.get(p) != t}
    outside = sorted(p for p in changed if not p.startswith(str(out) + os.sep) and p != str(out))
    assert outside == [] and _snapshot(Path.cwd() / "tests") == cwd_before
    _, shards = query(out, "SELECT shard, status, n_inputs, n_ok, n_failed FROM shards ORDER BY shard")
    assert [(s, st) for s, st, *_ in shards] == [("00000", "complete"), ("00001", "truncated"), ("00002", "truncated")]
    for shard, _, n_in, n_ok, n_failed in shards:
        _, [(rows, ok, failed_without_error, errors)] = query(out, f"""
            SELECT count(*), count(*) FILTER (status = 'ok'),
                   count(*) FILTER (status = 'failed' AND NOT EXISTS (SELECT 1 FROM errors e
                       WHERE e.shard = s.shard AND e.key = s.key AND s.error = e.error_type || ': ' || e.message)),
                   (SELECT count(*) FROM errors e WHERE e.shard = '{shard}' AND e.key IS NOT NULL)
            FROM samples s WHERE shard = '{shard}'""")
        assert n_in == rows == n_ok + n_failed and ok == n_ok and errors == n_failed and failed_without_error == 0
    _, keys = query(out, "SELECT key FROM samples WHERE shard = '00000' ORDER BY image_offset NULLS LAST")
    assert sorted(k for (k,) in keys) == sorted(expected_keys(member_headers(whole)))
    _, [(n_ok,)] = query(out, "SELECT count(*) FROM samples WHERE shard = '00000' AND status = 'ok'")
    good = sum(1 for n, kind, data in _fuzzed_shard(1) if n.endswith(".txt") and data.startswith(b"caption"))
    assert 0 < n_ok <= good
