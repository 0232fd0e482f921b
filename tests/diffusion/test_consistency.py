"""The label consistency check: lesion-to-ring contrast before and after harmonization."""

from __future__ import annotations

import numpy as np
import pytest

from metsynth.diffusion.consistency import check_consistency, lesion_rings
from metsynth.errors import InputError

SPACING = (1.0, 1.0, 1.0)


def _scene(seed=0):
    """Bone (0.3 +- noise) with two dark lesions (-0.4) and a one-voxel label fragment."""
    rng = np.random.default_rng(seed)
    image = (0.3 + 0.02 * rng.standard_normal((30, 30, 30))).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    zz, yy, xx = np.indices(image.shape)
    first = (zz - 8) ** 2 + (yy - 8) ** 2 + (xx - 8) ** 2 <= 9
    second = (zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 9
    label[first | second] = 1
    image[first | second] = -0.4
    label[2, 27, 27] = 1
    return image, label, first, second


def test_rings_surround_each_lesion_and_exclude_lesions():
    _, label, first, second = _scene()
    components, count, rings = lesion_rings(label, SPACING, ring_mm=2.0)
    assert count == 3
    assert not (rings[0] & (label > 0)).any() and rings[0].any()
    assert not (rings[0] & rings[1]).any()  # far apart lesions: separate rings


def test_unchanged_volume_is_consistent():
    image, label, *_ = _scene()
    report = check_consistency(image, image, label, SPACING)
    assert not report.collapsed
    # components in raster order: the fragment (z = 2) first; it is reported, not judged
    assert [les.voxels for les in report.lesions] == [1, 123, 123]
    assert [les.judged for les in report.lesions] == [False, True, True]
    assert report.lesions[1].ratio == pytest.approx(1.0)
    assert report.contrast_before == pytest.approx(0.7, abs=0.02)


@pytest.mark.parametrize("plant", ["fill", "flip"])
def test_a_planted_collapse_is_flagged(plant):
    image, label, first, second = _scene()
    after = image.copy()
    after[second] = 0.3 if plant == "fill" else 0.9  # faded into the bone / now brighter than it
    report = check_consistency(image, after, label, SPACING)
    assert report.collapsed
    assert [les.collapsed for les in report.lesions] == [False, False, True]
    assert report.lesions[2].ratio < 0.5


def test_lesions_without_contrast_are_reported_not_judged():
    image, label, first, second = _scene()
    image[second] = 0.3  # no contrast before: nothing to lose
    after = image.copy()
    after[second] = 0.9
    report = check_consistency(image, after, label, SPACING, min_contrast=0.05)
    assert not report.lesions[2].judged and not report.collapsed


def test_empty_labels_and_shape_mismatches():
    image, label, *_ = _scene()
    report = check_consistency(image, image, np.zeros_like(label), SPACING)
    assert report.lesions == [] and not report.collapsed and report.contrast_before is None
    with pytest.raises(InputError, match="shapes differ"):
        check_consistency(image, image[:-1], label, SPACING)
    assert set(report.to_dict()) >= {"lesions", "collapsed", "contrast_before", "contrast_after"}
