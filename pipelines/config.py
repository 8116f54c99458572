"""Job configuration: defaults in code < a YAML file < environment variables < flags.

Input: an optional YAML path (see infra/job.yaml for every key with its default and meaning),
the environment (SHARDGUARD_<SECTION>__<KEY>=value, e.g. SHARDGUARD_DEDUP__NEAR_THRESHOLD=0.8;
top-level keys SHARDGUARD_<KEY>, e.g. SHARDGUARD_PROGRESS_SECONDS=0; values parsed as YAML
scalars/lists, string keys taken verbatim, then the same type checks as the file; a name with
'__' must be a config key, one without is config only if it names a top-level key) and flag
overrides. Output: `JobConfig`. Failure: `UsageError` (a ValueError; CLI exit 2), one line
naming the file, variable or flag and the key: a file that is missing or not YAML (syntax errors,
python tags such as !!python/object: only plain YAML is read), an unknown key, a value of the
wrong type, or a number outside its declared range (`RANGES`: every numeric key has one; NaN
and infinities are refused), so a typo in a nightly job's config fails fast instead of being
ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from audit.clean.shards import CleanConfig
from audit.dedup.config import DedupConfig
from audit.embeddings.config import EmbedConfig
from audit.ingest.image_decode import ImageLimits
from audit.memorization.config import MemorizationConfig
from audit.perturbations.config import PerturbationConfig
from audit.ingest.sample_validation import IngestLimits
from audit.io.user_errors import UsageError

# Every numeric config key and the values it may take: "[lo, hi]" closed, "(lo, hi)" open, "inf"
# for no upper bound. A list key (timesteps, seeds) applies it to each element.
RANGES: dict[str, str] = {
    "progress_seconds": "[0, inf)",
    "ingest.max_member_bytes": "[1, inf)", "ingest.max_caption_chars": "[1, inf)",
    "ingest.max_meta_depth": "[1, inf)", "ingest.max_failed_fraction": "[0, 1]",
    "ingest.max_failed_samples": "[0, inf)", "ingest.max_sample_bytes": "[1024, 1099511627776]",
    "ingest.image.max_bytes": "[1, inf)", "ingest.image.max_pixels": "[1, inf)", "ingest.image.min_side": "[1, inf)",
    "ingest.image.max_side": "[1, inf)", "ingest.image.max_aspect_ratio": "[1, inf)",
    "ingest.image.max_decode_mb": "[16, 65536]",
    "ingest.retry.attempts": "[1, inf)", "ingest.retry.initial_seconds": "[0, inf)", "ingest.retry.multiplier": "[1, inf)",
    "ingest.retry.max_seconds": "[0, inf)", "ingest.retry.jitter": "[0, 1]",
    "embed.sscd_size": "[1, inf)", "embed.batch_size": "[1, inf)",
    "dedup.near_threshold": "[0, 1]", "dedup.semantic_threshold": "[0, 1]", "dedup.caption_threshold": "[0, 1]",
    "dedup.n_centroids": "[0, inf)", "dedup.top_centroids": "[1, inf)",
    "dedup.near_verify_below": "[0, 1]", "dedup.near_verify_overlap": "[0, 1]",
    "dedup.near_candidate_threshold": "[0, 1]", "dedup.near_candidates": "[0, 64]",
    "dedup.index.exact_max": "[0, inf)", "dedup.index.nprobe": "[1, inf)", "dedup.index.train_sample": "[1, inf)",
    "dedup.index.block": "[1, inf)", "dedup.index.block_bytes": "[1, inf)",
    "clean.shard_size": "[1, inf)", "clean.epochs": "[1, inf)",
    "clean.caption.p": "[0, 1]", "clean.caption.n": "[0, inf)", "clean.caption.seed": "[0, inf)",
    "memorization.pairs_per_batch": "[1, inf)", "memorization.calibration_level": "(0, 100)",
    "memorization.trigger_tokens_max": "[0, inf)",
    "memorization.score.timesteps": "[0, inf)", "memorization.score.seeds": "[0, inf)",
    "memorization.score.first_steps": "[1, inf)", "memorization.score.batch_rows": "[2, inf)",
    "memorization.score.sampler.inference_steps": "[1, inf)", "memorization.score.sampler.guidance_scale": "[0, inf)",
    "perturbations.clusters": "[1, inf)", "perturbations.min_samples": "[0, inf)",
    "perturbations.max_samples": "[1, inf)", "perturbations.crop": "[1, inf)", "perturbations.bootstrap": "[1, inf)",
    "perturbations.z": "[0, inf)", "perturbations.alpha": "(0, 1)", "perturbations.sample_fpr": "(0, 1)", "perturbations.feature_fpr": "(0, 1)",
    "perturbations.max_sanitizers": "[0, inf)", "perturbations.seed": "[0, inf)",
}


def in_range(value: float, spec: str) -> bool:
    lo, hi = (float(x) for x in spec[1:-1].split(","))
    return (lo <= value if spec[0] == "[" else lo < value) and (value <= hi if spec[-1] == "]" else value < hi)


def _number(value, default, key: str, where: str):
    """`value` as the type of `default` (int or float), checked against RANGES[key]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise UsageError(f"{where}: {value!r} is not a finite number; set a number in {RANGES.get(key, 'range')}")
    if isinstance(default, int) and value != int(value):
        raise UsageError(f"{where}: expected a whole number, got {value!r}")
    value = type(default)(value)
    spec = RANGES.get(key)
    if spec is None:
        raise UsageError(f"{where}: no declared range for {key!r}")  # a new numeric key must be added to RANGES
    if not in_range(value, spec):
        raise UsageError(f"{where}: {value!r} is out of range; set a value in {spec}")
    return value


