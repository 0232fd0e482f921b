"""Inference: sliding window over whole volumes, masks on the input's exact grid, cohorts, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from metsynth.cli import app
from metsynth.errors import ConfigError
from metsynth.evaluation.metrics import dice_score
from metsynth.prepare import (
    PrepareConfig,
    destandardize,
    hu_to_standardized,
    prepare_cohort,
    resample_image,
    resample_mask,
    target_grid,
)
from metsynth.segmentation.inference import SegmentationModel, predict_cohort, predict_volume, restore_source_grid
from metsynth.segmentation.postprocess import PostprocessConfig
from metsynth.segmentation.presets import segmentation_config
from metsynth.volume import Volume

HU_WINDOW = (-1000.0, 2000.0)
RAW_SPACING = (2.5, 1.5, 1.8)


@pytest.fixture(scope="module")
def model(trained_model):
    return SegmentationModel.load(trained_model["run"] / "model.pt", "cpu")


class ThresholdNet(torch.nn.Module):
    """A stand-in network whose 'lesion' is every voxel brighter than 500 HU: predictions are then
    known exactly, so the geometry tests do not depend on how well a tiny model learned."""

    def forward(self, x):
        fg = (x - hu_to_standardized(500.0, HU_WINDOW)) * 50.0
        return torch.cat([-fg, fg], dim=1)


@pytest.fixture(scope="module")
def threshold_model():
    return SegmentationModel(net=ThresholdNet(), config=segmentation_config("tiny"), spacing=(2.0, 2.0, 2.0),
                             hu_window=HU_WINDOW)


def _scan_2mm():
    """48^3 at 2 mm: soft tissue, a bone cylinder (the 'femur') and an off-centre bright ellipsoid
    (the 'lesion' of ThresholdNet), so that any flip or shift of the result is visible."""
    zz, yy, xx = np.indices((48, 48, 48))
    hu = np.full((48, 48, 48), 40.0, np.float32)
    femur = ((yy - 24) ** 2 + (xx - 24) ** 2) < 14 ** 2
    hu[femur] = 300.0
    lesion = ((zz - 30) / 8.0) ** 2 + ((yy - 16) / 5.0) ** 2 + ((xx - 28) / 4.0) ** 2 < 1
    hu[lesion] = 1000.0
    vol = Volume(hu, (2.0, 2.0, 2.0), (-40.0, 12.5, 7.0))
    return vol, vol.with_array(femur.astype(np.uint8)), vol.with_array(lesion.astype(np.uint8))


def _as_raw_scan(image, femur, lesion):
    """The same anatomy as a 'raw scan': another voxel size, a flipped y axis, an odd origin."""
    flip = np.diag([1.0, -1.0, 1.0])
    corner = image.index_to_world(np.array([0, image.shape[1] - 1, 0], float))

    def flipped(array):
        return Volume(np.ascontiguousarray(array[:, ::-1, :]), image.spacing, tuple(corner), flip)

    hu, fem, les = flipped(image.array), flipped(femur.array), flipped(lesion.array)
    assert les.index_to_world([0, 0, 0]) == pytest.approx(lesion.index_to_world([0, image.shape[1] - 1, 0]))
    grid = target_grid(hu, RAW_SPACING)
    return resample_image(hu, grid), resample_mask(fem, grid), resample_mask(les, grid)


def test_raw_scan_mask_has_the_input_geometry_and_is_aligned(threshold_model):
    hu, femur, truth = _as_raw_scan(*_scan_2mm())
    assert not np.allclose(hu.direction, np.eye(3)) and hu.spacing == pytest.approx(RAW_SPACING, abs=0.05)
    off = PostprocessConfig(min_lesion_mm3=0, keep_in_femur=False, fill_holes=False)
    pred = predict_volume(threshold_model, hu, postprocess_config=off)
    assert pred.mask.same_grid(hu) and pred.mask.shape == hu.shape
    assert pred.mask.spacing == hu.spacing and np.array_equal(pred.mask.direction, hu.direction)
    assert pred.mask.array.dtype == np.uint8 and set(np.unique(pred.mask.array)) <= {0, 1}
    assert dice_score(pred.mask.array, truth.array) > 0.85
    assert dice_score(pred.mask.array[:, ::-1], truth.array) < 0.3  # a flip would show

    with_femur = predict_volume(threshold_model, hu, femur, postprocess_config=off)
    lo, hi = with_femur.box
    assert np.any(np.asarray(hi) - np.asarray(lo) < np.asarray(hu.shape))  # cropped to the femur box
    assert with_femur.mask.same_grid(hu) and dice_score(with_femur.mask.array, truth.array) > 0.85


def test_prepared_case_maps_back_onto_its_original_scan(threshold_model, trained_model, tmp_path, monkeypatch):
    hu, femur, truth = _as_raw_scan(*_scan_2mm())
    raw = tmp_path / "raw"
    hu.write(raw / "images" / "R1.nii.gz")
    truth.write(raw / "lesions" / "R1.nii.gz")
    femur.write(raw / "femur" / "R1.nii.gz")
    (raw / "cohort.yaml").write_text(yaml.safe_dump({"name": "raw", "cases": [{
        "id": "R1", "image": "images/R1.nii.gz", "role": "metastatic", "femur_mask": "femur/R1.nii.gz",
        "lesion_masks": [{"path": "lesions/R1.nii.gz"}]}]}))
    from metsynth.cohort import load_cohort

    prepared = prepare_cohort(load_cohort(raw / "cohort.yaml"), tmp_path / "prepared",
                              PrepareConfig(spacing=2.0, hu_window=HU_WINDOW), progress=False)
    case = load_cohort(prepared).case("R1")
    assert not Volume.read(case.image).same_grid(hu)
    monkeypatch.setattr(SegmentationModel, "load", classmethod(lambda cls, path, device="auto": threshold_model))
    out = predict_cohort(trained_model["run"], prepared, tmp_path / "pred", grid="source", progress=False,
                         postprocess_config=PostprocessConfig(min_lesion_mm3=0))
    mask = Volume.read(out / "R1.nii.gz")
    assert mask.same_grid(hu)  # the original scan's grid, not the prepared one
    assert dice_score(mask.array, truth.array) > 0.8
    on_prepared = predict_cohort(trained_model["run"], prepared, tmp_path / "pred2", progress=False)
    assert Volume.read(on_prepared / "R1.nii.gz").same_grid(Volume.read(case.image))

    restored = restore_source_grid(Volume.read(case.lesion_masks[0].path), case.source)
    assert restored.same_grid(hu) and dice_score(restored.array, truth.array) > 0.8


def test_trained_model_on_a_raw_scan_keeps_its_grid(model, trained_model):
    case = trained_model["case"]
    image = Volume.read(case.image)
    hu = image.with_array(destandardize(image.array, HU_WINDOW))
    raw = resample_image(hu, target_grid(hu, RAW_SPACING))
    pred = predict_volume(model, raw, resample_mask(Volume.read(case.femur_mask), raw))
    assert pred.mask.same_grid(raw) and pred.mask.array.dtype == np.uint8


def test_prepared_image_is_segmented_on_its_own_grid_without_resampling(model, trained_model):
    case = trained_model["case"]
    image = Volume.read(case.image)
    off = PostprocessConfig(min_lesion_mm3=0, keep_in_femur=False, fill_holes=False)
    pred = predict_volume(model, image, standardized=True, postprocess_config=off, keep_probability=True)
    direct = model.probabilities(image.array) >= 0.5
    assert pred.mask.same_grid(image) and np.array_equal(pred.mask.array.astype(bool), direct)
    assert dice_score(pred.mask.array, Volume.read(case.lesion_masks[0].path).array) == pytest.approx(
        trained_model["result"].best_val_dice, abs=1e-4)  # the same computation as the best validation


def test_volume_smaller_than_the_window_is_padded(model):
    small = np.full((20, 24, 40), -0.9, np.float32)
    assert model.probabilities(small).shape == small.shape


def test_predict_cohort_writes_masks_and_table_and_skips_done_cases(trained_model, tmp_path):
    manifest = trained_model["manifest"]
    out = predict_cohort(trained_model["run"] / "model.pt", manifest, tmp_path / "pred", progress=False)
    table = pd.read_csv(out / "predictions.csv", dtype={"case": str})
    from metsynth.cohort import load_cohort

    cohort = load_cohort(manifest)
    assert sorted(table["case"]) == sorted(c.id for c in cohort.cases)
    for case in cohort.cases:
        mask = Volume.read(out / f"{case.id}.nii.gz")
        assert mask.same_grid(Volume.read(case.image))
    stamp = (out / f"{cohort.cases[0].id}.nii.gz").stat().st_mtime_ns
    predict_cohort(trained_model["run"] / "model.pt", manifest, out, progress=False)
    assert (out / f"{cohort.cases[0].id}.nii.gz").stat().st_mtime_ns == stamp  # skipped
    with pytest.raises(ConfigError, match=r"holds predictions of other settings or inputs \(postprocess.fill_holes: "):
        predict_cohort(trained_model["run"] / "model.pt", manifest, out, progress=False,
                       postprocess_config=PostprocessConfig(fill_holes=False))


def test_predictions_of_images_written_again_are_redone(trained_model, tmp_path, builders):
    from helpers import written_again
    from metsynth.cohort import load_cohort

    manifest = builders.write_prepared_cohort(tmp_path / "cohort", n_metastatic=1, n_healthy=1)  # its own files
    model = trained_model["run"] / "model.pt"
    out = predict_cohort(model, manifest, tmp_path / "pred", progress=False)
    case = load_cohort(manifest).cases[0]
    stamp = (out / f"{case.id}.nii.gz").stat().st_mtime_ns
    written_again(case.image)  # e.g. prepared again with other settings
    with pytest.raises(ConfigError, match=r"holds predictions of other settings or inputs "
                                          rf"\({case.image.parent.name}/{case.image.name}: written again since "
                                          r"\(modified 20"):  # the file by name, not two hashes
        predict_cohort(model, manifest, out, progress=False)
    predict_cohort(model, manifest, out, progress=False, replace_other=True)
    assert (out / f"{case.id}.nii.gz").stat().st_mtime_ns != stamp


def test_predict_and_train_commands(trained_model, tmp_path):
    runner = CliRunner()
    case = trained_model["case"]
    result = runner.invoke(app, ["predict", str(trained_model["run"]), str(case.image), "--standardized",
                                 "--out", str(tmp_path / "p"), "--no-fill-holes", "--min-lesion-mm3", "0"])
    assert result.exit_code == 0, result.output
    assert Volume.read(tmp_path / "p" / f"{case.id}.nii.gz").same_grid(Volume.read(case.image))

    result = runner.invoke(app, ["predict", str(trained_model["run"]), str(case.image), "--out", str(tmp_path / "q"),
                                 "--grid", "source"])
    assert result.exit_code == 2 and "prepared manifest" in result.output

    result = runner.invoke(app, ["train", str(trained_model["manifest"]), "--out", str(tmp_path / "t"),
                                 "--preset", "tiny", "--max-epochs", "1", "--val-cases", "1", "--accelerator", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t" / "model.pt").is_file() and "best val Dice" in result.output

    result = runner.invoke(app, ["train", str(trained_model["manifest"]), "--out", str(tmp_path / "u"),
                                 "--preset", "tiny", "--sources", "real,synthetc"])
    assert result.exit_code == 2 and "did you mean 'synthetic'" in result.output


def test_online_training_draws_fresh_synthetic_volumes(tmp_path, builders):
    from metsynth.segmentation.datasets import OnlineSource, build_training_set
    from metsynth.segmentation.train import train_segmentation
    from metsynth.synthesis.bank import extract_bank

    manifest = builders.write_prepared_cohort(tmp_path / "cohort", n_metastatic=3, n_healthy=1)
    extract_bank(manifest, tmp_path / "bank", progress=False)
    ts = build_training_set(manifest, "online", val_cases=1, bank=tmp_path / "bank")
    assert ts.online["donor_cases"] and not set(ts.online["donor_cases"]) & {v.case for v in ts.val}
    source = OnlineSource(ts.online, seed=0)
    a, b = source(0, 0), source(1, 0)
    assert a[1].any() and not np.array_equal(a[0], b[0])  # a fresh volume each epoch
    assert np.array_equal(source(0, 0)[0], a[0])          # replayable
    config = builders.overfit_config(max_epochs=1, online_volumes_per_epoch=2, patches_per_volume=2)
    result = train_segmentation(ts, tmp_path / "run", config, progress=False)
    assert result.steps == 2


def test_predict_never_writes_a_mask_over_an_input_scan(trained_model, tmp_path):
    import shutil

    from metsynth.errors import OutputError

    folder = tmp_path / "ct"
    folder.mkdir()
    scan = folder / "scan.nii.gz"
    shutil.copy(trained_model["case"].image, scan)
    before = scan.read_bytes()
    with pytest.raises(OutputError, match="is also an input"):
        predict_cohort(trained_model["run"], scan, folder, force=True, progress=False)
    assert scan.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["scan.nii.gz"]


def test_missing_or_non_image_inputs_write_nothing(trained_model, tmp_path):
    from metsynth.errors import InputError

    model = trained_model["run"] / "model.pt"
    with pytest.raises(InputError, match="not found"):
        predict_cohort(model, [str(tmp_path / "absent.nii.gz")], tmp_path / "p1", progress=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(InputError, match="not an image file"):
        predict_cohort(model, [str(notes)], tmp_path / "p2", progress=False)
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p2").exists()


def test_an_unusable_image_leaves_nothing_that_refuses_the_corrected_rerun(trained_model, tmp_path):
    from metsynth.errors import MetsynthError

    model = trained_model["run"] / "model.pt"
    flat = tmp_path / "scan.nii.gz"
    bad = np.zeros((16, 16, 16), np.float32)
    bad[3, 4, 5] = np.nan  # NaN voxels: refused when the image is read, in the task
    Volume(bad, (2.0, 2.0, 2.0)).write(flat)
    with pytest.raises(MetsynthError):
        predict_cohort(model, flat, tmp_path / "pred", standardized=True, progress=False)
    assert not (tmp_path / "pred").exists()
    Volume.read(trained_model["case"].image).write(flat)  # the corrected scan, same name
    out = predict_cohort(model, flat, tmp_path / "pred", standardized=True, progress=False)
    assert (out / "scan.nii.gz").exists()


def test_a_2d_image_or_a_shared_name_is_refused_before_any_case_is_predicted(trained_model, tmp_path):
    """Among good scans, a 2D slice (or two files of one name) is refused from its header, before the
    good ones are predicted: the folder is not left holding a run the corrected command would refuse."""
    import SimpleITK as sitk

    from metsynth.errors import ConfigError, InputError

    model = trained_model["run"] / "model.pt"
    good = tmp_path / "good.nii.gz"
    Volume.read(trained_model["case"].image).write(good)
    flat = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.float32)), str(flat))
    with pytest.raises(InputError, match=rf"{flat}: image of 'slice' expected a 3D volume, got a 2D image"):
        predict_cohort(model, [good, flat], tmp_path / "pred", standardized=True, progress=False)
    (tmp_path / "other").mkdir()
    twin = tmp_path / "other" / "good.nii.gz"
    twin.write_bytes(good.read_bytes())
    with pytest.raises(ConfigError, match=rf"inputs {good}, {twin} share the name 'good'"):
        predict_cohort(model, [good, twin], tmp_path / "pred", standardized=True, progress=False)
    assert not (tmp_path / "pred").exists()


# ======================================================================= cross-validation folds (issue 16 item 7)
def _fold_model(folder, manifest, splits, fold):
    """An untrained tiny U-Net saved as `metsynth train --fold` saves one: model.pt recording its
    fold, training_set.json listing its real training cases (what the fold checks read)."""
    from metsynth.checkpoints import save_model
    from metsynth.segmentation.datasets import build_training_set
    from metsynth.segmentation.train import build_network

    config = segmentation_config("tiny")
    ts = build_training_set(manifest, "real", fold=fold, splits=splits, val_cases=0)
    torch.manual_seed(0)
    meta = {"config": config.model_dump(mode="json"), "fold": fold, "sources": ["real"],
            "spacing": list(ts.spacing), "hu_window": list(ts.hu_window)}
    folder.mkdir(parents=True)
    save_model(folder / "model.pt", "unet", build_network(config).state_dict(), meta)
    ts.save(folder / "training_set.json")
    return folder


@pytest.fixture(scope="module")
def cv_study(tmp_path_factory, builders):
    """A prepared cohort (H00 healthy, M01-M03 metastatic, M04 test-only), 2-fold splits and a
    model per fold."""
    from metsynth.evaluation.splits import load_or_make_splits

    root = tmp_path_factory.mktemp("cv")
    manifest = builders.write_prepared_cohort(root / "cohort", n_metastatic=4, n_healthy=1)
    data = yaml.safe_load(manifest.read_text())
    data["cases"][-1]["role"] = "test"
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    splits = root / "splits.json"
    saved = load_or_make_splits(splits, manifest, n_folds=2, seed=0, group_by=None)
    models = [_fold_model(root / "models" / f"fold{k}", manifest, splits, k) for k in range(2)]
    return {"root": root, "manifest": manifest, "splits": splits, "saved": saved, "models": models}


def test_predict_fold_predicts_only_the_cases_the_folds_model_held_out(cv_study, tmp_path):
    from metsynth.fileio import read_json

    s = cv_study
    out = predict_cohort(s["models"][0], s["manifest"], tmp_path / "f0", fold=0, splits=s["splits"], progress=False)
    held_out = sorted(s["saved"].test(0) + ["M04"])  # its test fold and the test-only case, as the study's stage
    assert sorted(pd.read_csv(out / "predictions.csv", dtype={"case": str})["case"]) == held_out
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in held_out]
    marker = read_json(out / "predict.json")
    assert marker["fold"] == 0 and marker["splits"] == str(s["splits"].resolve())
    # without --fold, a fold model given the splits predicts its own fold
    out = predict_cohort(s["models"][1], s["manifest"], tmp_path / "f1", splits=s["splits"], progress=False)
    assert read_json(out / "predict.json")["fold"] == 1
    predicted = pd.read_csv(out / "predictions.csv", dtype={"case": str})["case"]
    assert sorted(predicted) == sorted(s["saved"].test(1) + ["M04"])


def test_predict_fold_refuses_what_would_predict_training_cases(cv_study, tmp_path, builders):
    from metsynth.errors import InputError

    s = cv_study
    model0 = s["models"][0]

    def refused(error, match, *args, **kwargs):
        with pytest.raises(error, match=match):
            predict_cohort(*args, progress=False, **kwargs)

    refused(ConfigError, "fold 2 does not exist", model0, s["manifest"], tmp_path / "a", fold=2, splits=s["splits"])
    refused(ConfigError, "trained for fold 0, so fold 1's cases are among its training cases", model0, s["manifest"],
            tmp_path / "b", fold=1, splits=s["splits"])
    refused(ConfigError, "needs the splits file", model0, s["manifest"], tmp_path / "c", fold=0)
    # a fold model run on the whole cohort without the splits: it holds the model's training cases
    refused(ConfigError, "trained on .*pass --fold 0 --splits", model0, s["manifest"], tmp_path / "d")
    refused(ConfigError, "cohort manifest", model0, [s["manifest"].parent / "images" / "M01.nii.gz"], tmp_path / "e",
            fold=0, splits=s["splits"])
    other = builders.write_prepared_cohort(tmp_path / "other", n_metastatic=2, n_healthy=0, seed=7)
    data = yaml.safe_load(other.read_text())
    for i, case in enumerate(data["cases"]):
        case["id"] = f"X{i}"
    other.write_text(yaml.safe_dump(data))
    refused(InputError, "another cohort", model0, other, tmp_path / "f", fold=0, splits=s["splits"])
    assert not any((tmp_path / d).exists() for d in "abcdef")  # nothing written


def test_predict_command_fold_refuses_another_folds_model_and_gathers_the_folds(cv_study, tmp_path):
    s = cv_study
    runner = CliRunner()
    res = runner.invoke(app, ["-q", "predict", str(s["models"][0]), str(s["manifest"]), "-o", str(tmp_path / "x"),
                              "--fold", "1", "--splits", str(s["splits"])])
    assert res.exit_code == 2 and "trained for fold 0" in res.output and not (tmp_path / "x").exists()
    real = tmp_path / "predictions" / "real"
    for k in range(2):
        res = runner.invoke(app, ["-q", "predict", str(s["models"][k]), str(s["manifest"]),
                                  "-o", str(real / f"fold{k}"), "--fold", str(k), "--splits", str(s["splits"])])
        assert res.exit_code == 0, res.output
        assert f"fold {k}: test fold {k}'s cases and the test-only cases" in res.output
        assert "every fold predicted" not in res.output  # the test-only case waits for the folds' ensemble
    assert "once these are predicted too: test_only" in res.output and not list(real.glob("*.nii.gz"))
    res = runner.invoke(app, ["-q", "predict", str(s["models"][0]), str(s["manifest"]), "--ensemble",
                              str(s["models"][1]), "--splits", str(s["splits"]), "-o", str(real / "test_only")])
    assert res.exit_code == 0, res.output
    assert "the test-only cases, by the mean probability of 2 models" in res.output
    assert "every fold predicted" in res.output
    cases = sorted(s["saved"].cases + ("M04",))
    assert sorted(p.name for p in real.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in cases]
    for k in range(2):  # each CV case from the fold that held it out
        for case in s["saved"].test(k):
            assert np.array_equal(Volume.read(real / f"{case}.nii.gz").array,
                                  Volume.read(real / f"fold{k}" / f"{case}.nii.gz").array)
    # the test-only case from the folds' ensemble
    assert np.array_equal(Volume.read(real / "M04.nii.gz").array, Volume.read(real / "test_only" / "M04.nii.gz").array)


class RampNet(torch.nn.Module):
    """Lesion logit a linear ramp of the intensity above ``offset``: graded probabilities."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, x):
        fg = (x - self.offset) * 3.0
        return torch.cat([-fg, fg], dim=1)


