"""Fixtures of the synthesis tests: a tiny toy femur cohort and its lesion bank (see synth_toy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthesis.synth_toy import write_toy_cohort


@pytest.fixture(scope="session")
def toy_cohort(tmp_path_factory) -> Path:
    return write_toy_cohort(tmp_path_factory.mktemp("toy") / "cohort")


@pytest.fixture(scope="session")
def toy_bank(toy_cohort, tmp_path_factory) -> Path:
    from metsynth.synthesis.bank import extract_bank

    out = tmp_path_factory.mktemp("bank") / "bank"
    extract_bank(toy_cohort, out, progress=False)
    return out
