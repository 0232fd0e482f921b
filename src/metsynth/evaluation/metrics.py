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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from ..volume import Volume

METRICS = ("dice", "hd", "hd95", "assd")
DISTANCE_METRICS = ("hd", "hd95", "assd")
HIGHER_IS_BETTER = {"dice": True, "hd": False, "hd95": False, "assd": False}
METRIC_LABELS = {"dice": "Dice", "hd": "HD (mm)", "hd95": "HD95 (mm)", "assd": "ASSD (mm)"}

Empty = Literal["none", "both", "pred", "truth"]
Method = Literal["auto", "kdtree", "edt"]

# The k-d tree costs roughly 1-3 us per boundary voxel, the two EDTs about 0.4 us per voxel of
# the box: use the EDT only when boundary voxels fill more than ~1/5 of the box.
_EDT_IF_BOUNDARY_FRACTION_ABOVE = 0.2


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed surface distances in mm (float64), one value per boundary voxel."""

    pred_to_truth: np.ndarray
    truth_to_pred: np.ndarray

    @property
    def pooled(self) -> np.ndarray:
        return np.concatenate([self.pred_to_truth, self.truth_to_pred])


@dataclass(frozen=True)
class CaseMetrics:
    """The metrics of one case (prediction vs ground truth).

    ``hd``, ``hd95`` and ``assd`` are NaN when exactly one mask is empty (``empty`` says which);
    they are replaced by a worst case only at aggregation, never here.
    """

    dice: float
    hd: float
    hd95: float
    assd: float
    empty: Empty
    pred_voxels: int
    truth_voxels: int
    voxel_volume_mm3: float
    diagonal_mm: float
    percentile: float = 95.0

    @property
    def pred_mm3(self) -> float:
        return self.pred_voxels * self.voxel_volume_mm3

    @property
    def truth_mm3(self) -> float:
        return self.truth_voxels * self.voxel_volume_mm3

    @property
    def distances_defined(self) -> bool:
        return self.empty in ("none", "both")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pred_mm3"] = self.pred_mm3
        out["truth_mm3"] = self.truth_mm3
        return out


# ---------------------------------------------------------------------------------- inputs
def _as_array_and_spacing(
    pred: "np.ndarray | Volume", truth: "np.ndarray | Volume", spacing: Sequence[float] | float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ..volume import Volume

    spacings = []
    if isinstance(pred, Volume) and isinstance(truth, Volume):
        diff = truth.grid_mismatch(pred)
        if diff is not None:
            raise InputError(
                f"prediction {pred.name} and ground truth {truth.name} are not on the same grid ({diff}); "
                "resample the prediction onto the ground truth's grid (nearest neighbour)"
            )
    for v in (pred, truth):
        if isinstance(v, Volume):
            spacings.append(np.asarray(v.spacing, dtype=np.float64))
    p = pred.array if isinstance(pred, Volume) else np.asarray(pred)
    t = truth.array if isinstance(truth, Volume) else np.asarray(truth)
    if p.shape != t.shape:
        raise InputError(f"prediction shape {p.shape} differs from ground-truth shape {t.shape}; "
                         "both masks must be on the same grid")
    if p.ndim not in (2, 3):
        raise InputError(f"masks must be 2D or 3D arrays, got {p.ndim}D with shape {p.shape}")
    if spacing is None:
        sp = spacings[0] if spacings else np.ones(p.ndim)
    else:
        sp = np.asarray(spacing, dtype=np.float64)
        if sp.ndim == 0:
            sp = np.full(p.ndim, float(sp))
        if sp.shape != (p.ndim,):
            raise InputError(f"spacing {tuple(np.ravel(spacing))} needs {p.ndim} values in array order "
                             f"({'z, y, x' if p.ndim == 3 else 'y, x'}) for masks of shape {p.shape}")
        if spacings and not np.allclose(spacings[0], sp, rtol=1e-4):
            raise InputError(f"spacing {tuple(sp)} contradicts the volume's spacing {tuple(spacings[0])}; "
                             "leave spacing=None to use the volume's")
    if not (np.all(np.isfinite(sp)) and np.all(sp > 0)):
        raise InputError(f"spacing must be positive and finite, got {tuple(sp)}")
    return p, t, sp


def _foreground_box(a: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the non-zero voxels, or None if there are none.

    Uses axis projections; for one-byte masks (bool, uint8, int8) whose rows are a multiple of
    8 bytes, the projections OR eight voxels at a time through a uint64 view (memory-bound).
    """
    if a.dtype == bool or a.dtype.itemsize == 1 and np.issubdtype(a.dtype, np.integer):
        a = a.view(np.uint8)
    elif not np.issubdtype(a.dtype, np.integer):
        a = a != 0  # float masks: NaN counts as foreground, as any non-zero value
        a = a.view(np.uint8)
    if a.size == 0:
        return None
    box: list[slice] = []
    sub = a
    for axis in range(a.ndim):
        proj = _project(sub, axis)
        nz = np.flatnonzero(proj)
        if nz.size == 0:
            return None
        sl = slice(int(nz[0]), int(nz[-1]) + 1)
        box.append(sl)
        index = [slice(None)] * a.ndim
        index[axis] = sl
        sub = sub[tuple(index)]  # later projections read only the part inside the box so far
    return tuple(box)


