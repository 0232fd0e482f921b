"""The donor reference: what a set cut from few donor patients scores before any synthesis."""

from __future__ import annotations

import numpy as np
import pytest

from metsynth.realism.features import FEATURES
from metsynth.realism.measure import (
    LesionSample,
    RealismConfig,
    chance_share,
    donor_copies,
    donor_reference,
    donor_reference_rows,
    donor_reference_text,
    format_report,
    not_meaningful,
)

FAST = RealismConfig(folds=3, repeats=1, bootstrap=100, donor_null_splits=12, cnn=False)
DONORS = ("P00", "P01", "P02", "P03", "P04")


def _sample(key: str, group: str, source: str, values: np.ndarray) -> LesionSample:
    return LesionSample(key, group, source, dict(zip(FEATURES, values.tolist())), np.zeros((2, 2, 2), np.float32))


def _cohort(patients: int = 24, per_patient: int = 3, donors: tuple[str, ...] = (), shift: float = 0.0,
            seed: int = 0) -> list[LesionSample]:
    """Real lesions of ``patients`` patients; those of ``donors`` have every feature moved by ``shift``
    (patients unlike the others), the others only patient-to-patient noise."""
    rng = np.random.default_rng(seed)
    out = []
    for p in range(patients):
        name = f"P{p:02d}"
        centre = rng.normal(0.0, 0.3, len(FEATURES)) + (shift if name in donors else 0.0)
        out += [_sample(f"real/{name}/L{j}", name, "real", centre + rng.normal(0.0, 1.0, len(FEATURES)))
                for j in range(per_patient)]
    return out


def _generated(counts: dict[str, int]) -> list[LesionSample]:
    """A generated set: ``counts[donor]`` lesions of each donor (their features do not matter here)."""
    return [_sample(f"synthetic/H001__{d}-L1__r{i}", d, "synthetic", np.zeros(len(FEATURES)))
            for d, n in counts.items() for i in range(n)]


def test_copies_of_unusual_donors_score_high_and_the_chance_band_stays_near_one_half():
    real = _cohort(donors=DONORS, shift=2.0)
    generated = _generated({d: 6 for d in DONORS})
    ref = donor_reference(real, generated, FAST, "synthetic")
    assert ref["k"] == 5 and ref["donor_groups"] == list(DONORS) and ref["set"] == "synthetic"
    copies = ref["copies"]
    assert copies["auc"] > 0.85, copies  # copies of these donors are told from the real lesions
    assert copies["n_a"] == 24 * 3 and copies["n_b"] == 5 * 6 and copies["patients"] == 5
    chance = ref["chance"]
    assert chance["draws"] == chance["asked"] == len(chance["aucs"]) == FAST.donor_null_splits
    lo, hi = chance["p5_p95"]
    assert lo <= chance["auc"] <= hi and 0.3 < chance["auc"] < 0.75  # random patients: no systematic difference
    assert chance_share(ref, 1.0) == 1.0 and chance_share(ref, 0.0) == 0.0
    assert chance_share(ref, None) is None and chance_share({}, 0.7) is None
    # the same input gives the same numbers; another seed other draws
    assert donor_reference(real, generated, FAST, "synthetic") == ref
    other = donor_reference(real, generated, FAST.model_copy(update={"seed": 1}), "synthetic")
    assert other["chance"]["aucs"] != chance["aucs"]


def test_copies_of_typical_donors_score_within_the_band():
    ref = donor_reference(_cohort(), _generated({d: 6 for d in DONORS}), FAST, "synthetic")
    assert ref["copies"]["auc"] <= max(ref["chance"]["aucs"]) + 0.05


def test_copies_repeat_each_donor_s_lesions_to_its_count_in_the_set():
    real = _cohort(patients=6, per_patient=2)
    copies = donor_copies(real, {"P01": 5, "P03": 1, "X9": 4})  # X9: a donor from another cohort
    assert [c.key for c in copies] == ["real/P01/L0", "real/P01/L1", "real/P01/L0", "real/P01/L1", "real/P01/L0",
                                       "real/P03/L0"]
    assert {c.group for c in copies} == {"P01", "P03"}


