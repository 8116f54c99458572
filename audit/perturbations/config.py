"""The unlearnable-data audit's settings (the `perturbations:` section of the job config), in a
module of its own so that reading a config never imports torch. Consumed by
audit.perturbations.perturbation_audit (tests), audit.perturbations.corpus (which samples, which labels) and
pipelines.perturbations (the features pass and the corpus step)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from audit.io.output_dir import PERTURBATION_EXPORT

SANITIZER_FILE = PERTURBATION_EXPORT  # written last by the perturbation tests (config and run id in it)


@dataclass(frozen=True)
class PerturbationConfig:
    features: bool = True              # per-sample features in the streaming pass
    tests: bool = True                 # dataset and class tests after ingest (needs labels)
    label_field: str = ""              # metadata (.json) field holding the class; '' = k-means pseudo-labels
    clusters: int = 10                 # k for pseudo-labels (on the image embeddings)
    embedding_model: str = ""          # vectors for pseudo-labels and the embedding probe; '' = first image model
    min_samples: int = 100             # fewer tested samples than this: the tests are skipped with a note
    max_samples: int = 2000            # tested samples (stratified by class, seeded)
    crop: int = 32                     # analysis crop side in pixels (native resolution)
    reference_shards: tuple[str, ...] = ()   # known-clean shards: thresholds from their bootstrap; () = screening
    alpha: float = 0.01                # screening (no reference): family-wise error level of the verdict (Holm)
    bootstrap: int = 5                 # reference subsamples for the thresholds
    z: float = 3.0                     # threshold = reference mean + z * sd (at least + the test's margin)
    sample_fpr: float = 0.01           # per-sample cut: this share of reference samples would be located
    feature_fpr: float = 0.001         # per-sample feature flags: two-sided share of the reference flagged
    mlp: bool = True                   # also the one-hidden-layer MLP probes
    sanitize: bool = True              # on a failing verdict, try sanitizers and re-test
    max_sanitizers: int = 4
    device: str = "auto"               # learning-speed CNN: 'auto' = cuda when present
    seed: int = 0


def needs_testing(out, cfg: PerturbationConfig) -> bool:
    """True unless the latest perturbation_tests/flags run used this config (see runs)."""
    path = out.root / SANITIZER_FILE
    if not path.exists():
        return True
    return json.loads(path.read_text()).get("config") != config_json(cfg)


def config_json(cfg: PerturbationConfig) -> str:
    return json.dumps(asdict(cfg), sort_keys=True)
