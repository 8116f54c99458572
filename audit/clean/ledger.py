"""The clean destination's ledger: which kept sample was planned into which output shard.

A scheduled job cleans into the same destination every night. Earlier output shards must stay
untouched (byte for byte: a training job may be reading them) and a sample must never be
written twice, so the plan is append-only:
  DEST/_manifest/clean_plan/batch-NNNNNN.parquet   one per clean run that found new kept
      samples: (out_shard, position, shard, key), written atomically BEFORE any of its output
      shards; its schema metadata holds the settings id ('plan') and the run id.
A run plans only the kept samples that no batch holds yet, into new output shards numbered
after the last planned one (the same deterministic split as `clean_shards.plan_shards`), then
writes every planned shard that has no completion marker: a run killed mid-batch is finished
by the next run with exactly the same assignment.

Input: the destination folder, the kept samples in (shard, key) order, the shard size.
Output: the ledger rows and the new batch's plan. Failure: `ValueError` when the destination
was planned with other settings (caption policy, shard size, sanitizer: mixing them would give
one training set two treatments) or when a sample planned into a still-unwritten shard is no
longer kept (its decision flipped before the shard was written: clean into a new folder).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from audit.io import atomic_files
from audit.clean.shards import CleanConfig, SampleRef

PLAN_DIR = Path("_manifest") / "clean_plan"
_SCHEMA = pa.schema([("out_shard", pa.string()), ("position", pa.int32()), ("shard", pa.string()),
                     ("key", pa.string())])


def settings_id(cfg: CleanConfig, sanitizer: dict | None) -> str:
    """Digest of what makes two output shards comparable: the clean settings (not the
    destination path) and the image sanitizer. Decisions are not in it: they change nightly."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "to"}
    return hashlib.sha256(json.dumps([settings, sanitizer], sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclasses.dataclass
class Ledger:
    rows: list[tuple[str, str, str]]  # (out_shard, shard, key) in out_shard, position order
    plans: set[str]  # settings ids of the batches
    n_batches: int

    def planned(self) -> set[tuple[str, str]]:
        return {(s, k) for _, s, k in self.rows}

    def shards(self) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {}
        for o, s, k in self.rows:
            out.setdefault(o, []).append((s, k))
        return out


def load_ledger(dest: Path) -> Ledger:
    files = sorted((Path(dest) / PLAN_DIR).glob("batch-*.parquet"))
    rows, plans = [], set()
    for f in files:
        t = pq.read_table(f)
        plans.add((t.schema.metadata or {}).get(b"plan", b"").decode())
        rows += sorted(zip(t.column("out_shard").to_pylist(), t.column("position").to_pylist(),
                           t.column("shard").to_pylist(), t.column("key").to_pylist()))
    seen: set[tuple[str, str]] = set()
    for _, _, s, k in rows:
        if (s, k) in seen:
            raise ValueError(f"{dest}: the clean ledger plans {s}/{k} twice; the folder was edited by hand")
        seen.add((s, k))
    return Ledger([(o, s, k) for o, _, s, k in sorted(rows)], plans, len(files))


def plan_append(kept: list[SampleRef], ledger: Ledger, shard_size: int) -> list[tuple[str, list[SampleRef]]]:
    """New output shards for the kept samples no batch holds yet, numbered after the last one."""
    planned = ledger.planned()
    new = [s for s in kept if (s.shard, s.key) not in planned]
    start = max((int(o) + 1 for o, _, _ in ledger.rows), default=0)
    size = max(shard_size, 1)
    return [(f"{start + i // size:05d}", new[i:i + size]) for i in range(0, len(new), size)]


def write_batch(dest: Path, ledger: Ledger, plan: list[tuple[str, list[SampleRef]]], plan_id: str,
                run_id: str) -> Path:
    """Record a new batch atomically; call before writing any of its shards."""
    rows = [(o, i, s.shard, s.key) for o, samples in plan for i, s in enumerate(samples)]
    table = pa.Table.from_arrays([pa.array([r[j] for r in rows], _SCHEMA.field(j).type) for j in range(4)],
                                 schema=_SCHEMA.with_metadata({"plan": plan_id, "run_id": run_id}))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return atomic_files.write_bytes(Path(dest) / PLAN_DIR / f"batch-{ledger.n_batches:06d}.parquet", buf.getvalue())


def unwritten_shards(ledger: Ledger, kept: list[SampleRef], is_complete) -> list[tuple[str, list[SampleRef]]]:
    """Planned output shards without a completion marker, with their samples in planned order."""
    by_key = {(s.shard, s.key): s for s in kept}
    todo = []
    for o, keys in ledger.shards().items():
        if is_complete(o):
            continue
        gone = [k for k in keys if k not in by_key]
        if gone:
            raise ValueError(f"clean shard {o} was planned but not written, and {len(gone)} of its samples are "
                             f"no longer kept (e.g. {gone[0][0]}/{gone[0][1]}); clean into a new --to folder")
        todo.append((o, [by_key[k] for k in keys]))
    return todo
