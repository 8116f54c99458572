"""Where an output folder stands: each shard's state per stage, totals, the last runs.

Input: an output folder OUT (local) and, optionally, the shard ids the last run's --input
matches now (the caller expands the pattern: audit/ does not know Beam filesystems).
Reads only: the completion markers OUT/_manifest/<stage>/<shard>.json, the record a running
job keeps in OUT/_manifest/_running.json (`write_running` at its start, `clear_running` at
its end), whether OUT/.lock is held (/proc/locks, no lock taken) and the runs table's files.
Output: plain rows (dicts): `shard_rows` (one per shard and stage), `stage_totals`,
`recent_runs`, `running_run`. Writes nothing.

States of a shard in a stage:
  done         its marker exists (run id, samples ok/failed from the marker)
  failed       its marker exists but records a shard-level failure: ingest of a truncated or
               unreadable tar (not a tar, empty file, cannot open) completes with a shard-level
               errors row, and the marker's status says which ('truncated', 'unreadable'); the
               samples read before the failure are counted. The next run retries a shard whose
               read failed on I/O (ingest.retry_unreadable); a truncated or non-tar file stays
               failed. Later stages' markers have no shard-level status: done.
  running      no marker yet, in the to-do list of the run that holds OUT/.lock now
  interrupted  no marker, in the to-do list of a run whose process is gone (killed, crashed:
               the record was left behind); the next run redoes it
  pending      no marker, matched by the last run's input (or the running run's)
Stages are those with a marker in OUT plus those in the running record.
Failure: a folder that is not a ShardGuard output gives no rows; a marker that cannot be read
is state 'unreadable' with the reason, never an exception.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from audit.io import atomic_files

RUNNING_FILE = "_manifest/_running.json"
STATES = ("done", "failed", "running", "interrupted", "pending", "unreadable")


# ---- the running record (written by the job) --------------------------------------------------
def write_running(root: str | os.PathLike, run_id: str, input_pattern: str, stage_todo: dict[str, list[str]]) -> Path:
    """Atomically record what the run that holds the lock is doing (one small JSON)."""
    path = Path(root) / RUNNING_FILE
    atomic_files.write_json(path, {
        "run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input_pattern": input_pattern, "stages": {s: list(ids) for s, ids in stage_todo.items()}})
    return path


def clear_running(root: str | os.PathLike) -> None:
    (Path(root) / RUNNING_FILE).unlink(missing_ok=True)


def lock_held(root: str | os.PathLike) -> bool | None:
    """Whether some process holds OUT/.lock now, from /proc/locks (None where unknown)."""
    path = Path(root) / ".lock"
    if not path.exists():
        return False
    try:
        st, locks = path.stat(), Path("/proc/locks").read_text()
    except OSError:
        return None
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(len(f) > 5 and f[1] == "FLOCK" and f[5] == ident for f in (line.split() for line in locks.splitlines()))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_run(root: str | os.PathLike) -> dict | None:
    """The running record with `state`: 'running', or 'interrupted' (its process is gone), or
    'running (unverified)' when it was written on another host and the lock cannot be read."""
    path = Path(root) / RUNNING_FILE
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"state": "unreadable", "error": f"{path}: {e}", "stages": {}}
    held = lock_held(root)
    if rec.get("host") == socket.gethostname():
        alive = _pid_alive(int(rec.get("pid", -1))) and held is not False
        rec["state"] = "running" if alive else "interrupted"
    else:
        rec["state"] = {True: "running", False: "interrupted", None: "running (unverified)"}[held]
    return rec


# ---- markers ----------------------------------------------------------------------------------
def stages(root: str | os.PathLike) -> list[str]:
    """Stages with at least one completion marker: 'ingest', 'embed/<model>', ..."""
    base = Path(root) / "_manifest"
    if not base.is_dir():
        return []
    found = {p.parent.relative_to(base).as_posix() for p in base.rglob("*.json") if p.parent != base}
    return sorted(found, key=lambda s: (s != "ingest", s))


def _marker_state(path: Path) -> dict:
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return {"state": "unreadable", "run_id": None, "n_inputs": None, "n_ok": None, "n_failed": None,
                "detail": str(e), "shard": None}
    status = m.get("status", "complete")
    row = {"state": "done" if status == "complete" else "failed", "run_id": m.get("run_id"),
           "n_inputs": m.get("n_inputs"), "n_ok": m.get("n_ok"), "n_failed": m.get("n_failed"),
           "detail": "" if status == "complete" else f"{status}: {m.get('error') or ''}".strip()}
    return {**row, "shard": m.get("shard")}


def shard_rows(root: str | os.PathLike, matched: list[str] | None = None) -> list[dict]:
    """One row per (shard, stage): shard, stage, state, run_id, n_inputs, n_ok, n_failed, detail.

    `matched`: shard ids the last run's input matches (pending where no marker); None: only
    shards with a marker or in the running record are listed."""
    base = Path(root) / "_manifest"
    run = running_run(root) or {}
    todo = {st: set(ids) for st, ids in (run.get("stages") or {}).items()}
    all_stages = sorted(set(stages(root)) | set(todo), key=lambda s: (s != "ingest", s))
    rows = []
    for stage in all_stages:
        done: dict[str, dict] = {}
        for p in sorted((base / stage).glob("*.json")):
            r = _marker_state(p)
            done[r.pop("shard") or p.stem] = r
        shard_ids = set(done) | todo.get(stage, set()) | set(matched or [])
        for shard in sorted(shard_ids):
            if shard in done:
                rows.append({"shard": shard, "stage": stage, **done[shard]})
                continue
            state = "pending"
            if shard in todo.get(stage, set()):
                state = "running" if run["state"].startswith("running") else "interrupted"
            rows.append({"shard": shard, "stage": stage, "state": state,
                         "run_id": run.get("run_id") if state != "pending" else None,
                         "n_inputs": None, "n_ok": None, "n_failed": None, "detail": ""})
    return rows


def stage_totals(rows: list[dict]) -> list[dict]:
    """Per stage: shards per state and the samples of done and failed shards."""
    out: dict[str, dict] = {}
    for r in rows:
        t = out.setdefault(r["stage"], {"stage": r["stage"], "shards": 0, **{s: 0 for s in STATES},
                                        "n_inputs": 0, "n_ok": 0, "n_failed": 0})
        t["shards"] += 1
        t[r["state"]] += 1
        for k in ("n_inputs", "n_ok", "n_failed"):
            t[k] += r[k] or 0
    return list(out.values())


def recent_runs(root: str | os.PathLike, limit: int = 5) -> list[dict]:
    """The newest rows of the runs table (read from its Parquet files, no store needed)."""
    files = sorted((Path(root) / "runs").glob("run=*/run.parquet"))
    if not files:
        return []
    cols = ["run_id", "job", "status", "started_at", "wall_seconds", "n_shards_matched", "n_shards_processed",
            "n_inputs", "n_ok", "n_failed", "input_pattern"]
    rows = []
    for f in files:
        t = pq.read_table(f)
        rows += [{c: r.get(c) for c in cols} for r in t.to_pylist()]
    for r in rows:
        r["wall_seconds"] = None if r["wall_seconds"] is None else round(r["wall_seconds"], 1)
    rows.sort(key=lambda r: (r["started_at"] is not None, r["started_at"], r["run_id"]), reverse=True)
    return rows[:limit]


def last_input_pattern(root: str | os.PathLike) -> str | None:
    """The running run's --input, else the newest run's."""
    run = running_run(root)
    if run and run.get("input_pattern"):
        return run["input_pattern"]
    runs = recent_runs(root, 1)
    return runs[0]["input_pattern"] if runs else None
