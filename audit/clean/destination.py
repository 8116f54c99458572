"""Whether a `clean --to` folder may be written: never over the audit's inputs or output, and
never over a file no clean run of ours wrote.

Input: the audit output folder (OUT), the destination (DEST), the audit's input shard URIs
(the shards table), and DEST's clean ledger (audit.clean.ledger).
Output: nothing; `check_destination` returns when DEST may be (created and) written.
Failure: `UsageError` (CLI exit 2), one line naming the folder or file, when DEST
  - is, contains or is inside a local folder an input shard of the audit lives in, or OUT;
  - holds any file or folder that is not ours: ours are the layout marker and the lock, the
    output shards the ledger planned (NNNNN.tar, NNNNN.parquet, NNNNN_stats.json), their
    completion markers (_manifest/clean/NNNNN.json), the ledger batches
    (_manifest/clean_plan/batch-NNNNNN.parquet), our temp files and private temp folders.
Nothing is created or changed here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from audit.io.atomic_files import is_temp_name
from audit.clean.ledger import PLAN_DIR, load_ledger
from audit.io.folder_ownership import MARKER
from audit.io.output_dir import PRIVATE_TMP, RUN_TMP
from audit.io.user_errors import UsageError

_BATCH = re.compile(r"batch-\d{6}\.parquet")


def _local_folder(uri: str) -> Path | None:
    if "://" in uri and not uri.startswith("file://"):
        return None
    return Path(uri.removeprefix("file://")).resolve().parent


def _overlap(dest: Path, other: Path) -> str:
    if dest == other:
        return "is"
    if other in dest.parents:
        return "is inside"
    if dest in other.parents:
        return "contains"
    return ""


def check_not_inputs(dest: Path, out_root: Path, input_uris: list[str]) -> None:
    dest = Path(dest).resolve()
    folders = {f for f in (_local_folder(u) for u in input_uris) if f is not None}
    for what, folder in [("the audit output folder", Path(out_root).resolve())] + \
            [("the input shard folder", f) for f in sorted(folders)]:
        how = _overlap(dest, folder)
        if how:
            raise UsageError(f"--to {dest} {how} {what} {folder}: clean would write over the audit's "
                             "files; clean into a folder outside the audit's inputs and output")


def foreign_files(dest: Path) -> list[Path]:
    """Every file or folder in DEST that no clean run of ours wrote (empty when DEST is absent)."""
    dest = Path(dest)
    if not dest.is_dir():
        return []
    planned = {o for o, _, _ in load_ledger(dest).rows} if (dest / PLAN_DIR).is_dir() else set()
    ours_top = {MARKER, ".lock"} | {f"{o}{suffix}" for o in planned for suffix in (".tar", ".parquet", "_stats.json")}
    allowed_dirs = {"_manifest", "_manifest/clean", PLAN_DIR.as_posix(), PRIVATE_TMP}
    foreign = []
    for folder, dirs, files in os.walk(dest):
        rel = Path(folder).relative_to(dest).as_posix()
        rel = "" if rel == "." else rel
        if rel.startswith(f"{PRIVATE_TMP}/"):
            continue  # inside a private temp folder of ours (checked by name below)
        for d in dirs:
            name = f"{rel}/{d}" if rel else d
            if not (name in allowed_dirs or (rel == PRIVATE_TMP and RUN_TMP.fullmatch(d))) \
                    or os.path.islink(os.path.join(folder, d)):
                foreign.append(Path(folder) / d)
        dirs[:] = [d for d in dirs if Path(folder) / d not in foreign]
        for f in files:
            if is_temp_name(f) and rel in ("", "_manifest/clean", PLAN_DIR.as_posix()):
                continue
            ok = (rel == "" and f in ours_top) \
                or (rel == "_manifest/clean" and f.endswith(".json") and f[:-5] in planned) \
                or (rel == PLAN_DIR.as_posix() and _BATCH.fullmatch(f))
            if not ok or os.path.islink(os.path.join(folder, f)):
                foreign.append(Path(folder) / f)
    return sorted(foreign)


def check_destination(dest, out_root, input_uris: list[str]) -> None:
    """Refuse (UsageError) a destination clean must not write; see the module doc."""
    dest = Path(dest).resolve()
    check_not_inputs(dest, out_root, input_uris)
    foreign = foreign_files(dest)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UsageError(f"--to {dest} holds {foreign[0]}{more}, which no clean run of ours wrote; "
                         "clean into a new or empty folder (ShardGuard never overwrites files it did not write)")
