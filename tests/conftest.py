"""Shared fixtures: paths to the committed test data and the demo sample."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BROKEN = REPO / "tests" / "data" / "broken"
DEMO_SAMPLE = REPO / "infra" / "demo" / "sample"


@pytest.fixture
def broken_dir() -> Path:
    return BROKEN


@pytest.fixture(scope="session")
def demo_sample() -> Path:
    if not any(DEMO_SAMPLE.glob("*.tar")):
        pytest.fail(f"demo sample missing in {DEMO_SAMPLE}: it is committed; see infra/demo/README.md")
    return DEMO_SAMPLE
