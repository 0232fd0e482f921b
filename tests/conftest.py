"""Shared fixtures: the real CT beside the repository and tiny synthetic cohorts."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import write_tiny_cohort

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real`` (never copied into the repository)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real CT folder {SHARED_DATA} is not present beside the repository")
    return SHARED_DATA


@pytest.fixture
def tiny_cohort(tmp_path) -> Path:
    return write_tiny_cohort(tmp_path / "cohort")


@pytest.fixture(scope="module")
def toy_synthesis(tmp_path_factory) -> tuple[Path, Path]:
    """The toy synthesis cohort (``tests/synthesis/synth_toy.py``) and its lesion bank."""
    from metsynth.synthesis.bank import extract_bank
    from synthesis.synth_toy import write_toy_cohort

    root = tmp_path_factory.mktemp("toy_synthesis")
    cohort = write_toy_cohort(root / "cohort")
    extract_bank(cohort, root / "bank", progress=False)
    return cohort, root / "bank"

