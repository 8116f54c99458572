"""The Beam ingest job on the broken corpus: exit cleanly, reconcile, rerun idempotently."""

import shutil

import pyarrow.parquet as pq
import pytest

from audit.io.store import query
from audit.embeddings.embedder_specs import EmbedConfig
from pipelines.config import JobConfig
from pipelines.job import run_ingest
from tests.data.make_broken_shards import EXPECTED
from tests.foreign_folders import foreign_home, snapshot

pytestmark = pytest.mark.beam  # runs Beam jobs (tests/conftest.py)

QUIET = JobConfig(progress_seconds=0, embed=EmbedConfig(enabled=False))  # ingest only


def test_broken_corpus_reconciles_per_shard(broken_dir, tmp_path):
    s = run_ingest(str(broken_dir), str(tmp_path), QUIET)
    assert s.n_shards_matched == len(EXPECTED) and len(s.shards) == len(EXPECTED)
    _, rows = query(tmp_path, """
        SELECT sh.shard, sh.n_inputs, sh.n_ok, sh.n_failed,
               (SELECT count(*) FROM samples sa WHERE sa.shard = sh.shard),
               (SELECT count(*) FROM samples sa WHERE sa.shard = sh.shard AND status = 'ok'),
               (SELECT count(*) FROM errors e WHERE e.shard = sh.shard AND e.key IS NOT NULL)
        FROM shards sh""")
    for shard, n_in, n_ok, n_failed, n_rows, n_ok_rows, n_err in rows:
        assert n_in == n_ok + n_failed == n_rows, shard
        assert n_ok == n_ok_rows and n_failed == n_err, shard
    _, [(bad,)] = query(tmp_path, """SELECT count(*) FROM samples s LEFT JOIN errors e
        ON s.shard = e.shard AND s.key = e.key WHERE s.status = 'failed' AND e.key IS NULL""")
    assert bad == 0


