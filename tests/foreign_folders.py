"""Folders that are not ShardGuard's, and a byte-exact picture of a folder, for the tests that
check a command refuses such a folder and leaves it untouched."""

from pathlib import Path


def snapshot(root: Path) -> dict:
    """Every path under root (relative, posix) -> its bytes (None for a folder)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def foreign_home(root: Path) -> Path:
    """A user's folder holding names a careless cleanup would match: a `*.tmp-*` file and `_tmp/`."""
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "thesis.tex.tmp-backup").write_text("chapter 1")
    (root / "_tmp").mkdir()
    (root / "_tmp" / "notes.txt").write_text("mine")
    return root
