"""How every ShardGuard Beam pipeline is started: options from the command's Beam flags, and a
private temp dir under the output folder.

Input: Beam flags as given on the command line (unknown `shardguard run` / `clean` flags
pass through here unchanged); a folder of ours (OUT or a clean destination).
Output: `PipelineOptions` (DirectRunner when no --runner; `--runner dask` is Beam's
DaskRunner with one element per partition); `private_tempdir` sets Python's temp dir to
OUT/_tmp/sg-run-<hex> while a pipeline runs and removes it afterwards.
Failure: Beam's own errors for bad flags; dask missing when the DaskRunner is asked for.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from audit.io.output_dir import OutputDir

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"  # not in Beam's short-name list


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Beam flags -> options; `--runner dask` (or DaskRunner) means Beam's DaskRunner, whose
    elements (whole shards) then default to one per Dask partition so shards spread over workers."""
    opts = PipelineOptions(beam_args)
    std = opts.view_as(StandardOptions)
    std.runner = std.runner or "DirectRunner"
    if std.runner.lower() in ("dask", "daskrunner"):
        std.runner = DASK_RUNNER
    if std.runner == DASK_RUNNER:  # dask is optional (the test extra): imported only for its runner
        from apache_beam.runners.dask.dask_runner import DaskOptions
        dask = opts.view_as(DaskOptions)
        if dask.npartitions is None and dask.partition_size is None:
            dask.partition_size = 1
    return opts


@contextlib.contextmanager
def private_tempdir(root: Path):
    """Beam's local job server leaves an empty 'beam-temp*' folder per run in the temp dir:
    give the run its own temp dir under OUT (OUT/_tmp/sg-run-<hex>) and remove it afterwards."""
    out = OutputDir(root)
    path = out.new_private_tmp()
    saved, tempfile.tempdir = tempfile.tempdir, str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = saved
        out.remove_private_tmp(path)
