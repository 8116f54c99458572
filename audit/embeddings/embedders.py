"""The one small interface every embedding model implements.

An embedder has a `model_id` (stable string stored with every vector), a `dim`, a `modality`
('image': items are encoded image bytes; 'text': items are captions), and
`embed(items) -> Embedded`: L2-normalized float32 vectors for the items that worked, their
positions in `items`, and one (position, error_type, message) per item that did not, so a
batch with one bad image still yields the others and the bad one becomes an errors row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Embedded:
    vectors: np.ndarray  # float32 [len(index), dim], rows L2-normalized
    index: list[int]
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    norms: np.ndarray | None = None  # L2 norm of each raw output before normalization

    @classmethod
    def empty(cls, dim: int, errors=None) -> "Embedded":
        return cls(np.zeros((0, dim), np.float32), [], list(errors or []), np.zeros(0, np.float32))

    @classmethod
    def from_raw(cls, raw, index: list[int], errors=None) -> "Embedded":
        """Normalize raw model outputs, keeping their norms."""
        raw = np.asarray(raw, dtype=np.float32)
        norms = np.linalg.norm(raw, axis=1)
        return cls(raw / np.maximum(norms, 1e-12)[:, None], list(index), list(errors or []), norms)


class Embedder(ABC):
    model_id: str
    dim: int
    modality: str  # 'image' or 'text'
    input_side: int | None = None  # image models: the short side they resize to (inputs may be reduced to 2x it)

    @abstractmethod
    def embed(self, items: list) -> Embedded:
        ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)
