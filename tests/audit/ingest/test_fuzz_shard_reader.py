"""Hostile tars through the real reader and validation (audit.ingest.tar_samples, audit.ingest.shard_ingest).

Malformed headers (random bytes in any field, bad checksums), truncation at any offset,
path-traversal names, links and devices, members that declare huge sizes. For every input:
nothing raises, every failed sample has its one errors row, the counts reconcile, and where
the tar is well formed up to a point the samples are exactly the tar's members up to it.
"""

import contextlib
import io
import signal
import tarfile
import tracemalloc

from hypothesis import HealthCheck, assume, given, settings, strategies as st

from audit.ingest.shard_ingest import ingest_shard
from audit.ingest.tar_samples import TarSamples
from tests.hostile_tars import (FIELDS, build_tar, end_of_members, escaped, expected_keys,
                                member_headers, set_field, small_jpeg)

FUZZ = settings(max_examples=60, deadline=5000, database=None, suppress_health_check=[HealthCheck.too_slow])


def _good_members(n: int) -> list[tuple[str, str, bytes]]:
    out = []
    for i in range(n):
        out += [(f"{i:05d}.jpg", "file", small_jpeg(i)), (f"{i:05d}.txt", "file", f"caption {i}".encode()),
                (f"{i:05d}.json", "file", b'{"url": "http://x/%d"}' % i)]
    return out


GOOD = {fmt: build_tar(_good_members(4), fmt) for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                                          tarfile.PAX_FORMAT)}


class _StillReading(BaseException):
    """Not an Exception, so the reader's own error handling cannot swallow it."""


