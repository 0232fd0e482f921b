"""The donor reference: what a set cut from few donor patients scores before any synthesis."""

from __future__ import annotations

import numpy as np
import pytest

from metsynth.realism.features import FEATURES
from metsynth.realism.measure import (
    LesionSample,
    RealismConfig,
    chance_share,
    donor_reference,
    donor_reference_text,
    format_report,
)

FAST = RealismConfig(folds=3, repeats=1, bootstrap=100, donor_null_splits=12, cnn=False)


def _cohort(patients: int = 24, per_patient: int = 3, donors: tuple[str, ...] = (), shift: float = 0.0,
            seed: int = 0) -> list[LesionSample]:
    """Real lesions of ``patients`` patients; those of ``donors`` have every feature moved by ``shift``
    (patients that differ from the others), the others only patient-to-patient noise."""
    rng = np.random.default_rng(seed)
    out = []
    for p in range(patients):
        name = f"P{p:02d}"
        centre = rng.normal(0.0, 0.3, len(FEATURES)) + (shift if name in donors else 0.0)
        for j in range(per_patient):
            values = centre + rng.normal(0.0, 1.0, len(FEATURES))
            out.append(LesionSample(f"real/{name}/L{j}", name, "real", dict(zip(FEATURES, values.tolist())),
                                    np.zeros((2, 2, 2), np.float32)))
    return out


def test_donors_unlike_the_other_patients_score_high_and_the_chance_band_stays_near_one_half():
    donors = {"P00", "P01", "P02", "P03", "P04"}
    real = _cohort(donors=tuple(donors), shift=2.0)
    ref = donor_reference(real, donors, FAST, seed=0)
    assert ref["k"] == 5 and ref["donor_groups"] == sorted(donors)
    assert ref["donors"]["auc"] > 0.85, ref["donors"]  # the donors themselves are told apart
    assert ref["donors"]["n_b"] == 5 * 3 and ref["donors"]["n_a"] == 19 * 3
    chance = ref["chance"]
    assert chance["splits"] == len(chance["aucs"]) == FAST.donor_null_splits
    lo, hi = chance["ci95"]
    assert lo <= chance["auc"] <= hi and 0.3 < chance["auc"] < 0.75  # random patients: no systematic difference
    assert chance_share(ref, 1.0) == 1.0 and chance_share(ref, 0.0) == 0.0
    assert chance_share(ref, None) is None and chance_share({}, 0.7) is None
    # the same input gives the same numbers
    assert donor_reference(real, donors, FAST, seed=0) == ref
    assert donor_reference(real, donors, FAST, seed=1)["chance"]["aucs"] != chance["aucs"]


def test_donors_like_the_others_score_like_chance():
    donors = {"P00", "P01", "P02", "P03", "P04"}
    ref = donor_reference(_cohort(donors=tuple(donors), shift=0.0), donors, FAST, seed=0)
    assert ref["donors"]["auc"] < 0.8


def test_what_the_reference_cannot_measure_says_why():
    real = _cohort(patients=8)
    # donors from another cohort (not among the real patients): no own-lesions test, the chance band still runs
    ref = donor_reference(real, {"X1", "X2", "X3"}, FAST, seed=0)
    assert "0 of the 3 donor case(s)" in ref["donors"]["skipped"]
    assert len(ref["chance"]["aucs"]) == FAST.donor_null_splits
    # as many donors as patients but one: nothing left to draw against
    ref = donor_reference(real, {f"P{p:02d}" for p in range(7)}, FAST, seed=0)
    assert "at least 2 on each side" in ref["chance"]["skipped"]
    assert "at least 2 on each side" in ref["donors"]["skipped"]
    off = donor_reference(real, {"P00", "P01"}, FAST.model_copy(update={"donor_null_splits": 0}), seed=0)
    assert off["chance"] == {"skipped": "realism.donor_null_splits is 0"} and "auc" in off["donors"]


def test_the_report_reads_each_set_against_the_band():
    donors = {"P00", "P01", "P02", "P03", "P04"}
    ref = donor_reference(_cohort(donors=tuple(donors), shift=2.0), donors, FAST, seed=0)
    set_auc = float(np.max(ref["chance"]["aucs"])) + 0.01
    report = {"n_real": 72, "real_groups": 24, "config": FAST.model_dump(mode="json"), "null_real": {},
              "donor_reference": ref,
              "sets": {"synthetic": {"n_volumes": 72, "features": {"auc": set_auc, "ci95": [0.5, 0.9]}, "cnn": None,
                                     "null": {}, "features_table": [], "chance_share": chance_share(ref, set_auc)}}}
    text = format_report(report)
    assert "real: the 5 donor patients' own lesions vs the other patients'" in text
    assert f"real: 5 random patients vs the others (donor null, {FAST.donor_null_splits} draws" in text
    sentence = donor_reference_text(report)
    assert f"synthetic ({set_auc:.2f}) is above all {FAST.donor_null_splits} draws" in sentence
    assert f"The donors' own real lesions score {ref['donors']['auc']:.2f}" in sentence and sentence in text
    # an older realism.json (no reference) reads as before
    del report["donor_reference"]
    assert donor_reference_text(report) == "" and "donor patients" not in format_report(report)


@pytest.mark.parametrize("k", [2, 3])
def test_the_draws_take_as_many_patients_as_there_are_donors(k, monkeypatch):
    import metsynth.realism.measure as measure

    seen = []
    original = measure.c2st

    def spy(x, y, groups, *args, **kwargs):
        seen.append(len(set(np.asarray(groups)[np.asarray(y) == 1])))
        return original(x, y, groups, *args, **kwargs)

    monkeypatch.setattr(measure, "c2st", spy)
    donors = {f"P{p:02d}" for p in range(k)}
    donor_reference(_cohort(patients=10), donors, FAST.model_copy(update={"donor_null_splits": 4}), seed=0)
    assert seen == [k] * 5  # the donors' own test, then four draws
