"""The `shardguard` command's parser, dispatch and exit codes (pipelines.cli's doc lists the
commands and the codes).

Input: argv. Output: the command's exit code: 0 ok (also when stdout's reader closed early),
1 error, 2 UsageError, 3 OutputLocked, 4 TooManyFailures. Unknown flags go to Beam for `run`
and `clean` and are an argparse usage error (exit 2) for every other command.
"""

from __future__ import annotations

import argparse
import os
import sys

from audit.runs.failure_threshold import TooManyFailures
from audit.io.output_dir import OutputLocked
from audit.io.user_errors import UsageError
from pipelines.cli import corpus_commands, log_setup, memorization_commands, output_commands, run_command, status_commands

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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shardguard", description="Audit and clean LAION-style image-text shards.",
                                epilog=EPILOG_MAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run_command.add_parsers(sub)
    output_commands.add_sql_parser(sub)
    corpus_commands.add_parsers(sub)
    memorization_commands.add_parsers(sub)
    status_commands.add_parsers(sub)
    output_commands.add_report_parser(sub)
    output_commands.add_tables_parser(sub)
    return p


COMMANDS = {  # command -> handler(args, beam_args)
    "run": run_command.cmd_run,
    "sql": lambda args, _: output_commands.cmd_sql(args),
    "contamination": lambda args, _: corpus_commands.cmd_contamination(args),
    "clean": corpus_commands.cmd_clean,
    "prompts": lambda args, _: memorization_commands.cmd_prompts(args),
    "replication": lambda args, _: memorization_commands.cmd_replication(args),
    "attribution": lambda args, _: memorization_commands.cmd_attribution(args),
    "report": lambda args, _: output_commands.cmd_report(args),
    "status": lambda args, _: status_commands.cmd_status(args),
    "tables": lambda args, _: output_commands.cmd_tables(args),
}


def _silence_stdout() -> None:
    """stdout's reader went away (`| head`): send what is still buffered nowhere, so the
    interpreter's final flush does not print a traceback either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    log_setup.configure()
    args, rest = _parser().parse_known_args(argv)
    if args.command not in ("run", "clean") and rest:
        _parser().error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        code = COMMANDS[args.command](args, rest)
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
