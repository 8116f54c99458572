import numpy as np
import pytest

from audit.dedup.vector_index import IndexConfig, cross_edges, self_edges


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth = set()
    for c in range(40):  # clusters of 2..6 members, cosine to the center ~0.9
        members = rng.choice(3000, size=2 + c % 5, replace=False)
        center = x[members[0]]
        for m in members[1:]:
            v = center + 0.35 * rng.standard_normal(64).astype(np.float32) / 8
            x[m] = v / np.linalg.norm(v)
    sims = x @ x.T
    truth = {(i, j) for i, j in zip(*np.nonzero(np.triu(sims >= 0.8, 1)))}
    return x, truth


def pairs(e):
    return set(zip(e.i.tolist(), e.j.tolist()))


@pytest.mark.parametrize("cfg", [IndexConfig(backend="torch", block=700), IndexConfig(backend="faiss", block=700)])
def test_exact_paths_find_exactly_the_pairs_over_threshold(planted, cfg):
    x, truth = planted
    e = self_edges(x, 0.8, cfg)
    assert pairs(e) == truth and len(truth) > 40
    assert np.all(e.sim >= 0.8 - 1e-5) and np.all(e.i < e.j)


def test_ivf_path_has_high_recall(planted):
    x, truth = planted
    e = self_edges(x, 0.8, IndexConfig(backend="faiss", exact_max=0, nprobe=16))
    found = pairs(e)
    assert found <= truth and len(found & truth) / len(truth) >= 0.9


def test_cross_edges_between_sets(planted):
    x, truth = planted
    e = cross_edges(x[:100], x[100:], 0.8)
    want = {(i, j - 100) for i, j in truth if i < 100 <= j} | {(j, i - 100) for i, j in truth if j < 100 <= i}
    assert pairs(e) == want


def test_knn_range_search_equals_true_range_search(planted):
    """The k-NN emulation used for faiss GPU indexes, run here on a CPU flat index with a tiny
    starting k so that clusters larger than k force the growing-k path."""
    import faiss

    from audit.dedup.vector_index import knn_range_search
    x, _ = planted
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, sims, ids = knn_range_search(index, x[:500], 0.8, k0=2)
    want_lims, _, want_ids = index.range_search(x[:500], float(np.nextafter(np.float32(0.8), np.float32(-1))))
    for q in range(500):
        assert set(ids[lims[q]:lims[q + 1]].tolist()) == set(want_ids[want_lims[q]:want_lims[q + 1]].tolist())
    assert np.all(sims >= 0.8)
