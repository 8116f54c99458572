"""Replication audit: top-1 search, statistics, reading generated images, and the command end
to end with the real SSCD model against an ingested demo shard."""

import io
import shutil
import struct
import tarfile

import numpy as np
import pytest
from PIL import Image

from audit.embeddings.embedder_specs import EmbedConfig
from audit.memorization.replication import read_generated, stats
from audit.io.store import query
from audit.dedup.vector_index import top1
from pipelines.cli import main
from pipelines.config import JobConfig
from pipelines.job import run_ingest
from tests.demo_images import demo_images


def test_top1_is_exact_and_excludes_self():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    sims = base[:50] @ base.T
    i, s = top1(base[:50], base)
    assert (i == np.arange(50)).all() and np.allclose(s, 1, atol=1e-5)
    np.fill_diagonal(sims[:, :50], -2)
    j, t = top1(base[:50], base, exclude=np.arange(50))
    assert (j == sims.argmax(1)).all() and np.allclose(t, sims.max(1), atol=1e-6)


def test_stats_rate_is_strictly_over_the_threshold():
    s = stats([0.2, 0.5, 0.51, 0.9], 0.5)
    assert s["n"] == 4 and s["replication_rate"] == 0.5
    assert s["mean_similarity"] == pytest.approx(0.5275)
    assert stats([], 0.5)["replication_rate"] is None


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_read_generated_from_folder_and_tar(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "a.png").write_bytes(_png(Image.new("RGB", (32, 32), "red")))
    (tmp_path / "g" / "a.txt").write_text("a red square\n")
    (tmp_path / "g" / "b.jpg").write_bytes(b"not an image")
    with tarfile.open(tmp_path / "g" / "00000.tar", "w") as tf:
        for name, data in (("k1.png", _png(Image.new("RGB", (8, 8)))), ("k1.txt", b"p"), ("k2.txt", b"orphan")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    items = {g.name: g for g in read_generated(str(tmp_path / "g"))}
    assert set(items) == {"a.png", "b.jpg", "00000/k1", "00000/k2"}
    assert items["a.png"].prompt == "a red square" and items["00000/k1"].prompt == "p"
    assert items["00000/k2"].error and items["00000/k2"].data is None
    with pytest.raises(FileNotFoundError):
        read_generated(str(tmp_path / "empty-nothing-here"))


@pytest.fixture(scope="module")
def train_out(demo_sample, tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    shutil.copy(demo_sample / "00000.tar", d / "00000.tar")
    out = d / "out"
    run_ingest(str(d / "00000.tar"), str(out), JobConfig(progress_seconds=0, embed=EmbedConfig(captions=False)))
    return out


@pytest.mark.beam
def test_replication_command_finds_copies_and_reports_baseline(train_out, tmp_path, capsys):
    gen = tmp_path / "gen"
    gen.mkdir()
    copies = [(k, Image.open(io.BytesIO(b)).convert("RGB")) for k, b, _, _ in demo_images(40)
              if k.startswith("00000")][:4]
    for i, (_, img) in enumerate(copies):  # a generated "copy": resized and re-encoded
        img.resize((200, 200)).save(gen / f"copy-{i}.png")
        (gen / f"copy-{i}.txt").write_text("<script>alert('x')</script> a copy")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(gen / f"noise-{i}.png")
    (gen / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert main(["replication", "--generated", str(gen), "--against", str(train_out), "--baseline-samples", "100"]) == 0
    _, rows = query(train_out, "SELECT generated, top1_key, top1_similarity, replicated, error FROM replication ORDER BY generated")
    by = {r[0]: r for r in rows}
    assert len(rows) == 9
    for i, (key, _) in enumerate(copies):
        assert by[f"copy-{i}.png"][1] == key and by[f"copy-{i}.png"][3]
    assert not any(by[f"noise-{i}.png"][3] for i in range(4))
    assert by["broken.png"][4] and by["broken.png"][2] is None
    _, summ = query(train_out, "SELECT set, n, replication_rate FROM replication_summary ORDER BY set")
    assert summ[0][:2] == ("generated", 8) and summ[0][2] == pytest.approx(0.5)
    assert summ[1][:2] == ("train_vs_train", 100)
    page = (train_out / "reports" / "replication.html").read_text()
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "replication rate" in capsys.readouterr().out


@pytest.mark.beam
def test_a_bomb_in_the_generated_folder_is_an_error_row_not_an_allocation(train_out, tmp_path):
    """Issue 19: `replication --generated` decoded with Pillow's bomb guard off. A PNG header
    declaring 20000x20000 pixels (100 bytes), a real 12000x12000 PNG (144 M pixels, 18 KB) and a
    file over the byte limit become rows with `error` set; the good image is still matched."""
    import zlib

    from audit.ingest.image_decode import ImageLimits
    from tests.image_mutations import declared_size_png
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "header-bomb.png").write_bytes(declared_size_png(20000, 20000))
    side = 12000  # a complete, valid 1-bit PNG: the decoder would really allocate 144 M pixels
    raw = zlib.compress((b"\0" + b"\0" * (side // 8)) * side, 9)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    (gen / "real-bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw)
                                        + chunk(b"IEND", b""))
    with open(gen / "huge.png", "wb") as f:  # sparse: over the byte limit, never read
        f.truncate(ImageLimits().max_bytes + 1)
    _, good, _, _ = demo_images(1)[0]
    (gen / "good.jpg").write_bytes(good)
    assert main(["replication", "--generated", str(gen), "--against", str(train_out), "--baseline-samples", "10"]) == 0
    _, rows = query(train_out, "SELECT generated, top1_similarity, error FROM replication "
                               "WHERE run_id = (SELECT max(run_id) FROM replication) ORDER BY generated")
    by = {r[0]: r for r in rows}
    assert set(by) == {"header-bomb.png", "real-bomb.png", "huge.png", "good.jpg"}
    assert by["good.jpg"][1] > 0.9 and by["good.jpg"][2] is None
    assert "DecompressionBomb" in by["header-bomb.png"][2] and "DecompressionBomb" in by["real-bomb.png"][2]
    assert by["huge.png"][2].startswith("ImageTooLarge")
    assert all(by[k][1] is None for k in ("header-bomb.png", "real-bomb.png", "huge.png"))