def test_rerun_skips_completed_shards_and_new_shards_are_added(broken_dir, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(broken_dir / "bad_mixed.tar", inp / "00000.tar")
    first = run_ingest(str(inp), str(tmp_path / "out"), QUIET)
    again = run_ingest(str(inp), str(tmp_path / "out"), QUIET)
    assert (len(first.shards), again.n_shards_skipped, len(again.shards)) == (1, 1, 0)
    shutil.copy(broken_dir / "bad_truncated.tar", inp / "00001.tar")
    third = run_ingest(str(inp), str(tmp_path / "out"), QUIET)
    assert [s["shard"] for s in third.shards] == ["00001"]
    _, [(n, runs)] = query(tmp_path / "out", "SELECT count(*), count(DISTINCT run_id) FROM samples")
    assert (n, runs) == (first.n_inputs + third.n_inputs, 2)
    _, [(n_runs,)] = query(tmp_path / "out", "SELECT count(*) FROM runs")
    assert n_runs == 3


def test_interrupted_shard_outputs_are_replaced_not_duplicated(broken_dir, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(broken_dir / "bad_mixed.tar", inp / "00000.tar")
    out = tmp_path / "out"
    run_ingest(str(inp), str(out), QUIET)
    # Simulate a crash after the tables were written but before the completion marker.
    (out / "_manifest" / "ingest" / "00000.json").unlink()
    (out / "samples" / ".sg-tmp-0123456789ab-00000.parquet.tmp").write_bytes(b"half-written")
    run_ingest(str(inp), str(out), QUIET)
    files = sorted(out.glob("samples/run=*/00000.parquet"))
    assert len(files) == 1 and not list(out.rglob(".sg-tmp-*"))
    _, [(n,)] = query(out, "SELECT count(*) FROM samples")
    assert n == pq.read_table(files[0]).num_rows


def test_input_patterns_braces_and_globs(broken_dir, tmp_path):
    s = run_ingest(f"{broken_dir}/bad_{{mixed,truncated}}.tar", str(tmp_path / "a"), QUIET)
    assert sorted(x["shard"] for x in s.shards) == ["bad_mixed", "bad_truncated"]
    with pytest.raises(ValueError, match="matched no .tar"):
        run_ingest(str(tmp_path / "nothing-*.tar"), str(tmp_path / "b"), QUIET)


def test_multi_worker_direct_runner_gives_the_same_rows(broken_dir, tmp_path):
    run_ingest(str(broken_dir), str(tmp_path / "one"), QUIET)
    run_ingest(str(broken_dir), str(tmp_path / "two"), QUIET,
               ["--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    sql = "SELECT shard, key, status, error, byte_hash, pixel_hash FROM samples ORDER BY ALL"
    assert query(tmp_path / "one", sql)[1] == query(tmp_path / "two", sql)[1]


def test_an_out_folder_that_is_not_ours_is_refused_and_left_untouched(broken_dir, tmp_path, capsys):
    from pipelines.cli import main
    home = foreign_home(tmp_path / "home")
    before = snapshot(home)
    assert main(["run", "--input", str(broken_dir / "bad_mixed.tar"), "--out", str(home), "-q", "--no-embed"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(home) in err and "Traceback" not in err
    assert main(["run", "--input", str(broken_dir / "bad_mixed.tar"), "--out", str(home), "--dry-run"]) == 2
    assert snapshot(home) == before  # no lock file, no marker, nothing deleted


def test_cleanup_in_our_out_folder_removes_only_the_temp_files_we_name(broken_dir, tmp_path):
    out = tmp_path / "out"
    run_ingest(str(broken_dir / "bad_mixed.tar"), str(out), QUIET)
    foreign = {out / "docs" / "thesis.tex.tmp-backup": b"draft", out / "_tmp" / "scratch.txt": b"mine",
               out / "samples" / "notes.parquet.tmp-1": b"kept", out / "_tmp" / "0badc0de" / "x": b"not a run's"}
    ours = [out / "samples" / ".sg-tmp-0123456789ab-00000.parquet.tmp", out / "_tmp" / "sg-run-0badc0de" / "x"]
    for p, data in list(foreign.items()) + [(p, b"ours") for p in ours]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    run_ingest(str(broken_dir / "bad_mixed.tar"), str(out), QUIET)
    assert {p: p.read_bytes() for p in foreign} == foreign
    assert not any(p.exists() for p in ours)


def test_a_malformed_exif_jpeg_fails_its_sample_not_the_run(tmp_path):
    """Issue 19: an ~800-byte JPEG whose EXIF makes exif_transpose raise TypeError crashed every
    run, and a good shard of the same run got no rows. Now: its errors row, every shard done,
    through ingest, SSCD embedding and the perturbation feature pass."""
    from audit.perturbations.perturbation_audit import PerturbationConfig
    from tests.hostile_tars import build_tar
    from tests.image_mutations import demo_jpegs, malformed_exif_jpeg
    inp = tmp_path / "in"
    inp.mkdir()
    good = demo_jpegs(4)
    for shard, images in (("00000", good[:2] + [malformed_exif_jpeg()]), ("00001", good[2:])):
        members = [m for i, d in enumerate(images)
                   for m in ((f"{shard}{i:04d}.jpg", "file", d), (f"{shard}{i:04d}.txt", "file", b"a drawing"))]
        (inp / f"{shard}.tar").write_bytes(build_tar(members))
    config = JobConfig(progress_seconds=0, report=False, embed=EmbedConfig(captions=False),
                       perturbations=PerturbationConfig(tests=False))
    s = run_ingest(str(inp), str(tmp_path / "out"), config)
    assert len(s.shards) == 2
    _, rows = query(tmp_path / "out", "SELECT shard, key, stage, error_type FROM errors WHERE key IS NOT NULL")
    assert rows == [("00000", "000000002", "decode", "CorruptExif")]
    _, [(n_ok, n_failed)] = query(tmp_path / "out", "SELECT count(*) FILTER (status = 'ok'), "
                                                    "count(*) FILTER (status = 'failed') FROM samples")
    assert (n_ok, n_failed) == (4, 1)


def test_the_runs_row_says_when_a_step_failed(broken_dir, tmp_path):
    """A step that raises after the per-shard pipeline (the run-to-run diff, then the report)
    leaves a runs row saying 'failed', with the step and the error, not 'succeeded' or nothing."""
    import dataclasses

    from audit.io.folder_ownership import claim
    out = claim(tmp_path / "out", "audit")  # ours (empty, marked), so the job may write into it
    (out / "run_changes").write_text("not a folder")  # the diff step cannot write its table
    with pytest.raises(OSError):
        run_ingest(str(broken_dir / "bad_mixed.tar"), str(out), QUIET)
    [row] = [r for r in pq.read_table(next(out.glob("runs/run=*/run.parquet"))).to_pylist()]
    assert row["status"] == "failed" and row["error"].startswith("run changes: ") and row["n_inputs"] == 20
    (out / "run_changes").unlink()
    (out / "reports").write_text("not a folder")  # now the last step, the HTML report, fails
    with pytest.raises(OSError):
        run_ingest(str(broken_dir / "bad_mixed.tar"), str(out), dataclasses.replace(QUIET, report=True))
    _, rows = query(out, "SELECT status, split_part(error, ':', 1) FROM runs ORDER BY run_id")
    assert rows == [("failed", "run changes"), ("failed", "report")]
