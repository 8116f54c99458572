"""The audit job on a real distributed engine: Beam's DaskRunner against a dask.distributed
cluster (one `dask scheduler` and two `dask worker` processes on 127.0.0.1, started here and
stopped by pid), and the DirectRunner in multi_processing mode. Both must write the same table
rows as a single-process run of the same job on the same small demo subset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.beam_options import DASK_RUNNER, pipeline_options
from pipelines.job import run_ingest
from tests.job_outputs import table_rows

REPO = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).with_name("dask")
JOB_YAML = REPO / "tests" / "data" / "small_job.yaml"
N_WORKERS = 2

pytestmark = pytest.mark.slow


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """Address 'tcp://127.0.0.1:PORT' of a scheduler with N_WORKERS single-threaded workers."""
    distributed = pytest.importorskip("distributed")
    d = tmp_path_factory.mktemp("dask")
    sched_file = d / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], cwd=REPO, env=env,
                              stdout=open(d / "scheduler.log", "wb"), stderr=subprocess.STDOUT)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            assert procs[0].poll() is None, (d / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "dask scheduler did not start in 60 s"
            time.sleep(0.2)
        for i in range(N_WORKERS):
            procs.append(subprocess.Popen(
                [str(DASK), "worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1", "--no-nanny",
                 "--nthreads", "1", "--no-dashboard", "--death-timeout", "60", "--local-directory", str(d / f"w{i}")],
                cwd=REPO, env=env, stdout=open(d / f"worker{i}.log", "wb"), stderr=subprocess.STDOUT))
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:"), address
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(N_WORKERS, timeout=120)
            workers = client.scheduler_info()["workers"]
            assert all(w.startswith("tcp://127.0.0.1:") for w in workers), workers
        yield address
    finally:
        _stop(procs[1:])
        _stop(procs[:1])


def _assert_same_tables(expected: dict, out: Path) -> None:
    got = table_rows(out)
    for table, rows in expected.items():
        assert len(got[table]) == len(rows), table
        assert got[table] == rows, table
    for table in ("samples", "embeddings", "duplicates", "perturbation_samples", "perturbation_tests"):
        assert expected[table], f"{table} is empty: the comparison would prove nothing"


@pytest.mark.beam
def test_dask_runner_on_a_dask_cluster_writes_the_same_tables(dask_cluster, small_input, small_run_tables, tmp_path):
    import distributed
    out = tmp_path / "dask"
    s = run_ingest(str(small_input), str(out), load_config(str(JOB_YAML)),
                   ["--runner", "dask", "--dask_client_address", dask_cluster.removeprefix("tcp://")])
    assert len(s.shards) == 3 and s.dedup and s.perturbations
    _assert_same_tables(small_run_tables, out)
    # the work ran on the cluster's worker processes (each shard is its own partition): all of them ran tasks
    with distributed.Client(dask_cluster, timeout=30) as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert len(executed) == N_WORKERS and all(n > 0 for n in executed.values()), executed


@pytest.mark.beam
def test_direct_runner_multi_processing_writes_the_same_tables(small_input, small_run_tables, tmp_path):
    out = tmp_path / "mp"
    run_ingest(str(small_input), str(out), load_config(str(JOB_YAML)),
               ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    _assert_same_tables(small_run_tables, out)


def test_runner_short_name_dask_maps_to_beams_dask_runner():
    opts = pipeline_options(["--runner", "dask", "--dask_client_address", "127.0.0.1:8786"])
    from apache_beam.options.pipeline_options import StandardOptions
    assert opts.view_as(StandardOptions).runner == DASK_RUNNER
    assert opts.get_all_options()["address"] == "127.0.0.1:8786"
