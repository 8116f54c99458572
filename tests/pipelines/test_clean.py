"""`shardguard clean`: training-ready shards readable as is, decisions and captions applied."""

import hashlib
import json
import shutil
import tarfile

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from audit.captions.strategies import CaptionPolicy
from audit.clean.shards import CleanConfig
from audit.embeddings.embedder_specs import EmbedConfig
from audit.io.store import query
from pipelines.clean import run_clean
from pipelines.config import JobConfig
from pipelines.job import run_ingest
from tests.foreign_folders import snapshot

pytestmark = pytest.mark.beam  # runs Beam jobs (tests/conftest.py)


@pytest.fixture(scope="module")
def audited(demo_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    run_ingest(f"{demo_sample}/0000{{0,1}}.tar", str(out), JobConfig(progress_seconds=0,
                                                                      embed=EmbedConfig(captions=False)))
    return demo_sample, out


def source_images(sample, shards):
    images = {}
    for s in shards:
        with tarfile.open(sample / f"{s}.tar") as tf:
            for m in tf:
                if m.name.endswith(".jpg"):
                    images[(s, m.name[:-4])] = tf.extractfile(m).read()
    return images


def test_clean_shards_apply_decisions_and_read_back_with_webdataset_and_parquet(audited, tmp_path):
    sample, out = audited
    cfg = CleanConfig(shard_size=120, apply_to="all", caption=CaptionPolicy(strategy="rna", p=0.5))
    r = run_clean(str(out), str(tmp_path / "clean"), cfg)
    _, [(n_in, n_keep)] = query(out, "SELECT count(*), count(*) FILTER (keep) FROM decisions")
    assert (r["input"], r["kept"], r["dropped"]) == (n_in, n_keep, n_in - n_keep) and r["written"] == n_keep
    assert r["shards"] == -(-n_keep // 120)
    src = source_images(sample, ["00000", "00001"])
    _, kept = query(out, "SELECT shard, key FROM decisions WHERE keep ORDER BY shard, key")
    got = []
    urls = sorted(tmp_path.glob("clean/*.tar"))
    for s in wds.WebDataset([str(u) for u in urls], shardshuffle=False, empty_check=False):
        meta = json.loads(s["json"])
        assert s["jpg"] == src[(meta["source_shard"], meta["source_key"])]  # byte for byte
        assert s["txt"].decode() == meta["caption"]
        if not meta["caption_changed"]:
            assert meta["caption"] == meta["original_caption"]
        got.append((meta["source_shard"], meta["source_key"]))
    assert got == [tuple(k) for k in kept]
    parquet = [r for u in urls for r in pq.read_table(u.with_suffix(".parquet")).to_pylist()]
    assert [r["source_key"] for r in parquet] == [k for _, k in kept]
    assert all(r["status"] == "success" for r in parquet)
    stats = [json.loads(u.with_name(u.stem + "_stats.json").read_text()) for u in urls]
    assert sum(s["successes"] for s in stats) == n_keep
    _, [(n_var,)] = query(out, f"SELECT count(*) FROM caption_variants WHERE run_id = '{r['run_id']}'")
    changed = sum(1 for r_ in parquet if r_["caption"] != r_["original_caption"])
    assert n_var == changed == r["captions_changed"] and 0.3 < changed / n_keep < 0.7


def test_output_is_deterministic_and_resumable(audited, tmp_path):
    _, out = audited
    cfg = CleanConfig(shard_size=200, apply_to="all", caption=CaptionPolicy(strategy="cwr", p=0.3, seed=7))
    run_clean(str(out), str(tmp_path / "a"), cfg)
    run_clean(str(out), str(tmp_path / "b"), cfg)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    tars = sorted(p.name for p in (tmp_path / "a").glob("*.tar"))
    assert [digest(tmp_path / "a" / t) for t in tars] == [digest(tmp_path / "b" / t) for t in tars]
    # lose one shard (as if the job was killed before it finished): the rerun redoes only it
    (tmp_path / "b" / tars[1]).unlink()
    (tmp_path / "b" / "_manifest" / "clean" / tars[1].replace(".tar", ".json")).unlink()
    r = run_clean(str(out), str(tmp_path / "b"), cfg)
    assert r["shards_skipped"] == len(tars) - 1
    assert digest(tmp_path / "a" / tars[1]) == digest(tmp_path / "b" / tars[1])


def test_a_destination_built_with_other_settings_is_refused(audited, tmp_path):
    _, out = audited
    run_clean(str(out), str(tmp_path / "c"), CleanConfig(shard_size=500))
    with pytest.raises(ValueError, match="other decisions or settings"):
        run_clean(str(out), str(tmp_path / "c"), CleanConfig(shard_size=100))
    shutil.rmtree(tmp_path / "c")


def test_clean_applies_a_configured_sanitizer_to_every_image(audited, tmp_path):
    import io

    import numpy as np
    from PIL import Image

    from audit.perturbations.image_sanitizers import sanitize_image
    from audit.ingest.image_decode import pil_rgb

    sample, out = audited
    r = run_clean(str(out), str(tmp_path / "clean"), CleanConfig(shard_size=1000, sanitize="median_filter"))
    assert r["sanitizer"] == "median_filter" and r["sanitizer_reason"] == "configured"
    src = source_images(sample, ["00000", "00001"])
    seen = 0
    for sample_ in wds.WebDataset(str(tmp_path / "clean" / "00000.tar"), shardshuffle=False):
        meta = json.loads(sample_["json"])
        assert "png" in sample_ and json.loads(meta["sanitizer"])["name"] == "median_filter"
        want = sanitize_image(np.asarray(pil_rgb(src[(meta["source_shard"], meta["source_key"])])), "median_filter", size=3)
        assert (np.asarray(Image.open(io.BytesIO(sample_["png"]))) == want).all()
        seen += 1
    assert seen == r["written"]


def test_auto_sanitize_follows_only_a_reference_backed_perturbed_verdict(audited, tmp_path):
    from pipelines.clean import chosen_sanitizer
    from audit.perturbations.config import SANITIZER_FILE
    from audit.io.output_dir import OutputDir

    _, out = audited
    record = json.loads((out / SANITIZER_FILE).read_text())  # written by the audit run (pseudo-labels, no reference)
    assert record["thresholds"] == "screening" and record["verdict"].startswith("screening: ")
    sanitizer, why = chosen_sanitizer(OutputDir(out), CleanConfig())
    assert sanitizer is None and "screening" in why
    copy = tmp_path / "copy"
    (copy / "exports").mkdir(parents=True)
    (copy / SANITIZER_FILE).write_text(json.dumps({**record, "verdict": "perturbed", "thresholds": "reference",
                                                   "failed": ["one_pixel"],
                                                   "sanitizer": {"name": "median_filter", "params": {"size": 3}}}))
    assert chosen_sanitizer(OutputDir(copy), CleanConfig())[0] == {"name": "median_filter", "params": {"size": 3}}
    assert chosen_sanitizer(OutputDir(copy), CleanConfig(sanitize="none"))[0] is None
    with pytest.raises(ValueError, match="clean.sanitize"):
        chosen_sanitizer(OutputDir(copy), CleanConfig(sanitize="orthogonal_projection"))


def test_auto_class_deconvolution_deconvolves_each_image_by_its_class_kernel(audited, tmp_path):
    """The audit's class-wise deconvolution (kernels per class name, the class read from the
    metadata field) applied by the clean job: images of a class with a kernel are deconvolved
    by it, the others are copied byte for byte; on pseudo-labels it is not applied."""
    import io

    import numpy as np
    from PIL import Image

    from audit.perturbations.class_deconvolution import deconvolve_image
    from audit.ingest.image_decode import pil_rgb
    from audit.io.output_dir import OutputDir
    from pipelines.clean import chosen_sanitizer
    from audit.perturbations.config import SANITIZER_FILE

    sample, out = audited
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    record = json.loads((copy / SANITIZER_FILE).read_text())
    kernel = [[0.0, 0.1, 0.0], [0.1, 0.6, 0.1], [0.0, 0.1, 0.0]]
    params = {"size": 3, "kernels": {"computer": kernel}, "applied": ["computer"], "label_field": "category"}
    (copy / SANITIZER_FILE).write_text(json.dumps({**record, "verdict": "perturbed", "thresholds": "reference",
                                                   "failed": ["linear_probe_spectrum"],
                                                   "sanitizer": {"name": "class_deconvolution", "params": params}}))
    r = run_clean(str(copy), str(tmp_path / "clean"), CleanConfig(shard_size=1000))
    assert r["sanitizer"] == "class_deconvolution"
    src = source_images(sample, ["00000", "00001"])
    n_deconvolved = n_copied = 0
    for s in wds.WebDataset(str(tmp_path / "clean" / "00000.tar"), shardshuffle=False):
        meta = json.loads(s["json"])
        original = src[(meta["source_shard"], meta["source_key"])]
        if meta.get("category") == "computer":
            want = deconvolve_image(np.asarray(pil_rgb(original)), kernel)
            assert (np.asarray(Image.open(io.BytesIO(s["png"]))) == want).all()
            assert json.loads(meta["sanitizer"])["name"] == "class_deconvolution"
            n_deconvolved += 1
        else:
            assert s["jpg"] == original and "sanitizer" not in meta
            n_copied += 1
    assert n_deconvolved > 0 and n_copied > 0

    pseudo = {**params, "label_field": None}
    (copy / SANITIZER_FILE).write_text(json.dumps({**record, "verdict": "perturbed", "thresholds": "reference",
                                                   "sanitizer": {"name": "class_deconvolution", "params": pseudo}}))
    sanitizer, why = chosen_sanitizer(OutputDir(copy), CleanConfig())
    assert sanitizer is None and "pseudo-labels" in why


@pytest.fixture(scope="module")
def copied_audit(demo_sample, tmp_path_factory):
    """An audit of a copy of one demo shard (the copy can be changed after the audit)."""
    root = tmp_path_factory.mktemp("copied")
    (root / "in").mkdir()
    shutil.copy(demo_sample / "00000.tar", root / "in" / "00000.tar")
    run_ingest(str(root / "in"), str(root / "out"), JobConfig(progress_seconds=0, embed=EmbedConfig(enabled=False)))
    return root


def test_a_destination_over_the_inputs_or_the_audit_is_refused_and_nothing_is_written(copied_audit, capsys):
    from pipelines.cli import main
    root = copied_audit
    out, inp = root / "out", root / "in"
    before = {p: snapshot(p) for p in (inp, out)}
    for dest, why in ((inp, "is the input shard folder"), (inp / "clean", "is inside the input shard folder"),
                      (root, "contains the audit output folder"), (out, "is the audit output folder"),
                      (out / "clean", "is inside the audit output folder")):
        for dry in ([], ["--dry-run"]):
            assert main(["clean", "--from", str(out), "--to", str(dest)] + dry) == 2, dest
            err = capsys.readouterr().err
            assert why in err and err.count("\n") == 1, err
    assert {p: snapshot(p) for p in (inp, out)} == before
    assert not (inp / "clean").exists() and not (out / "clean").exists()


def test_a_destination_with_files_we_did_not_write_is_refused_and_they_stay(copied_audit, capsys):
    from pipelines.cli import main
    root = copied_audit
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "00000.tar").write_bytes(b"someone else's shard")
    (foreign / "00000_stats.json").write_text("{}")
    assert main(["clean", "--from", str(root / "out"), "--to", str(foreign)]) == 2
    assert "which no clean run of ours wrote" in capsys.readouterr().err
    assert snapshot(foreign) == {"00000.tar": b"someone else's shard", "00000_stats.json": b"{}"}
    ours = root / "ours"
    assert main(["clean", "--from", str(root / "out"), "--to", str(ours)]) == 0
    for extra in ("00001.tar", "notes.txt", "_manifest/clean/00001.json", "_tmp/x"):
        p = ours / extra
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"not ours")
        before = snapshot(ours)
        capsys.readouterr()
        assert main(["clean", "--from", str(root / "out"), "--to", str(ours)]) == 2, extra
        assert f"holds {p}, which no clean run of ours wrote" in capsys.readouterr().err
        assert snapshot(ours) == before
        p.unlink()


