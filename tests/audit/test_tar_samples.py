import io
import tarfile

from audit.tar_samples import TarSamples, split_member_name


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
