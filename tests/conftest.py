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
