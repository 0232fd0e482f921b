"""Segmentation metrics in millimetres: Dice, Hausdorff distance (HD), HD95 and ASSD.

Convention (Metrics Reloaded, which the paper cites; MONAI 1.6 computes the same numbers):

* **Boundary** of a mask: the mask minus its erosion by the 6-neighbourhood, eroding with
  border value 0, so a foreground voxel on the edge of the volume is a boundary voxel.
* **Distances** go from the centre of each boundary voxel of one mask to the nearest boundary
  voxel centre of the other mask, in mm (float64), with the voxel spacing given in the array's
  ``[z, y, x]`` order (anisotropic spacing is honoured exactly).
* **HD** is the largest distance over both directions; **HD95** the larger of the two
  directed 95th percentiles (linear interpolation, as ``numpy.percentile`` and
  ``torch.quantile``); **ASSD** the mean of both directions' distances pooled together.
* **Empty masks**: both empty gives Dice 1 and distances 0; exactly one empty gives Dice 0 and
  distances NaN, flagged in :attr:`CaseMetrics.empty`. NaN distances are replaced at
  aggregation by a stated worst case (default: the diagonal of the field of view in mm, an
  upper bound on any distance inside the image), see :func:`fill_worst_case`.

Speed: all work is restricted to the bounding box of the union of both masks plus a one-voxel
zero margin (which reproduces the border value 0 of the erosion exactly, so cropping changes no
result); boundaries come from six shifted logical ANDs; distances are computed only for
boundary voxels, either with a k-d tree over boundary voxel centres (when boundaries are sparse
in the box, the usual case) or with ``scipy.ndimage.distance_transform_edt(sampling=spacing)``
over the box (when they are dense). Both are exact; ``method`` forces one.

Modules: :mod:`.case_metrics` (names and result types), :mod:`.masks` (input checks, bounding box,
boundary), this module (distances and the per-case metrics) and :mod:`.aggregation` (over cases);
this module is the public entry and re-exports the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from .aggregation import aggregate_metrics, fill_worst_case, metrics_table
from .case_metrics import (
    DISTANCE_METRICS,
    HIGHER_IS_BETTER,
    METRIC_LABELS,
    METRICS,
    CaseMetrics,
    Method,
    SurfaceDistances,
)
from .masks import _as_array_and_spacing, _boundary_of_padded, _foreground_box, _padded_crop, _union_box, boundary

if TYPE_CHECKING:
    from ..volume import Volume

# The k-d tree costs roughly 1-3 us per boundary voxel, the two EDTs about 0.4 us per voxel of
# the box: use the EDT only when boundary voxels fill more than ~1/5 of the box.
_EDT_IF_BOUNDARY_FRACTION_ABOVE = 0.2


@dataclass
class _Prepared:
    pred: np.ndarray  # padded crops
    truth: np.ndarray
    box: tuple[slice, ...] | None
    pred_voxels: int
    truth_voxels: int
    intersection: int


def _prepare(p: np.ndarray, t: np.ndarray) -> _Prepared:
    box = _union_box([_foreground_box(p), _foreground_box(t)])
    if box is None:
        empty = np.zeros((0,) * p.ndim, dtype=bool)
        return _Prepared(empty, empty, None, 0, 0, 0)
    pc, tc = _padded_crop(p, box), _padded_crop(t, box)
    n_p, n_t = int(np.count_nonzero(pc)), int(np.count_nonzero(tc))
    inter = int(np.count_nonzero(np.logical_and(pc, tc))) if n_p and n_t else 0
    return _Prepared(pc, tc, box, n_p, n_t, inter)


def _directed_distances(prep: _Prepared, spacing: np.ndarray, method: Method, workers: int) -> SurfaceDistances:
    bp = _boundary_of_padded(prep.pred)
    bt = _boundary_of_padded(prep.truth)
    shape = bp.shape
    ip = np.flatnonzero(bp)  # raveled indices of boundary voxels
    it = np.flatnonzero(bt)
    # Voxels on both boundaries are at distance 0 in both directions: query only the others.
    qp = ip[~bt.ravel()[ip]]
    qt = it[~bp.ravel()[it]]
    n_shared = ip.size - qp.size
    if method == "auto":
        method = "edt" if qp.size + qt.size > _EDT_IF_BOUNDARY_FRACTION_ABOVE * bp.size else "kdtree"
    if method == "kdtree":
        from scipy.spatial import cKDTree

        def points(flat: np.ndarray) -> np.ndarray:
            out = np.empty((flat.size, len(shape)), dtype=np.float64)
            for axis, idx in enumerate(np.unravel_index(flat, shape)):
                np.multiply(idx, spacing[axis], out=out[:, axis])
            return out

        def query(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
            if src.size == 0:
                return np.zeros(0)
            tree = cKDTree(points(dst), leafsize=32, balanced_tree=False, compact_nodes=False)
            return tree.query(points(src), k=1, workers=workers)[0]

        d_pt, d_tp = query(qp, it), query(qt, ip)
    elif method == "edt":
        from scipy.ndimage import distance_transform_edt

        d_pt = distance_transform_edt(~bt, sampling=spacing).ravel()[qp] if qp.size else np.zeros(0)
        d_tp = distance_transform_edt(~bp, sampling=spacing).ravel()[qt] if qt.size else np.zeros(0)
    else:
        raise InputError(f"method {method!r} is not one of 'auto', 'kdtree', 'edt'")
    zeros = np.zeros(n_shared)
    return SurfaceDistances(np.concatenate([d_pt, zeros]), np.concatenate([d_tp, zeros]))


def surface_distances(
    pred: "np.ndarray | Volume",
    truth: "np.ndarray | Volume",
    spacing: Sequence[float] | float | None = None,
    method: Method = "auto",
    workers: int = 1,
) -> SurfaceDistances:
    """Distances (mm) from each boundary voxel of one mask to the other mask's boundary.

    The order of the values within each direction is unspecified. Both arrays are empty when
    either mask is empty. ``spacing`` is in array order (z, y, x); taken from the volumes when
    ``pred``/``truth`` are :class:`~metsynth.volume.Volume`.
    """
    p, t, sp = _as_array_and_spacing(pred, truth, spacing)
    prep = _prepare(p, t)
    if prep.pred_voxels == 0 or prep.truth_voxels == 0:
        return SurfaceDistances(np.zeros(0), np.zeros(0))
    return _directed_distances(prep, sp, method, workers)


def dice_score(pred: "np.ndarray | Volume", truth: "np.ndarray | Volume") -> float:
    """Dice coefficient of two masks (non-zero = foreground); 1.0 when both are empty."""
    p, t, _ = _as_array_and_spacing(pred, truth, None)
    prep = _prepare(p, t)
    return _dice(prep)


def _dice(prep: _Prepared) -> float:
    total = prep.pred_voxels + prep.truth_voxels
    return 1.0 if total == 0 else 2.0 * prep.intersection / total


def compute_metrics(
    pred: "np.ndarray | Volume",
    truth: "np.ndarray | Volume",
    spacing: Sequence[float] | float | None = None,
    percentile: float = 95.0,
    method: Method = "auto",
    workers: int = 1,
) -> CaseMetrics:
    """Dice, HD, HD95 (``percentile``) and ASSD of one prediction against its ground truth.

    Args:
        pred, truth: binary masks (arrays or :class:`~metsynth.volume.Volume`; any non-zero
            voxel is foreground), 3D ``[z, y, x]`` (2D ``[y, x]`` also works).
        spacing: voxel size in mm in array order; default: the volumes' spacing, else 1 mm.
        percentile: the percentile of the "HD95" column (0-100).
        method: ``"kdtree"``, ``"edt"`` or ``"auto"`` (picks the cheaper; same result).
        workers: threads for the k-d tree queries (-1: all cores).
    """
    if not 0 <= percentile <= 100:
        raise InputError(f"percentile must be within 0..100, got {percentile}")
    p, t, sp = _as_array_and_spacing(pred, truth, spacing)
    prep = _prepare(p, t)
    common = dict(
        pred_voxels=prep.pred_voxels, truth_voxels=prep.truth_voxels,
        voxel_volume_mm3=float(np.prod(sp)), diagonal_mm=float(np.linalg.norm(np.asarray(p.shape) * sp)),
        percentile=float(percentile),
    )
    if prep.pred_voxels == 0 and prep.truth_voxels == 0:
        return CaseMetrics(dice=1.0, hd=0.0, hd95=0.0, assd=0.0, empty="both", **common)
    if prep.pred_voxels == 0 or prep.truth_voxels == 0:
        nan = math.nan
        return CaseMetrics(dice=0.0, hd=nan, hd95=nan, assd=nan,
                           empty="pred" if prep.pred_voxels == 0 else "truth", **common)
    d = _directed_distances(prep, sp, method, workers)
    hd = max(float(d.pred_to_truth.max()), float(d.truth_to_pred.max()))
    hd95 = max(float(np.percentile(d.pred_to_truth, percentile)), float(np.percentile(d.truth_to_pred, percentile)))
    n = d.pred_to_truth.size + d.truth_to_pred.size
    assd = (float(d.pred_to_truth.sum()) + float(d.truth_to_pred.sum())) / n
    return CaseMetrics(dice=_dice(prep), hd=hd, hd95=hd95, assd=assd, empty="none", **common)


__all__ = [
    "CaseMetrics", "DISTANCE_METRICS", "HIGHER_IS_BETTER", "METRICS", "METRIC_LABELS", "SurfaceDistances",
    "aggregate_metrics", "boundary", "compute_metrics", "dice_score", "fill_worst_case", "metrics_table",
    "surface_distances",
]