def _project(a: np.ndarray, axis: int) -> np.ndarray:
    """Boolean projection of ``a`` onto ``axis`` (whether any voxel of each slice is non-zero)."""
    last = a.shape[-1]
    if a.dtype == np.uint8 and last % 8 == 0 and a.strides[-1] == 1:
        wide = a.view(np.uint64)  # 8 voxels per element along the last axis
        for _ in range(axis):  # OR away the leading axes first: streams through memory
            wide = np.bitwise_or.reduce(wide, axis=0)
        if axis == a.ndim - 1:
            return wide.view(np.uint8) != 0
        return wide.reshape(wide.shape[0], -1).any(axis=1)
    return a.any(axis=tuple(i for i in range(a.ndim) if i != axis))


def _union_box(boxes: Iterable[tuple[slice, ...] | None]) -> tuple[slice, ...] | None:
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return tuple(slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes)) for i in range(len(boxes[0])))


def _padded_crop(a: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """``a[box] != 0`` inside a one-voxel margin of False (= erosion border value 0)."""
    shape = tuple(s.stop - s.start + 2 for s in box)
    out = np.zeros(shape, dtype=bool)
    inner = tuple(slice(1, -1) for _ in box)
    sub = a[box]
    if sub.dtype == bool:
        out[inner] = sub
    else:
        np.not_equal(sub, 0, out=out[inner])
    return out


def _boundary_of_padded(padded: np.ndarray) -> np.ndarray:
    """Boundary (mask minus 6-neighbour erosion) of the interior of a zero-margined mask."""
    inner = tuple(slice(1, -1) for _ in range(padded.ndim))
    mask = padded[inner]
    eroded = mask.copy()
    for axis in range(padded.ndim):
        for start in (0, 2):
            shifted = list(inner)
            shifted[axis] = slice(start, start + mask.shape[axis])
            np.logical_and(eroded, padded[tuple(shifted)], out=eroded)
    np.logical_xor(mask, eroded, out=eroded)  # eroded is a subset of mask: xor == mask & ~eroded
    return eroded


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boolean boundary of a mask: mask minus its 6-neighbour erosion (volume edge is boundary)."""
    mask = np.asarray(mask)
    out = np.zeros(mask.shape, dtype=bool)
    box = _foreground_box(mask)
    if box is None:
        return out
    out[box] = _boundary_of_padded(_padded_crop(mask, box))
    return out


# ---------------------------------------------------------------------------------- distances
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


# ---------------------------------------------------------------------------------- aggregation
def _worst_values(worst_case: Any, diagonals: np.ndarray) -> np.ndarray | None:
    if worst_case is None:
        return None
    if isinstance(worst_case, str):
        if worst_case != "diagonal":
            try:
                worst_case = float(worst_case)
            except ValueError:
                raise InputError(f"worst_case {worst_case!r}: use 'diagonal', a distance in mm, or None") from None
        else:
            if np.any(~np.isfinite(diagonals)):
                raise InputError("worst_case='diagonal' needs the 'diagonal_mm' of every case; give a distance in mm")
            return diagonals
    value = float(worst_case)
    if not value >= 0:
        raise InputError(f"worst_case must be a non-negative distance in mm, got {worst_case}")
    return np.full(diagonals.shape, value)


def fill_worst_case(table: "pd.DataFrame", worst_case: Any = "diagonal") -> "pd.DataFrame":
    """Copy of a per-case table with undefined distances (one mask empty) replaced.

    ``worst_case``: ``"diagonal"`` (each case's field-of-view diagonal in mm, column
    ``diagonal_mm``), a distance in mm, or ``None`` (keep NaN: such cases are then left out of
    distance statistics). Adds a boolean column ``worst_case_filled``.
    """
    out = table.copy()
    undefined = np.zeros(len(out), dtype=bool)
    for m in DISTANCE_METRICS:
        if m in out:
            undefined |= out[m].isna().to_numpy()
    diagonals = out["diagonal_mm"].to_numpy(dtype=float) if "diagonal_mm" in out else np.full(len(out), np.nan)
    if worst_case == "diagonal" and not undefined.any():
        values = None  # nothing to fill: do not require the diagonal column
    else:
        values = _worst_values(worst_case, np.where(undefined, diagonals, 0.0))
    if values is not None:
        for m in DISTANCE_METRICS:
            if m in out:
                col = out[m].to_numpy(dtype=float)
                out[m] = np.where(np.isnan(col), values, col)
    out["worst_case_filled"] = undefined & (values is not None)
    return out


def metrics_table(results: Sequence[CaseMetrics], case_ids: Sequence[str] | None = None) -> "pd.DataFrame":
    """Per-case metrics as a DataFrame (one row per case; ``case_id`` first when given)."""
    import pandas as pd

    rows = [r.as_dict() for r in results]
    df = pd.DataFrame(rows)
    if case_ids is not None:
        if len(case_ids) != len(rows):
            raise InputError(f"{len(case_ids)} case ids for {len(rows)} results")
        df.insert(0, "case_id", list(case_ids))
    return df


def aggregate_metrics(
    results: Sequence[CaseMetrics] | Sequence[Mapping[str, Any]] | "pd.DataFrame",
    worst_case: Any = "diagonal",
    metrics: Sequence[str] = METRICS,
) -> dict[str, Any]:
    """Mean, std (ddof=1), median, min, max and n per metric over cases.

    Undefined distances (exactly one mask empty) are replaced by ``worst_case`` first (see
    :func:`fill_worst_case`); the count replaced is reported as ``n_worst_case`` and the rule
    as ``worst_case``.
    """
    import pandas as pd

    if isinstance(results, pd.DataFrame):
        df = results
    else:
        df = pd.DataFrame([r.as_dict() if isinstance(r, CaseMetrics) else dict(r) for r in results])
    if df.empty:
        return {"n_cases": 0, "worst_case": _describe_worst(worst_case)}
    filled = fill_worst_case(df, worst_case)
    out: dict[str, Any] = {"n_cases": int(len(df)), "worst_case": _describe_worst(worst_case),
                           "n_worst_case": int(filled["worst_case_filled"].sum())}
    if "empty" in df:
        out["n_empty"] = {k: int(v) for k, v in df["empty"].value_counts().items()}
    for m in metrics:
        values = filled[m].to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        out[m] = _describe(values)
    return out


def _describe(values: np.ndarray) -> dict[str, float | int]:
    if values.size == 0:
        nan = math.nan
        return {"mean": nan, "std": nan, "median": nan, "min": nan, "max": nan, "n": 0}
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
        "n": int(values.size),
    }


def _describe_worst(worst_case: Any) -> str:
    if worst_case is None:
        return "undefined distances (one mask empty) left out"
    if worst_case == "diagonal":
        return "undefined distances (one mask empty) set to the field-of-view diagonal of the case (mm)"
    return f"undefined distances (one mask empty) set to {float(worst_case):g} mm"


__all__ = [
    "CaseMetrics", "DISTANCE_METRICS", "HIGHER_IS_BETTER", "METRICS", "METRIC_LABELS", "SurfaceDistances",
    "aggregate_metrics", "boundary", "compute_metrics", "dice_score", "fill_worst_case", "metrics_table",
    "surface_distances",
]
