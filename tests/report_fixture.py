"""A small audited output folder for the report tests (tests/audit/report/test_run_report.py and
tests/pipelines/test_report_browser.py), built once per test session by the real job.

Input shards: the first samples of demo shards 00000 (tested) and 00003 (the clean reference),
re-packed as tars, with hostile data added to 00000: a caption that is an XSS payload (and an
exact copy of that sample under another key, so it is shown in a duplicate cluster), and a
sample whose image bytes are cut short (an errors row whose caption is HTML too).
The job runs ingest, SSCD embeddings (the distilled ONNX model; no caption model), dedup,
memorization with a random-weight checkpoint (tests/diffusion_checkpoints.py) and the
perturbation features and tests.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from audit.embeddings.embedder_specs import EmbedConfig
from audit.memorization.scoring import ScoreConfig
from audit.memorization.shard import MemorizationConfig
from audit.perturbations.perturbation_audit import PerturbationConfig
from pipelines.config import JobConfig
from pipelines.job import RunSummary, run_ingest
from tests.conftest import DEMO_SAMPLE
from tests.diffusion_checkpoints import random_checkpoint

XSS_CAPTION = "<script>alert(1)</script><img src=x onerror=alert(2)>"
XSS_KEY, XSS_COPY_KEY, BROKEN_KEY = "00000016", "99000001", "99000002"
SAMPLES_PER_SHARD = 80

_built: dict[str, tuple[Path, RunSummary]] = {}


def _members(tar_path: Path, n: int) -> list[tuple[str, dict[str, bytes]]]:
    """The first n samples of a demo tar: [(key, {ext: bytes})] in tar order."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path) as t:
        for m in t.getmembers():
            key, ext = m.name.split(".", 1)
            if key not in samples and len(samples) == n:
                break
            samples.setdefault(key, {})[ext] = t.extractfile(m).read()
    return list(samples.items())


def _write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    with tarfile.open(path, "w") as t:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))


def build_input(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    tested = _members(DEMO_SAMPLE / "00000.tar", SAMPLES_PER_SHARD)
    hostile = dict(tested)[XSS_KEY]
    hostile["txt"] = XSS_CAPTION.encode()
    tested.append((XSS_COPY_KEY, dict(hostile)))
    broken = dict(tested[2][1])
    broken["jpg"] = broken["jpg"][: len(broken["jpg"]) // 3]
    broken["txt"] = b"<b>broken</b> & cut short"
    tested.append((BROKEN_KEY, broken))
    _write_tar(dest / "00000.tar", tested)
    _write_tar(dest / "00003.tar", _members(DEMO_SAMPLE / "00003.tar", SAMPLES_PER_SHARD))
    return dest


def report_config(ckpt: Path) -> JobConfig:
    mem = MemorizationConfig(model=str(ckpt), reference_shards=("00003",), pairs_per_batch=50,
                             score=ScoreConfig(timesteps=(200, 600), seeds=(0,)))
    pert = PerturbationConfig(label_field="category", reference_shards=("00003",), bootstrap=2, mlp=False,
                              sanitize=False, min_samples=50, device="cpu")
    return JobConfig(progress_seconds=0, embed=EmbedConfig(captions=False), memorization=mem, perturbations=pert)


def audited_output(tmp_path_factory) -> tuple[Path, RunSummary]:
    """(output folder, the run's summary); the job runs once per session."""
    if "out" not in _built:
        root = tmp_path_factory.mktemp("report")
        ckpt = random_checkpoint(root / "random-unet")
        out = root / "out"
        summary = run_ingest(str(build_input(root / "in")), str(out), report_config(ckpt))
        _built["out"] = (out, summary)
    return _built["out"]
