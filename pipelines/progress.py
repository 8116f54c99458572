"""Periodic progress for long local runs, read from the completion markers.

Runner-independent: a thread in the driver counts the markers this run has written under
OUT/_manifest/<stage>/ for every stage (ingest, then one embed stage per model) and prints,
every few seconds to stderr, shards done per stage, samples ingested, rate and ETA.
Distributed runners report the same numbers through Beam metrics counters.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path


class StageCounter:
    """Markers of one stage written by one run, read incrementally."""

    def __init__(self, label: str, manifest_dir: Path, run_id: str, total: int):
        self.label, self.dir, self.run_id, self.total = label, Path(manifest_dir), run_id, total
        self._seen: dict[str, dict] = {}

    def poll(self) -> list[dict]:
        if self.dir.exists():
            for p in self.dir.glob("*.json"):
                if p.name not in self._seen:
                    try:
                        rec = json.loads(p.read_text())
                    except (OSError, ValueError):
                        continue  # being replaced right now; the next poll sees it
                    self._seen[p.name] = rec if rec.get("run_id") == self.run_id else {}
        return [r for r in self._seen.values() if r]


class ProgressMonitor:
    def __init__(self, stages: list[StageCounter], every: float = 5.0, stream=sys.stderr):
        self.stages, self.every, self.stream = [s for s in stages if s.total > 0], every, stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = time.monotonic()

    def __enter__(self):
        if self.every > 0 and self.stages:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def line(self) -> str:
        dt = max(time.monotonic() - self._t0, 1e-9)
        parts, done_units, total_units, samples, failed = [], 0, 0, 0, 0
        for i, st in enumerate(self.stages):
            done = st.poll()
            parts.append(f"{st.label} {len(done)}/{st.total}")
            done_units += len(done)
            total_units += st.total
            if i == 0:
                samples = sum(r["n_inputs"] for r in done)
                failed = sum(r["n_failed"] for r in done)
        eta = f"{dt / done_units * (total_units - done_units):.0f}s" if done_units else "?"
        return (f"[progress] {', '.join(parts)} shards; {samples} samples ingested ({failed} failed), "
                f"{samples / dt:.0f} samples/s, ETA {eta}")

    def _loop(self):
        while not self._stop.wait(self.every):
            print(self.line(), file=self.stream, flush=True)
