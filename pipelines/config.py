"""Job configuration: defaults in code < a YAML file < environment variables < flags.

Input: an optional YAML path (see infra/job.yaml for every key with its default and meaning),
the environment (SHARDGUARD_<SECTION>__<KEY>=value, e.g. SHARDGUARD_DEDUP__NEAR_THRESHOLD=0.8;
top-level keys SHARDGUARD_<KEY>, e.g. SHARDGUARD_PROGRESS_SECONDS=0; values parsed as YAML
scalars/lists, string keys taken verbatim, then the same type checks as the file; a name with
'__' must be a config key, one without is config only if it names a top-level key) and flag
overrides. Output: `JobConfig`. Failure: `ValueError` naming an unknown key or a
value of the wrong type (for the environment: naming the variable), so a typo in a nightly job's config fails fast instead of being
ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from audit.clean_shards import CleanConfig
from audit.duplicate_clusters import DedupConfig
from audit.embedder_specs import EmbedConfig
from audit.image_decode import ImageLimits
from audit.memorization_shard import MemorizationConfig
from audit.perturbation_audit import PerturbationConfig
from audit.sample_validation import IngestLimits


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
    report: bool = True  # write OUT/reports/index.html at the end of every run (audit.run_report)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        if name not in fields:
            raise ValueError(f"{where}: unknown key {name!r} (known: {', '.join(fields)})")
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{where}.{name}: expected a list, got {value!r}")
            kwargs[name] = tuple(value)
        elif isinstance(default, bool) or not isinstance(default, (int, float)):
            if type(value) is not type(default):
                raise ValueError(f"{where}.{name}: expected {type(default).__name__}, got {value!r}")
            kwargs[name] = value
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}.{name}: expected a number, got {value!r}")
            kwargs[name] = type(default)(value)
    return cls(**kwargs)


def with_overrides(config: JobConfig, section: str, **values) -> JobConfig:
    """A copy of `config` with some keys of one section replaced (flags win over YAML)."""
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return config
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
                raise ValueError(f"environment variable {var}: unknown config key {'.'.join(keys[:i + 1])!r} "
                                 "(SHARDGUARD_<SECTION>__<KEY>, see infra/job.yaml)")
            node = getattr(node, key)
        try:
            value = raw if isinstance(node, str) else yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ValueError(f"environment variable {var}: cannot parse {raw!r}: {e}") from None
        one = value
        for key in reversed(keys):
            one = {key: one}
        try:
            _build(JobConfig, one, "")
        except ValueError as e:
            raise ValueError(f"environment variable {var}={raw!r}: {str(e).lstrip('.')}") from None
        _merge(values, one)
    return values


def _merge(into: dict, values: dict) -> dict:
    for k, v in values.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
    return into


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = os.environ) -> JobConfig:
    """defaults < YAML at `path` < SHARDGUARD_* in `environ` (None: ignore the environment)."""
    values = {}
    if path is not None:
        values = yaml.safe_load(Path(path).read_text()) or {}
        _build(JobConfig, values, str(path))  # the file's own errors name the file
    env = env_values(environ or {})
    if not values and not env:
        return JobConfig()
    return _build(JobConfig, _merge(values, env) if isinstance(values, dict) else values, str(path or "environment"))


__all__ = ["JobConfig", "IngestLimits", "ImageLimits", "EmbedConfig", "DedupConfig", "MemorizationConfig", "load_config", "with_overrides"]
