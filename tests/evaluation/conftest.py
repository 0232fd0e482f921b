"""Fixtures of the evaluation tests (builders in eval_builders.py)."""

from __future__ import annotations

import pytest

from evaluation.eval_builders import build_cohort


@pytest.fixture
def cohort_with_annotators(tmp_path):
    return build_cohort(tmp_path / "cohort")