def test_ensemble_averages_the_probabilities_then_thresholds_once():
    from metsynth.errors import InputError
    from metsynth.segmentation.volume_inference import ModelEnsemble

    config = segmentation_config("tiny")
    members = [SegmentationModel(net=RampNet(o), config=config, spacing=(2.0, 2.0, 2.0), hu_window=HU_WINDOW)
               for o in (-0.2, 0.3)]
    hu = np.broadcast_to(np.linspace(-500.0, 1500.0, 40, dtype=np.float32), (24, 24, 40)).copy()
    image = Volume(hu, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    array = (2.0 * (image.array - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0]) - 1.0).astype(np.float32)
    ensemble = ModelEnsemble(members)
    mean = (members[0].probabilities(array) + members[1].probabilities(array)) / 2
    assert np.allclose(ensemble.probabilities(array), mean, atol=1e-6)
    off = PostprocessConfig(min_lesion_mm3=0, keep_in_femur=False, fill_holes=False)
    mask = predict_volume(ensemble, image, postprocess_config=off).mask.array.astype(bool)
    first, second = (predict_volume(m, image, postprocess_config=off).mask.array.astype(bool) for m in members)
    assert np.array_equal(mask, mean >= 0.5)
    # between the two: more than their intersection (what a vote of two folds kept), less than their union
    assert (mask & ~second).any() and (first & ~mask).any() and not (mask & ~first).any()
    other = SegmentationModel(net=RampNet(0.0), config=config, spacing=(1.0, 1.0, 1.0), hu_window=HU_WINDOW)
    with pytest.raises(InputError, match="voxel size"):
        ModelEnsemble([members[0], other])


