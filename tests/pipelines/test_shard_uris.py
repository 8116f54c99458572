import os

import pytest

from audit.io.user_errors import UsageError
from pipelines.shard_uris import expand_input, shard_id


def test_shard_id():
    assert shard_id("gs://b/x/00012.tar") == "00012"


def test_folder_braces_globs_and_commas(tmp_path):
    for i in range(4):
        (tmp_path / f"{i:05d}.tar").write_bytes(b"")
    (tmp_path / "00000.parquet").write_bytes(b"")
    assert [s for s, _ in expand_input(str(tmp_path))] == ["00000", "00001", "00002", "00003"]
    assert [s for s, _ in expand_input(f"{tmp_path}/{{00001..00002}}.tar")] == ["00001", "00002"]
    assert [s for s, _ in expand_input(f"{tmp_path}/0000[3].tar,{tmp_path}/00000.tar")] == ["00000", "00003"]


def test_same_shard_name_in_two_folders_is_an_error(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "00000.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="share the id"):
        expand_input(f"{tmp_path}/a,{tmp_path}/b")


@pytest.mark.parametrize("names", [("b.tar", ".b.tar"), ("x_y.tar", "x\\y.tar"), ("..tar", "_.tar"),
                                   ("c.tar", "..c.tar")])
def test_ids_that_share_output_files_are_an_error_naming_both_files(tmp_path, names):
    """Shard ids name output files and markers after leading dots and separators are dropped
    (audit.io.output_dir.shard_file_stem): two ids with one file name would overwrite each other's
    files and one shard would be skipped for ever."""
    for n in names:
        (tmp_path / n).write_bytes(b"")
    with pytest.raises(UsageError, match="share the id") as e:
        expand_input(str(tmp_path))
    assert all(str(tmp_path / n) in str(e.value) for n in names) and "\n" not in str(e.value)


def test_ordinary_names_are_unaffected(tmp_path):
    names = ["00000.tar", "part-1.tar", "part_1b.tar", "x.y.tar", "UPPER.tar", "upper.tar", "a b.tar", "ünï.tar"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    got = expand_input(str(tmp_path))
    assert sorted(s for s, _ in got) == sorted(n[:-4] for n in names)
    assert {u for _, u in got} == {str(tmp_path / n) for n in names}


def test_a_folder_or_fifo_named_tar_is_an_error_not_a_hang(tmp_path):
    (tmp_path / "00000.tar").write_bytes(b"")
    (tmp_path / "dir.tar").mkdir()
    with pytest.raises(UsageError, match="dir.tar is a folder"):
        expand_input(str(tmp_path))
    (tmp_path / "dir.tar").rmdir()
    os.mkfifo(tmp_path / "pipe.tar")
    with pytest.raises(UsageError, match="pipe.tar is a FIFO"):
        expand_input(f"{tmp_path}/*.tar")
