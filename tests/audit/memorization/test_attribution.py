"""Attribution: top-k ranking over stored vectors, error rows, score quantiles, the CLIP query
embedder's refusals, and the tiny demo model's planted prompts attributed to their training
images with the real SSCD model (audit of the shard that holds one planted pair)."""

import json
import shutil

import numpy as np
import pytest

from audit.embeddings.embedders import Embedded
from audit.io.output_dir import OutputDir
from audit.io.user_errors import UsageError
from audit.memorization.attribution import attribute, clip_image_embedder, score_quantiles, top1_scores
from audit.memorization.replication import Generated, TrainIndex, image_index, read_generated, sscd_embedder
from tests.conftest import REPO


class TableEmbedder:
    """Bytes b'v<i>' embed to row i of a fixed matrix; b'bad' is rejected like an undecodable image."""
    model_id, dim, modality = "fake", 8, "image"

    def __init__(self, vectors):
        self.vectors = vectors

    def embed(self, items):
        good = [(i, int(d[1:])) for i, d in enumerate(items) if d != b"bad"]
        errors = [(i, "ImageRejected", "cannot decode") for i, d in enumerate(items) if d == b"bad"]
        return Embedded(self.vectors[[r for _, r in good]], [i for i, _ in good], errors)


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_attribute_ranks_the_k_most_similar_training_images_and_keeps_error_rows():
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(50, 8)))
    index = TrainIndex("fake", [f"s{i % 3}" for i in range(50)], [f"k{i:02d}" for i in range(50)], base)
    queries = _unit(base[[7, 21]] + 0.05 * rng.normal(size=(2, 8)))
    items = [Generated("a.png", b"v0", "<b>p</b>"), Generated("bad.png", b"bad", None),
             Generated("huge.png", None, None, "ImageTooLarge: 1 bytes"), Generated("b.png", b"v1", None)]
    rows = attribute(items, index, TableEmbedder(queries), k=5, batch=3)  # a chunk boundary inside
    by = {}
    for r in rows:
        by.setdefault(r["query"], []).append(r)
    assert [r["rank"] for r in by["a.png"]] == [1, 2, 3, 4, 5] and len(by["b.png"]) == 5
    for name, q in (("a.png", queries[0]), ("b.png", queries[1])):
        want = np.argsort(-(base @ q))[:5]
        assert [r["key"] for r in by[name]] == [index.keys[i] for i in want]
        assert [r["shard"] for r in by[name]] == [index.shards[i] for i in want]
        assert np.allclose([r["score"] for r in by[name]], (base @ q)[want], atol=1e-5)
    assert by["a.png"][0]["prompt"] == "<b>p</b>" and by["a.png"][0]["error"] is None
    assert len(by["bad.png"]) == 1 and "cannot decode" in by["bad.png"][0]["error"] and "rank" not in by["bad.png"][0]
    assert by["huge.png"] == [{"query": "huge.png", "prompt": None, "model": "fake", "error": "ImageTooLarge: 1 bytes"}]
    assert top1_scores(rows) == {"a.png": by["a.png"][0]["score"], "b.png": by["b.png"][0]["score"]}
    assert len(attribute(items[:1], index, TableEmbedder(queries), k=500)) == 50  # k clamped to the index


def test_score_quantiles():
    q = score_quantiles([0.1, 0.2, 0.3, 0.4, 0.5])
    assert q["n"] == 5 and q["mean"] == pytest.approx(0.3) and q["p50"] == pytest.approx(0.3)
    assert q["p10"] == pytest.approx(0.14) and q["p90"] == pytest.approx(0.46)
    assert score_quantiles([]) == {"n": 0, "mean": None, "p10": None, "p50": None, "p90": None}


def test_clip_query_embedder_refuses_what_cannot_reproduce_the_stored_vectors(tmp_path):
    from safetensors.numpy import save_file
    with pytest.raises(UsageError, match="random test weights"):
        clip_image_embedder("clip:ViT-B-32:random-init:image", None)
    with pytest.raises(UsageError, match="--clip-checkpoint"):
        clip_image_embedder("clip:ViT-B-32:ckpt-0123456789:image", None)
    ckpt = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(4, np.float32)}, str(ckpt))
    with pytest.raises(UsageError, match="the checkpoint the audit used"):
        clip_image_embedder("clip:ViT-B-32:ckpt-0123456789:image", str(ckpt))


@pytest.fixture(scope="module")
def planted_audit(demo_sample, tmp_path_factory):
    """An audit (ingest + SSCD) of the demo shard that holds the planted pair 00000/00000055."""
    from audit.embeddings.embedder_specs import EmbedConfig
    from pipelines.config import JobConfig
    from pipelines.job import run_ingest
    d = tmp_path_factory.mktemp("attr")
    shutil.copy(demo_sample / "00000.tar", d / "00000.tar")
    run_ingest(str(d / "00000.tar"), str(d / "out"), JobConfig(progress_seconds=0, embed=EmbedConfig(captions=False)))
    return d / "out"


