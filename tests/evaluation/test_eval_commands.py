"""`metsynth evaluate`, `metsynth stats`, `metsynth variability` through Typer's CliRunner."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from evaluation.eval_builders import build_cohort, write_predictions
from metsynth.cli import app
from metsynth.cohort import load_cohort
from metsynth.evaluation.evaluate import EvaluationConfig, evaluate_cohort
from metsynth.evaluation.metrics import compute_metrics
from metsynth.volume import Volume

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["--quiet", *map(str, args)])


@pytest.fixture
def cohort(tmp_path):
    return build_cohort(tmp_path / "cohort")


def test_splits_command_writes_the_folds_once_and_refuses_other_settings(cohort, tmp_path):
    from metsynth.evaluation.splits import load_splits

    manifest, _ = cohort
    out = tmp_path / "splits.json"
    res = invoke("splits", manifest, "-o", out, "--folds", "2", "--seed", "3")
    assert res.exit_code == 0, res.output
    saved = load_splits(out)
    assert saved.n_folds == 2 and saved.seed == 3 and "fold 0: test" in res.output
    before = out.read_bytes()
    assert invoke("splits", manifest, "-o", out, "--folds", "2", "--seed", "3").exit_code == 0  # reloaded
    res = invoke("splits", manifest, "-o", out, "--folds", "3", "--seed", "3")
    assert res.exit_code == 2 and "another setting: 2 folds (requested 3)" in res.output, res.output
    assert out.read_bytes() == before  # never recomputed silently
    res = invoke("splits", manifest, "-o", tmp_path / "g.json", "--group-by", "patiend")
    assert res.exit_code == 2 and "did you mean 'patient'" in res.output and not (tmp_path / "g.json").exists()


def test_evaluate_writes_per_case_csv_and_summary(cohort, tmp_path):
    manifest, refs = cohort
    preds = write_predictions(tmp_path / "pred", refs, empty=("M01",))
    res = invoke("evaluate", "--pred", preds, "--truth", manifest, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert sorted(df["case_id"]) == sorted(refs)  # metastatic and test cases; the healthy one is skipped
    row = df.set_index("case_id").loc["M00"]
    truth = Volume.read(load_cohort(manifest).case("M00").reference_lesion().path)
    expected = compute_metrics(Volume.read(preds / "M00.nii.gz"), truth)
    for k in ("dice", "hd", "hd95", "assd"):
        assert row[k] == pytest.approx(getattr(expected, k), rel=1e-12)
    empty = df.set_index("case_id").loc["M01"]
    assert empty["empty"] == "pred" and math.isnan(empty["hd"]) and empty["dice"] == 0
    assert empty["fn"] == 2 and empty["tp"] == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_cases"] == len(refs) and summary["metrics"]["n_worst_case"] == 1
    assert "diagonal" in summary["metrics"]["worst_case"]
    hd_values = df["hd"].fillna(df["diagonal_mm"])
    assert summary["metrics"]["hd"]["mean"] == pytest.approx(hd_values.mean())
    assert summary["detection"]["n_true"] == 2 * len(refs)
    lesions = pd.read_csv(tmp_path / "out" / "lesions.csv")
    assert set(lesions["kind"]) == {"true", "pred"}
    assert "dice" in res.output and "wrote" in res.output


def test_missing_prediction_names_the_case_unless_allowed(cohort, tmp_path):
    manifest, refs = cohort
    preds = write_predictions(tmp_path / "pred", refs, skip=("M02",))
    res = invoke("evaluate", "--pred", preds, "--truth", manifest, "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert "M02" in res.output and "--allow-missing" in res.output
    res = invoke("evaluate", "--pred", preds, "--truth", manifest, "--out", tmp_path / "out", "--allow-missing")
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["missing"] == ["M02"] and summary["n_cases"] == len(refs) - 1


def test_annotator_and_grid_errors(cohort, tmp_path):
    manifest, refs = cohort
    preds = write_predictions(tmp_path / "pred", refs)
    res = invoke("evaluate", "--pred", preds, "--truth", manifest, "--out", tmp_path / "outA", "--annotator", "A")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "outA" / "metrics.csv")
    assert set(df["annotator"]) == {"A"}
    res = invoke("evaluate", "--pred", preds, "--truth", manifest, "--out", tmp_path / "o", "--annotator", "Z")
    assert res.exit_code == 2 and "no lesion mask by annotator 'Z'" in res.output
    # a prediction on another grid: one-line error naming the case
    bad = Volume.read(preds / "M00.nii.gz")
    Volume(bad.array, spacing=(1.0, 1.0, 1.0)).write(preds / "M00.nii.gz")
    res = invoke("evaluate", "--pred", preds, "--truth", manifest, "--out", tmp_path / "o")
    assert res.exit_code == 2 and "case M00" in res.output and "grid" in res.output


def test_evaluate_library_settings(cohort, tmp_path):
    manifest, refs = cohort
    preds = write_predictions(tmp_path / "pred", refs)
    res = evaluate_cohort(preds, manifest, EvaluationConfig(roles=["test"], worst_case=10.0))
    assert list(res.cases["role"].unique()) == ["test"]
    assert EvaluationConfig.from_dict({"worst_case": "12.5"}).worst_case == 12.5


def test_stats_command_prints_and_writes_tables(cohort, tmp_path):
    manifest, refs = cohort
    for name, shift in (("real", 3), ("synthetic", 1)):
        preds = write_predictions(tmp_path / f"pred_{name}", refs, shift=shift)
        res = invoke("evaluate", "--pred", preds, "--truth", manifest, "--out", tmp_path / name)
        assert res.exit_code == 0, res.output
    res = invoke("stats", f"Real={tmp_path / 'real' / 'metrics.csv'}", tmp_path / "synthetic" / "metrics.csv",
                 "--out", tmp_path / "stats", "--title", "Table 3")
    assert res.exit_code == 0, res.output
    assert "| Real (ref.) |" in res.output and "| synthetic |" in res.output and "Kruskal-Wallis dice" in res.output
    for f in ("table.md", "table.html", "table.tex", "tests.csv", "stats.json"):
        assert (tmp_path / "stats" / f).is_file()
    md = (tmp_path / "stats" / "table.md").read_text()
    synth_line = next(line for line in md.splitlines() if line.startswith("| synthetic"))
    assert synth_line.count("**") == 8  # the 1-voxel shift is best on all four metrics
    tests = pd.read_csv(tmp_path / "stats" / "tests.csv")
    assert set(tests["metric"]) == {"dice", "hd", "hd95", "assd"}
    res = invoke("stats", tmp_path / "nope.csv")
    assert res.exit_code == 2 and "not found" in res.output


def test_variability_command(cohort, tmp_path):
    manifest, refs = cohort
    preds = write_predictions(tmp_path / "pred", refs)
    res = invoke("variability", manifest, "--pred", preds, "--out", tmp_path / "var")
    assert res.exit_code == 0, res.output
    assert "Inter-operator: novice/novice" in res.output and "inter-rater Dice range" in res.output
    for f in ("table1.md", "table1.html", "table1.tex", "variability_pairs.csv", "variability_cases.csv",
              "staple.csv", "variability.json"):
        assert (tmp_path / "var" / f).is_file()
    staple_masks = sorted(p.name for p in (tmp_path / "var" / "staple").iterdir())
    assert staple_masks == sorted(f"{cid}.nii.gz" for cid in refs)
    assert np.isin(Volume.read(tmp_path / "var" / "staple" / "M00.nii.gz").array, (0, 1)).all()
    res = invoke("variability", manifest, "--no-staple")
    assert res.exit_code == 0 and "Automatic" not in res.output


def test_stats_command_tables_show_the_differences_to_the_reference(tmp_path):
    from metsynth.evaluation.stats import hodges_lehmann_ci

    rng = np.random.default_rng(5)
    real = rng.uniform(0.2, 0.6, 12)
    dice = {"real": real, "synthetic": real + rng.normal(0.1, 0.05, 12), "diffusion": real + rng.normal(0.0, 0.05, 12)}
    for name, values in dice.items():
        pd.DataFrame({"case_id": [f"C{i:02d}" for i in range(12)], "dice": values, "hd": 50 - 40 * values,
                      "hd95": 40 - 30 * values, "assd": 9 - 8 * values}).to_csv(tmp_path / f"{name}.csv", index=False)
    res = invoke("stats", *(tmp_path / f"{n}.csv" for n in dice), "--out", tmp_path / "stats")
    assert res.exit_code == 0, res.output
    est, lo, hi = hodges_lehmann_ci(dice["synthetic"], real, confidence=1 - 0.05 / 2)
    shown = f"Δ {est:+.2f} [{lo:+.2f}, {hi:+.2f}]"
    md = (tmp_path / "stats" / "table.md").read_text()
    assert f"({shown})" in next(line for line in md.splitlines() if line.startswith("| synthetic"))
    assert "Hodges-Lehmann" in md and "97.5%" in md
    assert shown in (tmp_path / "stats" / "table.html").read_text()
    assert f"$\\Delta\\,{est:+.2f}\\;[" in (tmp_path / "stats" / "table.tex").read_text()
    tests = pd.read_csv(tmp_path / "stats" / "tests.csv").set_index(["metric", "model"])
    assert tests.loc[("dice", "synthetic"), "diff_ci_low"] == pytest.approx(lo)
    saved = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert any(r["diff_ci_high"] == pytest.approx(hi) for r in saved["pairwise"])
    assert "difference (HL)" in res.output


def test_variability_without_out_writes_beside_the_manifest_and_guards_the_folder(cohort, tmp_path):
    from metsynth.fileio import read_json

    manifest, refs = cohort
    preds = write_predictions(tmp_path / "pred", refs)
    other = write_predictions(tmp_path / "pred2", refs, shift=2)
    out = manifest.parent / "variability"
    res = invoke("variability", manifest, "--pred", preds)
    assert res.exit_code == 0, res.output
    assert f"output folder: {out}" in res.output and f"wrote {out}/table1.md" in res.output
    for f in ("table1.md", "table1.html", "table1.tex", "variability_pairs.csv", "staple.csv", "variability.json"):
        assert (out / f).is_file(), f
    assert sorted(p.name for p in (out / "staple").iterdir()) == sorted(f"{cid}.nii.gz" for cid in refs)
    assert read_json(out / "variability_inputs.json")["predictions"] == str(preds.resolve())
    assert invoke("variability", manifest, "--pred", preds).exit_code == 0  # same inputs: recomputed in place
    before = (out / "variability_pairs.csv").read_bytes()
    res = invoke("variability", manifest, "--pred", other)
    assert res.exit_code == 2 and "--force" in res.output, res.output
    assert "variability study of other settings or inputs" in res.output, res.output
    assert (out / "variability_pairs.csv").read_bytes() == before  # nothing overwritten
    res = invoke("variability", manifest, "--pred", other, "--force")
    assert res.exit_code == 0, res.output
    assert read_json(out / "variability_inputs.json")["predictions"] == str(other.resolve())
    assert (out / "variability_pairs.csv").read_bytes() != before
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    res = invoke("variability", manifest, "--out", foreign, "--no-staple")
    assert res.exit_code == 2 and "files that are not a variability study (todo.txt;" in res.output, res.output
    assert sorted(p.name for p in foreign.iterdir()) == ["todo.txt"]


def test_evaluate_fold_scores_only_the_folds_held_out_cases(cohort, tmp_path):
    """Issue 16 item 7: a fold's evaluation never scores the cases its model trained on."""
    from metsynth.evaluation.splits import load_or_make_splits
    from metsynth.fileio import write_json

    manifest, refs = cohort  # M00-M02 metastatic, T03 test-only, H04 healthy
    splits = tmp_path / "splits.json"
    saved = load_or_make_splits(splits, manifest, n_folds=2, seed=0, group_by=None)
    preds = write_predictions(tmp_path / "pred", refs)  # every case predicted, as a careless folder would be
    res = invoke("evaluate", "--pred", preds, "--truth", manifest, "-o", tmp_path / "e0", "--fold", "0",
                 "--splits", splits)
    assert res.exit_code == 0, res.output
    held_out = sorted(saved.test(0) + ["T03"])
    assert sorted(pd.read_csv(tmp_path / "e0" / "metrics.csv")["case_id"]) == held_out
    summary = json.loads((tmp_path / "e0" / "summary.json").read_text())
    assert summary["fold"] == 0 and summary["n_cases"] == len(held_out) and res.output.startswith("fold 0: ")

    for args, message in ((("--fold", "2", "--splits", splits), "fold 2 does not exist"),
                          (("--fold", "0"), "needs the splits file")):
        res = invoke("evaluate", "--pred", tmp_path / "pred", "--truth", manifest, "-o", tmp_path / "e3", *args)
        assert res.exit_code == 2 and message in res.output, res.output

    # a folder written by `predict --fold 1` records its fold: used without --fold, another one refused
    write_json(preds / "predict.json", {"model": "m.pt", "fold": 1, "splits": str(splits.resolve())})
    res = invoke("evaluate", "--pred", preds, "--truth", manifest, "-o", tmp_path / "e1")
    assert res.exit_code == 0, res.output
    assert sorted(pd.read_csv(tmp_path / "e1" / "metrics.csv")["case_id"]) == sorted(saved.test(1) + ["T03"])
    assert "fold 1 (recorded by predict)" in res.output
    res = invoke("evaluate", "--pred", preds, "--truth", manifest, "-o", tmp_path / "e2", "--fold", "0",
                 "--splits", splits)
    assert res.exit_code == 2 and "predictions of fold 1" in res.output and not (tmp_path / "e2").exists()

    other, _ = build_cohort(tmp_path / "other", n_metastatic=2)
    data = other.read_text().replace("M0", "X0")
    other.write_text(data)
    res = invoke("evaluate", "--pred", preds, "--truth", other, "-o", tmp_path / "e3")  # the recorded fold and splits
    assert res.exit_code == 2 and "another cohort" in res.output and not (tmp_path / "e3").exists()


