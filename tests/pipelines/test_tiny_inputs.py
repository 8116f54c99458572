"""Tiny inputs: every corpus step handles a shard of 0, 1, 2 or 5 samples (skips with a note,
never crashes the run).

The default job (pipelines/config.py defaults: SSCD + MiniLM, global dedup, k-means
pseudo-labels, report) and a second config that reaches the other corpus paths (metadata labels
with min_samples 1 so the class tests are attempted, partitioned dedup, memorization on a
random-weight checkpoint) each run through the CLI on one shard cut from the demo sample.
Each run must exit 0, write a 'succeeded' runs row whose counts reconcile with the samples and
errors tables, say why a step was skipped, and write the report.
"""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from audit.io.store import query
from pipelines.cli import main
from tests.diffusion_checkpoints import random_checkpoint
from tests.job_outputs import read_samples, write_tar

pytestmark = pytest.mark.beam  # runs Beam jobs (tests/conftest.py)

SIZES = (0, 1, 2, 5)
N_OK = {0: 0, 1: 1, 2: 1, 5: 5}  # the 2-sample shard holds one broken image


@pytest.fixture(scope="module")
def tiny(demo_sample, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    src = read_samples(demo_sample / "00000.tar")
    ok = [k for k in sorted(src) if min(Image.open(io.BytesIO(src[k]["jpg"])).size) >= 16]
    for n in SIZES:
        (root / f"in{n}").mkdir()
        samples = [(k, src[k]) for k in ok[:n]]
        if n == 2:  # one good image and one truncated JPEG (an errors row)
            samples[1] = (samples[1][0], {**samples[1][1], "jpg": samples[1][1]["jpg"][:200]})
        write_tar(root / f"in{n}" / f"t{n}.tar", samples)
    ckpt = random_checkpoint(root / "ckpt")
    (root / "labels.yaml").write_text(f"""
progress_seconds: 0
embed: {{captions: false, device: cpu}}
dedup: {{mode: partitioned}}
memorization: {{model: {json.dumps(str(ckpt))}, pairs_per_batch: 8, score: {{timesteps: [200], seeds: [0]}}}}
perturbations: {{label_field: category, min_samples: 1, bootstrap: 2, device: cpu}}
""")
    return root


def run_row(out) -> dict:
    cols, [row] = query(out, "SELECT status, n_inputs, n_ok, n_failed, notes, memorization_json, "
                             "perturbations_json FROM runs")
    return dict(zip(cols, row))


def counts(out) -> tuple[int, int, int]:
    _, [row] = query(out, "SELECT (SELECT count(*) FROM samples), (SELECT count(*) FROM errors), "
                          "(SELECT count(*) FROM decisions)")
    return row


@pytest.mark.parametrize("n", SIZES)
def test_default_job_on_a_tiny_shard(tiny, n, tmp_path):
    out = tmp_path / "out"
    assert main(["run", "--input", str(tiny / f"in{n}"), "--out", str(out), "-q"]) == 0
    r = run_row(out)
    assert r["status"] == "succeeded" and r["n_inputs"] == n == r["n_ok"] + r["n_failed"] and r["n_ok"] == N_OK[n]
    assert counts(out) == (n, r["n_failed"], n)
    notes = json.loads(r["perturbations_json"])["notes"]
    want = {0: "tests skipped: no ok samples", 1: "k-means pseudo-labels need at least 2 samples",
            2: "k-means pseudo-labels need at least 2 samples", 5: "fewer than min_samples=100"}[n]
    assert any(want in x for x in notes), notes
    _, new = query(out, "SELECT shard FROM run_changes WHERE change = 'new_shard'")
    assert new == [(f"t{n}",)]
    assert (out / "reports" / "index.html").exists()


@pytest.mark.parametrize("n", SIZES)
def test_labels_partitioned_memorization_job_on_a_tiny_shard(tiny, n, tmp_path):
    out = tmp_path / "out"
    assert main(["run", "--input", str(tiny / f"in{n}"), "--out", str(out), "--config", str(tiny / "labels.yaml")]) == 0
    r = run_row(out)
    assert r["status"] == "succeeded" and r["n_inputs"] == n == r["n_ok"] + r["n_failed"] and r["n_ok"] == N_OK[n]
    assert counts(out) == (n, r["n_failed"], n)
    pert = json.loads(r["perturbations_json"])
    if n == 0:
        assert any("memorization flags skipped: no sample was scored" in x for x in r["notes"]), r["notes"]
        assert any("no ok sample has the metadata field" in x for x in pert["notes"]), pert["notes"]
    else:
        assert json.loads(r["memorization_json"])["n_scored"] == N_OK[n]
        # one class (and < 5 samples per class): the tests are attempted, none can run, no verdict
        assert pert["n_tested"] == N_OK[n] and pert["verdict"] == "untested"
        assert any("tests skipped: no test could run" in x for x in pert["notes"]), pert["notes"]
        _, verdicts = query(out, "SELECT DISTINCT verdict FROM perturbation_tests WHERE data = 'original'")
        assert verdicts == [("skipped",)]
    assert (out / "reports" / "index.html").exists()


def test_a_one_sample_reference_gives_screening_with_a_note(tiny, tmp_path):
    out, cfg = tmp_path / "out", tmp_path / "ref.yaml"
    cfg.write_text((tiny / "labels.yaml").read_text().replace("min_samples: 1,", "min_samples: 1, reference_shards: [t1],"))
    assert main(["run", "--input", f"{tiny / 'in1'},{tiny / 'in5'}", "--out", str(out), "--config", str(cfg)]) == 0
    r = run_row(out)
    assert r["status"] == "succeeded" and r["n_inputs"] == 6 == r["n_ok"] + r["n_failed"] == r["n_ok"]
    pert = json.loads(r["perturbations_json"])
    assert pert["thresholds"] == "screening" and pert["n_reference"] == 0
    assert any("reference shards ['t1']: 1 labelled samples, too few" in x for x in pert["notes"]), pert["notes"]
    assert any("feature flags: the reference shards have 1 samples" in x for x in pert["notes"]), pert["notes"]
    _, [(flagged,)] = query(out, "SELECT count(*) FILTER (flagged) FROM perturbation_flags")
    assert flagged < 5  # one reference sample spans no range: it must not flag every other sample
