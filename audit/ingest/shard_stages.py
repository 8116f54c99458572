"""The per-shard stage model: what a stage declares, what it is given, what it gives back.

A per-shard stage (embeddings of one model, memorization scores, perturbation features, ...)
turns a shard's ok samples into the rows of its own tables. It declares:
  id            its completion marker: OUT/_manifest/<id>/<shard>.json
  outputs       the table folders it writes per shard (removed first when the shard is redone)
  error_stage   the `stage` of its errors rows; error_part: their file OUT/errors/run=<r>/<shard>.<part>.parquet
  needs_image   whether `prepare` is given the sample's decoded image (False: caption or bytes only)
  needs_bytes   whether the sample's image bytes travel with it (e.g. nvJPEG decodes on the GPU)
  resources     'cpu' or 'gpu' (gpu stages run as their own Beam step when split, with `accelerator`)
  batch_size    samples per `process` call (None: the runner's)
and implements
  setup(models)                   load models once per worker (`ModelPool` shares them between threads)
  prepare(image, row) -> view     per sample, right after the one decode: the size or crop it needs
  process(shard, run_id, batch)   -> StageRows(rows, errors) for a batch of `Sample`s
  write(out, run_id, shard, rows) its tables (atomic files); returns the marker's extra fields.
The runner (audit.ingest.shard_runner) owns the rest: one read and one decode per sample for every
stage, orphan cleanup, the errors file, counts that must add up (rows + errors = samples fed),
seconds per stage, and the marker, written last.
Failure rows: a sample whose image cannot be read or decoded for a stage, or whose `prepare`
raises, never reaches `process`: it is that stage's errors row (`unreadable_type`, or
'ReadFailed' when the tar could not give it back). `process` returns an errors row for each
sample it could not handle (a model call failing on a batch: that batch's rows).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Sample:
    """One ok sample on its way through the stages of one read."""
    row: dict  # the samples row: key, caption, image_offset, image_bytes, ...
    data: bytes | None = None  # the image bytes, kept only when a stage needs_bytes
    views: dict[str, Any] = field(default_factory=dict)  # stage id -> what its prepare() made
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)  # stage id -> (error_type, message)

    @property
    def key(self) -> str:
        return self.row["key"]


@dataclass
class StageRows:
    rows: list = field(default_factory=list)  # the stage's own rows, one per sample it handled
    errors: list[dict] = field(default_factory=list)  # errors rows, one per sample it could not

    def extend(self, other: "StageRows") -> None:
        self.rows.extend(other.rows)
        self.errors.extend(other.errors)


class ModelPool:
    """Models loaded once per worker process and shared by its threads: get(key, load) loads on
    first use. Beam's DoFn hands every stage the process's pool (apache_beam.utils.shared)."""

    def __init__(self):
        self._models: dict = {}
        self._lock = threading.Lock()

    def get(self, key, load: Callable[[], Any]):
        with self._lock:
            if key not in self._models:
                self._models[key] = load()
            return self._models[key]


class ShardStage(ABC):
    id: str = ""
    outputs: tuple[str, ...] = ()
    error_stage: str = ""
    error_part: str = ""
    unreadable_type: str = "ImageUnreadable"
    message_prefix: str = ""  # e.g. the model id, so errors rows say which model
    needs_image: bool = True
    needs_bytes: bool = False
    resources: str = "cpu"
    accelerator: str = ""
    batch_size: int | None = None  # samples per process() call (None: the runner's)

    @property
    def label(self) -> str:
        """The stage's name in progress lines."""
        return self.error_stage.replace("_", " ")

    def setup(self, models: ModelPool) -> None:
        """Load what the stage needs, once per worker (default: nothing)."""

    def prepare(self, image, row: dict) -> Any:
        """This stage's input from the sample's decoded image (PIL, upright, own mode); raise to make
        the sample this stage's errors row. Called once per sample, before the image is dropped."""
        return None

    @abstractmethod
    def process(self, shard: str, run_id: str, batch: list[Sample]) -> StageRows:
        """Rows and errors rows for a batch; every sample of the batch in exactly one of them."""

    @abstractmethod
    def write(self, out, run_id: str, shard: str, rows: list) -> dict:
        """Write the stage's tables for the shard (not its errors, not its marker)."""

    def error_row(self, run_id: str, shard: str, key: str, error_type: str, message: str) -> dict:
        msg = f"{self.message_prefix}: {message}" if self.message_prefix else message
        return {"run_id": run_id, "stage": self.error_stage, "shard": shard, "key": key,
                "error_type": error_type, "message": msg}
