"""One command for a scheduler: `shardguard run --config /etc/shardguard/nightly.yaml`.

The job YAML may carry the run's `input:` pattern, `out:` folder and a `clean.to:` destination,
so cron, a Kubernetes CronJob or an Airflow task runs the same command every night unchanged
(infra/schedule/). Flags still win over the YAML.

Input: the --input/--out flags (or None), the JobConfig, after the audit its run id.
Output: the (input, out) pair to run on; after the audit, the clean step's result dict (empty
when `clean.to` is not set) appended to DEST by `pipelines.clean.run_clean` (append-only: only
kept samples no earlier night wrote go into new output shards), and the CLI's lines for it.
Failure: `UsageError` (a ValueError, exit 2) when neither the flags nor the config give --input/--out; the clean
step's own errors (a destination built with other settings) propagate after the audit has
been recorded, so the next night's run retries the clean step.
"""

from __future__ import annotations

from pathlib import Path

from audit.io.user_errors import UsageError
from pipelines.clean import run_clean
from pipelines.config import JobConfig


def resolve_paths(flag_input: str | None, flag_out: str | None, config: JobConfig,
                  config_path: str | None = None) -> tuple[str, str]:
    """(input pattern, output folder): the flag when given, else the config's key."""
    pattern, out = flag_input or config.input, flag_out or config.out
    missing = [name for name, v in (("--input", pattern), ("--out", out)) if not v]
    if missing:
        where = f"the config {config_path}" if config_path else "a --config file"
        keys = " and ".join(f"'{m[2:]}:'" for m in missing)
        raise UsageError(f"shardguard run needs {' and '.join(missing)}: pass the flag or set {keys} in {where}")
    return pattern, out


def clean_after_audit(out_root: str | Path, config: JobConfig, beam_args: list[str], run_id: str) -> dict:
    """Append the new kept samples to `clean.to` (nothing when it is not set)."""
    if not config.clean.to:
        return {}
    if Path(config.clean.to).resolve() == Path(out_root).resolve():
        raise UsageError(f"clean.to must not be the audit output folder ({out_root}); set another folder")
    return run_clean(str(out_root), config.clean.to, config.clean, beam_args, run_id=run_id)


def clean_lines(r: dict) -> list[str]:
    """What `shardguard clean` and `shardguard run` (with clean.to) print about a clean step."""
    lines = [f"clean {r['run_id']}: {r['input']} input = {r['kept']} kept + {r['dropped']} dropped "
             f"(decisions of run {r['decisions_run'] or 'none: every ok sample kept'})",
             f"wrote {r['appended']} new samples in {len(r['appended_shards'])} new shards; "
             f"{r['dest']} holds {r['written']} samples in {r['shards']} shards ({r['shards_skipped']} already "
             f"complete), {r['captions_changed']} captions changed this run",
             f"images: {'sanitized with ' + r['sanitizer'] if r['sanitizer'] else 'copied unchanged'} "
             f"({r['sanitizer_reason']})"]
    if r.get("failed"):
        lines.append(f"failed: {r['failed']} kept samples not written ({r.get('failed_this_run', 0)} this run): their "
                     "source bytes changed since the audit (errors table, stage 'clean'; re-run the audit)")
    if r.get("no_longer_kept"):
        lines.append(f"note: {r['no_longer_kept']} samples written on an earlier run are no longer kept; "
                     "clean shards are append-only, so they stay (filter them with the decisions table)")
    return lines