@pytest.mark.beam
def test_the_tiny_models_planted_prompt_is_attributed_to_its_training_image(planted_audit, tmp_path):
    """The tiny demo model memorized its planted pairs: most images it generates from the planted
    caption whose pair lies in shard 00000 have that pair's training image as their top-1 SSCD
    neighbour among the shard's ~250 (chance: 0.4% each). Sampled as `tiny_diffusion.generate`
    does (guidance 1.0, seeds 0, 1, 2); benchmarks/attribution.py measures all 10 planted pairs."""
    import sys

    from PIL import Image

    from audit.memorization.config import SamplerConfig
    from audit.memorization.diffusion_models import DiffusionModel
    from audit.memorization.diffusion_sampling import generate
    sys.path.insert(0, str(REPO / "infra" / "demo"))
    import tiny_diffusion
    planted = json.loads((REPO / "infra" / "demo" / "tiny_diffusion" / "planted.json").read_text())["planted"]
    target = next(p for p in planted if p["shard"] == "00000")
    model = DiffusionModel.load(tiny_diffusion.assemble(tmp_path / "model"))
    images = generate(model, [target["caption"]] * 3, [0, 1, 2], SamplerConfig(guidance_scale=1.0))
    (tmp_path / "gen").mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / "gen" / f"planted-{i}.png")
        (tmp_path / "gen" / f"planted-{i}.txt").write_text(target["caption"])
    index = image_index(OutputDir(planted_audit), "sscd")
    assert len(index.keys) > 200  # the shard's accepted images (one of its 250 is rejected at ingest)
    rows = attribute(read_generated(str(tmp_path / "gen")), index, sscd_embedder(index.model_id), k=10)
    top1 = [(r["shard"], r["key"]) for r in rows if r.get("rank") == 1]
    assert len(top1) == 3 and all(r["prompt"] == target["caption"] for r in rows)
    assert top1.count((target["shard"], target["key"])) >= 2, top1


def _hostile_generated(gen, n_copies=2):
    """Resized copies of training images (hostile prompts and file names), noise, a broken PNG."""
    import io

    from PIL import Image

    from tests.demo_images import demo_images
    gen.mkdir()
    copies = [(k, Image.open(io.BytesIO(b)).convert("RGB")) for k, b, _, _ in demo_images(40)
              if k.startswith("00000")][:n_copies]
    names = []
    for i, (_, img) in enumerate(copies):
        name = f'copy-{i}-"><img src=x onerror=alert({i})>'
        img.resize((160, 160)).save(gen / f"{name}.png")
        (gen / f"{name}.txt").write_text("<script>alert('p')</script> & a copy")
        names.append(f"{name}.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(gen / "noise.png")
    (gen / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return [k.split("/")[-1] for k, _ in copies], names


@pytest.mark.beam
def test_attribution_command_writes_the_table_and_an_escaped_page(planted_audit, tmp_path, capsys):
    from pipelines.cli import main
    keys, names = _hostile_generated(tmp_path / "gen")
    assert main(["attribution", "--generated", str(tmp_path / "gen"), "--against", str(planted_audit),
                 "--top-k", "3"]) == 0
    assert "report:" in capsys.readouterr().out
    assert main(["sql", "--out", str(planted_audit), "--format", "json",
                 "SELECT query, prompt, rank, shard, key, score, model, error FROM attribution ORDER BY query, rank"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {}
    for r in rows:
        by.setdefault(r["query"], []).append(r)
    assert set(by) == {*names, "noise.png", "broken.png"}
    for name, key in zip(names, keys):
        assert [r["rank"] for r in by[name]] == [1, 2, 3]
        assert by[name][0]["score"] >= by[name][1]["score"] >= by[name][2]["score"]
        source = next(r for r in by[name] if r["key"] == key)  # the demo repeats images: ties share the top
        assert source["score"] > 0.8 and source["score"] == pytest.approx(by[name][0]["score"], abs=0.02)
        assert by[name][0]["prompt"].startswith("<script>") and by[name][0]["model"].startswith("sscd")
    assert len(by["broken.png"]) == 1 and by["broken.png"][0]["error"] and by["broken.png"][0]["rank"] is None
    page = (planted_audit / "reports" / "attribution.html").read_text()
    assert "&lt;script&gt;alert(" in page and "<script" not in page
    assert "&lt;img src=x onerror=alert(0)&gt;" in page and "<img src=x" not in page
    assert page.count("data:image/png;base64,") >= 2 * 4  # each copy and its 3 training images


@pytest.mark.beam
def test_attribution_command_usage_errors_exit_2(planted_audit, tmp_path, capsys):
    from pipelines.cli import main
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "a.png").write_bytes(b"not decoded before the model check")
    assert main(["attribution", "--generated", str(gen), "--against", str(planted_audit), "--model", "clip"]) == 2
    err = capsys.readouterr().err
    assert "no CLIP image embeddings" in err and "sscd" in err  # names the models the audit has
    assert main(["attribution", "--generated", str(tmp_path / "nothing"), "--against", str(planted_audit)]) == 2
    assert main(["attribution", "--generated", str(gen), "--against", str(planted_audit), "--top-k", "0"]) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not an audit")
    assert main(["attribution", "--generated", str(gen), "--against", str(tmp_path / "mine")]) == 2
    assert not (tmp_path / "mine" / "attribution").exists()