def test_a_prediction_on_the_original_scan_against_a_prepared_truth_says_which_grids(tmp_path):
    """The audit's case: a raw scan predicted, scored against the prepared cohort's masks. The error
    says the prediction is on the case's original scan and how to score it; a prepared-looking
    prediction against raw masks, and any other grid, get their own fix."""
    from metsynth.errors import InputError
    from metsynth.evaluation.evaluate import read_prediction

    original = Volume(np.zeros((20, 24, 24), np.uint8), spacing=(2.0, 2.0, 2.5), origin=(-10.0, 5.0, 3.0))
    truth = Volume(np.zeros((30, 28, 28), np.uint8), spacing=(1.7, 1.7, 1.7), origin=(-9.0, 6.0, 4.0))
    truth.write(tmp_path / "M001__reference_r1.nii.gz")
    truth = Volume.read(tmp_path / "M001__reference_r1.nii.gz")
    original.write(tmp_path / "raw.nii.gz")
    source = {"image": "/data/raw/M001.nii.gz", "shape": list(original.array.shape), "spacing": list(original.spacing),
              "origin": list(original.origin), "direction": original.direction.tolist()}
    with pytest.raises(InputError) as info:
        read_prediction(tmp_path / "raw.nii.gz", truth, "M001", source)
    text = str(info.value)
    assert text.startswith(f"case M001: {tmp_path / 'raw.nii.gz'}: the prediction is not on the grid of the ground ")
    assert "on the grid of the case's original scan /data/raw/M001.nii.gz" in text and "PREPARED/cohort.yaml" in text

    # a prepared-looking (isotropic) prediction against a raw case's masks (no source record)
    with pytest.raises(InputError, match=r"isotropic 1.7 mm spacing may be a prepared cohort's.*--grid source"):
        read_prediction(tmp_path / "M001__reference_r1.nii.gz", Volume.read(tmp_path / "raw.nii.gz"), "M001")
    # anything else: the generic fix
    Volume(np.zeros((20, 24, 24), np.uint8), spacing=(1.0, 1.0, 3.0)).write(tmp_path / "other.nii.gz")
    with pytest.raises(InputError, match=r"score it against the masks of the cohort whose images were predicted"):
        read_prediction(tmp_path / "other.nii.gz", truth, "M001", source)
    # on the truth's own grid it is read
    assert read_prediction(tmp_path / "M001__reference_r1.nii.gz", truth, "M001", source).same_grid(truth)


