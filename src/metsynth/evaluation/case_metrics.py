"""The metric names and the result types of one case (what :mod:`metsynth.evaluation.metrics` computes).

``METRICS`` and their labels and directions, :class:`CaseMetrics` (Dice, HD, HD95, ASSD of one
prediction, NaN distances when exactly one mask is empty) and :class:`SurfaceDistances`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

METRICS = ("dice", "hd", "hd95", "assd")
DISTANCE_METRICS = ("hd", "hd95", "assd")
HIGHER_IS_BETTER = {"dice": True, "hd": False, "hd95": False, "assd": False}
METRIC_LABELS = {"dice": "Dice", "hd": "HD (mm)", "hd95": "HD95 (mm)", "assd": "ASSD (mm)"}

Empty = Literal["none", "both", "pred", "truth"]
Method = Literal["auto", "kdtree", "edt"]


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


__all__ = [
    "DISTANCE_METRICS", "HIGHER_IS_BETTER", "METRICS", "METRIC_LABELS", "CaseMetrics", "Empty", "Method",
    "SurfaceDistances",
]