def test_only_the_donors_among_the_real_patients_are_copied_and_counted():
    real = _cohort(patients=12, donors=("P00", "P01"), shift=2.0)
    ref = donor_reference(real, _generated({"P00": 4, "P01": 4, "X8": 4, "X9": 4}), FAST, "synthetic")
    assert ref["k"] == 4 and ref["copies"]["patients"] == 2 and ref["copies"]["n_b"] == 8
    row = donor_reference_rows({"donor_reference": ref})[0]
    assert row[0].endswith("(2 patients)") and row[1] == "8"


def test_what_the_reference_cannot_measure_says_why():
    real = _cohort(patients=8)
    ref = donor_reference(real, _generated({"X1": 3, "X2": 3, "X3": 3}), FAST, "synthetic")
    assert "0 of the 3 donor case(s)" in ref["copies"]["skipped"]
    assert len(ref["chance"]["aucs"]) == FAST.donor_null_splits  # the band needs no donor among the patients
    ref = donor_reference(real, _generated({f"P{p:02d}": 2 for p in range(7)}), FAST, "synthetic")
    assert "at least 2 on each side" in ref["chance"]["skipped"] and "auc" in ref["copies"]
    ref = donor_reference(real, _generated({f"P{p:02d}": 2 for p in range(6)}), FAST, "synthetic")
    assert len(ref["chance"]["aucs"]) == FAST.donor_null_splits  # 6 of 8 leaves 2: it runs
    off = donor_reference(real, _generated({"P00": 2, "P01": 2}), FAST.model_copy(update={"donor_null_splits": 0}),
                          "synthetic")
    assert off["chance"] == {"skipped": "realism.donor_null_splits is 0"} and "auc" in off["copies"]
    assert donor_reference_rows({"donor_reference": off})[0][0].startswith("real: copies of the donors' own lesions")
    assert len(donor_reference_rows({"donor_reference": off})) == 1


def _report(ref: dict, set_auc: float) -> dict:
    return {"n_real": 72, "real_groups": 24, "config": FAST.model_dump(mode="json"), "null_real": {},
            "donor_reference": ref,
            "sets": {"synthetic": {"n_volumes": 30, "features": {"auc": set_auc, "ci95": [0.5, 0.9]},
                                   "null": {}, "features_table": [], "chance_share": chance_share(ref, set_auc)}}}


def test_the_report_reads_each_set_against_the_band():
    ref = donor_reference(_cohort(donors=DONORS, shift=2.0), _generated({d: 6 for d in DONORS}), FAST, "synthetic")
    set_auc = float(np.max(ref["chance"]["aucs"])) + 0.01
    report = _report(ref, set_auc)
    text = format_report(report)
    row = "| real: copies of the donors' own lesions, as many per donor as the synthetic set holds (5 patients) | 30 |"
    assert row in text
    assert f"| real: 5 random patients vs the others (donor null, {FAST.donor_null_splits} draws) | - |" in text
    sentence = donor_reference_text(report)
    assert f"synthetic ({set_auc:.2f}) is above all {FAST.donor_null_splits} draws" in sentence
    assert "Copies of the donors' own real lesions, with their own surroundings and position, score " \
        f"{ref['copies']['auc']:.2f}" in sentence and sentence in text
    assert f"With {FAST.donor_null_splits} draws the band's edges and these shares are rough" in sentence
    many = _report({**ref, "chance": {**ref["chance"], "draws": 100, "asked": 100}}, set_auc)
    assert "rough" not in donor_reference_text(many)
    half = _report(ref, float(np.median(ref["chance"]["aucs"])))
    share = half["sets"]["synthetic"]["chance_share"]
    assert f"is above {100 * share:.0f} % of the draws" in donor_reference_text(half)
    # an older realism.json (no reference) reads as before
    del report["donor_reference"]
    assert donor_reference_text(report) == "" and "donor null" not in format_report(report)


