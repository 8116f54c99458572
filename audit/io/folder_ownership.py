"""Which folders ShardGuard may write into and clean up: the layout marker.

A folder is ours when it was absent or empty when we first wrote into it: we then write
FOLDER/.shardguard.json ({"format": 1, "kind": ...}) before anything else. Kinds: 'audit'
(the --out of `shardguard run`), 'clean' (a `clean --to` destination), 'report' (a
`report --to` folder). A folder written by a version before the marker is adopted (the marker
is added) when it has that kind's layout: an audit has _manifest/ and audit.duckdb or runs/;
a clean destination has _manifest/clean_plan/ or _manifest/clean/. Any other non-empty folder,
or one marked for another kind, is refused with a `UsageError` (exit 2), and nothing in it is
written or deleted.

Input: a folder path and the kind the command needs. Output: the resolved folder (created,
with its marker, by `claim`). Failure: `UsageError` naming the folder and the fix; a marker
that is not our JSON is refused the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from audit.io import atomic_files
from audit.io.user_errors import UsageError

MARKER = ".shardguard.json"
FORMAT = 1
KINDS = {"audit": "audit output folder", "clean": "clean destination", "report": "report folder"}


def marked_kind(root: Path) -> str | None:
    """The kind in root's marker, None when there is no marker."""
    path = Path(root) / MARKER
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        kind = record["kind"] if isinstance(record, dict) else None
    except (OSError, ValueError, KeyError):
        kind = None
    if kind not in KINDS:
        raise UsageError(f"{path} is not a ShardGuard layout marker (expected JSON with 'format' and 'kind'); "
                         "use another folder")
    return kind


def has_legacy_layout(root: Path, kind: str) -> bool:
    """A folder of this kind written before the marker existed."""
    root = Path(root)
    if kind == "audit":
        return (root / "_manifest").is_dir() and ((root / "audit.duckdb").is_file() or (root / "runs").is_dir())
    if kind == "clean":
        return (root / "_manifest" / "clean_plan").is_dir() or (root / "_manifest" / "clean").is_dir()
    return False


def local_folder(root) -> Path:
    """`root` as a resolved local path; a URI (s3://, gs://, any `scheme://`) is refused: writing
    audits to object storage is not built, and Path() would turn 's3://b/x' into a local 's3:/b/x'."""
    text = os.fspath(root)
    if "://" in text:
        raise UsageError(f"{text} is an object-store URI: ShardGuard writes and reads audit folders only on a "
                         "local or mounted filesystem (inputs may be on any Beam filesystem); pass a local folder")
    return Path(text).resolve()


def _refuse(root: Path, kind: str, why: str) -> UsageError:
    return UsageError(f"{root} {why}: ShardGuard writes a {KINDS[kind]} only into a new or empty folder or "
                      f"one it made (with {MARKER}); choose another folder")


def _check(root: Path, kind: str) -> str:
    """'marked', 'adopt' or 'new'; raises UsageError for a folder that is not ours."""
    if root.exists() and not root.is_dir():
        raise _refuse(root, kind, "is a file, not a folder")
    found = marked_kind(root) if root.is_dir() else None
    if found == kind:
        return "marked"
    if found is not None:
        raise _refuse(root, kind, f"is a ShardGuard {KINDS[found]}, not a {KINDS[kind]}")
    if not root.exists() or not any(os.scandir(root)):
        return "new"
    if has_legacy_layout(root, kind):
        return "adopt"
    raise _refuse(root, kind, f"is not empty and has no {MARKER}")


def check_claimable(root, kind: str) -> Path:
    """What `claim` would decide, writing nothing (for --dry-run)."""
    root = local_folder(root)
    _check(root, kind)
    return root


def claim(root, kind: str) -> Path:
    """Make `root` ours for `kind` (create it with the marker, or adopt an older folder of ours)."""
    root = local_folder(root)
    if _check(root, kind) != "marked":
        root.mkdir(parents=True, exist_ok=True)
        atomic_files.write_json(root / MARKER, {"format": FORMAT, "kind": kind})
    return root


def require_existing(root, kind: str, adopt: bool = False) -> Path:
    """An existing folder of `kind` (marked, or the older layout: marked now when `adopt`);
    never creates one. For folders a command reads (clean --from) or adds to (contamination
    --eval, replication --against)."""
    root = local_folder(root)
    found = marked_kind(root) if root.is_dir() else None
    if found == kind:
        return root
    if found is not None:
        raise UsageError(f"{root} is a ShardGuard {KINDS[found]}, not a {KINDS[kind]}; pass a {KINDS[kind]}")
    if not root.is_dir():
        raise UsageError(f"{root} does not exist: pass a ShardGuard {KINDS[kind]}")
    if not has_legacy_layout(root, kind):
        raise UsageError(f"{root} is not a ShardGuard {KINDS[kind]} (no {MARKER}); pass the folder a "
                         f"{'`shardguard run --out`' if kind == 'audit' else 'ShardGuard command'} wrote")
    if adopt:
        atomic_files.write_json(root / MARKER, {"format": FORMAT, "kind": kind})
    return root
