"""audit.ingest.sample_store.StoredImages: stored images read back at random by (shard, key) from the
demo sample's tars after a real ingest: the bytes in the tar, one open per shard and one
lookup per shard, at most max_open handles, reads in offset order, and None for a sample
without a stored location, a shard without its ingest marker and a tar that cannot be read."""

import shutil
import tarfile

import duckdb
import pytest

from audit.ingest import sample_store
from audit.report.finding_pages import read_training_images
from audit.io.output_dir import OutputDir
from audit.ingest.sample_store import StoredImages
from audit.ingest.shard_ingest import STAGE as INGEST_STAGE
from audit.ingest.shard_ingest import ingest_and_record, open_binary
from audit.ingest.stored_images import stored_image_fetcher

SHARDS = ["00000", "00001", "00002"]


@pytest.fixture(scope="module")
def ingested(demo_sample, tmp_path_factory):
    """(out, {(shard, key): (status, bytes of the key's image member in the tar)})."""
    root = tmp_path_factory.mktemp("store")
    for s in SHARDS:
        shutil.copy(demo_sample / f"{s}.tar", root / f"{s}.tar")
    out = OutputDir(root / "out")
    for s in SHARDS:
        ingest_and_record(out, s, str(root / f"{s}.tar"), "r1")
    rows = duckdb.sql(f"SELECT shard, key, status, image_ext FROM {out.read_sql('samples')} "
                      "WHERE image_ext IS NOT NULL").fetchall()
    truth = {}
    for s in SHARDS:
        with tarfile.open(root / f"{s}.tar") as tf:
            for shard, key, status, ext in (r for r in rows if r[0] == s):
                truth[(shard, key)] = (status, tf.extractfile(f"{key}.{ext}").read())
    return out, truth


class Opener:
    """open_binary, counting opens, the files still open and each shard's seek offsets."""

    def __init__(self, fail: set[str] = frozenset()):
        self.opened, self.open_now, self.most_open, self.seeks, self.fail = [], 0, 0, {}, fail

    def __call__(self, uri):
        self.opened.append(uri)
        if any(uri.endswith(f"{s}.tar") for s in self.fail):
            raise FileNotFoundError(uri)
        f, owner = open_binary(uri), self
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)

        class Tracked:
            def seek(self, offset, whence=0):
                owner.seeks.setdefault(uri, []).append(offset)
                return f.seek(offset, whence)

            def read(self, n=-1):
                return f.read(n)

            def close(self):
                if not f.closed:
                    owner.open_now -= 1
                f.close()
        return Tracked()


def ok_keys(truth):
    return sorted(k for k, (status, _) in truth.items() if status == "ok")


def test_every_stored_image_is_the_bytes_in_the_tar_with_one_open_and_one_lookup_per_shard(ingested, monkeypatch):
    out, truth = ingested
    queries = []
    monkeypatch.setattr(sample_store, "scan", lambda sql, params=None: queries.append(params) or scan(sql, params))
    opener = Opener()
    keys = ok_keys(truth)
    assert len(keys) > 600 and {s for s, _ in keys} == set(SHARDS)
    with StoredImages(out, opener) as store:
        for shard, key in keys[::-1] + keys:  # each shard's samples, twice
            assert store.get(shard, key) == truth[(shard, key)][1]
    assert sorted(opener.opened) == sorted(str(out.root.parent / f"{s}.tar") for s in SHARDS)
    assert len(queries) == len(SHARDS) and opener.open_now == 0  # all closed


def test_many_reads_each_shard_in_offset_order_after_one_lookup(ingested, monkeypatch):
    out, truth = ingested
    queries = []
    monkeypatch.setattr(sample_store, "scan", lambda sql, params=None: queries.append(params) or scan(sql, params))
    keys = ok_keys(truth)[::-7] + [("00001", "no-such-key")]
    opener = Opener()
    with StoredImages(out, opener) as store:
        got = store.many(keys)
        seeks = {uri: list(offsets) for uri, offsets in opener.seeks.items()}
        assert store.many(keys[:5]) == {k: got[k] for k in keys[:5]}  # known: no lookup again
    assert got == {k: truth[k][1] for k in keys[:-1]}
    assert len(queries) == 1 and len(opener.opened) == len(SHARDS)
    for s in SHARDS:
        offsets = seeks[str(out.root.parent / f"{s}.tar")]
        assert len(offsets) == sum(k[0] == s for k in keys[:-1]) > 10 and offsets == sorted(offsets)