def test_a_reference_whose_classifier_learns_nothing_is_marked_and_explained():
    """Six patients with one lesion each: training folds of a few lesions, below what the trees split."""
    real = _cohort(patients=6, per_patient=1)
    ref = donor_reference(real, _generated({"P00": 2, "P01": 2}), FAST, "synthetic")
    assert ref["chance"]["auc"] is None and ref["chance"]["draws"] == 0 and "learned nothing" in \
        ref["chance"]["not_meaningful"]
    report = _report(ref, 0.6)
    report["n_real"] = 6
    text = format_report(report)
    assert "donor null, 0 of 12 draws) | - | not meaningful |" in text
    assert any(line.startswith("donor null, features") for line in not_meaningful(report))
    assert donor_reference_text(report) == ""  # no band to read a set against


def test_the_html_report_and_figure_4_show_the_reference(tmp_path):
    from metsynth.realism.figure import figure4
    from metsynth.report.sections.realism import _realism_table

    ref = donor_reference(_cohort(donors=DONORS, shift=2.0), _generated({d: 6 for d in DONORS}), FAST, "synthetic")
    report = _report(ref, 0.7)
    html = _realism_table(report)
    assert "copies of the donors&#x27; own lesions" in html or "copies of the donors' own lesions" in html
    assert "5th-95th percentile" in html and "Against the draws" in html
    report["sweep"] = [{"timestep": 0, "set": "synthetic", "contrast_kept": 1.0, "contrast_kept_p10": 1.0}]
    with_ref = figure4(report, report["sweep"], tmp_path / "with.png")
    del report["donor_reference"]
    without = figure4(report, report["sweep"], tmp_path / "without.png")
    assert with_ref.stat().st_size > 0 and without.stat().st_size > 0
    assert with_ref.read_bytes() != without.read_bytes()  # the band and the line are drawn


@pytest.mark.parametrize("k", [2, 3])
def test_the_draws_take_as_many_patients_as_the_set_has_donors(k, monkeypatch):
    import metsynth.realism.measure as measure

    seen = []
    original = measure.c2st

    def spy(x, y, groups, *args, **kwargs):
        seen.append(len(set(np.asarray(groups)[np.asarray(y) == 1])))
        return original(x, y, groups, *args, **kwargs)

    monkeypatch.setattr(measure, "c2st", spy)
    generated = _generated({f"P{p:02d}": 3 for p in range(k)})
    measure.donor_reference(_cohort(patients=10), generated, FAST.model_copy(update={"donor_null_splits": 4}), "s")
    assert seen == [k] * 5  # the copies' test (grouped by donor patient), then four draws


def test_a_realism_json_of_the_first_version_still_renders_without_the_reference(tmp_path):
    """56fa261 wrote the donors against the other patients, with another layout: read as no reference."""
    from metsynth.realism.figure import figure4
    from metsynth.report.sections.realism import _realism_table

    report = _report({"donor_groups": ["P00", "P01"], "k": 2, "donors": {"auc": 0.7, "ci95": [0.6, 0.8], "n_b": 4},
                      "chance": {"auc": 0.5, "ci95": [0.3, 0.7], "splits": 20, "aucs": [0.5] * 20}}, 0.7)
    assert donor_reference_rows(report) == [] and donor_reference_text(report) == ""
    assert "donor null" not in format_report(report) and not_meaningful(report) == []
    assert "random patients" not in _realism_table(report)
    report["sweep"] = [{"timestep": 0, "set": "synthetic", "contrast_kept": 1.0, "contrast_kept_p10": 1.0}]
    assert figure4(report, report["sweep"], tmp_path / "old.png").stat().st_size > 0