def test_evaluate_reports_detection_by_location_with_femur_masks(cohort, tmp_path):
    """Cases with a femur mask: each true lesion is cortical or medullary, in lesions.csv, summary.json
    and the printed summary; here the small lesion near z = 5 reaches the femur's cut surface."""
    manifest, refs = cohort
    data = yaml.safe_load(manifest.read_text())
    for case in data["cases"]:
        image = Volume.read(manifest.parent / case["image"])
        femur = np.ones(image.shape, np.uint8)
        femur[:4] = 0  # the femur ends under the small lesion (z 3-7): it touches the surface
        femur[-1], femur[:, 0], femur[:, -1], femur[:, :, 0], femur[:, :, -1] = 0, 0, 0, 0, 0
        path = f"femur/{case['id']}.nii.gz"
        image.with_array(femur).write(manifest.parent / path)
        case["femur_mask"] = path
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    preds = write_predictions(tmp_path / "pred", refs)
    res = invoke("evaluate", "--pred", preds, "--truth", manifest, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    lesions = pd.read_csv(tmp_path / "out" / "lesions.csv")
    true = lesions[lesions["kind"] == "true"]
    assert set(true.loc[true["voxels"] < 60, "location"]) == {"cortical"}
    assert set(true.loc[true["voxels"] > 200, "location"]) == {"medullary"}
    by = json.loads((tmp_path / "out" / "summary.json").read_text())["detection"]["by_location"]
    assert by["cortical"]["n_true"] == by["medullary"]["n_true"] == len(refs)
    assert f"cortical: {by['cortical']['tp']}/{len(refs)} detected" in res.output
    assert "medullary: " in res.output
