"""The donor edge model: edge ratio, blur estimate, Gaussian blending weights, interior fill."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from metsynth.synthesis.edges import (
    DEFAULT_EDGE_RATIO,
    donor_edge_sigma,
    edge_pad,
    edge_ratio,
    estimate_edge_sigma,
    fill_from_interior,
    gaussian_weights,
)

CROSS = ndi.generate_binary_structure(3, 1)


def sphere(radius=8.0, n=32, spacing=(1.0, 1.0, 1.0)):
    """A ball of ``radius`` mm centred in an ``n``^3 grid of ``spacing`` mm."""
    idx = (np.indices((n, n, n)) - n // 2) * np.asarray(spacing, dtype=np.float64)[:, None, None, None]
    return (idx**2).sum(0) <= radius**2


def dark_lesion(mask, inside=0.0, outside=1.0):
    return np.where(mask, inside, outside).astype(np.float64)


def shells(mask):
    interior = ndi.binary_erosion(mask, structure=CROSS)
    outside = ndi.binary_dilation(mask, structure=CROSS) & ~mask
    return interior, mask & ~interior, outside


# --- edge_ratio -------------------------------------------------------------------------------------

def test_edge_ratio_sharp_edge_is_zero():
    m = sphere()
    assert edge_ratio(dark_lesion(m), m) == pytest.approx(0.0, abs=1e-12)


def test_edge_ratio_measures_boundary_shell_between_interior_and_outer_layer():
    m = sphere()
    interior, boundary, outside = shells(m)
    img = np.full(m.shape, 7.0)  # far background: should not matter (only the first outer layer counts)
    img[interior] = 0.0
    img[boundary] = 0.3
    img[outside] = 1.0
    assert edge_ratio(img, m) == pytest.approx(0.3, abs=1e-9)
    # invariant to an affine intensity map that keeps the lesion dark
    assert edge_ratio(2.5 * img - 4.0, m) == pytest.approx(0.3, abs=1e-9)
    # a boundary brighter than the bone is clipped to 1
    img[boundary] = 1.8
    assert edge_ratio(img, m) == pytest.approx(1.0)


def test_edge_ratio_increases_with_blur():
    m = sphere()
    img = dark_lesion(m)
    sharp = edge_ratio(img, m)
    r1 = edge_ratio(ndi.gaussian_filter(img, 1.0, mode="nearest"), m)
    r2 = edge_ratio(ndi.gaussian_filter(img, 1.5, mode="nearest"), m)
    assert r1 is not None and r2 is not None
    assert sharp < r1 < r2 < 1.0
    assert r1 > 0.3  # sigma 1 voxel puts the boundary about half-way


def test_edge_ratio_none_without_contrast_or_interior():
    m = sphere()
    assert edge_ratio(np.ones(m.shape), m) is None
    # a bright lesion (not darker than its surroundings) has nothing to measure
    assert edge_ratio(dark_lesion(m, inside=1.0, outside=0.0), m) is None
    # one voxel thick plane: no interior
    plane = np.zeros((20, 20, 20), bool)
    plane[10, 4:16, 4:16] = True
    assert edge_ratio(dark_lesion(plane), plane) is None
    # 2x2x2 cube: erosion leaves nothing
    cube = np.zeros((12, 12, 12), bool)
    cube[5:7, 5:7, 5:7] = True
    assert edge_ratio(dark_lesion(cube), cube) is None


def test_edge_ratio_contrast_threshold_scales_with_noise():
    """A tiny contrast drowned in interior noise is 'no contrast'; the same contrast without noise is not."""
    rng = np.random.default_rng(0)
    m = sphere()
    img = dark_lesion(m, inside=0.0, outside=0.01)
    assert edge_ratio(img, m) is not None
    noisy = img + np.where(m, rng.normal(0, 1.0, m.shape), 0.0)
    assert edge_ratio(noisy, m) is None


# --- estimate_edge_sigma ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blurred_estimates():
    m = sphere(8.0)
    img = dark_lesion(m)
    return {s: estimate_edge_sigma(ndi.gaussian_filter(img, s, mode="nearest"), m, (1.0, 1.0, 1.0))
            for s in (0.6, 1.0, 1.5)}


@pytest.mark.parametrize("sigma", [0.6, 1.0, 1.5])
def test_estimate_edge_sigma_recovers_blur(blurred_estimates, sigma):
    # the model is the same blur, so the recovery is near exact (achieved: < 1%)
    assert blurred_estimates[sigma] == pytest.approx(sigma, rel=0.05)


def test_estimate_edge_sigma_monotone(blurred_estimates):
    s = [blurred_estimates[k] for k in (0.6, 1.0, 1.5)]
    assert s[0] < s[1] < s[2]


def test_estimate_edge_sigma_recovers_blur_with_noise():
    rng = np.random.default_rng(3)
    m = sphere(8.0)
    img = dark_lesion(m)
    for sigma in (0.6, 1.0, 1.5):
        noisy = ndi.gaussian_filter(img, sigma, mode="nearest") + rng.normal(0, 0.05, m.shape)
        assert estimate_edge_sigma(noisy, m, (1.0, 1.0, 1.0)) == pytest.approx(sigma, rel=0.2)


def test_estimate_edge_sigma_scales_with_spacing():
    m = sphere(8.0)
    img = ndi.gaussian_filter(dark_lesion(m), 1.0, mode="nearest")
    s1 = estimate_edge_sigma(img, m, (1.0, 1.0, 1.0))
    s2 = estimate_edge_sigma(img, m, (2.0, 2.0, 2.0))
    assert s2 == pytest.approx(2.0 * s1, rel=1e-6)


def test_estimate_edge_sigma_anisotropic_spacing_in_mm():
    sp = (1.0, 1.0, 2.0)
    m = sphere(8.0, spacing=sp)
    img = dark_lesion(m)
    for sigma_mm in (0.8, 2.0):
        blurred = ndi.gaussian_filter(img, sigma_mm / np.asarray(sp), mode="nearest")
        assert estimate_edge_sigma(blurred, m, sp) == pytest.approx(sigma_mm, rel=0.05)


def test_estimate_edge_sigma_bounds_and_fallbacks():
    m = sphere(8.0)
    img = dark_lesion(m)
    # sharp: the lower bound, 0.05 voxel of the finest axis
    assert estimate_edge_sigma(img, m, (1.0, 1.0, 1.0)) == pytest.approx(0.05)
    assert estimate_edge_sigma(img, m, (0.5, 1.0, 1.0)) == pytest.approx(0.025)
    # boundary as bright as bone (ratio 1): the upper bound, 3 voxels
    interior, boundary, _ = shells(m)
    flat = np.where(interior, 0.0, 1.0)
    assert estimate_edge_sigma(flat, m, (1.0, 1.0, 1.0)) == pytest.approx(3.0)
    # no contrast: the default ratio, i.e. a blur that puts a sharp edge at DEFAULT_EDGE_RATIO
    s = estimate_edge_sigma(np.ones(m.shape), m, (1.0, 1.0, 1.0))
    assert 0.05 < s < 3.0
    assert edge_ratio(ndi.gaussian_filter(img, s, mode="nearest"), m) == pytest.approx(DEFAULT_EDGE_RATIO, abs=0.01)
    # no interior: 0.7 voxel of the finest axis
    plane = np.zeros((20, 20, 20), bool)
    plane[10, 4:16, 4:16] = True
    assert estimate_edge_sigma(dark_lesion(plane), plane, (0.5, 1.0, 1.0)) == pytest.approx(0.35)


def test_estimate_edge_sigma_independent_of_lesion_position():
    """The estimate works on the lesion's box: a lesion touching the array border gives the same value."""
    m = sphere(6.0, n=32)
    img = ndi.gaussian_filter(dark_lesion(m), 1.0, mode="nearest")
    centred = estimate_edge_sigma(img, m, (1.0, 1.0, 1.0))
    # crop so the mask touches the border on one side (the boundary shell stays inside the array)
    crop = (slice(9, None), slice(None), slice(None))
    assert estimate_edge_sigma(img[crop], m[crop], (1.0, 1.0, 1.0)) == pytest.approx(centred, rel=0.02)


