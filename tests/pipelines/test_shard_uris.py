import pytest

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