@dataclass
class JobConfig:
    ingest: IngestLimits = field(default_factory=IngestLimits)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    memorization: MemorizationConfig = field(default_factory=MemorizationConfig)
    perturbations: PerturbationConfig = field(default_factory=PerturbationConfig)
    progress_seconds: float = 5.0
    input: str = ""  # shard URI pattern of `shardguard run` (--input wins); lets a scheduler run one command
    out: str = ""  # output folder of `shardguard run` (--out wins)
    report: bool = True  # write OUT/reports/index.html at the end of every run (audit.report.run_report)
    split_gpu_stages: bool = False  # GPU stages as their own Beam step (Dataflow/portable: keeps their resource hints)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _build(cls, values: dict, where: str, path: str = ""):
    if not isinstance(values, dict):
        raise UsageError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        if name not in fields:
            raise UsageError(f"{where}: unknown key {name!r} (known: {', '.join(fields)})")
        default = getattr(cls(), name)
        key = f"{path}{name}"
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}", f"{key}.")
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)):
                raise UsageError(f"{where}.{name}: expected a list, got {value!r}")
            kwargs[name] = tuple(_number(v, 0, key, f"{where}.{name}") if key in RANGES else v for v in value)
        elif isinstance(default, bool) or not isinstance(default, (int, float)):
            if type(value) is not type(default):
                raise UsageError(f"{where}.{name}: expected {type(default).__name__}, got {value!r}")
            kwargs[name] = value
        else:
            kwargs[name] = _number(value, default, key, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except ValueError as e:  # a section's own cross-field check (e.g. caption strategy, batch_rows)
        raise UsageError(f"{where}: {e}") from None


def with_overrides(config: JobConfig, section: str, **values) -> JobConfig:
    """A copy of `config` with some keys of one section replaced (flags win over YAML)."""
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return config
    for k, v in values.items():  # flags get the file's checks
        default = getattr(getattr(config, section), k)
        if not isinstance(default, bool) and isinstance(default, (int, float)):
            values[k] = _number(v, default, f"{section}.{k}", f"flag for {section}.{k}")
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **values)})


ENV_PREFIX = "SHARDGUARD_"


def env_values(environ: Mapping[str, str]) -> dict:
    """SHARDGUARD_* variables -> nested config values, each type-checked on its own so an
    error names the variable."""
    values: dict = {}
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        keys = var[len(ENV_PREFIX):].lower().split("__")
        if len(keys) == 1 and keys[0] not in {f.name for f in dataclasses.fields(JobConfig)}:
            continue  # SHARDGUARD_<NAME> that is no top-level key is not config (e.g. SHARDGUARD_TEST_ARTIFACTS)
        node = JobConfig()
        for i, key in enumerate(keys):
            if not dataclasses.is_dataclass(node) or key not in {f.name for f in dataclasses.fields(node)}:
                raise UsageError(f"environment variable {var}: unknown config key {'.'.join(keys[:i + 1])!r} "
                                 "(SHARDGUARD_<SECTION>__<KEY>, see infra/job.yaml)")
            node = getattr(node, key)
        try:
            value = raw if isinstance(node, str) else yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise UsageError(f"environment variable {var}: cannot parse {raw!r}: {e}") from None
        one = value
        for key in reversed(keys):
            one = {key: one}
        try:
            _build(JobConfig, one, "")
        except ValueError as e:
            raise UsageError(f"environment variable {var}={raw!r}: {str(e).lstrip('.')}") from None
        _merge(values, one)
    return values


def _merge(into: dict, values: dict) -> dict:
    for k, v in values.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
    return into


def read_yaml(path: str | Path):
    """The plain YAML in `path` (safe loader: no python tags); UsageError naming the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {path}: cannot read it as UTF-8 text ({e})") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or type(e).__name__
        raise UsageError(f"{path}: not valid plain YAML{where}: {what} (tags such as !!python/object are "
                         "refused); fix the file (see infra/job.yaml)") from None


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = os.environ) -> JobConfig:
    """defaults < YAML at `path` < SHARDGUARD_* in `environ` (None: ignore the environment)."""
    values = {}
    if path is not None:
        values = read_yaml(path)
        _build(JobConfig, values, str(path))  # the file's own errors name the file
    env = env_values(environ or {})
    if not values and not env:
        return JobConfig()
    return _build(JobConfig, _merge(values, env) if isinstance(values, dict) else values, str(path or "environment"))


__all__ = ["JobConfig", "IngestLimits", "ImageLimits", "EmbedConfig", "DedupConfig", "MemorizationConfig", "load_config", "with_overrides"]
