"""Fixtures shared by the job-level tests: a small real input and one undisturbed run's tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.job import run_ingest
from tests.job_outputs import demo_subset, table_rows

SMALL_JOB_YAML = Path(__file__).resolve().parents[1] / "data" / "small_job.yaml"


@pytest.fixture(scope="session")
def small_input(demo_sample, tmp_path_factory):
    """Three small img2dataset shards cut from the demo sample (see tests.job_outputs)."""
    return demo_subset(demo_sample, tmp_path_factory.mktemp("small-input"))


@pytest.fixture(scope="session")
def small_run_tables(small_input, tmp_path_factory):
    """Table rows of one single-process, uninterrupted run of tests/data/small_job.yaml."""
    out = tmp_path_factory.mktemp("small-run")
    run_ingest(str(small_input), str(out), load_config(str(SMALL_JOB_YAML)))
    return table_rows(out)
