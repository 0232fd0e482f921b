"""Lesion-centred features: connected components, and what the features measure on a toy femur."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from metsynth.realism.features import FEATURES, lesion_components, lesion_features, lesion_patch

N = 40
SPACING = (1.0, 1.0, 1.0)


def ball(radius, centre=(N // 2,) * 3, shape=(N, N, N)):
    idx = np.indices(shape) - np.asarray(centre)[:, None, None, None]
    return (idx**2).sum(0) <= radius**2


def femur_block(seed=0, noise=0.03, lesion_radius=6.0):
    """A bright block of 'bone' (0.6) in dark soft tissue (-0.8) with a dark sphere (-0.2) in it."""
    rng = np.random.default_rng(seed)
    femur = np.zeros((N, N, N), bool)
    femur[2:-2, 2:-2, 2:-2] = True
    mask = ball(lesion_radius)
    img = np.where(femur, 0.6, -0.8) + rng.normal(0, noise, (N, N, N))
    img = np.where(mask, -0.2 + rng.normal(0, noise, (N, N, N)), img)
    return img.astype(np.float32), mask, femur


# --- lesion_components ------------------------------------------------------------------------------

def test_lesion_components_largest_first_and_small_dropped():
    m = np.zeros((30, 30, 30), bool)
    m[2:5, 2:5, 2:5] = True  # 27 voxels
    m[10:16, 10:16, 10:16] = True  # 216 voxels
    m[20:24, 20:24, 20:24] = True  # 64 voxels
    m[27:29, 27:29, 1] = True  # 4 voxels: dropped
    comps = lesion_components(m, min_voxels=8)
    assert [int(c.sum()) for c in comps] == [216, 64, 27]
    assert all(c.dtype == bool and c.shape == m.shape for c in comps)
    assert comps[0][12, 12, 12] and comps[1][21, 21, 21] and comps[2][3, 3, 3]
    # disjoint, and their union is the mask minus the small one
    union = np.zeros_like(m)
    for c in comps:
        assert not np.any(union & c)
        union |= c
    assert union.sum() == m.sum() - 4
    # the threshold is inclusive and adjustable
    assert [int(c.sum()) for c in lesion_components(m, min_voxels=27)] == [216, 64, 27]
    assert [int(c.sum()) for c in lesion_components(m, min_voxels=28)] == [216, 64]
    assert len(lesion_components(m, min_voxels=1)) == 4


def test_lesion_components_26_connected():
    m = np.zeros((10, 10, 10), bool)
    m[2:4, 2:4, 2:4] = True
    m[4:6, 4:6, 4:6] = True  # touches the first only by a corner
    comps = lesion_components(m, min_voxels=1)
    assert len(comps) == 1 and comps[0].sum() == 16


def test_lesion_components_empty():
    assert lesion_components(np.zeros((5, 5, 5), bool)) == []
    assert lesion_components(np.zeros((5, 5, 5), bool) | (np.arange(125).reshape(5, 5, 5) == 0)) == []


# --- lesion_features --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def block():
    return femur_block()


@pytest.fixture(scope="module")
def features(block):
    img, mask, femur = block
    return lesion_features(img, mask, SPACING, femur=femur)


def test_lesion_features_keys_and_finite(features):
    assert set(features) == set(FEATURES)
    for k, v in features.items():
        assert isinstance(v, float), k
        assert np.isfinite(v), k


def test_lesion_features_values_of_a_sharp_dark_sphere(features, block):
    _, mask, _ = block
    f = features
    assert f["log_volume_mm3"] == pytest.approx(np.log10(mask.sum()))
    assert f["interior_mean"] == pytest.approx(-0.2, abs=0.01)
    assert f["ring_mean"] == pytest.approx(0.6, abs=0.01)
    assert f["contrast"] > 0
    assert f["contrast"] == pytest.approx(f["ring_mean"] - f["interior_mean"])
    assert f["contrast"] == pytest.approx(0.8, abs=0.02)
    assert f["interior_std"] == pytest.approx(0.03, rel=0.2)
    assert f["ring_std"] == pytest.approx(0.03, rel=0.2)
    # a sharp edge: boundary voxels at the interior, the first layer outside at the bone
    assert f["edge_inner"] == pytest.approx(0.0, abs=0.05)
    assert f["edge_outer"] == pytest.approx(1.0, abs=0.05)
    assert f["edge_gradient"] > 0
    # the same noise inside and far away
    assert f["grain_ratio"] == pytest.approx(1.0, abs=0.25)


def test_lesion_features_log_volume_uses_spacing(block):
    img, mask, femur = block
    f = lesion_features(img, mask, (2.0, 1.0, 0.5), femur=femur)
    assert f["log_volume_mm3"] == pytest.approx(np.log10(mask.sum() * 1.0))
    f2 = lesion_features(img, mask, (2.0, 2.0, 2.0), femur=femur)
    assert f2["log_volume_mm3"] == pytest.approx(np.log10(mask.sum() * 8.0))


def test_interior_std_grows_with_noise_inside_only(block, features):
    img, mask, femur = block
    rng = np.random.default_rng(7)
    noisy = img.copy()
    noisy[mask] += rng.normal(0, 0.2, int(mask.sum())).astype(np.float32)
    f = lesion_features(noisy, mask, SPACING, femur=femur)
    assert f["interior_std"] > 3 * features["interior_std"]
    assert f["grain_interior"] > 2 * features["grain_interior"]
    assert f["grain_ratio"] > 2 * features["grain_ratio"]
    # the bone around is untouched
    assert f["ring_std"] == pytest.approx(features["ring_std"])
    assert f["ring_mean"] == pytest.approx(features["ring_mean"])
    assert f["grain_far"] == pytest.approx(features["grain_far"])


def test_blurred_edge_moves_edge_features(block, features):
    img, mask, femur = block
    blurred = ndi.gaussian_filter(img, 1.0, mode="nearest")
    f = lesion_features(blurred, mask, SPACING, femur=femur)
    assert f["edge_inner"] > features["edge_inner"] + 0.2
    assert f["edge_outer"] < features["edge_outer"] - 0.1
    assert f["edge_gradient"] < features["edge_gradient"]


def test_ring_is_cut_to_the_femur():
    """Soft tissue beyond the femur does not enter the ring when the femur is given."""
    _, _, femur = femur_block(seed=1)
    # a lesion at the femur's border: its ring would reach the soft tissue (-0.8)
    off = ball(4.0, centre=(N // 2, N // 2, 6))
    img2 = np.where(femur, 0.6, -0.8).astype(np.float32)
    img2[off] = -0.2
    cut = lesion_features(img2, off, SPACING, femur=femur)
    uncut = lesion_features(img2, off, SPACING)
    assert cut["ring_mean"] == pytest.approx(0.6, abs=1e-5)
    assert uncut["ring_mean"] < 0.5
    assert cut["contrast"] > uncut["contrast"]


def test_lesion_features_empty_mask_raises(block):
    img, _, femur = block
    with pytest.raises(ValueError, match="empty"):
        lesion_features(img, np.zeros(img.shape, bool), SPACING, femur=femur)


# --- lesion_patch -----------------------------------------------------------------------------------

def test_lesion_patch_centred_and_padded():
    img = np.arange(N**3, dtype=np.float32).reshape(N, N, N)
    mask = ball(3.0, centre=(20, 21, 22))
    p = lesion_patch(img, mask, 8)
    assert p.shape == (8, 8, 8) and p.dtype == np.float32
    np.testing.assert_array_equal(p, img[16:24, 17:25, 18:26])
    # near the border: edge values repeated
    corner = ball(2.0, centre=(1, 1, 1))
    q = lesion_patch(img, corner, 8)
    assert q.shape == (8, 8, 8)
    np.testing.assert_array_equal(q[3:, 3:, 3:], img[:5, :5, :5])
    np.testing.assert_array_equal(q[0, 3:, 3:], img[0, :5, :5])


def test_surface_contact_tells_a_lesion_against_the_cortex_from_one_in_the_marrow():
    """The sphere in the middle of the block touches nothing; moved against the block's face it has
    part of its surroundings outside the femur; without a femur mask the feature is unknown."""
    img, mask, femur = femur_block()
    assert lesion_features(img, mask, SPACING, femur=femur)["surface_contact"] == 0.0
    against = np.roll(mask, N // 2 - 2 - 6, axis=2)  # its edge on the block's x = 2 face
    contact = lesion_features(img, against, SPACING, femur=femur)["surface_contact"]
    assert 0.05 < contact < 0.5
    assert np.isnan(lesion_features(img, mask, SPACING)["surface_contact"])
