"""Clustering and keep decisions on a small corpus whose duplicate structure is built by hand."""

import numpy as np
import pytest

from audit.dedup.corpus import Corpus
from audit.dedup.duplicate_clusters import DedupConfig, find_duplicates, group_edges, normalize_caption
from audit.dedup.vector_index import Edges
from tests.edge_reference import components


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def corpus() -> Corpus:
    """0,1: same bytes, same caption. 2: same pixels as 0, other bytes. 3~4~5: a chain of near
    copies (3 and 5 are not similar themselves). 6: unrelated. 7: failed at ingest.
    8: same caption as 6 up to case and punctuation."""
    n = 9
    rng = np.random.default_rng(0)
    base = [unit(rng.standard_normal(16)) for _ in range(n)]
    e0, e1 = np.eye(16, dtype=np.float32)[0], np.eye(16, dtype=np.float32)[1]
    vecs = {0: base[0], 1: base[0], 2: base[0], 3: e0, 4: unit(e0 + e1), 5: e1, 6: base[6], 8: base[8]}
    rows = np.array(sorted(vecs), np.int64)
    return Corpus(
        shard=np.array(["s"] * n, object), key=np.array([f"k{i}" for i in range(n)], object),
        status=np.array(["ok"] * 7 + ["failed", "ok"], object),
        error=np.array([None] * 7 + ["CorruptImage: truncated", None], object),
        caption=np.array(["a cat", "a cat", "A CAT!", "x", "y", "z", "Blue sky.", "", "blue  sky"], object),
        byte_hash=np.array(["b0", "b0", "b2", "b3", "b4", "b5", "b6", None, "b8"], object),
        pixel_hash=np.array(["p0", "p0", "p0", "p3", "p4", "p5", "p6", None, "p8"], object),
        width=np.array([100, 100, 300, 50, 60, 70, 10, 0, 10]), height=np.array([100] * 9),
        image_bytes=np.array([1000] * 9),
        vectors={"sscd:test": ("image", rows, np.stack([vecs[i] for i in rows]))})


def test_kinds_clusters_and_chains():
    r = find_duplicates(corpus(), DedupConfig(near_threshold=0.7), "r1")
    by = {(d["key"], d["kind"]): d for d in r.duplicates}
    exact = {k for k, kind in by if kind == "exact"}
    assert exact == {"k0", "k1", "k2"}
    assert by[("k0", "exact")]["repeat_type"] == "same_caption"  # 'a cat' and 'A CAT!' normalize alike
    near = {k for k, kind in by if kind == "near"}
    assert {"k3", "k4", "k5"} <= near and "k6" not in near
    assert len({by[(k, "near")]["cluster"] for k in ("k3", "k4", "k5")}) == 1  # the chain is one cluster
    assert by[("k3", "near")]["nearest_key"] == "k4"
    assert ("k6", "caption") in by and by[("k6", "caption")]["nearest_key"] == "k8"


def test_decisions_keep_one_per_image_cluster_by_policy():
    r = find_duplicates(corpus(), DedupConfig(near_threshold=0.7, keep_policy="largest"), "r1")
    d = {x["key"]: x for x in r.decisions}
    assert len(d) == 9  # every input sample, failed ones too
    assert d["k2"]["keep"] and not d["k0"]["keep"] and not d["k1"]["keep"]  # k2 is the largest copy
    assert d["k0"]["reasons"] == ["exact_duplicate_of:s/k2", "near_duplicate_of:s/k2"]
    assert [d[k]["keep"] for k in ("k3", "k4", "k5")] == [False, False, True]
    assert d["k7"]["keep"] is False and d["k7"]["reasons"] == ["ingest_failed:CorruptImage"]
    assert d["k6"]["keep"] and d["k8"]["keep"]  # caption duplicates are reported, not dropped by default
    earliest = {x["key"]: x for x in find_duplicates(corpus(), DedupConfig(near_threshold=0.7,
                                                                             keep_policy="earliest"), "r").decisions}
    assert earliest["k0"]["keep"] and earliest["k3"]["keep"] and not earliest["k2"]["keep"]


def test_unknown_policy_and_clip_policy_without_clip_fail_clearly():
    with pytest.raises(ValueError, match="unknown keep_policy"):
        find_duplicates(corpus(), DedupConfig(keep_policy="random"), "r")
    with pytest.raises(ValueError, match="needs CLIP"):
        find_duplicates(corpus(), DedupConfig(keep_policy="clip_score"), "r")


def test_helpers():
    assert normalize_caption("  Ｈｅｌｌｏ,  WORLD!! ") == "hello world"
    e = group_edges(np.array(["a", None, "a", "b", "a"], object))
    assert sorted(zip(e.i.tolist(), e.j.tolist())) == [(0, 2), (2, 4)]
    labels = components(5, Edges(np.array([0, 3]), np.array([1, 4]), np.ones(2, np.float32)))
    assert labels[0] == labels[1] != labels[3] == labels[4] and labels[2] == -1
