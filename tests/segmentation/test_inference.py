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
    PrepareConfig, destandardize, hu_to_standardized, prepare_cohort, resample_image, resample_mask, target_grid,
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
    with pytest.raises(ConfigError, match="another model, settings or input images"):
        predict_cohort(trained_model["run"] / "model.pt", manifest, out, progress=False,
                       postprocess_config=PostprocessConfig(fill_holes=False))


def test_predictions_of_images_written_again_are_redone(trained_model, tmp_path, builders):
    from metsynth.cohort import load_cohort

    from helpers import written_again

    manifest = builders.write_prepared_cohort(tmp_path / "cohort", n_metastatic=1, n_healthy=1)  # its own files
    model = trained_model["run"] / "model.pt"
    out = predict_cohort(model, manifest, tmp_path / "pred", progress=False)
    case = load_cohort(manifest).cases[0]
    stamp = (out / f"{case.id}.nii.gz").stat().st_mtime_ns
    written_again(case.image)  # e.g. prepared again with other settings
    with pytest.raises(ConfigError, match="input images"):
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
