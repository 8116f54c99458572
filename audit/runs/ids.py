"""Run ids: the `run=<id>` partition of every table a run writes, and the runs table's key.

Output: '<UTC date>T<time>.<microseconds>Z-<6 hex>', e.g. 20261207T170651.123456Z-0a1b2c.
Ids sort in time order (every "latest run" query takes max(run_id)), strictly increasing
within a process, even for two runs in one second or one microsecond. Never fails.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

def new_run_id() -> str:
    """UTC time to the microsecond, then a random suffix: ids sort in time order (every "latest
    run" query takes max(run_id)), also for two runs within one second, which second-resolution
    ids ordered by their random suffix."""
    global _last_run_time
    now = max(datetime.now(timezone.utc), _last_run_time + timedelta(microseconds=1))
    _last_run_time = now  # strictly increasing within a process, even within one microsecond
    return now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond:06d}Z-" + secrets.token_hex(3)


_last_run_time = datetime.min.replace(tzinfo=timezone.utc)
