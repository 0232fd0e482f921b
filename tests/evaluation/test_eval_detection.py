"""Lesion-wise detection: components, overlap matching, per-lesion Dice, size bins."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metsynth.errors import InputError
from metsynth.evaluation.detection import detect_lesions, summarize_detection
from metsynth.volume import Volume


def cube(mask, z, y, x, n):
    mask[z:z + n, y:y + n, x:x + n] = True


@pytest.fixture
def scene():
    """Truth: lesions of 8, 27 and 64 voxels; prediction: hits the first two, adds one FP."""
    shape = (40, 40, 40)
    truth = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    cube(truth, 2, 2, 2, 2)  # 8 voxels, detected exactly
    cube(truth, 10, 10, 10, 3)  # 27 voxels, half-covered
    cube(truth, 30, 30, 30, 4)  # 64 voxels, missed
    cube(pred, 2, 2, 2, 2)
    pred[10:12, 10:13, 10:13] = True  # 18 voxels inside the 27-voxel lesion
    cube(pred, 20, 2, 30, 2)  # false positive
    return pred, truth


def test_counts_and_per_lesion_dice(scene):
    pred, truth = scene
    r = detect_lesions(pred, truth, spacing=(1.0, 1.0, 1.0), size_bins_mm3=(0, 10, 50, math.inf))
    assert (r.n_true, r.n_pred, r.tp, r.fn, r.fp) == (3, 3, 2, 1, 1)
    assert r.sensitivity == pytest.approx(2 / 3)
    assert r.precision == pytest.approx(2 / 3)
    dices = sorted(les.dice for les in r.true_lesions)
    assert dices == pytest.approx([0.0, 2 * 18 / (27 + 18), 1.0])
    bins = r.by_size()
    assert bins["0-10 mm3"] == {"n_true": 1, "tp": 1, "fn": 0, "sensitivity": 1.0, "fp": 1, "mean_lesion_dice": 1.0}
    assert bins["10-50 mm3"]["tp"] == 1
    assert bins[">=50 mm3"]["fn"] == 1 and bins[">=50 mm3"]["sensitivity"] == 0.0
    table = r.table("C1")
    assert list(table["case_id"].unique()) == ["C1"] and len(table) == 6
    missed = [les for les in r.true_lesions if not les.detected][0]
    assert missed.centroid == pytest.approx((31.5, 31.5, 31.5))


def test_spacing_sets_lesion_volumes(scene):
    pred, truth = scene
    r = detect_lesions(Volume(pred.astype(np.uint8), spacing=(2.0, 1.0, 1.0)),
                       Volume(truth.astype(np.uint8), spacing=(2.0, 1.0, 1.0)))
    assert sorted(les.volume_mm3 for les in r.true_lesions) == [16.0, 54.0, 128.0]


def test_min_iou_and_min_size(scene):
    pred, truth = scene
    strict = detect_lesions(pred, truth, min_iou=0.7)
    assert strict.tp == 1  # the half-covered lesion (IoU 18/27) no longer counts
    assert strict.fp == 2
    big = detect_lesions(pred, truth, min_size_mm3=15)
    assert big.n_true == 2 and big.n_pred == 1  # the 8-voxel lesions and the FP are ignored


def test_connectivity_changes_components():
    truth = np.zeros((6, 6, 6), bool)
    truth[1, 1, 1] = truth[2, 2, 2] = True  # touch at a corner only
    assert detect_lesions(truth, truth, connectivity=26).n_true == 1
    assert detect_lesions(truth, truth, connectivity=6).n_true == 2
    with pytest.raises(InputError, match="connectivity"):
        detect_lesions(truth, truth, connectivity=8)


def test_split_and_merge_are_many_to_many():
    truth = np.zeros((10, 20, 10), bool)
    truth[2:5, 2:6, 2:5] = True
    truth[2:5, 12:16, 2:5] = True
    pred = np.zeros_like(truth)
    pred[2:5, 3:15, 2:5] = True  # one prediction spanning both lesions
    r = detect_lesions(pred, truth)
    assert (r.tp, r.fp, r.n_pred) == (2, 0, 1)


def test_empty_inputs_and_summary(scene):
    pred, truth = scene
    z = np.zeros_like(truth)
    assert detect_lesions(z, z).n_true == 0
    all_missed = detect_lesions(z, truth)
    assert all_missed.tp == 0 and all_missed.sensitivity == 0.0 and math.isnan(all_missed.precision)
    only_fp = detect_lesions(pred, z)
    assert only_fp.fp == 3 and math.isnan(only_fp.sensitivity)
    s = summarize_detection([detect_lesions(pred, truth), all_missed])
    assert s["n_true"] == 6 and s["tp"] == 2 and s["sensitivity"] == pytest.approx(1 / 3)
    assert s["fp_per_case_mean"] == pytest.approx(0.5)
    assert sum(b["n_true"] for b in s["by_size"].values()) == 6


def test_lesions_against_the_femur_surface_are_cortical(scene):
    """With the femur mask, each true lesion gets its surface contact (share of its one-voxel shell
    outside the femur) and a location; detection is also summarized by location."""
    pred, truth = scene
    femur = np.zeros(truth.shape, bool)
    femur[5:36, 5:36, 5:36] = True  # the 8-voxel lesion at (2, 2, 2) lies outside: contact 1
    femur[10:13, 10:13, 9] = False  # the 27-voxel lesion's x = 9 face: a breach, 9 of its 98 shell voxels
    det = detect_lesions(pred, truth, femur=femur)
    true = {les.voxels: les for les in det.true_lesions}
    assert true[8].surface_contact == 1.0 and true[8].location == "cortical"
    assert true[27].surface_contact == pytest.approx(9 / 98, abs=1e-4) and true[27].location == "cortical"
    assert true[64].surface_contact == 0.0 and true[64].location == "medullary"  # deep in the bone
    assert all(math.isnan(les.surface_contact) and les.location == "" for les in det.pred_lesions)
    by = det.by_location()
    assert by["cortical"]["n_true"] == 2 and by["cortical"]["tp"] == 2 and by["medullary"]["sensitivity"] == 0.0
    pooled = summarize_detection([det, det])
    assert pooled["by_location"]["cortical"]["n_true"] == 4
    assert pooled["by_location"]["medullary"]["mean_lesion_dice"] == 0.0
    assert "by_location" not in summarize_detection([detect_lesions(pred, truth)])  # no femur: no location
    table = det.table("C1")
    assert list(table.columns[-2:]) == ["surface_contact", "location"]
    with pytest.raises(InputError, match="femur mask shape"):
        detect_lesions(pred, truth, femur=femur[1:])
