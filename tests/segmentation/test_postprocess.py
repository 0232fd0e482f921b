"""Post-processing: each step does what it says, and can be switched off."""

from __future__ import annotations

import numpy as np
import pytest

from metsynth.errors import InputError
from metsynth.segmentation.postprocess import (
    PostprocessConfig,
    fill_holes,
    keep_overlapping,
    postprocess,
    remove_small_components,
)
from metsynth.volume import Volume

OFF = {"min_lesion_mm3": 0.0, "keep_in_femur": False, "fill_holes": False}


def _mask(shape=(20, 20, 20)):
    return np.zeros(shape, dtype=bool)


def test_small_components_go_by_physical_volume():
    m = _mask()
    m[2:4, 2:4, 2:4] = True      # 8 voxels
    m[10:14, 10:14, 10:14] = True  # 64 voxels
    # 0.5 mm voxels: 8 voxels = 1 mm^3, 64 voxels = 8 mm^3
    out = remove_small_components(m, (0.5, 0.5, 0.5), min_mm3=2.0)
    assert not out[2:4, 2:4, 2:4].any() and out[10:14, 10:14, 10:14].all()
    # 2 mm voxels: 8 voxels = 64 mm^3: both stay
    assert remove_small_components(m, (2.0, 2.0, 2.0), min_mm3=2.0).sum() == 72


def test_diagonal_neighbours_form_one_component():
    m = _mask()
    m[5, 5, 5] = m[6, 6, 6] = True  # corner-touching: one lesion of 2 voxels (26-connectivity)
    assert remove_small_components(m, (1, 1, 1), min_mm3=2.0).sum() == 2
    assert remove_small_components(m, (1, 1, 1), min_mm3=3.0).sum() == 0


def test_only_components_touching_the_femur_stay():
    m = _mask()
    m[2:5, 2:5, 2:5] = True       # outside the femur
    m[10:15, 10:15, 10:15] = True  # partly inside
    femur = _mask()
    femur[14:20, 14:20, 14:20] = True
    out = keep_overlapping(m, femur)
    assert not out[2:5, 2:5, 2:5].any()
    assert out[10:15, 10:15, 10:15].all()  # kept whole, also its part outside the femur


def test_enclosed_holes_are_filled_open_ones_not():
    m = _mask()
    m[5:12, 5:12, 5:12] = True
    m[7:10, 7:10, 7:10] = False  # enclosed cavity
    m[5:12, 14:17, 5:12] = True
    m[6:11, 15, 5:12] = False     # a slot open to the outside along x
    out = fill_holes(m)
    assert out[5:12, 5:12, 5:12].all()
    assert not out[6:11, 15, 5:12].any()


def test_postprocess_applies_each_switched_on_step_on_the_volume_grid():
    m = _mask()
    m[2:4, 2:4, 2:4] = True         # small
    m[8:13, 8:13, 8:13] = True      # big, with a hole, in the femur
    m[10, 10, 10] = False
    m[15:19, 15:19, 15:19] = True   # big, outside the femur
    femur_arr = _mask()
    femur_arr[6:14, 6:14, 6:14] = True
    vol = Volume(m.astype(np.uint8), spacing=(1.0, 1.0, 1.0), origin=(3.0, 2.0, 1.0))
    femur = vol.with_array(femur_arr.astype(np.uint8))

    everything = postprocess(vol, femur, PostprocessConfig(min_lesion_mm3=10))
    assert everything.same_grid(vol) and everything.array.dtype == np.uint8
    assert everything.array.sum() == 125  # only the big femoral lesion, hole filled

    nothing = postprocess(vol, femur, PostprocessConfig(**OFF))
    assert np.array_equal(nothing.array, vol.array)
    only_size = postprocess(vol, femur, PostprocessConfig(**{**OFF, "min_lesion_mm3": 10}))
    assert only_size.array.sum() == 124 + 64
    only_femur = postprocess(vol, femur, PostprocessConfig(**{**OFF, "keep_in_femur": True}))
    assert only_femur.array.sum() == 124
    only_holes = postprocess(vol, femur, PostprocessConfig(**{**OFF, "fill_holes": True}))
    assert only_holes.array.sum() == 8 + 125 + 64


def test_femur_filter_without_femur_is_skipped_not_destructive():
    m = _mask()
    m[8:13, 8:13, 8:13] = True
    vol = Volume(m.astype(np.uint8))
    assert postprocess(vol, None, PostprocessConfig(**{**OFF, "keep_in_femur": True})).array.sum() == 125


def test_femur_on_another_grid_is_an_error():
    vol = Volume(_mask().astype(np.uint8))
    femur = Volume(_mask().astype(np.uint8), spacing=(2.0, 1.0, 1.0))
    with pytest.raises(InputError, match="not on the prediction's grid"):
        postprocess(vol, femur, PostprocessConfig())
