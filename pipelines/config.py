"""Job configuration: defaults in code, overridden by a YAML file, overridden by flags.

Input: an optional YAML path (see infra/job.yaml for every key with its default and meaning)
and flag overrides. Output: `JobConfig`. Failure: `ValueError` naming an unknown key or a
value of the wrong type, so a typo in a nightly job's config fails fast instead of being
ignored.
"""

from __future__ import annotations

import dataclasses
import json
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


def load_config(path: str | Path | None = None) -> JobConfig:
    if path is None:
        return JobConfig()
    text = Path(path).read_text()
    values = yaml.safe_load(text) or {}
    return _build(JobConfig, values, str(path))


__all__ = ["JobConfig", "IngestLimits", "ImageLimits", "EmbedConfig", "DedupConfig", "MemorizationConfig", "load_config", "with_overrides"]
