"""The dedup stage in `shardguard run`: global mode and the partitioned (scale-out) Beam mode agree."""

import dataclasses

from audit.duplicate_clusters import DedupConfig
from audit.embedder_specs import EmbedConfig
from audit.store import query
from pipelines.config import JobConfig
from pipelines.job import run_ingest


def test_partitioned_mode_matches_global_mode_on_the_demo_sample(demo_sample, tmp_path):
    inp = f"{demo_sample}/0000{{0,1}}.tar"
    base = JobConfig(progress_seconds=0, embed=EmbedConfig(captions=False))
    run_ingest(inp, str(tmp_path / "g"), base)
    part = dataclasses.replace(base, dedup=DedupConfig(mode="partitioned", n_centroids=4))
    run_ingest(inp, str(tmp_path / "p"), part)
    sql = "SELECT kind, shard, key, cluster_size FROM duplicates ORDER BY ALL"
    g, p = query(tmp_path / "g", sql)[1], query(tmp_path / "p", sql)[1]
    g_near = {r[1:3] for r in g if r[0] == "near"}
    p_near = {r[1:3] for r in p if r[0] == "near"}
    assert p_near <= g_near and len(p_near) >= 0.95 * len(g_near) and len(g_near) > 50
    assert {r for r in g if r[0] == "exact"} == {r for r in p if r[0] == "exact"}
    dec = "SELECT count(*) FILTER (keep), count(*) FROM decisions"
    assert query(tmp_path / "p", dec)[1][0][1] == query(tmp_path / "g", dec)[1][0][1]


def test_dedup_is_not_recomputed_when_nothing_changed(broken_dir, tmp_path):
    cfg = JobConfig(progress_seconds=0, embed=EmbedConfig(enabled=False))
    first = run_ingest(str(broken_dir), str(tmp_path), cfg)
    again = run_ingest(str(broken_dir), str(tmp_path), cfg)
    assert first.dedup and not again.dedup
    _, [(runs,)] = query(tmp_path, "SELECT count(DISTINCT run_id) FROM decisions_history")
    assert runs == 1
