"""The memorization stage in the Beam job, and the prompts / replication commands.

The job tests use a RANDOMLY INITIALIZED checkpoint (the code path, the tables, the reruns);
`test_demo_model_separates_planted_pairs` uses the committed tiny model trained on the demo
sample (infra/demo/tiny_diffusion/), whose planted pairs the scorer must find.
"""

import dataclasses
import json
import shutil

import numpy as np
import pytest

import audit.memorization.scoring as memorization_scoring
from audit.memorization.detection_metrics import roc_auc
from audit.memorization.diffusion_models import DiffusionModel, image_pixels
from audit.embeddings.embedder_specs import EmbedConfig
from audit.memorization.scoring import ScoreConfig, score_pairs
from audit.memorization.training_filter import MemorizationFilter, load_key_list
from audit.memorization.shard import MemorizationConfig
from audit.io.store import query
from pipelines.cli import main
from pipelines.config import JobConfig, load_config
from pipelines.job import run_ingest
from tests.conftest import REPO
from tests.diffusion_checkpoints import demo_checkpoint, random_checkpoint

NO_EMBED = EmbedConfig(enabled=False)


@pytest.fixture(scope="module")
def two_shards(demo_sample, tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    for s in ("00000", "00003"):
        for ext in (".tar", ".parquet", "_stats.json"):
            shutil.copy(demo_sample / f"{s}{ext}", d / f"{s}{ext}")
    return d


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("ck") / "random-unet")


def mem_config(ckpt, **kw) -> JobConfig:
    mem = MemorizationConfig(model=str(ckpt), reference_shards=("00003",), pairs_per_batch=50,
                             score=ScoreConfig(timesteps=(200, 600), seeds=(0,)), **kw)
    return JobConfig(progress_seconds=0, embed=NO_EMBED, memorization=mem)


@pytest.mark.beam
def test_job_scores_every_ok_sample_flags_explains_and_decides(two_shards, ckpt, tmp_path):
    out = tmp_path / "out"
    s = run_ingest(str(two_shards), str(out), mem_config(ckpt))
    assert s.memorization["n_scored"] == s.n_ok
    _, [(n, n_ok)] = query(out, "SELECT (SELECT count(*) FROM memorization), "
                                "(SELECT count(*) FROM samples WHERE status = 'ok')")
    assert n == n_ok
    # the threshold is the reference shard's 99th-percentile cut: at most 1% of it is flagged
    _, [(thr, ref_n, flagged_ref, n_ref)] = query(out, """
        SELECT r.threshold, r.reference_count, count(*) FILTER (WHERE m.flagged), count(*)
        FROM memorization m, memorization_runs r WHERE m.shard = '00003' GROUP BY ALL""")
    assert ref_n == n_ref and flagged_ref <= 0.01 * n_ref
    _, flagged = query(out, "SELECT shard, key, trigger_tokens FROM memorization WHERE flagged")
    assert flagged, "a threshold at the reference's 1% cut flags some of 500 samples"
    for _, _, tokens in flagged:
        assert tokens and abs(sum(t["score"] for t in tokens) - 1) < 1e-6
    _, dec = query(out, "SELECT shard, key FROM decisions WHERE len(list_filter(reasons, lambda r: starts_with(r, 'memorized:'))) > 0")
    assert sorted(dec) == sorted((a, b) for a, b, _ in flagged)
    assert load_key_list(out / "exports" / "memorized_samples.jsonl") == {(s, k) for s, k, _ in flagged}
    page = (out / "reports" / "memorization.html").read_text()
    assert page.count("<img") >= len(flagged) and "<script" not in page
    filt = MemorizationFilter.from_store(out)
    assert filt.threshold == pytest.approx(thr) and len(filt.timesteps) == 2


@pytest.mark.beam
def test_rerun_reuses_scores_and_recalibrates_only_when_settings_change(two_shards, ckpt, tmp_path):
    out = tmp_path / "out"
    first = run_ingest(str(two_shards), str(out), mem_config(ckpt))
    again = run_ingest(str(two_shards), str(out), mem_config(ckpt))
    assert again.memorization == {} and "memorization" not in query(out, "SELECT job FROM runs ORDER BY run_id DESC")[1][0][0]
    stricter = run_ingest(str(two_shards), str(out), mem_config(ckpt, calibration_level=0.001))
    assert stricter.memorization["n_scored"] == first.memorization["n_scored"]
    assert stricter.memorization["threshold"] >= first.memorization["threshold"]
    assert stricter.memorization["n_flagged"] <= first.memorization["n_flagged"]
    _, [(files,)] = query(out, "SELECT count(DISTINCT run_id) FROM memorization_scores")
    assert files == 1  # scores were computed once
    _, [(runs,)] = query(out, "SELECT count(*) FROM memorization_runs_history")
    assert runs == 2


