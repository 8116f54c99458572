import io
import tarfile

from audit.ingest.tar_samples import TarSamples, split_member_name


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_split_member_name_follows_webdataset():
    assert split_member_name("000012.jpg") == ("000012", "jpg")
    assert split_member_name("./dir/a.seg.PNG") == ("dir/a", "seg.png")
    assert split_member_name("noext") == ("noext", "")


def test_groups_consecutive_members_and_records_offsets():
    data = _tar([("a.jpg", b"A"), ("a.txt", b"cap"), ("b.jpg", b"B")])
    reader = TarSamples(io.BytesIO(data))
    samples = list(reader)
    assert [s.key for s in samples] == ["a", "b"]
    assert samples[0].files == {"jpg": b"A", "txt": b"cap"}
    assert data[samples[1].offsets["jpg"]:][:1] == b"B"
    assert reader.status == "complete"


def test_truncation_at_a_header_boundary_is_detected():
    data = _tar([("a.jpg", b"A" * 600), ("b.jpg", b"B" * 600)])
    cut = data[:512 * 3]  # header+data of a.jpg (2 blocks) and b.jpg's header, then nothing
    reader = TarSamples(io.BytesIO(cut))
    samples = list(reader)
    assert reader.status == "truncated"
    assert any(p[0] == "TruncatedShard" for s in samples for p in s.problems)


def test_missing_end_of_archive_marker_is_truncation():
    data = _tar([("a.jpg", b"A" * 512)])
    reader = TarSamples(io.BytesIO(data[:1024]))  # header + data, no zero blocks
    samples = list(reader)
    assert reader.status == "truncated" and samples[0].problems[0][0] == "TruncatedShard"


def test_oversized_members_are_not_read():
    data = _tar([("a.jpg", b"x" * 5000), ("a.txt", b"ok")])
    s = list(TarSamples(io.BytesIO(data), max_member_bytes=1000))[0]
    assert "jpg" not in s.files and s.problems[0][0] == "MemberTooLarge"


def test_non_seekable_stream_is_buffered():
    class Pipe(io.RawIOBase):
        def __init__(self, b):
            self.b = io.BytesIO(b)
        def readable(self):
            return True
        def readinto(self, buf):
            n = self.b.readinto(buf)
            return n
    data = _tar([("a.jpg", b"A"), ("a.txt", b"t")])
    assert [s.key for s in TarSamples(io.BufferedReader(Pipe(data)))] == ["a"]


class _CountingFile(io.BytesIO):
    """BytesIO that counts the bytes handed out by read()."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, n=-1):
        out = super().read(n)
        self.bytes_read += len(out)
        return out


def test_members_of_unused_extensions_are_skipped_unread_and_noted():
    from tests.hostile_tars import build_tar, small_jpeg
    extra = [(f"000.x{i:02d}", "file", bytes([i]) * (2 << 20)) for i in range(20)]  # 20 x 2 MB under one key
    data = build_tar([("000.jpg", "file", small_jpeg(1)), ("000.txt", "file", b"cap")] + extra
                     + [("001.jpg", "file", small_jpeg(2)), ("001.txt", "file", b"cap")])
    f = _CountingFile(data)
    samples = list(TarSamples(f, extensions=("jpg", "txt", "json")))
    assert [s.key for s in samples] == ["000", "001"] and not samples[0].problems
    assert sorted(samples[0].files) == ["jpg", "txt"]
    assert samples[0].skipped == {f"x{i:02d}": 2 << 20 for i in range(20)}
    assert f.bytes_read < 1 << 20  # 40 MB of extra members, none of it read


def test_bytes_read_per_sample_are_capped():
    from tests.hostile_tars import build_tar, small_jpeg
    data = build_tar([("000.jpg", "file", small_jpeg(1)), ("000.txt", "file", b"cap"),
                      ("000.json", "file", b"{}" + b" " * 5000),
                      ("001.jpg", "file", small_jpeg(2)), ("001.txt", "file", b"cap")])
    samples = list(TarSamples(io.BytesIO(data), extensions=("jpg", "txt", "json"), max_sample_bytes=4096))
    assert samples[0].problems[0][0] == "SampleTooLarge" and "json" not in samples[0].files
    assert not samples[1].problems and sorted(samples[1].files) == ["jpg", "txt"]


def test_ingest_reads_only_its_extensions_and_caps_a_sample(tmp_path):
    from audit.ingest.sample_validation import IngestLimits
    from audit.ingest.shard_ingest import ingest_shard
    from tests.hostile_tars import build_tar, small_jpeg
    big = [(f"000.extra{i}", "file", b"\0" * (1 << 20)) for i in range(20)]
    path = tmp_path / "hostile.tar"
    path.write_bytes(build_tar([("000.jpg", "file", small_jpeg(1, 32)), ("000.txt", "file", b"a cat")] + big
                               + [("001.jpg", "file", small_jpeg(2, 32)), ("001.txt", "file", b"x" * 4000),
                                  ("002.jpg", "file", small_jpeg(3, 32)), ("002.txt", "file", b"a dog")]))
    res = ingest_shard("h", str(path), "r1", limits=IngestLimits(max_sample_bytes=3000))
    status = {r["key"]: r["status"] for r in res.samples}
    assert status == {"000": "ok", "001": "failed", "002": "ok"}
    assert [(e["key"], e["stage"], e["error_type"]) for e in res.errors] == [("001", "read", "SampleTooLarge")]
    assert (res.skipped_members, res.skipped_bytes) == (20, 20 << 20)
    import pytest
    with pytest.raises(ValueError, match="max_sample_bytes"):
        IngestLimits(max_sample_bytes=0)