def test_ensemble_predicts_only_cases_none_of_its_models_trained_on(cv_study, tmp_path):
    from metsynth.fileio import read_json

    s = cv_study
    models = s["models"]
    out = predict_cohort(models, s["manifest"], tmp_path / "t", splits=s["splits"], progress=False)
    assert sorted(pd.read_csv(out / "predictions.csv", dtype={"case": str})["case"]) == ["M04"]
    record = read_json(out / "predict.json")
    assert record["test_only"] is True and len(record["model"]) == 2 and len(record["model_sha256"]) == 2
    with pytest.raises(ConfigError, match="trained on .*pass --splits"):  # the whole cohort: training cases
        predict_cohort(models, s["manifest"], tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="an ensemble of the folds' models"):
        predict_cohort(models, s["manifest"], tmp_path / "b", fold=0, splits=s["splits"], progress=False)
    with pytest.raises(ConfigError, match="given twice"):
        predict_cohort([models[0], models[0]], s["manifest"], tmp_path / "c", splits=s["splits"], progress=False)
    assert not any((tmp_path / d).exists() for d in "abc")


def test_femur_auto_finds_each_scans_femur_and_a_raw_scan_without_it_is_said_by_name(trained_model, tmp_path,
                                                                                     caplog):
    """A raw CT in HU: with --femur auto the femur is found (inference cropped to it, the femur filter on);
    without, the warning names the file and the fix. A standardized image read as HU is said too."""
    from metsynth import phantom
    from metsynth.errors import ConfigError

    model = trained_model["run"] / "model.pt"
    case = phantom.generate_case("M0", "metastatic", 0, phantom.PhantomConfig.preset("tiny"))
    scan = tmp_path / "scan.nii.gz"
    case.image.write(scan)
    with caplog.at_level("WARNING"):
        out = predict_cohort(model, [scan], tmp_path / "auto", femur="auto", progress=False)
    assert "no femur mask" not in caplog.text and "look standardized" not in caplog.text
    from scipy import ndimage

    from metsynth.bone import segment_femur

    mask = Volume.read(out / "scan.nii.gz").array > 0
    femur = segment_femur(case.image).array > 0  # what --femur auto finds
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    assert n and all((labels[femur] == k).any() for k in range(1, n + 1))  # every lesion kept touches the femur
    assert yaml.safe_load((out / "predict.json").read_text())["femur"] == "auto"
    with pytest.raises(ConfigError, match=r"femur: 'auto' -> None"):  # not resumed as a run without it
        predict_cohort(model, [scan], out, progress=False)

    caplog.clear()
    with caplog.at_level("WARNING"):
        predict_cohort(model, [scan], tmp_path / "whole", progress=False)
    assert f"{scan}: no femur mask, so lesions are searched in the whole scan" in caplog.text
    assert "--femur auto" in caplog.text and caplog.text.count("no femur mask") == 1

    caplog.clear()
    prepared = tmp_path / "prepared.nii.gz"
    Volume.read(trained_model["case"].image).write(prepared)  # standardized to [-1, 1]
    with caplog.at_level("WARNING"):
        predict_cohort(model, [prepared], tmp_path / "as-hu", progress=False)
    assert "look standardized, not HU; pass --standardized" in caplog.text
    with pytest.raises(ConfigError, match="--femur auto finds the femur in HU"):
        predict_cohort(model, [prepared], tmp_path / "never", femur="auto", standardized=True, progress=False)
    assert not (tmp_path / "never").exists()


def test_scans_added_to_a_predict_command_are_predicted_beside_the_others(trained_model, tmp_path):
    """The same model and settings with one more scan: the new one is predicted, the first kept as it
    was; a scan left out is another run (refused), as before."""
    from metsynth.errors import ConfigError

    model = trained_model["run"] / "model.pt"
    first, second = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    Volume.read(trained_model["case"].image).write(first)
    Volume.read(trained_model["case"].image).write(second)
    out = predict_cohort(model, [first], tmp_path / "pred", standardized=True, progress=False)
    stamp = (out / "a.nii.gz").stat().st_mtime_ns
    predict_cohort(model, [first, second], out, standardized=True, progress=False)
    assert (out / "a.nii.gz").stat().st_mtime_ns == stamp and (out / "b.nii.gz").exists()
    assert sorted(pd.read_csv(out / "predictions.csv")["case"]) == ["a", "b"]
    with pytest.raises(ConfigError, match=r"a\.nii\.gz: no longer an input"):
        predict_cohort(model, [second], out, standardized=True, progress=False)
