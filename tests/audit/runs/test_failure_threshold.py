"""The run's failure tally and threshold: what counts as a failed sample, and the message."""

import pytest

from audit.runs.failure_threshold import FailureTally, TooManyFailures, over_threshold, tally_run
from audit.io.output_dir import OutputDir
from schemas import ERRORS


def _err(shard, key, error_type, stage="decode", run_id="r1"):
    return {"run_id": run_id, "stage": stage, "shard": shard, "key": key, "error_type": error_type, "message": "m"}


def _shard(shard, n_inputs, status="complete", n_expected=None, run_id="r1"):
    return {"run_id": run_id, "shard": shard, "n_inputs": n_inputs, "status": status, "n_expected": n_expected}


def test_a_sample_failing_in_several_stages_counts_once_and_unread_samples_count(tmp_path):
    out = OutputDir(tmp_path)
    out.write_shard_table(ERRORS, "r1", "a", [_err("a", "1", "CorruptImage"), _err("a", None, "TruncatedShard", "read")])
    out.write_shard_table(ERRORS, "r1", "a", [_err("a", "2", "EmbedFailed", "embed"), _err("a", "3", "EmbedFailed", "embed")],
                          part="embed-m1")
    out.write_shard_table(ERRORS, "r1", "a", [_err("a", "2", "EmbedFailed", "embed")], part="embed-m2")
    out.write_shard_table(ERRORS, "r1", "b", [_err("b", None, "ReadFailed", "read")])
    out.write_shard_table(ERRORS, "r0", "old", [_err("old", "9", "CorruptImage", run_id="r0")])  # another run
    shards = [_shard("a", 10, "truncated", n_expected=12), _shard("b", 0, "unreadable", n_expected=8)]
    t = tally_run(out, "r1", shards)
    assert (t.n_inputs, t.n_failed) == (10 + 2 + 8, 3 + 2 + 8)
    assert t.error_types == {"EmbedFailed": 3, "CorruptImage": 1, "TruncatedShard": 1, "ReadFailed": 1}


def test_nothing_readable_at_all_is_a_full_failure_and_nothing_failed_is_none(tmp_path):
    out = OutputDir(tmp_path)
    out.write_shard_table(ERRORS, "r1", "b", [_err("b", None, "UnreadableShard", "read")])
    assert tally_run(out, "r1", [_shard("b", 0, "unreadable")]).fraction == 1.0
    assert tally_run(out, "r2", [_shard("c", 0, run_id="r2")]).fraction == 0.0


@pytest.mark.parametrize("fraction,count,limit", [(0.1, 0, "max_failed_fraction = 10.0%"),
                                                  (1.0, 2, "max_failed_samples = 2")])
def test_over_a_limit_the_error_names_fraction_threshold_and_top_types(fraction, count, limit):
    t = FailureTally(20, 3, __import__("collections").Counter({"CorruptImage": 2, "EmbedFailed": 1, "X": 1, "Y": 1}))
    e = over_threshold(t, fraction, count, "r1")
    assert isinstance(e, TooManyFailures) and e.tally is t
    assert "3 of 20 samples failed (15.0%)" in str(e) and limit in str(e)
    assert "CorruptImage (2), EmbedFailed (1)" in str(e)
    assert over_threshold(t, 0.15, 3, "r1") is None  # at the limit is not over it