# --- gaussian_weights / edge_pad --------------------------------------------------------------------

@pytest.mark.parametrize("sigma_mm,spacing", [(1.0, (1.0, 1.0, 1.0)), (1.5, (1.0, 1.0, 1.0)),
                                              (1.2, (0.8, 1.0, 2.0))])
def test_gaussian_weights_range_plateaus_and_footprint(sigma_mm, spacing):
    m = np.zeros((40, 40, 40), bool)
    m[10:30, 10:30, 10:30] = True
    w = gaussian_weights(m, sigma_mm, spacing)
    assert w.dtype == np.float32 and w.shape == m.shape
    assert w.min() >= 0.0 and w.max() <= 1.0
    # no values in (0, 1e-3) or (1 - 1e-3, 1)
    assert not np.any((w > 0) & (w < 1e-3))
    assert not np.any((w < 1) & (w > 1 - 1e-3))
    # exactly 1 deep inside, exactly 0 far away
    assert np.all(w[15:25, 15:25, 15:25] == 1.0)
    assert np.all(w[:3] == 0.0) and np.all(w[-3:] == 0.0)
    # the footprint lies within edge_pad voxels (chessboard distance) of the mask
    pad = edge_pad(sigma_mm, spacing)
    reach = ndi.binary_dilation(m, structure=np.ones((3, 3, 3), bool), iterations=pad)
    assert not np.any((w > 0) & ~reach)
    # and the blur really reaches out of the mask and into it
    assert np.any((w > 0) & ~m) and np.any((w < 1) & m)


