"""Metrics: agreement with MONAI 1.6, closed forms, empty masks, spacing order, cropping."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.spatial.distance import cdist

from metsynth.errors import InputError
from metsynth.evaluation.metrics import (
    aggregate_metrics,
    boundary,
    compute_metrics,
    dice_score,
    fill_worst_case,
    metrics_table,
    surface_distances,
)
from metsynth.volume import Volume

RTOL = 1e-5
METHODS = ("auto", "kdtree", "edt")


# ------------------------------------------------------------------------------ helpers
def monai_metrics(pred: np.ndarray, truth: np.ndarray, spacing) -> dict[str, float]:
    import torch
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    p = torch.as_tensor(pred[None, None].astype(np.float32))
    t = torch.as_tensor(truth[None, None].astype(np.float32))
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": float(compute_dice(p, t, include_background=True, ignore_empty=False)),
            "hd": float(compute_hausdorff_distance(p, t, include_background=True, spacing=sp)),
            "hd95": float(compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=sp)),
            "assd": float(compute_average_surface_distance(p, t, include_background=True, symmetric=True, spacing=sp)),
        }


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing))
    return d2 <= radius**2


def brute_force(pred, truth, spacing, percentile=95.0):
    """Obvious reference: full-volume scipy erosion (border 0) and all-pairs distances."""
    sp = np.asarray(spacing, float)
    bp = pred & ~ndimage.binary_erosion(pred, border_value=0)
    bt = truth & ~ndimage.binary_erosion(truth, border_value=0)
    d = cdist(np.argwhere(bp) * sp, np.argwhere(bt) * sp)
    a, b = d.min(axis=1), d.min(axis=0)
    return {
        "dice": 2 * np.logical_and(pred, truth).sum() / (pred.sum() + truth.sum()),
        "hd": max(a.max(), b.max()),
        "hd95": max(np.percentile(a, percentile), np.percentile(b, percentile)),
        "assd": np.concatenate([a, b]).mean(),
    }


def assert_close(ours, ref, rtol=RTOL):
    for key in ("dice", "hd", "hd95", "assd"):
        assert getattr(ours, key) == pytest.approx(ref[key], rel=rtol, abs=1e-9), key


def random_blobs(rng, shape, threshold=0.55, sigma=2.0):
    return ndimage.gaussian_filter(rng.random(shape), sigma) > threshold


# ------------------------------------------------------------------------------ MONAI agreement
def _case_spheres():
    shape = (40, 44, 36)
    return ball(shape, (20, 22, 18), 9), ball(shape, (22, 20, 17), 11), (1.0, 1.0, 1.0)


def _case_shells():
    shape = (40, 40, 40)
    outer, inner = ball(shape, (20, 20, 20), 12), ball(shape, (20, 20, 20), 8)
    outer2, inner2 = ball(shape, (21, 19, 20), 13), ball(shape, (21, 19, 20), 10)
    return outer & ~inner, outer2 & ~inner2, (1.0, 1.0, 1.0)


def _case_multicomponent():
    rng = np.random.default_rng(3)
    shape = (36, 40, 44)
    return random_blobs(rng, shape), random_blobs(rng, shape), (1.0, 1.0, 1.0)


def _case_anisotropic():
    shape = (24, 48, 40)
    sp = (2.5, 0.6, 0.8)
    return (ball(shape, (12, 24, 20), 9.0, sp) | ball(shape, (5, 10, 30), 3.0, sp),
            ball(shape, (13, 22, 21), 10.0, sp), sp)


def _case_border():
    shape = (30, 32, 34)
    pred = ball(shape, (0, 16, 17), 10)  # cut by the z=0 face
    truth = np.zeros(shape, bool)
    truth[:8, 5:27, :] = True  # touches four faces of the volume
    return pred, truth, (1.2, 0.9, 1.0)


def _case_one_voxel():
    shape = (20, 20, 20)
    pred = np.zeros(shape, bool)
    truth = np.zeros(shape, bool)
    pred[3, 4, 5] = True
    truth[15, 2, 18] = True
    return pred, truth, (1.5, 0.7, 0.9)


def _case_one_voxel_vs_blob():
    shape = (20, 24, 22)
    pred = np.zeros(shape, bool)
    pred[10, 12, 11] = True
    return pred, ball(shape, (10, 12, 11), 6), (1.0, 1.0, 1.0)


def _case_full_volume():
    shape = (12, 14, 10)
    truth = np.ones(shape, bool)  # every face voxel is boundary
    return ball(shape, (6, 7, 5), 4), truth, (1.0, 2.0, 0.5)


CASES = {
    "spheres": _case_spheres, "shells": _case_shells, "multicomponent": _case_multicomponent,
    "anisotropic": _case_anisotropic, "border": _case_border, "one_voxel": _case_one_voxel,
    "one_voxel_vs_blob": _case_one_voxel_vs_blob, "full_volume": _case_full_volume,
}


_MONAI_CACHE: dict[str, dict[str, float]] = {}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_agrees_with_monai(name, method):
    pred, truth, spacing = CASES[name]()
    ours = compute_metrics(pred, truth, spacing, method=method)
    if name not in _MONAI_CACHE:
        _MONAI_CACHE[name] = monai_metrics(pred, truth, spacing)
    ref = _MONAI_CACHE[name]
    assert ours.empty == "none"
    assert_close(ours, ref)
    # and the prediction/truth swap gives the same symmetric metrics
    swapped = compute_metrics(truth, pred, spacing, method=method)
    assert_close(swapped, {k: getattr(ours, k) for k in ("dice", "hd", "hd95", "assd")}, rtol=1e-12)


def test_uint8_and_float_inputs_match_bool():
    pred, truth, sp = _case_anisotropic()
    a = compute_metrics(pred, truth, sp)
    b = compute_metrics(pred.astype(np.uint8), truth.astype(np.float32), sp)
    assert a == b


def test_other_percentile_matches_monai():
    import torch
    from monai.metrics import compute_hausdorff_distance

    pred, truth, sp = _case_multicomponent()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = float(compute_hausdorff_distance(torch.as_tensor(pred[None, None].astype(np.float32)),
                                               torch.as_tensor(truth[None, None].astype(np.float32)),
                                               include_background=True, percentile=80, spacing=list(sp)))
    assert compute_metrics(pred, truth, sp, percentile=80).hd95 == pytest.approx(ref, rel=RTOL)


def test_2d_masks_agree_with_monai():
    rng = np.random.default_rng(5)
    pred, truth = random_blobs(rng, (60, 50)), random_blobs(rng, (60, 50))
    ours = compute_metrics(pred, truth, (0.5, 1.5))
    assert_close(ours, monai_metrics(pred, truth, (0.5, 1.5)))


# ------------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.25)])
def test_nested_boxes_closed_form(spacing):
    shape = (30, 30, 30)
    inner = np.zeros(shape, bool)
    outer = np.zeros(shape, bool)
    inner[10:20, 10:20, 10:20] = True
    outer[8:22, 8:22, 8:22] = True
    m = compute_metrics(inner, outer, spacing)
    d = surface_distances(inner, outer, spacing)
    s = np.asarray(spacing)
    # an inner boundary voxel's nearest outer boundary voxel is its foot on the nearest outer face
    idx = np.argwhere(boundary(inner))
    expected = np.min(np.minimum(idx - 8, 21 - idx) * s, axis=1)
    np.testing.assert_allclose(np.sort(d.pred_to_truth), np.sort(expected), rtol=1e-12)
    assert d.pred_to_truth.min() == pytest.approx(2 * s.min())
    # the outer corner voxel is two voxels away along all three axes from the inner corner
    assert m.hd == pytest.approx(float(np.linalg.norm(2 * s)))
    assert m.dice == pytest.approx(2 * 1000 / (1000 + 14**3))
    assert m.pred_voxels == 1000 and m.truth_voxels == 14**3


def test_concentric_spheres_closed_form():
    """Two concentric spheres of radii r1 < r2: every surface distance is about r2 - r1."""
    h = 0.25  # mm; fine voxels so the discretization error is small
    r1, r2 = 3.0, 5.0
    n = int(2 * (r2 + 1) / h)
    shape = (n, n, n)
    c = ((n - 1) / 2,) * 3
    inner = ball(shape, c, r1, (h, h, h))
    outer = ball(shape, c, r2, (h, h, h))
    m = compute_metrics(inner, outer, (h, h, h))
    tol = h * math.sqrt(3)  # boundary voxel centres lie within one voxel diagonal of the sphere
    assert m.hd == pytest.approx(r2 - r1, abs=tol)
    assert m.hd95 == pytest.approx(r2 - r1, abs=tol)
    assert m.assd == pytest.approx(r2 - r1, abs=h)
    assert m.dice == pytest.approx(2 * r1**3 / (r1**3 + r2**3), rel=0.02)
    assert m.truth_mm3 == pytest.approx(4 / 3 * math.pi * r2**3, rel=0.01)


# ------------------------------------------------------------------------------ spacing order
def test_spacing_is_in_array_order_z_y_x():
    """Two slabs shifted by 2 voxels along z: 6 mm with z spacing 3; reversed spacing gives 2 mm."""
    shape = (20, 10, 12)
    a = np.zeros(shape, bool)
    b = np.zeros(shape, bool)
    a[4:8] = True
    b[6:10] = True
    m = compute_metrics(a, b, (3.0, 1.0, 1.0))
    assert m.hd == pytest.approx(6.0)
    reversed_ = compute_metrics(a, b, (1.0, 1.0, 3.0))
    assert reversed_.hd == pytest.approx(2.0)
    assert m.voxel_volume_mm3 == pytest.approx(3.0)


def test_volume_spacing_survives_nifti_round_trip(tmp_path):
    shape = (20, 10, 12)
    a = np.zeros(shape, np.uint8)
    b = np.zeros(shape, np.uint8)
    a[4:8] = 1
    b[6:10] = 1
    va = Volume(a, spacing=(3.0, 1.0, 0.5))
    vb = va.with_array(b)
    va.write(tmp_path / "a.nii.gz")
    vb.write(tmp_path / "b.nii.gz")
    m = compute_metrics(Volume.read(tmp_path / "a.nii.gz"), Volume.read(tmp_path / "b.nii.gz"))
    assert m.hd == pytest.approx(6.0)
    assert m.diagonal_mm == pytest.approx(math.sqrt(60**2 + 10**2 + 6**2))


def test_volume_spacing_conflict_and_grid_mismatch_are_errors():
    a = Volume(np.ones((4, 4, 4), np.uint8), spacing=(1.0, 2.0, 3.0))
    with pytest.raises(InputError, match="contradicts the volume's spacing"):
        compute_metrics(a, a, spacing=(3.0, 2.0, 1.0))
    b = Volume(np.ones((4, 4, 4), np.uint8), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="not on the same grid"):
        compute_metrics(a, b)
    with pytest.raises(InputError, match="needs 3 values"):
        compute_metrics(np.ones((4, 4, 4)), np.ones((4, 4, 4)), spacing=(1.0, 1.0))
    with pytest.raises(InputError, match="shape"):
        compute_metrics(np.ones((4, 4, 4)), np.ones((4, 4, 5)))
    with pytest.raises(InputError, match="method"):
        compute_metrics(np.ones((4, 4, 4)), np.ones((4, 4, 4)) * 0 + np.eye(4)[None], method="fast")


# ------------------------------------------------------------------------------ empty masks
def test_both_empty():
    z = np.zeros((8, 8, 8), bool)
    m = compute_metrics(z, z, (1.0, 2.0, 3.0))
    assert (m.dice, m.hd, m.hd95, m.assd, m.empty) == (1.0, 0.0, 0.0, 0.0, "both")
    assert dice_score(z, z) == 1.0


@pytest.mark.parametrize("which", ["pred", "truth"])
def test_one_empty_gives_nan_distances_and_a_flag(which):
    z = np.zeros((8, 9, 10), bool)
    m_ = z.copy()
    m_[2:4, 2:4, 2:4] = True
    pred, truth = (z, m_) if which == "pred" else (m_, z)
    m = compute_metrics(pred, truth, (1.0, 2.0, 3.0))
    assert m.dice == 0.0 and m.empty == which and not m.distances_defined
    assert all(math.isnan(v) for v in (m.hd, m.hd95, m.assd))
    assert m.diagonal_mm == pytest.approx(math.sqrt(8**2 + 18**2 + 30**2))
    d = surface_distances(pred, truth, (1.0, 2.0, 3.0))
    assert d.pred_to_truth.size == 0 and d.truth_to_pred.size == 0


def test_aggregation_replaces_undefined_distances_by_the_stated_worst_case():
    z = np.zeros((10, 10, 10), bool)
    a = z.copy()
    a[2:5, 2:5, 2:5] = True
    b = z.copy()
    b[3:6, 2:5, 2:5] = True
    good = compute_metrics(a, b)
    missed = compute_metrics(z, a)
    rows = [good, missed]
    agg = aggregate_metrics(rows)
    diag = missed.diagonal_mm
    assert agg["n_worst_case"] == 1 and "diagonal" in agg["worst_case"]
    assert agg["hd"]["mean"] == pytest.approx((good.hd + diag) / 2)
    assert agg["dice"]["mean"] == pytest.approx(good.dice / 2)
    fixed = aggregate_metrics(rows, worst_case=100.0)
    assert fixed["assd"]["mean"] == pytest.approx((good.assd + 100) / 2)
    assert "100 mm" in fixed["worst_case"]
    skipped = aggregate_metrics(rows, worst_case=None)
    assert skipped["hd"]["n"] == 1 and skipped["hd"]["mean"] == pytest.approx(good.hd)
    table = metrics_table(rows, ["c1", "c2"])
    filled = fill_worst_case(table, 50.0)
    assert filled["hd"].tolist() == [pytest.approx(good.hd), 50.0]
    assert filled["worst_case_filled"].tolist() == [False, True]
    with pytest.raises(InputError, match="worst_case"):
        aggregate_metrics(rows, worst_case="largest")


# ------------------------------------------------------------------------------ boundary and cropping
def test_boundary_is_mask_minus_6_erosion_with_the_volume_edge_as_boundary():
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = random_blobs(rng, (15, 17, 19), threshold=0.5)
        expected = m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1), border_value=0)
        np.testing.assert_array_equal(boundary(m), expected)
    full = np.ones((5, 6, 7), bool)
    assert boundary(full).sum() == 5 * 6 * 7 - 3 * 4 * 5  # only the outer shell


def test_cropping_creates_no_false_edges():
    """A cube filling the crop box: its interior is not boundary, and distances equal the reference."""
    shape = (40, 40, 40)
    cube = np.zeros(shape, bool)
    cube[10:22, 10:22, 10:22] = True
    assert boundary(cube).sum() == 12**3 - 10**3
    other = np.zeros(shape, bool)
    other[11:20, 12:22, 9:21] = True
    assert_close(compute_metrics(cube, other), brute_force(cube, other, (1, 1, 1)), rtol=1e-12)


def test_mask_on_volume_edge_equals_the_same_mask_embedded_in_zeros():
    pred, truth, sp = _case_border()
    m_edge = compute_metrics(pred, truth, sp)
    big_p = np.pad(pred, 5)
    big_t = np.pad(truth, 5)
    m_big = compute_metrics(big_p, big_t, sp)
    for k in ("dice", "hd", "hd95", "assd"):
        assert getattr(m_edge, k) == pytest.approx(getattr(m_big, k), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shape=st.tuples(st.integers(3, 14), st.integers(3, 14), st.integers(3, 14)),
    spacing=st.tuples(*[st.floats(0.3, 3.0)] * 3),
    density=st.floats(0.05, 0.7),
)
def test_matches_brute_force_reference(seed, shape, spacing, density):
    rng = np.random.default_rng(seed)
    pred = rng.random(shape) < density
    truth = rng.random(shape) < density * 0.7
    if not pred.any() or not truth.any():
        return
    ref = brute_force(pred, truth, spacing)
    for method in METHODS:
        assert_close(compute_metrics(pred, truth, spacing, method=method), ref, rtol=1e-9)