def test_draws_whose_classifier_learned_nothing_are_counted_in_the_row(tmp_path):
    from metsynth.realism.figure import figure4

    ref = donor_reference(_cohort(donors=DONORS, shift=2.0), _generated({d: 6 for d in DONORS}), FAST, "synthetic")
    fewer = {**ref, "chance": {**ref["chance"], "draws": 9, "aucs": ref["chance"]["aucs"][:9]}}
    assert "(donor null, 9 of 12 draws)" in format_report(_report(fewer, 0.7))
    empty = {**ref, "chance": {"draws": 0, "asked": 12, "auc": None, "p5_p95": None, "not_meaningful": "nothing"}}
    report = _report(empty, 0.7)
    assert "(donor null, 0 of 12 draws) | - | not meaningful |" in format_report(report)
    report["sweep"] = [{"timestep": 0, "set": "synthetic", "contrast_kept": 1.0, "contrast_kept_p10": 1.0}]
    assert figure4(report, report["sweep"], tmp_path / "empty.png").stat().st_size > 0


def test_a_donor_null_that_ran_fewer_folds_names_them():
    """Six one-lesion patients, two drawn: the drawn side has two groups, so two folds of the three asked."""
    ref = donor_reference(_cohort(patients=6, per_patient=1), _generated({"P00": 2, "P01": 2}), FAST, "synthetic")
    assert ref["chance"]["folds"] == 2
    report = _report(ref, 0.6)
    report["n_real"] = 6
    line = next(line for line in not_meaningful(report) if line.startswith("donor null, features"))
    assert "(6 lesions, 2 folds)" in line


def test_copies_are_not_compared_when_the_donors_are_every_real_patient():
    real = _cohort(patients=4)
    ref = donor_reference(real, _generated({f"P{p:02d}": 3 for p in range(4)}), FAST, "synthetic")
    assert "the donors are all 4 real patients" in ref["copies"]["skipped"] and "test cases" in ref["copies"]["skipped"]
    assert "auc" not in ref["copies"] and donor_reference_rows({"donor_reference": ref}) == []
    text = donor_reference_text({**_report(ref, 0.6), "n_real": 12})  # the reason is printed, not dropped
    assert "No copies of the donors' lesions: the donors are all 4 real patients" in text
    assert "No donor null: 4 donor(s) and 4 real patients" in text
    three = donor_reference(real, _generated({f"P{p:02d}": 3 for p in range(3)}), FAST, "synthetic")
    assert "auc" in three["copies"] and three["copies"]["patients"] == 3


def test_sets_of_another_donor_count_are_read_against_a_band_of_as_many_patients():
    from metsynth.realism.measure import place_sets

    real = _cohort(donors=DONORS, shift=2.0)
    ref = donor_reference(real, _generated({d: 6 for d in DONORS}), FAST, "synthetic")
    sets = {"synthetic": {"n_volumes": 30, "donor_patients": 5, "features": {"auc": 0.7, "ci95": [0.6, 0.8]}},
            "harmonized": {"n_volumes": 30, "donor_patients": 5, "features": {"auc": 0.7, "ci95": [0.6, 0.8]}},
            "other": {"n_volumes": 30, "donor_patients": 2, "features": {"auc": 0.7, "ci95": [0.6, 0.8]}}}
    ref = place_sets(real, sets, ref, FAST)
    assert list(ref["other_bands"]) == ["2"]  # one band for the other count, none for the reference's own
    two = ref["other_bands"]["2"]
    assert two["draws"] == FAST.donor_null_splits and two["aucs"] != ref["chance"]["aucs"]
    assert sets["synthetic"]["chance_share"] == sets["harmonized"]["chance_share"] == chance_share(ref, 0.7)
    assert sets["other"]["chance_share"] == float(np.mean(np.asarray(two["aucs"]) < 0.7))
    report = {**_report(ref, 0.7), "sets": {n: {**e, "null": {}, "features_table": []} for n, e in sets.items()}}
    rows = donor_reference_rows(report)
    draws = FAST.donor_null_splits
    assert rows[-1][0] == f"real: 2 random patients vs the others (donor null for other, {draws} draws)"
    text = donor_reference_text(report)
    assert "other (0.70) is above" in text and "of 2 patients" in text
    assert "synthetic (0.70) is above" in text and "draws of 5 patients" not in text
    # one count for every set: no extra band, the report as before
    same = place_sets(real, {"synthetic": dict(sets["synthetic"])}, donor_reference(
        real, _generated({d: 6 for d in DONORS}), FAST, "synthetic"), FAST)
    assert "other_bands" not in same


