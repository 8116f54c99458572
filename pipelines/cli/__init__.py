"""The `shardguard` command.

  shardguard run    [--input PATTERN] [--out DIR] [--config job.yaml] [--diffusion-model PATH] [Beam flags ...]
  shardguard sql    --out DIR "SELECT ..." [--format table|csv|json]
  shardguard tables [--out DIR]
  shardguard status --out DIR [--format table|json]
  shardguard contamination --train OUT --eval OUT [--threshold 0.75] [--config job.yaml]
  shardguard clean  --from OUT --to CLEAN_DIR [--caption-strategy rc] [Beam flags ...]
  shardguard prompts --diffusion-model PATH --prompts FILE [--reference FILE] [--fpr 0.01]
  shardguard replication --generated PATH_OR_SHARDS --against OUT [--threshold 0.5]
  shardguard attribution --generated PATH_OR_SHARDS --against OUT [--top-k 10] [--model sscd|clip]
  shardguard report --out DIR [--to DIR] [--top N]

Exit codes: 0 success (also when stdout's reader closed early, `| head`); 1 error (a step failed,
I/O error, missing store, SQL error or a statement `sql` refuses: it runs one read-only query,
see output_commands.EXAMPLES_SQL); 2 usage error: a bad flag, config file or value (YAML
syntax, python tags, out-of-range numbers), input pattern, model file (pickled weights are
refused) or folder (an --out / --to that is not ours, a clean --from that is not an audit), one
line naming it and the fix; 3 the output folder is locked by another run; 4 too many failures
(more than ingest.max_failed_fraction / max_failed_samples of the run's samples failed). Config precedence: defaults < --config YAML < SHARDGUARD_*
environment variables < flags (pipelines.config).

Modules: log_setup (run first: logging is configured before Beam is imported), dispatch (the
parser, dispatch and exit codes), run_command (`run`), output_commands (`sql`, `tables`,
`report`), status_commands, corpus_commands, memorization_commands, and query_output (how
tables, CSV and JSON are printed). `main` is the console script
(`shardguard = "pipelines.cli:main"`); `python -m pipelines.cli` runs it too.
"""

from pipelines.cli import log_setup

log_setup.configure()  # before dispatch's imports load Beam (see log_setup)

from pipelines.cli.dispatch import main  # noqa: E402

__all__ = ["main"]
