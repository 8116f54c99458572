"""audit.clean.ledger: append-only planning, resuming a killed batch, refusing a flipped sample."""

import pytest

from audit.clean.ledger import load_ledger, plan_append, settings_id, unwritten_shards, write_batch
from audit.clean.shards import CleanConfig, SampleRef


def refs(shard, keys):
    return [SampleRef(shard, k, f"/x/{shard}.tar", "jpg", 0, 1, "c", None, 8, 8) for k in keys]


def test_batches_append_after_the_last_shard_and_never_replan_a_sample(tmp_path):
    night1 = refs("a", [f"{i:02d}" for i in range(5)])
    ledger = load_ledger(tmp_path)
    plan = plan_append(night1, ledger, 2)
    assert [(o, [s.key for s in x]) for o, x in plan] == [("00000", ["00", "01"]), ("00001", ["02", "03"]),
                                                         ("00002", ["04"])]
    write_batch(tmp_path, ledger, plan, "p", "run1")
    ledger = load_ledger(tmp_path)
    # night 2: one sample dropped since, three new ones (one sorts before the old ones)
    night2 = refs("0", ["z"]) + night1[1:] + refs("b", ["x", "y"])
    plan2 = plan_append(night2, ledger, 2)
    assert [(o, [(s.shard, s.key) for s in x]) for o, x in plan2] == [
        ("00003", [("0", "z"), ("b", "x")]), ("00004", [("b", "y")])]
    write_batch(tmp_path, ledger, plan2, "p", "run2")
    ledger = load_ledger(tmp_path)
    assert ledger.n_batches == 2 and ledger.plans == {"p"} and len(ledger.planned()) == 8
    assert plan_append(night2, ledger, 2) == []


def test_a_killed_batch_is_finished_with_the_same_plan(tmp_path):
    kept = refs("a", ["k1", "k2", "k3"])
    write_batch(tmp_path, load_ledger(tmp_path), plan_append(kept, load_ledger(tmp_path), 2), "p", "run1")
    ledger = load_ledger(tmp_path)
    todo = unwritten_shards(ledger, kept, lambda o: o == "00000")  # 00001 was not written before the kill
    assert [(o, [s.key for s in x]) for o, x in todo] == [("00001", ["k3"])]
    with pytest.raises(ValueError, match="no longer kept"):
        unwritten_shards(ledger, kept[:2], lambda o: o == "00000")
    assert unwritten_shards(ledger, kept[:2], lambda o: True) == []  # written earlier and dropped since: stays


def test_settings_id_ignores_the_destination_but_not_the_settings():
    assert settings_id(CleanConfig(to="/a"), None) == settings_id(CleanConfig(to="/b"), None)
    assert settings_id(CleanConfig(shard_size=5), None) != settings_id(CleanConfig(), None)
    assert settings_id(CleanConfig(), {"name": "jpeg", "params": {}}) != settings_id(CleanConfig(), None)
