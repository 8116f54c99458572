import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.config import JobConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ["audit.ingest.sample_validation", "audit.ingest.image_decode", "audit.embeddings.config", "audit.clean.shards",
            "audit.memorization.config", "audit.dedup.config", "audit.perturbations.config"]  # what pipelines.config reads its sections from


def imported_by(module: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after importing `module`."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in json.loads(out.splitlines()[-1])}


def test_the_config_sections_import_without_torch():
    assert {"audit", "yaml"} <= imported_by("pipelines.config")  # the check sees imports
    heavy = {m: sorted(imported_by(m) & {"torch", "diffusers", "open_clip", "transformers", "apache_beam"})
             for m in SECTIONS}
    assert heavy == {m: [] for m in SECTIONS}
    sections = {type(getattr(JobConfig(), f.name)).__module__ for f in dataclasses.fields(JobConfig)} - {"builtins"}
    assert sections == set(SECTIONS) - {"audit.ingest.image_decode"}  # SECTIONS is the list


def test_parsing_the_job_config_does_not_import_torch():
    assert "torch" not in imported_by("pipelines.config")


def test_yaml_overrides_defaults(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("ingest:\n  require_caption: false\n  image:\n    min_side: 4\n    formats: [JPEG]\n")
    c = load_config(p)
    assert c.ingest.require_caption is False
    assert c.ingest.image.min_side == 4 and c.ingest.image.formats == ("JPEG",)


@pytest.mark.parametrize("text,msg", [
    ("ingest:\n  min_sidee: 3\n", "unknown key 'min_sidee'"),
    ("ingest:\n  require_caption: 'no'\n", "expected bool"),
    ("ingest:\n  image:\n    max_pixels: lots\n", "expected a number"),
])
def test_bad_config_fails_fast(tmp_path, text, msg):
    p = tmp_path / "job.yaml"
    p.write_text(text)
    with pytest.raises(ValueError, match=msg):
        load_config(p)


def test_shipped_job_yaml_is_valid():
    from tests.conftest import REPO
    assert load_config(REPO / "infra" / "job.yaml").ingest.image.min_side >= 1


def _numeric_keys(cls, prefix=""):
    """Every numeric leaf key of a config dataclass tree (lists of numbers included)."""
    import dataclasses
    keys = []
    for f in dataclasses.fields(cls):
        default = getattr(cls(), f.name)
        if dataclasses.is_dataclass(default):
            keys += _numeric_keys(type(default), f"{prefix}{f.name}.")
        elif isinstance(default, tuple):
            keys += [f"{prefix}{f.name}"] if default and isinstance(default[0], (int, float)) else []
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            keys.append(f"{prefix}{f.name}")
    return keys


def test_every_numeric_key_has_a_declared_range_that_its_default_meets():
    from pipelines.config import RANGES, JobConfig, in_range
    keys = _numeric_keys(JobConfig)
    assert sorted(keys) == sorted(RANGES), set(keys) ^ set(RANGES)
    cfg = JobConfig()
    for key in keys:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        assert all(in_range(v, RANGES[key]) for v in (value if isinstance(value, tuple) else [value])), key


def _yaml_for(key: str, value) -> str:
    *sections, leaf = key.split(".")
    lines = [f"{'  ' * i}{s}:" for i, s in enumerate(sections)]
    return "\n".join(lines + [f"{'  ' * len(sections)}{leaf}: {value}"]) + "\n"


def _outside(spec: str) -> list[str]:
    lo, hi = (float(x) for x in spec[1:-1].split(","))
    bad = [".nan", "-.inf", ".inf"]
    bad.append(repr(lo) if spec[0] == "(" else repr(lo - 1))
    if hi != float("inf"):
        bad.append(repr(hi) if spec[-1] == ")" else repr(hi + 1))
    return bad


def _cases():
    from pipelines.config import RANGES
    return [(key, bad) for key, spec in sorted(RANGES.items()) for bad in _outside(spec)]


@pytest.mark.parametrize("key,bad", _cases())
def test_every_number_outside_its_range_or_not_finite_is_a_usage_error_naming_the_key(tmp_path, key, bad):
    from audit.io.user_errors import UsageError
    from pipelines.config import JobConfig
    p = tmp_path / "job.yaml"
    cfg, value = JobConfig(), None
    for part in key.split("."):
        cfg = getattr(cfg, part)
    value = f"[{bad}]" if isinstance(cfg, tuple) else bad
    if isinstance(cfg, tuple) or isinstance(cfg, int):  # whole numbers: a float is refused too
        value = value.replace(".0", "")
    p.write_text(_yaml_for(key, value))
    with pytest.raises(UsageError) as e:
        load_config(p, environ=None)
    msg = str(e.value)
    assert str(p) in msg and key.split(".")[-1] in msg and "\n" not in msg


@pytest.mark.parametrize("text,msg", [
    ("embed:\n  batch_size: 0\n", "out of range"),
    ("dedup:\n  near_threshold: -0.5\n", "out of range"),
    ("ingest:\n  max_failed_fraction: .nan\n", "not a finite number"),
    ("embed:\n  batch_size: 2.5\n", "whole number"),
    ("ingest: [\n", "not valid plain YAML at line 2"),
    ("ingest:\n\tbad: tab\n", "not valid plain YAML at line 2"),
    ("x: !!python/object/apply:os.system ['touch pwned']\n", "not valid plain YAML"),
    ("clean:\n  caption:\n    strategy: nope\n", "unknown caption strategy"),
])
def test_bad_yaml_and_values_are_one_line_usage_errors(tmp_path, monkeypatch, text, msg):
    from audit.io.user_errors import UsageError
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "job.yaml"
    p.write_text(text)
    with pytest.raises(UsageError, match=msg) as e:
        load_config(p, environ=None)
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "pwned").exists()


def test_a_missing_or_binary_config_file_is_a_usage_error(tmp_path):
    from audit.io.user_errors import UsageError
    with pytest.raises(UsageError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UsageError, match="bin.yaml"):
        load_config(tmp_path / "bin.yaml")


def test_flags_get_the_same_range_checks():
    from audit.io.user_errors import UsageError
    from pipelines.config import JobConfig, with_overrides
    with pytest.raises(UsageError, match="embed.batch_size: 0 is out of range"):
        with_overrides(JobConfig(), "embed", batch_size=0)
    with pytest.raises(UsageError, match="dedup.near_threshold"):
        with_overrides(JobConfig(), "dedup", near_threshold=float("nan"))
    assert with_overrides(JobConfig(), "clean", shard_size=5).clean.shard_size == 5