def test_a_set_of_another_donor_count_is_read_even_when_the_first_set_s_band_cannot_run():
    from metsynth.realism.measure import place_sets

    real = _cohort(patients=7)
    ref = donor_reference(real, _generated({f"P{p:02d}": 3 for p in range(6)}), FAST, "synthetic")
    assert "skipped" in ref["chance"]  # 6 donors of 7 patients: no band for the first set
    sets = {"synthetic": {"n_volumes": 18, "donor_patients": 6, "features": {"auc": 0.7, "ci95": [0.6, 0.8]}},
            "other": {"n_volumes": 9, "donor_patients": 3, "features": {"auc": 0.7, "ci95": [0.6, 0.8]}}}
    ref = place_sets(real, sets, ref, FAST)
    assert sets["synthetic"]["chance_share"] is None and sets["other"]["chance_share"] is not None
    report = {**_report(ref, 0.7), "sets": {n: {**e, "null": {}, "features_table": []} for n, e in sets.items()}}
    text = donor_reference_text(report)
    assert "Against the draws: other (0.70) is above" in text and "draws of 3 patients" in text
    assert "No donor null: 6 donor(s) and 7 real patients" in text


def test_what_the_synthesis_adds_over_copies_of_its_donors_is_paired_by_donor():
    """A set that is its donors' copies adds 0 [0, 0]; one made easy to spot adds a decided amount; a donor
    missing from the real patients leaves nothing to pair."""
    from metsynth.realism.measure import _tests, synthesis_adds

    real = _cohort()
    counts = {d: 6 for d in DONORS}
    copies = [LesionSample(c.key.replace("real/", "synthetic/"), c.group, "synthetic", c.features, c.patch)
              for c in donor_copies(real, counts)]
    test = _tests(real, copies, FAST, FAST.seed, cnn=False)["features"]
    ref = donor_reference(real, copies, FAST, "synthetic", test)
    assert ref["copies"]["synthesis_adds"] == {"delta_auc": 0.0, "ci95": [0.0, 0.0]}
    assert "scores 0.00 [0.00, 0.00] against them (paired by donor): no more than the donors give" in \
        donor_reference_text({"donor_reference": ref, "sets": {}})
    easy = [LesionSample(c.key, c.group, c.source, {**c.features, "contrast": c.features["contrast"] + 5.0},
                         c.patch) for c in copies[::-1]]  # and in another order: paired by donor, not by position
    test = _tests(real, easy, FAST, FAST.seed, cnn=False)["features"]
    adds = donor_reference(real, easy, FAST, "synthetic", test)["copies"]["synthesis_adds"]
    assert adds["delta_auc"] > 0.3 and adds["ci95"][0] > 0
    assert "the synthesis adds a giveaway of its own" in donor_reference_text(
        {"donor_reference": donor_reference(real, easy, FAST, "synthetic", test), "sets": {}})
    stranger = easy + [LesionSample("synthetic/x", "X9", "synthetic", easy[0].features, easy[0].patch)]
    test = _tests(real, stranger, FAST, FAST.seed, cnn=False)["features"]
    own = donor_copies(real, {**counts, "X9": 1})
    skipped = synthesis_adds(real, stranger, test, own, _tests(real, own, FAST, FAST.seed, cnn=False)["features"],
                             FAST)
    assert skipped["skipped"].startswith("not every donor is among the real patients")
