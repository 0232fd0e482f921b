"""CV splits: deterministic, grouped, saved once; the leakage filter by donor and healthy case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metsynth.cohort import Case, Cohort
from metsynth.errors import ConfigError, InputError
from metsynth.evaluation.splits import (
    SplitConfig,
    Splits,
    check_no_leakage,
    leakage_filter,
    load_or_make_splits,
    load_splits,
    make_splits,
    training_index,
)


def make_cohort(n_metastatic=12, n_test=3, n_healthy=4, patients=None) -> Cohort:
    cases = []
    for i in range(n_metastatic):
        patient = patients[i] if patients else None
        cases.append(Case(id=f"M{i:02d}", image=f"/x/M{i:02d}.nii.gz", role="metastatic",
                          centre="ABC"[i % 3], patient=patient))
    cases += [Case(id=f"T{i}", image=f"/x/T{i}.nii.gz", role="test") for i in range(n_test)]
    cases += [Case(id=f"H{i}", image=f"/x/H{i}.nii.gz", role="healthy") for i in range(n_healthy)]
    return Cohort(name="c", cases=cases)


def synthetic_index(cohort: Cohort, n=60, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    donors = [c.id for c in cohort.by_role("metastatic")]
    healthy = [c.id for c in cohort.by_role("healthy")]
    return pd.DataFrame({
        "volume_id": [f"S{i:03d}" for i in range(n)],
        "donor_case": [donors[j] for j in rng.integers(0, len(donors), n)],
        "healthy_case": [healthy[j] for j in rng.integers(0, len(healthy), n)],
    })


def test_folds_are_deterministic_balanced_and_cover_each_case_once():
    cohort = make_cohort()
    a = make_splits(cohort, n_folds=5, seed=3)
    b = make_splits(cohort, n_folds=5, seed=3)
    assert a == b
    assert make_splits(cohort, n_folds=5, seed=4).folds != a.folds
    all_cases = [c for fold in a.folds for c in fold]
    assert sorted(all_cases) == [f"M{i:02d}" for i in range(12)]
    sizes = sorted(len(f) for f in a.folds)
    assert sizes[-1] - sizes[0] <= 1
    assert a.test_only == ("T0", "T1", "T2")
    for k in range(5):
        assert set(a.train(k)).isdisjoint(a.test(k))
        assert len(a.train(k)) + len(a.test(k)) == 12
        assert not set(a.test_only) & set(a.train(k))
    with pytest.raises(InputError, match="fold 5 does not exist"):
        a.test(5)


def test_grouping_by_patient_and_centre():
    patients = ["P0", "P0", "P0", "P1", "P1", "P2", "P3", "P4", "P5", "P5", "P6", "P7"]
    cohort = make_cohort(patients=patients)
    s = make_splits(cohort, n_folds=4, seed=1, group_by="patient")
    for p in set(patients):
        members = [f"M{i:02d}" for i, q in enumerate(patients) if q == p]
        assert len({s.fold_of(m) for m in members}) == 1
    by_centre = make_splits(cohort, n_folds=3, seed=0, group_by="centre")
    assert sorted(len(f) for f in by_centre.folds) == [4, 4, 4]
    assert all(len({c.centre for c in cohort.cases if c.id in f}) == 1 for f in by_centre.folds)
    with pytest.raises(ConfigError, match="3 centre groups for n_folds=5"):
        make_splits(cohort, n_folds=5, group_by="centre")
    # by default the manifest's patients are kept together (issue 16: they were split unless asked)
    default = make_splits(cohort, n_folds=4, seed=1)
    assert default.group_by == "patient" and default.folds == s.folds
    assert SplitConfig().group_by == "patient"
    loose = make_splits(cohort, n_folds=4, seed=1, group_by=None)
    assert any(len({loose.fold_of(f"M{i:02d}") for i, q in enumerate(patients) if q == p}) > 1 for p in set(patients))
    # without patient: every case is its own patient, the same folds as no grouping
    plain = make_cohort()
    assert make_splits(plain, n_folds=5, seed=3).folds == make_splits(plain, n_folds=5, seed=3, group_by=None).folds


def test_saved_once_reloaded_and_conflicts_are_errors(tmp_path):
    cohort = make_cohort()
    path = tmp_path / "splits.json"
    first = load_or_make_splits(path, cohort, n_folds=5, seed=7)
    assert path.is_file()
    mtime = path.stat().st_mtime_ns
    again = load_or_make_splits(path, cohort, n_folds=5, seed=7)
    assert again.folds == first.folds and path.stat().st_mtime_ns == mtime
    assert load_splits(path).to_dict() == first.to_dict()
    with pytest.raises(ConfigError, match="seed 7 \\(requested 8\\)"):
        load_or_make_splits(path, cohort, n_folds=5, seed=8)
    with pytest.raises(ConfigError, match="4 folds|5 folds"):
        load_or_make_splits(path, cohort, n_folds=4, seed=7)
    with pytest.raises(ConfigError, match="missing from the file: M12"):
        load_or_make_splits(path, make_cohort(n_metastatic=13), n_folds=5, seed=7)
    # a hand-edited file that splits one patient over two folds is caught
    patients = [f"P{i // 2}" for i in range(12)]
    grouped = make_cohort(patients=patients)
    gpath = tmp_path / "grouped.json"
    load_or_make_splits(gpath, grouped, n_folds=3, seed=0, group_by="patient")
    data = load_splits(gpath).to_dict()
    moved = data["folds"][0]["test"].pop()
    data["folds"][1]["test"].append(moved)
    from metsynth.fileio import write_json

    write_json(gpath, data)
    with pytest.raises(ConfigError, match="split over folds"):
        load_or_make_splits(gpath, grouped, n_folds=3, seed=0, group_by="patient")
    assert SplitConfig().n_folds == 5


def test_planted_leaking_volumes_never_reach_fold_k():
    cohort = make_cohort()
    splits = make_splits(cohort, n_folds=5, seed=0)
    index = synthetic_index(cohort)
    for k in range(splits.n_folds):
        test_case = splits.test(k)[0]
        train_case = splits.train(k)[0]
        planted = pd.DataFrame({
            "volume_id": ["LEAK-donor", "LEAK-multi", "LEAK-testonly", "LEAK-healthy", "OK-clean"],
            "donor_case": [test_case, f"{train_case};{test_case}", "T1", train_case, train_case],
            "healthy_case": ["H0", "H1", "H2", "T0", "H3"],
        })
        full = pd.concat([index, planted], ignore_index=True)
        report = leakage_filter(full, splits, k)
        kept_ids = set(report.kept["volume_id"])
        assert not any(v.startswith("LEAK") for v in kept_ids)
        assert "OK-clean" in kept_ids
        assert set(report.kept["donor_case"]).isdisjoint(splits.test(k))
        reasons = dict(zip(report.excluded["volume_id"], report.excluded["reason"]))
        assert reasons["LEAK-donor"] == f"donor {test_case} is in test fold {k}"
        assert reasons["LEAK-testonly"] == "donor T1 is test-only"
        assert reasons["LEAK-healthy"] == "healthy case T0 is test-only"
        assert len(report.kept) + len(report.excluded) == len(full)
        check_no_leakage(report.kept, splits, k)
        with pytest.raises(InputError, match=f"fold {k}: the training set holds"):
            check_no_leakage(full, splits, k)
    assert training_index(index.to_dict("records"), splits, 0).equals(leakage_filter(index, splits, 0).kept)


def test_healthy_case_in_the_test_fold_is_excluded_and_unknown_donors_are_errors(tmp_path):
    cohort = make_cohort()
    splits = make_splits(cohort, n_folds=3, seed=0)
    test_case = splits.test(2)[0]
    index = pd.DataFrame({"volume_id": ["a"], "donor_case": [splits.train(2)[0]], "healthy_case": [test_case]})
    report = leakage_filter(index, splits, 2)
    assert report.kept.empty and report.excluded["reason"][0] == f"healthy case {test_case} is in test fold 2"
    bad = pd.DataFrame({"volume_id": ["x"], "donor_case": ["Z99"], "healthy_case": ["H0"]})
    with pytest.raises(InputError, match="donor case 'Z99' is not in the splits"):
        leakage_filter(bad, splits, 0)
    with pytest.raises(InputError, match="lacks column"):
        leakage_filter(pd.DataFrame({"volume_id": ["x"]}), splits, 0)
    csv = tmp_path / "index.csv"
    synthetic_index(cohort, n=10).to_csv(csv, index=False)
    assert len(leakage_filter(csv, splits, 0).kept) + len(leakage_filter(csv, splits, 0).excluded) == 10


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), n_folds=st.integers(2, 6), n_meta=st.integers(6, 20))
def test_leak_free_for_any_seed(seed, n_folds, n_meta):
    cohort = make_cohort(n_metastatic=n_meta)
    splits = make_splits(cohort, n_folds=n_folds, seed=seed)
    index = synthetic_index(cohort, n=40, seed=seed)
    for k in range(n_folds):
        kept = training_index(index, splits, k)
        assert set(kept["donor_case"]).isdisjoint(set(splits.test(k)) | set(splits.test_only))
        assert set(kept["donor_case"]) <= set(splits.train(k))


def test_splits_from_a_manifest_file(tmp_path):
    from evaluation.eval_builders import build_cohort

    manifest, _ = build_cohort(tmp_path / "c", n_metastatic=4, n_test=2, annotators=False)
    s = load_or_make_splits(tmp_path / "splits.json", manifest, n_folds=2, seed=0)
    assert sorted(s.cases) == ["M00", "M01", "M02", "M03"] and s.test_only == ("T04", "T05")
    assert make_splits(manifest, n_folds=2, seed=0) == s


def test_a_healthy_femur_of_a_tested_patient_feeds_no_training_of_that_fold():
    """Issue 16 item 4: a patient's healthy femur is their anatomy; when their metastatic femur is
    tested in fold k (or their other femur is test-only), no synthetic volume on it trains fold k."""
    cohort = make_cohort(patients=[f"P{i}" for i in range(12)])
    cohort.cases.append(Case(id="HP3", image="/x/HP3.nii.gz", role="healthy", patient="P3"))
    cohort.cases.append(Case(id="HT", image="/x/HT.nii.gz", role="healthy", patient="PT"))
    next(c for c in cohort.cases if c.id == "T0").patient = "PT"
    splits = make_splits(cohort, n_folds=3, seed=0)
    assert splits.patients == {"M03": "P3", "HP3": "P3", "T0": "PT", "HT": "PT"}  # only patients with several cases
    k = splits.fold_of("M03")
    assert {"HP3", "HT"} <= splits.excluded_from_training(k)
    other = next(i for i in range(3) if i != k)
    assert "HP3" not in splits.excluded_from_training(other) and "HT" in splits.excluded_from_training(other)
    third = next(i for i in range(3) if i not in (k, other))
    index = pd.DataFrame({"volume_id": ["a", "b", "c"], "donor_case": [splits.test(third)[0]] * 3,
                          "healthy_case": ["HP3", "HT", "H0"]})
    report = leakage_filter(index, splits, k)
    assert list(report.kept["volume_id"]) == ["c"]
    assert "healthy case HP3 is of patient P3, tested in fold" in report.excluded["reason"].iloc[0]
    assert list(training_index(index, splits, other)["volume_id"]) == ["a", "c"]
    # the rule survives the file; without grouping by patient (or in an old file) it is off
    again = Splits.from_dict(splits.to_dict())
    assert again.patients == splits.patients
    assert make_splits(cohort, n_folds=3, seed=0, group_by=None).patients == {}


def test_too_few_groups_names_config_keys_or_cli_flags():
    """The study's config keys by default; the command's flags when the command line asks."""
    from metsynth.evaluation.splits import CLI_NAMES

    cohort = make_cohort(n_metastatic=6, patients=[f"P{i // 2}" for i in range(6)])  # 3 patients, 6 cases
    with pytest.raises(ConfigError) as err:
        make_splits(cohort, n_folds=5)
    assert str(err.value).endswith("has 3 patient groups for n_folds=5; lower n_folds to at most 3, or use "
                                   "group_by: null (up to 6 folds; the cases of one patient may then be split "
                                   "over folds)"), str(err.value)
    with pytest.raises(ConfigError) as err:
        make_splits(cohort, n_folds=5, names=CLI_NAMES)
    text = str(err.value)
    assert "for --folds 5; lower --folds to at most 3, or use --group-by none (up to 6 folds" in text, text
    assert "n_folds" not in text and "group_by" not in text
    with pytest.raises(ConfigError, match=r"6 metastatic cases for --folds 7; lower --folds to at most 6$"):
        make_splits(cohort, n_folds=7, group_by=None, names=CLI_NAMES)
