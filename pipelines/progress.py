"""Periodic progress for long local runs, read from the completion markers.

Runner-independent: a thread in the driver counts the markers this run has written
(OUT/_manifest/<stage>/) and prints shards and samples done, rate and ETA every few seconds
to stderr. Distributed runners report the same numbers through Beam metrics counters.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path


class ProgressMonitor:
    def __init__(self, manifest_dir: Path, run_id: str, total_shards: int, every: float = 5.0,
                 stream=sys.stderr, label: str = "ingest"):
        self.dir, self.run_id, self.total = Path(manifest_dir), run_id, total_shards
        self.every, self.stream, self.label = every, stream, label
        self._seen: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = time.monotonic()

    def __enter__(self):
        if self.every > 0 and self.total > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def poll(self) -> tuple[int, int, int]:
        """(shards done, samples done, samples failed) by this run so far."""
        if self.dir.exists():
            for p in self.dir.glob("*.json"):
                if p.name not in self._seen:
                    try:
                        rec = json.loads(p.read_text())
                    except (OSError, ValueError):
                        continue  # being replaced right now; next poll sees it
                    self._seen[p.name] = rec if rec.get("run_id") == self.run_id else {}
        done = [r for r in self._seen.values() if r]
        return len(done), sum(r["n_inputs"] for r in done), sum(r["n_failed"] for r in done)

    def line(self) -> str:
        shards, samples, failed = self.poll()
        dt = max(time.monotonic() - self._t0, 1e-9)
        rate = samples / dt
        eta = (dt / shards * (self.total - shards)) if shards else float("nan")
        eta_s = f"{eta:.0f}s" if shards else "?"
        return (f"[{self.label}] {shards}/{self.total} shards, {samples} samples "
                f"({failed} failed), {rate:.0f} samples/s, ETA {eta_s}")

    def _loop(self):
        while not self._stop.wait(self.every):
            print(self.line(), file=self.stream, flush=True)
