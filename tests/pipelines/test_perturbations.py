"""The perturbation audit in the Beam job on real demo shards: per-sample features in the
streaming pass, the corpus tests with labels from metadata or k-means pseudo-labels, the tables,
reconciliation, reruns, and errors rows for images that can no longer be analysed."""

import json
import shutil

import pytest

from audit.embeddings.embedder_specs import EmbedConfig
from audit.perturbations.perturbation_audit import PerturbationConfig
from audit.io.store import query
from pipelines.config import JobConfig
from pipelines.job import run_ingest
from audit.perturbations.feature_stage import FEATURE_STAGE, FeatureStage
from audit.ingest.shard_runner import stage_rows
from audit.perturbations.config import SANITIZER_FILE


def shard_features(shard, uri, rows, run_id, batch=64):
    got = stage_rows([FeatureStage()], shard, uri, rows, run_id, batch_size=batch)[FEATURE_STAGE]
    return got.rows, got.errors

NO_EMBED = EmbedConfig(enabled=False)


@pytest.fixture(scope="module")
def shards(demo_sample, tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    for s in ("00000", "00001", "00003"):
        for ext in (".tar", ".parquet", "_stats.json"):
            shutil.copy(demo_sample / f"{s}{ext}", d / f"{s}{ext}")
    return d


def config(**kw) -> JobConfig:
    pert = PerturbationConfig(**{"label_field": "category", "reference_shards": ("00003",), "bootstrap": 3,
                                 "mlp": False, "max_sanitizers": 1, "device": "cpu", **kw})
    return JobConfig(progress_seconds=0, embed=NO_EMBED, perturbations=pert)


@pytest.mark.beam
def test_job_writes_features_tests_and_flags_that_reconcile(shards, tmp_path):
    out = tmp_path / "out"
    s = run_ingest(str(shards), str(out), config())
    p = s.perturbations
    assert p["label_source"] == "metadata:category" and p["n_reference"] > 0 and p["n_tested"] >= 100
    # every ok sample has exactly one features row or one errors row
    _, [(n_ok, n_feat, n_err)] = query(out, """
        SELECT (SELECT count(*) FROM samples WHERE status = 'ok'),
               (SELECT count(*) FROM perturbation_samples),
               (SELECT count(*) FROM errors WHERE stage = 'perturbation_features')""")
    assert n_feat + n_err == n_ok and n_feat > 0
    _, [(n_flags,)] = query(out, "SELECT count(*) FROM perturbation_flags")
    assert n_flags == n_feat
    _, rows = query(out, "SELECT test, verdict, threshold_source, statistic FROM perturbation_tests "
                         "WHERE scope = 'dataset' AND data = 'original' ORDER BY test")
    tests = {r[0]: r for r in rows}
    assert {"linear_probe_pixels", "linear_probe_residual", "template_snr", "one_pixel", "learning_speed"} <= set(tests)
    assert all(r[1] in ("pass", "fail", "skipped") for r in rows)
    assert tests["template_snr"][2] == "reference"
    _, per_class = query(out, "SELECT DISTINCT label FROM perturbation_tests WHERE scope = 'class'")
    assert {"computer", "shapes"} <= {r[0] for r in per_class}
    record = json.loads((out / SANITIZER_FILE).read_text())
    assert record["run_id"] == s.run_id and record["verdict"] in ("clean", "perturbed")
    _, [(pj,)] = query(out, f"SELECT perturbations_json FROM runs WHERE run_id = '{s.run_id}'")
    assert json.loads(pj)["verdict"] == record["verdict"]
    # a rerun with the same config does nothing; a new config re-tests without recomputing features
    again = run_ingest(str(shards), str(out), config())
    assert again.perturbations == {}
    third = run_ingest(str(shards), str(out), config(z=4.0))
    assert third.perturbations["n_tested"] == p["n_tested"]
    _, [(n_feat_runs,)] = query(out, "SELECT count(DISTINCT run_id) FROM perturbation_samples")
    assert n_feat_runs == 1


@pytest.mark.beam
def test_pseudo_labels_from_image_embeddings_when_there_is_no_label_field(shards, tmp_path):
    one = tmp_path / "in"
    one.mkdir()
    for ext in (".tar", ".parquet", "_stats.json"):
        shutil.copy(shards / f"00000{ext}", one / f"00000{ext}")
    cfg = JobConfig(progress_seconds=0, embed=EmbedConfig(captions=False),
                    perturbations=PerturbationConfig(clusters=4, bootstrap=2, mlp=False, sanitize=False, device="cpu"))
    s = run_ingest(str(one), str(tmp_path / "out"), cfg)
    assert s.perturbations["label_source"].startswith("kmeans:sscd") and s.perturbations["label_source"].endswith("k=4")
    _, rows = query(tmp_path / "out", "SELECT test, mode, verdict, p_value, p_adjusted, null_model FROM perturbation_tests "
                                      "WHERE scope = 'dataset' AND data = 'original'")
    tests = {r[0]: r[1:] for r in rows}
    # no reference: screening, every screening test with its p-value, its null and a Holm-adjusted p
    assert set(tests) >= {"removed_vs_kept", "removed_spectrum_vs_kept", "one_pixel", "template_snr"}
    assert all(mode == "screening" for mode, *_ in tests.values())
    for t in ("removed_vs_kept", "removed_spectrum_vs_kept", "one_pixel"):
        mode, verdict, p, p_adj, null = tests[t]
        assert verdict in ("pass", "fail") and 0 <= p <= 1 and p <= p_adj <= 1 and null
    assert tests["template_snr"][1] == "context" and tests["template_snr"][2] is None
    assert "linear_probe_residual" not in tests  # fixed bounds are not a verdict without a reference
    assert s.perturbations["verdict"].startswith("screening: ") and s.perturbations["thresholds"] == "screening"


@pytest.mark.beam
def test_no_labels_is_a_note_not_a_failure(shards, tmp_path):
    one = tmp_path / "in"
    one.mkdir()
    for ext in (".tar", ".parquet", "_stats.json"):
        shutil.copy(shards / f"00000{ext}", one / f"00000{ext}")
    s = run_ingest(str(one), str(tmp_path / "out"), config(label_field=""))
    assert any("no labels" in n for n in s.perturbations["notes"])


def test_an_image_that_no_longer_decodes_becomes_an_errors_row(shards, tmp_path):
    rows = [{"key": "good", "image_offset": 0, "image_bytes": 10}]
    feats, errors = shard_features("00000", str(shards / "00000.tar"), rows, "r")
    assert feats == [] and len(errors) == 1 and errors[0]["stage"] == "perturbation_features"


def test_class_wise_sanitizer_parameters_are_exported_by_class_name():
    from pipelines.perturbations import named_params
    params = {"size": 3, "kernels": {0: [[1.0]], 2: [[0.5]]}, "applied": [0, 2]}
    out = named_params(params, ["animals", "computer", "shapes"], PerturbationConfig(label_field="category"))
    assert out == {"size": 3, "kernels": {"animals": [[1.0]], "shapes": [[0.5]]}, "applied": ["animals", "shapes"],
                   "label_field": "category"}
    assert named_params(params, ["a", "b", "c"], PerturbationConfig())["label_field"] is None  # pseudo-labels
    assert named_params({"quality": 10}, ["a"], PerturbationConfig()) == {"quality": 10}


def test_hostile_images_in_the_feature_pass_are_rows_of_that_stage(tmp_path):
    """Issue 19: malformed EXIF, a bomb header and a cut JPEG next to good images: one
    perturbation_features errors row each (the bomb refused from its header), features for the rest."""
    from tests.image_mutations import changed_since_ingest
    uri, rows, want = changed_since_ingest(tmp_path)
    feats, errors = shard_features("s", uri, rows, "r", batch=len(rows))
    assert sorted(f["key"] for f in feats) == ["good0", "good1", "good2"]
    got = {e["key"]: e for e in errors}
    assert set(got) == set(want)
    for key, error_type in want.items():
        assert got[key]["stage"] == "perturbation_features" and error_type in got[key]["message"]


def test_native_features_convert_only_the_central_crop_and_match_the_whole_image():
    import io

    import numpy as np
    from PIL import Image

    from audit.ingest.image_decode import decode_rgb
    from audit.perturbations.features import sample_features
    from audit.perturbations.feature_stage import native_features
    rng = np.random.default_rng(0)
    arr = (rng.integers(100, 140, (900, 1300), dtype=np.uint8))
    for r, c in ((450, 650), (300, 500), (600, 800)):
        arr[r, c] = 255  # isolated extremes inside the central crop
    img = Image.fromarray(arr).convert("P")
    img.info["transparency"] = int(np.asarray(img)[0, 0])
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=img.info["transparency"])
    data = buf.getvalue()
    want = sample_features(np.asarray(decode_rgb(data)))
    got = native_features(data)
    assert got == want and got["n_isolated_extreme"] >= 3
