"""Shared fixtures (paths to the committed test data and the demo sample) and the `beam` mark's
guard.

Lanes: `make test` runs every test but the GPU ones; `make test-fast` leaves out the tests
marked `beam` (they run a Beam pipeline: the whole job, a corpus step, the clean job, in this
process or as a `python -m pipelines.cli run|clean` subprocess) and `slow` (long without
Beam). The guard keeps the `beam` mark honest in both lanes: a test that is not marked and
runs a Beam pipeline in this process, itself or through a fixture set up for it, or starts a
`pipelines.cli run` / `clean` subprocess, fails with a message naming the mark.
"""

import subprocess
from pathlib import Path

import pytest
from apache_beam.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]
BROKEN = REPO / "tests" / "data" / "broken"
DEMO_SAMPLE = REPO / "infra" / "demo" / "sample"

_current: list = [None]  # the test being set up, run or torn down


def _require_beam_mark(what: str) -> None:
    item = _current[0]
    if item is not None and item.get_closest_marker("beam") is None:
        raise RuntimeError(f"{item.nodeid} {what} but is not marked `beam` (pytest.mark.beam): "
                           "`make test-fast` would run it")


def _job_command(args) -> bool:
    args = [str(a) for a in args] if isinstance(args, (list, tuple)) else str(args).split()
    return "pipelines.cli" in args and any(a in ("run", "clean") for a in args)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):  # before the item's fixtures, so a fixture's pipeline counts too
    _current[0] = item


def pytest_runtest_teardown(item, nextitem):
    _current[0] = item


def pytest_configure(config):
    run, popen_init = Pipeline.run, subprocess.Popen.__init__

    def guarded_run(self, *args, **kwargs):
        _require_beam_mark("runs a Beam pipeline")
        return run(self, *args, **kwargs)

    def guarded_popen(self, args, *rest, **kwargs):
        if _job_command(args):
            _require_beam_mark(f"starts {' '.join(map(str, args))[:80]}")
        return popen_init(self, args, *rest, **kwargs)

    Pipeline.run, subprocess.Popen.__init__ = guarded_run, guarded_popen


@pytest.fixture
def broken_dir() -> Path:
    return BROKEN


@pytest.fixture(scope="session")
def demo_sample() -> Path:
    if not any(DEMO_SAMPLE.glob("*.tar")):
        pytest.fail(f"demo sample missing in {DEMO_SAMPLE}: it is committed; see infra/demo/README.md")
    return DEMO_SAMPLE
