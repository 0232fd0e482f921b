"""Lesion transforms: drawn parameters are recorded and replay the same bytes; geometry is right."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metsynth.errors import ConfigError
from metsynth.synthesis.transforms import (
    LesionTransformParams,
    TransformConfig,
    apply_transform,
    draw_params,
    hu_to_units,
    rotation_matrix,
)

LESION = SimpleNamespace(radius_mm=6.0, intensity_robust_std=0.05)


def ball_patch(radius=6, shape=(21, 21, 21), seed=0):
    rng = np.random.default_rng(seed)
    idx = np.indices(shape) - (np.asarray(shape) // 2)[:, None, None, None]
    mask = (idx**2).sum(0) <= radius**2
    image = np.where(mask, -0.5, 0.3).astype(np.float32) + rng.normal(0, 0.02, shape).astype(np.float32)
    return image, mask


IDENTITY = LesionTransformParams(
    ellipsoid=False, ellipsoid_offset_mm=(0, 0, 0), ellipsoid_semi_axes_mm=(1, 1, 1),
    ellipsoid_angles_deg=(0, 0, 0), rotation_deg=(0.0, 0.0, 0.0), scale=1.0, anisotropy=(1.0, 1.0, 1.0),
    edge_filter_size=3, noise_std=0.0, noise_sigma=0.0, noise_seed=1)


def test_draw_is_reproducible_and_json_ready():
    config = TransformConfig()
    a = draw_params(np.random.default_rng(5), config, LESION)
    b = draw_params(np.random.default_rng(5), config, LESION)
    assert a == b
    assert a != draw_params(np.random.default_rng(6), config, LESION)
    text = json.dumps(a.to_dict())
    assert LesionTransformParams.from_dict(json.loads(text)) == a
    lo, hi = config.scale
    assert lo <= a.scale <= hi
    assert a.edge_filter_size in (3, 5)
    assert a.noise_sigma == pytest.approx(a.noise_std * LESION.intensity_robust_std)


def test_absolute_noise_reference_is_in_cohort_units():
    config = TransformConfig(noise_std=(0.02, 0.02), noise_reference="absolute")
    assert draw_params(np.random.default_rng(0), config, LESION).noise_sigma == pytest.approx(0.02)
    assert hu_to_units(30.0, (-1000.0, 2000.0)) == pytest.approx(0.02)
    assert hu_to_units(30.0, None) == 30.0


def test_apply_replays_identical_bytes():
    image, mask = ball_patch()
    params = draw_params(np.random.default_rng(3), TransformConfig(), LESION)
    a = apply_transform(image, mask, (1.0, 1.0, 1.0), params)
    b = apply_transform(image, mask, (1.0, 1.0, 1.0), LesionTransformParams.from_dict(params.to_dict()))
    assert a.values.tobytes() == b.values.tobytes() and a.mask.tobytes() == b.mask.tobytes()
    assert a.anchor == b.anchor


def test_identity_keeps_the_lesion():
    image, mask = ball_patch()
    out = apply_transform(image, mask, (1.0, 1.0, 1.0), IDENTITY)
    assert out.voxels == mask.sum()
    inside = out.values[out.mask.astype(bool)]
    np.testing.assert_allclose(np.sort(inside), np.sort(image[mask]), atol=1e-6)
    # the patch keeps room for the edge filter around the mask
    where = np.argwhere(out.mask)
    assert where.min() >= IDENTITY.edge_filter_size // 2 + 1
    assert np.all(np.asarray(out.mask.shape) - where.max(axis=0) - 1 >= IDENTITY.edge_filter_size // 2 + 1)
    # outside the mask the values continue the lesion (no donor bone leaks into the blend)
    assert out.values[~out.mask.astype(bool)].max() < 0.0


def test_scaling_and_anisotropic_spacing():
    image, mask = ball_patch()
    doubled = apply_transform(image, mask, (1.0, 1.0, 1.0), replace(IDENTITY, scale=2.0))
    assert doubled.voxels == pytest.approx(8 * mask.sum(), rel=0.1)
    # on a 2 mm grid along z the same physical rotation keeps the physical volume
    rotated = apply_transform(image, mask, (2.0, 1.0, 1.0), replace(IDENTITY, rotation_deg=(0.0, 90.0, 0.0)))
    assert rotated.voxels * 2.0 == pytest.approx(mask.sum() * 2.0, rel=0.15)


def test_ellipsoid_crop_only_removes_voxels():
    image, mask = ball_patch()
    crop = replace(IDENTITY, ellipsoid=True, ellipsoid_semi_axes_mm=(3.0, 8.0, 8.0), ellipsoid_offset_mm=(0, 0, 0))
    out = apply_transform(image, mask, (1.0, 1.0, 1.0), crop)
    assert 0 < out.voxels < mask.sum()
    extent_z = np.ptp(np.argwhere(out.mask)[:, 0]) + 1
    assert extent_z <= 7  # cut to |z| <= 3 mm
    away = replace(crop, ellipsoid_offset_mm=(50.0, 0, 0))
    assert apply_transform(image, mask, (1.0, 1.0, 1.0), away).voxels == 0


def test_rotation_matrix_is_a_rotation():
    r = rotation_matrix((30.0, -45.0, 110.0))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(rotation_matrix((90.0, 0, 0)) @ [0, 1, 0], [0, 0, 1], atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_any_draw_gives_a_padded_patch(seed):
    image, mask = ball_patch()
    params = draw_params(np.random.default_rng(seed), TransformConfig(), LESION)
    out = apply_transform(image, mask, (0.85, 0.85, 0.85), params)
    assert out.values.dtype == np.float32 and np.isfinite(out.values).all()
    if out.voxels:
        where = np.argwhere(out.mask)
        room = params.edge_filter_size // 2
        assert where.min() >= room
        assert np.all(np.asarray(out.mask.shape) - 1 - where.max(axis=0) >= room)
        assert all(0 <= a < s for a, s in zip(out.anchor, out.mask.shape))


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"scale": [1.25, 0.8]}, r"scale: the lower bound 1.25 is above the upper bound 0.8"),
        ({"scale": [0, 1]}, r"scale: values must be > 0, got 0"),
        ({"edge_filter_size": [2, 2]}, r"edge_filter_size: the range \[2, 2\] holds no odd size"),
        ({"noise_std": [-0.1, 0.2]}, r"noise_std: values must be >= 0, got -0.1"),
        ({"ellipsoid_probability": 1.5}, r"ellipsoid_probability"),
        ({"noise_reference": "hu"}, r"noise_reference"),
        ({"rotaton_deg": [0, 1]}, r"unknown setting 'rotaton_deg'; did you mean 'rotation_deg'\?"),
    ],
)
def test_bad_values_are_clear_config_errors(settings_, message):
    with pytest.raises(ConfigError, match=message):
        TransformConfig.from_dict(settings_)
