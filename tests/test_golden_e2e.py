"""Golden end-to-end: `shardguard run` on the committed demo sample (real img2dataset output).

Expectations come from sources independent of ShardGuard: img2dataset's own NNNNN.parquet and
_stats.json (keys, captions, urls, success counts) and hashes of the tar members computed here.
"""

import hashlib
import json
import tarfile
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from audit.ingest.image_decode import ImageLimits
from audit.io.store import query
from pipelines.cli import main

pytestmark = pytest.mark.beam  # runs Beam jobs (tests/conftest.py)

LIMITS = ImageLimits()


def expected_status(w: int, h: int) -> str:
    """What the default limits make of an image of img2dataset's reported size."""
    ok = min(w, h) >= LIMITS.min_side and max(w, h) / min(w, h) <= LIMITS.max_aspect_ratio
    return "ok" if ok else "failed"


@pytest.fixture(scope="module")
def demo_run(demo_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-out")
    assert main(["run", "--input", str(demo_sample), "--out", str(out), "-q"]) == 0
    return demo_sample, out


def test_samples_match_img2dataset_parquet(demo_run):
    sample, out = demo_run
    i2d = {}
    for p in sorted(sample.glob("*.parquet")):
        for r in pq.read_table(p).to_pylist():
            if r["status"] == "success":
                i2d[r["key"]] = r
    _, rows = query(out, "SELECT key, caption, url, status, error, width, height FROM samples")
    assert len(rows) == len(i2d) == 1000
    statuses = Counter()
    for key, caption, url, status, error, w, h in rows:
        want = expected_status(i2d[key]["width"], i2d[key]["height"])
        assert status == want, (key, error)
        statuses[status] += 1
        assert caption == i2d[key]["caption"].strip() and url == i2d[key]["url"]
        if status == "ok":
            assert (w, h) == (i2d[key]["width"], i2d[key]["height"])
    assert statuses["ok"] >= 990  # the sample holds a few real images under the size limits


def test_shards_reconcile_with_img2dataset_stats(demo_run):
    sample, out = demo_run
    _, rows = query(out, "SELECT shard, n_inputs, n_ok, n_failed, n_expected, status FROM shards ORDER BY shard")
    _, small = query(out, "SELECT shard, count(*) FROM errors WHERE error_type = 'ImageTooSmall' GROUP BY ALL")
    small = dict(small)
    for shard, n_in, n_ok, n_failed, n_expected, status in rows:
        stats = json.loads((sample / f"{shard}_stats.json").read_text())
        assert n_expected == stats["successes"] == n_in == n_ok + n_failed and status == "complete"
        assert n_failed == small.get(shard, 0)


def test_exact_duplicate_groups_match_hashes_computed_here(demo_run):
    sample, out = demo_run
    counts = Counter()
    for tar in sample.glob("*.tar"):
        with tarfile.open(tar) as tf:
            for m in tf:
                if m.name.endswith(".jpg"):
                    counts[hashlib.sha256(tf.extractfile(m).read()).hexdigest()] += 1
    want = sorted(c for c in counts.values() if c > 1)
    _, rows = query(out, "SELECT count(*) FROM samples WHERE byte_hash IS NOT NULL "
                         "GROUP BY byte_hash HAVING count(*) > 1")
    assert sorted(r[0] for r in rows) == want and len(want) > 50


def test_embeddings_for_every_sample_and_duplicates_are_copies(demo_run):
    _, out = demo_run
    _, rows = query(out, "SELECT model, count(*), count(DISTINCT key) FROM embeddings GROUP BY ALL")
    assert {r[0] for r in rows} == {"sscd:sscd_distilled:onnx:288", "minilm:all-MiniLM-L6-v2"}
    _, [(n_ok,)] = query(out, "SELECT count(*) FROM samples WHERE status = 'ok'")
    assert all(n == d == n_ok for _, n, d in rows)
    _, pairs = query(out, """
        WITH e AS (SELECT s.key, s.pixel_hash, e.vector FROM samples s JOIN embeddings e USING (shard, key)
                   WHERE e.model LIKE 'sscd:%')
        SELECT a.vector, b.vector FROM e a JOIN e b ON a.pixel_hash = b.pixel_hash AND a.key < b.key""")
    assert pairs
    cos = [np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) for a, b in pairs]
    assert min(cos) > 0.99


def test_rerun_is_idempotent(demo_run, capsys):
    sample, out = demo_run
    before = query(out, "SELECT count(*) FROM samples")[1]
    assert main(["run", "--input", str(sample), "--out", str(out), "-q"]) == 0
    assert "4 skipped (already complete), 0 processed" in capsys.readouterr().out
    assert query(out, "SELECT count(*) FROM samples")[1] == before


def test_every_sql_example_in_the_readme_runs(demo_run):
    import re

    from tests.conftest import REPO
    _, out = demo_run
    blocks = re.findall(r"```sql\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    statements = [st.strip() for b in blocks for st in b.split(";") if st.strip() and
                  not all(line.strip().startswith("--") for line in st.strip().splitlines())]
    assert len(statements) >= 4
    for st in statements:
        cols, rows = query(out, st)
        assert cols, st


def test_dedup_exact_clusters_and_one_kept_per_image_cluster(demo_run):
    _, out = demo_run
    # exact clusters = connected groups of equal byte or pixel hash, computed here in SQL
    _, [(n_hash_dups,)] = query(out, """SELECT count(*) FROM samples s WHERE status = 'ok' AND EXISTS
        (SELECT 1 FROM samples t WHERE t.status = 'ok' AND (t.shard, t.key) <> (s.shard, s.key)
         AND (t.byte_hash = s.byte_hash OR t.pixel_hash = s.pixel_hash))""")
    _, [(n_exact,)] = query(out, "SELECT count(*) FROM duplicates WHERE kind = 'exact'")
    assert n_exact == n_hash_dups > 100
    _, [(n_dec, n_samples)] = query(out, "SELECT (SELECT count(*) FROM decisions), (SELECT count(*) FROM samples)")
    assert n_dec == n_samples
    _, bad = query(out, """SELECT image_cluster, count(*) FILTER (keep) AS kept FROM decisions
        WHERE image_cluster IS NOT NULL GROUP BY ALL HAVING kept <> 1""")
    assert bad == []
    _, rows = query(out, """SELECT d.key, d.keep FROM decisions d
        JOIN samples s USING (shard, key) WHERE s.status = 'failed'""")
    assert rows and all(not keep for _, keep in rows)
    # the kept member of each near cluster is the largest image of that cluster
    _, rows = query(out, """WITH m AS (SELECT d.image_cluster, d.keep, s.width * s.height AS px
        FROM decisions d JOIN samples s USING (shard, key) WHERE d.image_cluster IS NOT NULL)
        SELECT image_cluster FROM m GROUP BY ALL HAVING max(px) > max(px) FILTER (keep)""")
    assert rows == []
