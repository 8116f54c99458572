"""Config precedence: defaults < YAML < SHARDGUARD_* environment < flags; bad env values fail fast."""

import pytest

from pipelines.cli.dispatch import _parser
from pipelines.cli.run_command import run_config
from pipelines.config import JobConfig, load_config


def _yaml(tmp_path, text):
    p = tmp_path / "job.yaml"
    p.write_text(text)
    return p


def test_defaults_then_yaml_then_environment(tmp_path):
    p = _yaml(tmp_path, "progress_seconds: 2\ndedup:\n  near_threshold: 0.7\n  keep_policy: earliest\n")
    env = {"SHARDGUARD_DEDUP__NEAR_THRESHOLD": "0.8", "SHARDGUARD_PROGRESS_SECONDS": "0",
           "SHARDGUARD_INGEST__IMAGE__FORMATS": "[JPEG, PNG]", "SHARDGUARD_EMBED__DEVICE": "cpu",
           "SHARDGUARD_EMBED__CAPTIONS": "false", "OTHER_VAR": "ignored", "SHARDGUARD_TEST_ARTIFACTS": "/tmp/x"}
    c = load_config(p, environ=env)
    assert c.dedup.near_threshold == 0.8 and c.progress_seconds == 0.0  # env over YAML
    assert c.dedup.keep_policy == "earliest"  # YAML kept where the env says nothing
    assert c.ingest.image.formats == ("JPEG", "PNG") and c.embed.device == "cpu" and c.embed.captions is False
    assert c.dedup.semantic_threshold == JobConfig().dedup.semantic_threshold  # default
    assert load_config(None, environ={"SHARDGUARD_DEDUP__NEAR_THRESHOLD": "0.6"}).dedup.near_threshold == 0.6
    assert load_config(p, environ=None).dedup.near_threshold == 0.7


def test_flags_win_over_environment_and_yaml(tmp_path, monkeypatch):
    p = _yaml(tmp_path, "dedup:\n  near_threshold: 0.7\nembed:\n  batch_size: 8\n")
    monkeypatch.setenv("SHARDGUARD_DEDUP__NEAR_THRESHOLD", "0.8")
    monkeypatch.setenv("SHARDGUARD_EMBED__BATCH_SIZE", "16")
    args, _ = _parser().parse_known_args(["run", "--input", "x", "--out", "y", "--config", str(p),
                                          "--near-threshold", "0.9"])
    c = run_config(args)
    assert c.dedup.near_threshold == 0.9 and c.embed.batch_size == 16


@pytest.mark.parametrize("var,value,msg", [
    ("SHARDGUARD_DEDUP__NEAR_THRESHOLD", "high", "expected a number, got 'high'"),
    ("SHARDGUARD_EMBED__CAPTIONS", "maybe", "expected bool"),
    ("SHARDGUARD_INGEST__IMAGE__FORMATS", "JPEG", "expected a list"),
    ("SHARDGUARD_DEDUP__NEAR_THRESHOLDD", "0.8", "unknown config key 'dedup.near_thresholdd'"),
    ("SHARDGUARD_DEDPU__NEAR_THRESHOLD", "0.8", "unknown config key 'dedpu'"),
    ("SHARDGUARD_PROGRESS_SECONDS__X", "1", "unknown config key 'progress_seconds.x'"),
])
def test_bad_environment_value_names_the_variable(var, value, msg):
    with pytest.raises(ValueError) as e:
        load_config(None, environ={var: value})
    assert f"environment variable {var}" in str(e.value) and msg in str(e.value)


def test_yaml_list_key_given_a_scalar_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="formats: expected a list"):
        load_config(_yaml(tmp_path, "ingest:\n  image:\n    formats: JPEG\n"), environ={})