@pytest.mark.beam
def test_a_failing_model_batch_becomes_errors_rows(two_shards, ckpt, tmp_path, monkeypatch):
    real = memorization_scoring.score_rows
    calls = {"n": 0}

    def flaky(model, cfg, captions, images):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(model, cfg, captions, images)

    monkeypatch.setattr(memorization_scoring, "score_rows", flaky)
    cfg = mem_config(ckpt)
    cfg = dataclasses.replace(cfg, memorization=dataclasses.replace(cfg.memorization, reference_shards=()))
    s = run_ingest(str(two_shards / "00000.tar"), str(tmp_path / "out"), cfg)
    _, [(n_err,)] = query(tmp_path / "out", "SELECT count(*) FROM errors WHERE stage = 'memorization' "
                                            "AND error_type = 'MemorizationFailed'")
    assert n_err == 50 and s.memorization["n_scored"] == s.n_ok - 50


@pytest.mark.beam
def test_unknown_reference_shard_is_a_clear_error(two_shards, ckpt, tmp_path):
    cfg = mem_config(ckpt)
    cfg = dataclasses.replace(cfg, memorization=dataclasses.replace(cfg.memorization, reference_shards=("99999",)))
    with pytest.raises(Exception, match="reference"):
        run_ingest(str(two_shards / "00000.tar"), str(tmp_path / "out"), cfg)


def test_prompts_command_flags_and_escapes(ckpt, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red fox\n<script>alert(1)</script>\nflag of mongolia\n\n")
    jl = tmp_path / "out.jsonl"
    assert main(["prompts", "--diffusion-model", str(ckpt), "--prompts", str(prompts), "--fpr", "0.5",
                 "--seeds", "2", "--jsonl", str(jl)]) == 0
    rows = [json.loads(line) for line in jl.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["a red fox", "<script>alert(1)</script>", "flag of mongolia"]
    assert any(r["flagged"] for r in rows)
    assert all(r["trigger_tokens"] for r in rows if r["flagged"])
    assert "prompts flagged" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_model_separates_planted_pairs(tmp_path):
    """The committed tiny model memorized its planted pairs: AUC >= 0.95 against every other pair."""
    import sys
    sys.path.insert(0, str(REPO / "infra" / "demo"))
    import tiny_diffusion
    ck = demo_checkpoint(tmp_path / "tiny")
    planted = {p["key"] for p in json.loads((ck / "planted.json").read_text())["planted"]}
    pairs = tiny_diffusion.read_pairs(tiny_diffusion.SAMPLE)
    pairs = [p for p in pairs if p["key"] in planted] + [p for p in pairs if p["key"] not in planted][::3]
    model = DiffusionModel.load(ck)
    cfg = load_config(REPO / "infra" / "demo" / "job.yaml").memorization.score
    d = score_pairs(model, image_pixels([p["image"] for p in pairs], model.resolution),
                    [p["caption"] for p in pairs], cfg).mean(1)
    labels = np.array([p["key"] in planted for p in pairs])
    assert labels.sum() == 10
    assert roc_auc(d, labels) >= 0.95


@pytest.mark.beam
def test_action_keep_leaves_pairs_in_and_clean_randomizes_their_captions(two_shards, ckpt, tmp_path):
    from audit.captions.strategies import CaptionPolicy
    from audit.clean.shards import CleanConfig
    from pipelines.clean import run_clean
    out = tmp_path / "out"
    cfg = mem_config(ckpt, action="keep")
    cfg = dataclasses.replace(cfg, dedup=dataclasses.replace(cfg.dedup, enabled=False))
    run_ingest(str(two_shards), str(out), cfg)
    _, flagged = query(out, "SELECT shard, key FROM memorization WHERE flagged")
    _, [(n_mem,)] = query(out, "SELECT count(*) FROM decisions WHERE len(reasons) > 0 AND reasons[1] LIKE 'memorized:%'")
    assert flagged and n_mem == 0
    clean = CleanConfig(apply_to="flagged", caption=CaptionPolicy(strategy="rt", p=1.0))
    run_clean(str(out), str(tmp_path / "clean"), clean)
    _, changed = query(out, "SELECT shard, key FROM caption_variants")
    assert set(changed) == set(flagged)
