"""One reader of a synthetic set (``metsynth.synthesis.sets``): every spelling of ``kept`` the
index may hold is trained on (or left out) alike, and the nnU-Net export picks, fold by fold,
the volumes metsynth's own training takes (leakage filter, then the size-study subset)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from metsynth.errors import ConfigError, InputError
from metsynth.evaluation.splits import load_or_make_splits
from metsynth.export.nnunet import NnunetExportConfig, plan_export, resolve_inputs
from metsynth.seeds import fold_seed
from metsynth.segmentation.datasets import build_training_set
from metsynth.synthesis.sets import NotEnoughVolumes, count_kept, parse_kept, read_set
from synthesis.synth_toy import write_toy_cohort


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from metsynth.synthesis.bank import extract_bank
    from metsynth.synthesis.compose import SynthesisConfig
    from metsynth.synthesis.run import run_synthesis

    run = tmp_path_factory.mktemp("sets") / "run"
    manifest = write_toy_cohort(run / "prepared", n_healthy=2, n_metastatic=4)
    extract_bank(manifest, run / "bank", progress=False)
    run_synthesis(manifest, run / "bank", run / "synthetic", SynthesisConfig.preset("tiny"), progress=False)
    load_or_make_splits(run / "splits.json", manifest, n_folds=2)
    return run


def _rows(index: Path) -> list[dict[str, str]]:
    with open(index, newline="") as fh:
        return list(csv.DictReader(fh))


def _write(index: Path, rows: list[dict[str, str]]) -> None:
    with open(index, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("value, kept", [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("Y", True),
                                         ("t", True), (" True ", True), ("", True), (True, True), (None, True),
                                         ("false", False), ("0", False), ("No", False), ("n", False), ("F", False),
                                         (False, False)])
def test_parse_kept_spellings(value, kept):
    assert parse_kept(value) is kept


def test_parse_kept_refuses_other_values():
    with pytest.raises(InputError, match="index.csv, volume v7: kept='maybe'"):
        parse_kept("maybe", "index.csv, volume v7")


def test_every_spelling_of_kept_is_trained_on(run, tmp_path):
    """A hand-edited index (y/t/1/yes) is trained on as written; n/f/0/no rows are not."""
    rows = [r for r in _rows(run / "synthetic" / "index.csv") if r["kept"] == "true"]
    assert len(rows) >= 8
    spellings = ["y", "t", "1", "yes", "n", "f", "0", "no"]
    for row, spelling in zip(rows, spellings):
        row["kept"] = spelling
    for row in rows:
        row["image"] = str(run / "synthetic" / row["image"])
        row["label"] = str(run / "synthetic" / row["label"])
    edited = tmp_path / "edited"
    edited.mkdir()
    _write(edited / "index.csv", rows)

    expected = {r["volume_id"] for r in rows[:4]} | {r["volume_id"] for r in rows[len(spellings):]}
    assert set(read_set(edited)["volume_id"]) == expected
    assert count_kept(edited) == len(expected)
    training = build_training_set(run / "prepared", "synthetic", synthetic=edited, val_cases=0)
    assert {v.case for v in training.train} == expected


def test_export_and_training_pick_the_same_volumes(run):
    """--limit N: fold k of the export holds exactly the N volumes `train --fold k` takes with the
    seed the study gives fold k."""
    config = NnunetExportConfig.from_dict({"dataset_id": 7, "sources": "real,synthetic", "limit": 3, "seed": 5})
    plan = plan_export(resolve_inputs(run, sources=config.sources), config)
    for fold in range(2):
        training = build_training_set(run / "prepared", "synthetic", fold=fold, splits=run / "splits.json",
                                      synthetic=run / "synthetic", limit=3, val_cases=0, seed=fold_seed(5, fold))
        trained = {v.case for v in training.train}
        exported = {c.case for c in plan.cases if c.source == "synthetic" and fold in c.train_folds}
        assert len(trained) == 3
        assert exported == trained
    # another seed draws other volumes (the test above could not pass by always taking the first 3)
    other = build_training_set(run / "prepared", "synthetic", fold=0, splits=run / "splits.json",
                               synthetic=run / "synthetic", limit=3, val_cases=0, seed=fold_seed(6, 0))
    first = build_training_set(run / "prepared", "synthetic", fold=0, splits=run / "splits.json",
                               synthetic=run / "synthetic", limit=3, val_cases=0, seed=fold_seed(5, 0))
    assert {v.case for v in other.train} != {v.case for v in first.train}


def test_too_few_volumes_is_a_typed_error(run):
    n = count_kept(run / "synthetic")
    with pytest.raises(NotEnoughVolumes) as info:
        build_training_set(run / "prepared", "synthetic", fold=0, splits=run / "splits.json",
                           synthetic=run / "synthetic", limit=n + 1, val_cases=0)
    assert isinstance(info.value, ConfigError)
    assert info.value.requested == n + 1 and info.value.available < n + 1 and info.value.fold == 0
    assert "lower --limit" in str(info.value)


def test_bad_kept_value_names_the_file_and_volume(run, tmp_path):
    rows = _rows(run / "synthetic" / "index.csv")
    rows[2]["kept"] = "perhaps"
    bad = tmp_path / "bad"
    bad.mkdir()
    _write(bad / "index.csv", rows)
    with pytest.raises(InputError, match=rf"index.csv, volume {rows[2]['volume_id']}: kept='perhaps'"):
        read_set(bad)


def test_splits_of_another_cohort_are_refused_alike(run, tmp_path):
    """Training and export apply the one splits-vs-cohort check."""
    import json

    data = json.loads((run / "splits.json").read_text())
    data["cases"].append("X99")
    data["folds"][0]["test"].append("X99")
    other = tmp_path / "splits.json"
    other.write_text(json.dumps(data))
    with pytest.raises(InputError, match="not in the cohort: X99"):
        build_training_set(run / "prepared", "real", fold=0, splits=other, val_cases=0)
    config = NnunetExportConfig.from_dict({"dataset_id": 7, "sources": "real"})
    with pytest.raises(InputError, match="not in the cohort: X99"):
        plan_export(resolve_inputs(run, splits=other, sources=config.sources), config)