def test_gaussian_weights_match_blurred_label():
    m = sphere(6.0, n=24)
    w = gaussian_weights(m, 1.0, (1.0, 1.0, 1.0))
    ref = ndi.gaussian_filter(m.astype(np.float64), 1.0, mode="constant", truncate=3.0)
    mid = (ref >= 1e-3) & (ref <= 1 - 1e-3)
    np.testing.assert_allclose(w[mid], ref[mid], atol=1e-5)
    assert abs(w.sum() - m.sum()) < 0.01 * m.sum()  # a blur preserves the mass


def test_gaussian_weights_wider_sigma_wider_footprint():
    m = sphere(6.0, n=32)
    narrow = gaussian_weights(m, 0.7, (1.0, 1.0, 1.0))
    wide = gaussian_weights(m, 2.0, (1.0, 1.0, 1.0))
    assert (wide > 0).sum() > (narrow > 0).sum()
    assert (wide == 1).sum() < (narrow == 1).sum()


def test_edge_pad_values():
    assert edge_pad(1.0, (1.0, 1.0, 1.0)) == 4
    assert edge_pad(1.0, (0.5, 1.0, 2.0)) == 7  # the finest axis decides
    assert edge_pad(2.0, (2.0, 2.0, 2.0)) == edge_pad(1.0, (1.0, 1.0, 1.0))


# --- fill_from_interior -----------------------------------------------------------------------------

def test_fill_from_interior_replaces_boundary_by_interior_value():
    m = sphere(6.0, n=24)
    interior, boundary, outside = shells(m)
    img = np.full(m.shape, -3.0, np.float32)
    img[interior] = 5.0
    img[boundary] = 100.0
    out = fill_from_interior(img, m)
    assert out.dtype == np.float32
    assert np.all(out[interior] == 5.0)
    assert np.all(out[boundary] == 5.0)
    # every voxel outside the interior takes the nearest interior value (module contract)
    assert np.all(out == 5.0)
    assert np.all(img[boundary] == 100.0)  # input untouched


def test_fill_from_interior_takes_a_nearest_interior_voxel():
    rng = np.random.default_rng(0)
    m = sphere(6.0, n=24)
    interior, boundary, _ = shells(m)
    img = rng.normal(0, 1, m.shape).astype(np.float32)
    out = fill_from_interior(img, m)
    np.testing.assert_array_equal(out[interior], img[interior])
    dist = ndi.distance_transform_edt(~interior)
    pts = np.argwhere(interior)
    vals = img[interior]
    for b in np.argwhere(boundary)[::7]:
        d = np.sqrt(((pts - b) ** 2).sum(1))
        nearest = np.isclose(d, dist[tuple(b)])
        assert np.any(vals[nearest] == out[tuple(b)])


def test_fill_from_interior_thin_mask_keeps_its_values():
    rng = np.random.default_rng(1)
    plane = np.zeros((16, 16, 16), bool)
    plane[8, 3:13, 3:13] = True
    img = rng.normal(0, 1, plane.shape).astype(np.float32)
    out = fill_from_interior(img, plane)
    # no interior: the mask itself is kept as it is (it serves as the interior) ...
    np.testing.assert_array_equal(out[plane], img[plane])
    # ... and voxels off the mask take their nearest mask voxel's value (docstring contract)
    assert out[9, 8, 8] == img[8, 8, 8] and out[2, 8, 8] == img[8, 8, 8]
    assert out[8, 0, 6] == img[8, 3, 6] and out[8, 15, 15] == img[8, 12, 12]


def test_fill_from_interior_empty_mask_is_a_copy():
    img = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    out = fill_from_interior(img, np.zeros(img.shape, bool))
    np.testing.assert_array_equal(out, img)
    assert out is not img


# --- donor_edge_sigma -------------------------------------------------------------------------------

def test_donor_edge_sigma_equals_estimate_and_is_deterministic():
    m = sphere(7.0, n=28)
    img = ndi.gaussian_filter(dark_lesion(m), 1.2, mode="nearest").astype(np.float32)
    expected = round(estimate_edge_sigma(img, m, (1.0, 1.0, 1.0)), 6)
    a = donor_edge_sigma(img, m, (1.0, 1.0, 1.0))
    b = donor_edge_sigma(img.copy(), m.copy(), (1.0, 1.0, 1.0))
    assert a == expected == b
    # another spacing is another patch (not served from the cache of the first)
    assert donor_edge_sigma(img, m, (2.0, 2.0, 2.0)) == pytest.approx(2 * a, abs=2e-6)
    # another image is another patch too
    sharper = ndi.gaussian_filter(dark_lesion(m), 0.6, mode="nearest").astype(np.float32)
    assert donor_edge_sigma(sharper, m, (1.0, 1.0, 1.0)) < a