def test_at_most_max_open_handles_least_recently_used_closed_first(ingested):
    out, truth = ingested
    keys = ok_keys(truth)
    by_shard = {s: [k for k in keys if k[0] == s][:3] for s in SHARDS}
    opener = Opener()
    with StoredImages(out, opener, max_open=2) as store:
        for i in range(3):
            for s in SHARDS:  # round robin over three shards: two handles never suffice
                assert store.get(*by_shard[s][i]) == truth[by_shard[s][i]][1]
        assert opener.most_open == 2 and len(opener.opened) == 9
    assert opener.open_now == 0
    opener = Opener()
    with StoredImages(out, opener, max_open=2) as store:
        for i in range(3):
            for s in SHARDS[:2]:  # two shards fit: each opened once
                store.get(*by_shard[s][i])
        store.get(*by_shard["00002"][0])  # evicts the least recent, 00000
        store.get(*by_shard["00001"][0])
        store.get(*by_shard["00000"][0])
    assert [u[-9:-4] for u in opener.opened] == ["00000", "00001", "00002", "00000"]


def test_no_stored_location_is_none_and_not_read(ingested):
    out, truth = ingested
    failed = [k for k, (status, _) in truth.items() if status != "ok"]
    assert failed  # the demo sample holds a sample ingest refused, with its offset in the table
    opener = Opener()
    with StoredImages(out, opener) as store:
        assert store.get(*failed[0]) is None
        assert store.get("00000", "no-such-key") is None and store.get("nope", "x") is None
        assert store.many(failed + [("nope", "x")]) == {}
    assert opener.opened == [] and store.failed == {}


def test_a_shard_without_marker_or_unreadable_tar_is_none_noted_and_not_tried_again(ingested, tmp_path):
    out, truth = ingested
    keys = ok_keys(truth)
    k0 = [k for k in keys if k[0] == "00000"][:4]
    k1 = [k for k in keys if k[0] == "00001"][:4]
    k2 = [k for k in keys if k[0] == "00002"][:4]
    copy = OutputDir(tmp_path / "out")
    shutil.copytree(out.root, copy.root)
    (copy.manifest_dir(INGEST_STAGE) / "00002.json").unlink()
    opener = Opener(fail={"00001"})
    with StoredImages(copy, opener) as store:
        assert [store.get(*k) for k in k1] == [None] * 4
        assert store.many(k0 + k1 + k2) == {k: truth[k][1] for k in k0}
        assert store.get(*k2[0]) is None
    assert sorted(store.failed) == ["00001", "00002"]
    assert "FileNotFoundError" in store.failed["00001"] and "marker" in store.failed["00002"]
    assert [u[-9:-4] for u in opener.opened] == ["00001", "00000"]  # 00001 tried once
    with pytest.raises(OSError, match="00001"):  # the report's note
        read_training_images(copy, k0 + k1, Opener(fail={"00001"}))


def test_read_by_location_raises_and_drops_the_handle_on_a_read_error(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(bytes(range(200)))
    fails = [False]

    class Flaky:
        def __init__(self, f):
            self.f = f

        def seek(self, o, w=0):
            if fails[0]:
                raise OSError("gone")
            return self.f.seek(o, w)

        def read(self, n=-1):
            return self.f.read(n)

        def close(self):
            self.f.close()
    opened = []

    def opener(uri):
        opened.append(uri)
        return Flaky(open(uri, "rb"))
    with StoredImages(None, opener) as store:
        assert store.read(str(path), 10, 5) == bytes(range(10, 15))
        assert store.read(str(path), 195, 10) == bytes(range(195, 200))  # short: the file ends
        fails[0] = True
        with pytest.raises(OSError, match="gone"):
            store.read(str(path), 0, 1)
        fails[0] = False
        assert store.read(str(path), 0, 2) == b"\x00\x01"
    assert opened == [str(path), str(path)]


def test_the_copy_checks_fetch_and_the_pages_read_the_same_images(ingested):
    out, truth = ingested
    keys = ok_keys(truth)[::50]
    opener = Opener()
    fetch = stored_image_fetcher(out, keys, opener)
    assert [fetch(i) for i in range(len(keys))] == [truth[k][1] for k in keys]
    assert len(opener.opened) == len(SHARDS)
    images = read_training_images(out, keys, open_binary)
    assert sorted(images) == keys and all(im.size[0] > 0 for im in images.values())


def scan(sql, params=None):
    from audit.io.store import scan as real
    return real(sql, params)