def test_clean_from_a_folder_that_is_not_an_audit_is_refused_and_creates_nothing(tmp_path, capsys):
    from pipelines.cli import main
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    for src in (tmp_path / "notes", tmp_path / "missing"):
        assert main(["clean", "--from", str(src), "--to", str(tmp_path / "dest")]) == 2
        err = capsys.readouterr().err
        assert str(src) in err and err.count("\n") == 1 and "Traceback" not in err
        assert not (tmp_path / "dest").exists()


def test_a_source_image_changed_since_the_audit_is_a_failed_sample_not_copied(copied_audit, tmp_path):
    """Same length, different bytes: only the audited byte hash can tell."""
    root = copied_audit
    victim = tmp_path / "in"
    shutil.copytree(root / "in", victim)  # the audit's shard, changed below: point the audit at it
    _, [(key, offset, size)] = query(root / "out", "SELECT key, image_offset, image_bytes FROM samples "
                                                   "WHERE status = 'ok' ORDER BY key LIMIT 1 OFFSET 3")
    with open(root / "in" / "00000.tar", "r+b") as f:
        f.seek(offset + size // 2)
        b = f.read(16)
        f.seek(offset + size // 2)
        f.write(bytes(x ^ 0xFF for x in b))
    try:
        r = run_clean(str(root / "out"), str(tmp_path / "clean"), CleanConfig(shard_size=100))
    finally:
        shutil.copy(victim / "00000.tar", root / "in" / "00000.tar")  # the fixture's shard as it was
    assert r["failed"] == 1 and r["written"] == r["kept"] - 1
    written = []
    for u in sorted((tmp_path / "clean").glob("*.tar")):
        with tarfile.open(u) as tf:
            written += [json.loads(tf.extractfile(m).read())["source_key"] for m in tf if m.name.endswith(".json")]
    assert key not in written and len(written) == r["kept"] - 1
    rows = [x for u in sorted((tmp_path / "clean").glob("*.parquet")) for x in pq.read_table(u).to_pylist()]
    [bad] = [x for x in rows if x["status"] != "success"]
    assert (bad["source_key"], bad["status"]) == (key, "failed_to_download") and "sha256" in bad["error_message"]
    _, errs = query(root / "out", "SELECT shard, key, error_type FROM errors WHERE stage = 'clean'")
    assert errs == [("00000", key, "SourceChanged")]
