import numpy as np
import pytest

from audit.dedup.contamination import find_contamination
from tests.audit.dedup.test_duplicate_clusters import corpus


def test_exact_and_near_matches_between_sets():
    train, ev = corpus(), corpus()
    # eval: k3 gets new bytes and a slightly moved vector -> near only; k6 moved far away -> clean
    ev.byte_hash[3] = ev.pixel_hash[3] = "new3"
    ev.byte_hash[6] = ev.pixel_hash[6] = "new6"
    modality, rows, x = ev.vectors["sscd:test"]
    x = x.copy()
    r6 = int(np.flatnonzero(rows == 6)[0])
    x[r6] = -x[r6]
    ev.vectors["sscd:test"] = (modality, rows, x)
    got = {r["eval_key"]: r for r in find_contamination(train, ev, 0.75, "r", "train-out")}
    assert got["k0"]["kind"] == "exact" and got["k0"]["n_train_matches"] >= 3
    assert got["k3"]["kind"] == "near" and got["k3"]["train_key"] == "k3"
    assert "k6" not in got and "k7" not in got  # moved away / failed at ingest


def test_needs_vectors_from_the_same_model():
    train, ev = corpus(), corpus()
    ev.vectors = {"sscd:other": ev.vectors["sscd:test"]}
    with pytest.raises(ValueError, match="different models"):
        find_contamination(train, ev, 0.75, "r", "t")
