"""Which folders ShardGuard may write into: new or empty ones, ones with our marker, and
older audit/clean folders of ours (adopted). Anything else is refused and left untouched."""

import json

import pytest

from audit.io.folder_ownership import MARKER, check_claimable, claim, require_existing
from audit.io.user_errors import UsageError
from tests.foreign_folders import foreign_home, snapshot


def test_a_new_or_empty_folder_is_claimed_with_the_marker(tmp_path):
    for root in (tmp_path / "new" / "deeper", tmp_path / "empty"):
        if root.name == "empty":
            root.mkdir()
        assert claim(root, "audit") == root.resolve()
        assert json.loads((root / MARKER).read_text()) == {"format": 1, "kind": "audit"}
        assert claim(root, "audit") == root.resolve()  # ours now: claimed again without a word


@pytest.mark.parametrize("kind", ["audit", "clean", "report"])
def test_a_foreign_folder_is_refused_and_left_untouched(tmp_path, kind):
    root = foreign_home(tmp_path / "home")
    before = snapshot(root)
    for fn in (claim, check_claimable):
        with pytest.raises(UsageError, match="not empty and has no .shardguard.json") as e:
            fn(root, kind)
        assert str(root) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UsageError, match="is not a ShardGuard"):
        require_existing(root, kind, adopt=True)
    assert snapshot(root) == before


def test_a_file_a_folder_of_another_kind_and_a_bad_marker_are_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        claim(tmp_path / "f", "audit")
    claim(tmp_path / "audit", "audit")
    with pytest.raises(UsageError, match="is a ShardGuard audit output folder, not a clean destination"):
        claim(tmp_path / "audit", "clean")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MARKER).write_text("{not json")
    with pytest.raises(UsageError, match="not a ShardGuard layout marker"):
        claim(tmp_path / "bad", "audit")


def test_older_folders_of_ours_are_adopted(tmp_path):
    audit = tmp_path / "audit"
    (audit / "_manifest" / "ingest").mkdir(parents=True)
    (audit / "audit.duckdb").write_bytes(b"")
    assert not (audit / MARKER).exists()
    require_existing(audit, "audit")  # reading only: no marker written
    assert not (audit / MARKER).exists()
    claim(audit, "audit")
    assert json.loads((audit / MARKER).read_text())["kind"] == "audit"
    clean = tmp_path / "clean"
    (clean / "_manifest" / "clean_plan").mkdir(parents=True)
    (clean / "00000.tar").write_bytes(b"")
    claim(clean, "clean")
    assert json.loads((clean / MARKER).read_text())["kind"] == "clean"
    with pytest.raises(UsageError, match="does not exist"):
        require_existing(tmp_path / "missing", "audit")