@contextlib.contextmanager
def _time_limit(seconds: int):
    def expired(*_):
        raise _StillReading(f"still reading after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _ingest(data: bytes, tmp_path, max_member_bytes: int | None = None):
    """The real per-shard ingest on a file (as the job opens it); checks the invariants."""
    from audit.ingest.sample_validation import IngestLimits
    path = tmp_path / "fuzz.tar"
    path.write_bytes(data)
    limits = IngestLimits(max_member_bytes=max_member_bytes) if max_member_bytes else IngestLimits()
    with _time_limit(10):  # the reader must not loop on a corrupt header
        res = ingest_shard("fuzz", str(path), "run", limits=limits)  # check() inside: counts reconcile
    assert res.shard["status"] in ("complete", "truncated", "unreadable")
    for row in res.samples:
        row["key"].encode("utf-8")  # writable to Parquet
        assert (row["status"] == "failed") == (row["error"] is not None)
    per_key = [e["key"] for e in res.errors if e["key"] is not None]
    assert sorted(per_key) == sorted(r["key"] for r in res.samples if r["status"] == "failed")
    shard_rows = [e for e in res.errors if e["key"] is None]
    assert len(shard_rows) == (res.shard["status"] != "complete")
    assert len(res.samples) <= len(data) // 512  # a sample needs at least one header block
    return res


@settings(FUZZ, max_examples=300)
@given(fmt=st.sampled_from(sorted(GOOD)), which=st.integers(0, 11), field=st.sampled_from(sorted(FIELDS)),
       raw=st.one_of(st.binary(min_size=1, max_size=160),
                     st.sampled_from([b"\xff" * 12, b"\x80" + (1 << 80).to_bytes(11, "big"),
                                      b"\xff" + ((-1024) % (1 << 88)).to_bytes(11, "big"),
                                      b"77777777777", b"-1", b"\0"])),
       fix=st.booleans())
def test_random_header_bytes_never_escape_and_reconcile(tmp_path_factory, fmt, which, field, raw, fix):
    data = GOOD[fmt]
    headers = member_headers(data)
    at = headers[which % len(headers)].offset
    _ingest(set_field(data, at, field, raw, fix), tmp_path_factory.mktemp("h"))


@FUZZ
@given(which=st.integers(0, 11), bad=st.integers(1, 0o7777777))
def test_bad_checksum_ends_the_shard_after_the_members_before_it(tmp_path_factory, which, bad):
    data = GOOD[tarfile.USTAR_FORMAT]  # pax/GNU: a member's first block is its extended header
    headers = member_headers(data)
    m = headers[which]
    real = int(data[m.offset + 148: m.offset + 154], 8)
    assume(bad != real)
    res = _ingest(set_field(data, m.offset, "chksum", b"%06o\0 " % bad), tmp_path_factory.mktemp("c"))
    before = expected_keys(headers[:which])
    assert [r["key"] for r in res.samples] == before
    if which == 0:
        assert res.shard["status"] == "unreadable" and not res.samples
    else:
        assert res.shard["status"] == "truncated"
        assert res.samples[-1]["error"].startswith("TruncatedShard")


@FUZZ
@given(fmt=st.sampled_from(sorted(GOOD)), cut=st.integers(0, len(GOOD[tarfile.PAX_FORMAT])))
def test_truncation_at_any_offset_keeps_the_members_read_before_it(tmp_path_factory, fmt, cut):
    data = GOOD[fmt]
    cut = min(cut, len(data))
    headers = member_headers(data)
    res = _ingest(data[:cut], tmp_path_factory.mktemp("t"))
    assert [r["key"] for r in res.samples] == expected_keys([m for m in headers if m.offset_data <= cut])
    end = end_of_members(data)
    want = "complete" if cut >= end + 1024 else ("truncated" if res.samples else "unreadable")
    assert res.shard["status"] == want
    whole = {m.name.split(".")[0] for m in headers if m.offset_data + m.size <= cut}
    ok = {r["key"] for r in res.samples if r["status"] == "ok"}
    assert ok <= whole  # a sample cut short is never ok


NAMES = st.one_of(
    st.from_regex(r"\A[0-9]{3}\Z"),
    st.sampled_from(["../../x", "../evil/001", "/etc/x", "/abs/002", "a/../../003", "./004", "..\\..\\005",
                     "C:\\win\\006", "dir/../007", "..", "./../008", "a" * 150, "sp ace", "new\nline",
                     "ünï/cødé", "\udcff\udcfe"]),
)
EXTS = st.sampled_from(["jpg", "txt", "json", "JPG", "", "tar.gz", "png"])
KIND = st.sampled_from(["file"] * 4 + ["dir", "symlink", "hardlink", "chr", "blk", "fifo"])


@FUZZ
@given(members=st.lists(st.tuples(NAMES, EXTS, KIND, st.binary(max_size=64)), min_size=1, max_size=12),
       fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
def test_hostile_names_links_and_devices_are_error_rows(tmp_path_factory, members, fmt):
    spec = [(f"{n}.{e}" if e else n, kind, data) for n, e, kind, data in members]
    data = build_tar(spec, fmt)
    headers = member_headers(data)
    res = _ingest(data, tmp_path_factory.mktemp("n"))
    assert res.shard["status"] == "complete"
    assert [r["key"] for r in res.samples] == expected_keys(headers)
    groups: list[tuple[str, list]] = []
    for m in headers:
        if not m.isdir():
            k = expected_keys([m])[0]
            if groups and groups[-1][0] == k:
                groups[-1][1].append(m)
            else:
                groups.append((k, [m]))
    for (key, group), row in zip(groups, res.samples):
        hostile = [m.name for m in group if not m.isfile() or m.name.startswith(("/", "\\"))
                   or ".." in m.name.replace("\\", "/").split("/") or escaped(m.name) != m.name]
        if hostile:
            assert row["status"] == "failed", (row, hostile)


def test_traversal_link_and_device_members_fail_with_their_type(tmp_path):
    img = small_jpeg(1)
    spec = [("../../x.jpg", "file", img), ("../../x.txt", "file", b"cap"),
            ("/abs/y.jpg", "file", img), ("/abs/y.txt", "file", b"cap"),
            ("s.jpg", "symlink", b""), ("s.txt", "file", b"cap"),
            ("h.jpg", "hardlink", b""), ("h.txt", "file", b"cap"),
            ("c.jpg", "chr", b""), ("c.txt", "file", b"cap"),
            ("b.jpg", "blk", b""), ("f.jpg", "fifo", b""),
            (b"\xff\xfe.jpg".decode("utf-8", "surrogateescape"), "file", img),
            ("ok.jpg", "file", img), ("ok.txt", "file", b"fine")]
    res = _ingest(build_tar(spec), tmp_path)
    got = {r["key"]: (r["error"] or "ok").split(":")[0] for r in res.samples}
    assert got == {"../../x": "UnsafeMemberName", "/abs/y": "UnsafeMemberName", "s": "UnsupportedMember",
                   "h": "UnsupportedMember", "c": "UnsupportedMember", "b": "UnsupportedMember",
                   "f": "UnsupportedMember", "\\xff\\xfe": "NonUtf8MemberName", "ok": "ok"}


def _with_size(data: bytes, header_at: int, size: int) -> bytes:
    return set_field(data, header_at, "size", b"\x80" + size.to_bytes(11, "big"))


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_declared_huge_members_and_headers_allocate_nothing(tmp_path):
    tb = 1 << 40
    ustar = build_tar(_good_members(2), tarfile.USTAR_FORMAT)
    pax = build_tar(_good_members(2), tarfile.PAX_FORMAT, pax={"comment": "x" * 10})
    gnu = build_tar([("n" * 200 + ".jpg", "file", small_jpeg(3))] + _good_members(1), tarfile.GNU_FORMAT)
    cases = {"member": _with_size(ustar, 0, tb),  # a regular member declaring 1 TiB
             "member_mid": _with_size(ustar, member_headers(ustar)[3].offset, tb),
             "pax_header": _with_size(pax, 0, tb),  # the pax extended header itself declares 1 TiB
             "gnu_longname": _with_size(gnu, 0, tb)}
    for name, data in cases.items():
        path = tmp_path / f"{name}.tar"
        path.write_bytes(data)

        def read(path=path):
            with open(path, "rb") as f:
                r = TarSamples(f)
                list(r)
                assert r.status in ("truncated", "unreadable"), (name, r.status)
        assert _peak_bytes(read) < 4 << 20, name
        _ingest(data, tmp_path)


def test_member_over_the_limit_is_skipped_not_read(tmp_path):
    big = bytes(3 << 20)
    data = build_tar([("a.jpg", "file", big), ("a.txt", "file", b"cap"), ("b.jpg", "file", small_jpeg(2)),
                      ("b.txt", "file", b"cap")])
    path = tmp_path / "big.tar"
    path.write_bytes(data)

    def read():
        with open(path, "rb") as f:
            return [(s.key, s.problems[:1]) for s in TarSamples(f, max_member_bytes=1 << 20)]
    assert _peak_bytes(read) < 1 << 20
    res = _ingest(data, tmp_path, max_member_bytes=1 << 20)
    assert [(r["key"], (r["error"] or "ok").split(":")[0]) for r in res.samples] == [
        ("a", "MemberTooLarge"), ("b", "ok")]


def test_size_pointing_backwards_does_not_loop(tmp_path):
    data = build_tar(_good_members(3), tarfile.USTAR_FORMAT)
    headers = member_headers(data)
    back = -(headers[4].offset - headers[1].offset + 512)  # after member 4 the parser would return to member 1
    raw = b"\xff" + (back % (1 << 88)).to_bytes(11, "big")
    res = _ingest(set_field(data, headers[4].offset, "size", raw), tmp_path)
    assert res.shard["status"] == "truncated" and len(res.samples) == 2


def test_stream_of_any_bytes_never_raises(tmp_path):
    for seed, data in enumerate([b"", b"\0" * 1024, b"x" * 511, GOOD[tarfile.USTAR_FORMAT][:512] * 3,
                                 bytes(range(256)) * 8]):
        _ingest(data, tmp_path)
        list(TarSamples(io.BytesIO(data)))


def _encoded(mode: str, color, fmt: str) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new(mode, (40, 30), color).save(buf, fmt)
    return buf.getvalue()


IMAGES = [small_jpeg(5, side=40), _encoded("RGBA", (1, 2, 3, 4), "PNG"), _encoded("RGB", (9, 8, 7), "WEBP"),
          _encoded("P", 3, "PNG")]


@settings(FUZZ, max_examples=150)
@given(which=st.integers(0, len(IMAGES) - 1), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                              max_size=8), cut=st.integers(0, 10**6))
def test_mutated_image_bytes_are_a_row_never_an_exception(which, edits, cut):
    from audit.ingest.sample_validation import IngestLimits, validate_sample
    from audit.ingest.tar_samples import RawSample
    data = bytearray(IMAGES[which])
    for at, value in edits:
        data[at % len(data)] = value
    raw = RawSample("k", files={"jpg": bytes(data[: max(1, cut % (len(data) + 1))]), "txt": b"cap"})
    row, err = validate_sample(raw, "s", "r", IngestLimits())
    assert (err is None) == (row["status"] == "ok")
    assert err is None or err["stage"] in ("read", "decode")
