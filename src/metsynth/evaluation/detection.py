"""Lesion-wise detection: connected components of prediction and truth, matched by overlap.

Rules (stated once, used everywhere):

* Lesions are the connected components of each mask (``connectivity`` 6, 18 or 26; default 26,
  so diagonal contact joins voxels, as most lesion-wise studies do). Components smaller than
  ``min_size_mm3`` are ignored in both masks (the paper kept lesions above 16 mm3).
* A true lesion and a predicted component **match** when they overlap with an intersection over
  union above ``min_iou`` (default 0: any shared voxel). Matching is many-to-many: a prediction
  spanning two lesions detects both, two predictions on one lesion detect it once.
* A true lesion is a **true positive** (detected) if it matches at least one prediction, else a
  **false negative**; a predicted component that matches no true lesion is a **false positive**.
* **Per-lesion Dice** of a true lesion: Dice between the lesion and the union of the predicted
  components that match it (0 when missed).
* Size bins use the true lesion's volume (for false positives, the predicted component's volume)
  in mm3, with edges ``size_bins_mm3`` (left-closed intervals).
* With the case's femur mask, each true lesion also gets its **surface contact** (the share of its
  one-voxel shell outside the femur, :mod:`metsynth.bone.contact`) and a **location**: ``cortical``
  (contact above 5 %: against or through the cortex, where fractures start) or ``medullary``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bone.contact import location, surface_contact
from ..errors import InputError
from .metrics import _as_array_and_spacing, _foreground_box, _union_box

if TYPE_CHECKING:
    import pandas as pd

    from ..volume import Volume

DEFAULT_SIZE_BINS_MM3: tuple[float, ...] = (0.0, 500.0, 5000.0, math.inf)
LOCATIONS = ("cortical", "medullary")


@dataclass(frozen=True)
class Lesion:
    """One connected component of the truth (``kind="true"``) or of the prediction (``"pred"``)."""

    kind: str
    label: int
    voxels: int
    volume_mm3: float
    size_bin: str
    detected: bool  # true lesion: matched by a prediction; pred component: matches a true lesion
    dice: float  # true lesion: Dice with its matched predictions; pred component: NaN
    matched: tuple[int, ...]  # labels of the matching components of the other mask
    centroid: tuple[float, ...]  # voxel index [z, y, x] in the full volume
    surface_contact: float = math.nan  # true lesion, with a femur mask: share of its shell outside the femur
    location: str = ""  # true lesion, with a femur mask: "cortical" or "medullary" (metsynth.bone.contact)


@dataclass(frozen=True)
class DetectionResult:
    """Lesion-wise detection of one case."""

    lesions: tuple[Lesion, ...]
    size_bins_mm3: tuple[float, ...] = field(default=DEFAULT_SIZE_BINS_MM3)

    @property
    def true_lesions(self) -> list[Lesion]:
        return [les for les in self.lesions if les.kind == "true"]

    @property
    def pred_lesions(self) -> list[Lesion]:
        return [les for les in self.lesions if les.kind == "pred"]

    @property
    def n_true(self) -> int:
        return len(self.true_lesions)

    @property
    def n_pred(self) -> int:
        return len(self.pred_lesions)

    @property
    def tp(self) -> int:
        return sum(les.detected for les in self.true_lesions)

    @property
    def fn(self) -> int:
        return self.n_true - self.tp

    @property
    def fp(self) -> int:
        return sum(not les.detected for les in self.pred_lesions)

    @property
    def sensitivity(self) -> float:
        return self.tp / self.n_true if self.n_true else math.nan

    @property
    def precision(self) -> float:
        """Fraction of predicted components that match a true lesion."""
        return (self.n_pred - self.fp) / self.n_pred if self.n_pred else math.nan

    @property
    def f1(self) -> float:
        s, p = self.sensitivity, self.precision
        if math.isnan(s) or math.isnan(p) or s + p == 0:
            return math.nan if (math.isnan(s) or math.isnan(p)) else 0.0
        return 2 * s * p / (s + p)

    def summary(self) -> dict[str, Any]:
        return {"n_true": self.n_true, "n_pred": self.n_pred, "tp": self.tp, "fn": self.fn, "fp": self.fp,
                "sensitivity": self.sensitivity, "precision": self.precision, "f1": self.f1,
                "mean_lesion_dice": (float(np.mean([les.dice for les in self.true_lesions])) if self.n_true
                                     else math.nan)}

    def by_size(self) -> dict[str, dict[str, Any]]:
        """Per size bin: true lesions, detected, missed, sensitivity, false positives, mean Dice."""
        out = {}
        for name in bin_names(self.size_bins_mm3):
            true = [les for les in self.true_lesions if les.size_bin == name]
            tp = sum(les.detected for les in true)
            out[name] = {
                "n_true": len(true), "tp": tp, "fn": len(true) - tp,
                "sensitivity": tp / len(true) if true else math.nan,
                "fp": sum(1 for les in self.pred_lesions if les.size_bin == name and not les.detected),
                "mean_lesion_dice": float(np.mean([les.dice for les in true])) if true else math.nan,
            }
        return out

    def by_location(self) -> dict[str, dict[str, Any]]:
        """Per location of the true lesions (``cortical``, ``medullary``; only with a femur mask):
        true lesions, detected, sensitivity, mean Dice."""
        return _by_location(self.true_lesions)

    def table(self, case_id: str | None = None) -> "pd.DataFrame":
        """One row per lesion (true and predicted)."""
        import pandas as pd

        rows = []
        for les in self.lesions:
            row = asdict(les)
            row["matched"] = ";".join(map(str, les.matched))
            row["centroid"] = ",".join(f"{c:.1f}" for c in les.centroid)
            rows.append(row)
        df = pd.DataFrame(rows, columns=[f.name for f in Lesion.__dataclass_fields__.values()])
        if case_id is not None:
            df.insert(0, "case_id", case_id)
        return df


def bin_names(edges: Sequence[float]) -> list[str]:
    names = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        names.append(f">={lo:g} mm3" if math.isinf(hi) else f"{lo:g}-{hi:g} mm3")
    return names


def _bin_of(volume: float, edges: Sequence[float], names: list[str]) -> str:
    i = int(np.searchsorted(np.asarray(edges[1:]), volume, side="right"))
    return names[min(i, len(names) - 1)]


def _structure(connectivity: int, ndim: int) -> np.ndarray:
    from scipy import ndimage

    ranks = {6: 1, 18: 2, 26: 3} if ndim == 3 else {4: 1, 8: 2}
    if connectivity not in ranks:
        raise InputError(f"connectivity {connectivity} is not one of {sorted(ranks)} for {ndim}D masks")
    return ndimage.generate_binary_structure(ndim, ranks[connectivity])


def detect_lesions(
    pred: "np.ndarray | Volume",
    truth: "np.ndarray | Volume",
    spacing: Sequence[float] | float | None = None,
    connectivity: int = 26,
    min_iou: float = 0.0,
    min_size_mm3: float = 0.0,
    size_bins_mm3: Sequence[float] = DEFAULT_SIZE_BINS_MM3,
    femur: "np.ndarray | Volume | None" = None,
) -> DetectionResult:
    """Match predicted and true lesions (connected components) by overlap; see the module rules.
    ``femur``: the case's femur mask on the truth's grid, for each true lesion's location."""
    from scipy import ndimage

    if not 0 <= min_iou < 1:
        raise InputError(f"min_iou must be in [0, 1), got {min_iou}")
    edges = tuple(float(e) for e in size_bins_mm3)
    if len(edges) < 2 or any(b <= a for a, b in zip(edges[:-1], edges[1:])):
        raise InputError(f"size_bins_mm3 must be at least two increasing edges, got {list(size_bins_mm3)}")
    p, t, sp = _as_array_and_spacing(pred, truth, spacing)
    bone = None
    if femur is not None:
        bone = np.asarray(getattr(femur, "array", femur)) != 0
        if bone.shape != t.shape:
            raise InputError(f"femur mask shape {bone.shape} differs from the ground truth's {t.shape}")
    structure = _structure(connectivity, p.ndim)
    names = bin_names(edges)
    voxel_mm3 = float(np.prod(sp))
    box = _union_box([_foreground_box(p), _foreground_box(t)])
    if box is None:
        return DetectionResult((), edges)
    offset = np.array([s.start for s in box], dtype=float)
    lt, nt = ndimage.label(t[box] != 0, structure=structure)
    lp, npred = ndimage.label(p[box] != 0, structure=structure)
    lt, nt = _drop_small(lt, nt, min_size_mm3 / voxel_mm3)
    lp, npred = _drop_small(lp, npred, min_size_mm3 / voxel_mm3)
    size_t = np.bincount(lt.ravel(), minlength=nt + 1)
    size_p = np.bincount(lp.ravel(), minlength=npred + 1)
    both = (lt > 0) & (lp > 0)
    pairs = np.bincount(lt[both].astype(np.int64) * (npred + 1) + lp[both], minlength=(nt + 1) * (npred + 1))
    overlap = pairs.reshape(nt + 1, npred + 1)
    union = size_t[:, None] + size_p[None, :] - overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(overlap > 0, overlap / np.maximum(union, 1), 0.0)
    match = (overlap > 0) & (iou > min_iou)
    match[0, :] = False
    match[:, 0] = False
    centroid_t = _centroids(lt, nt, offset)
    objects = ndimage.find_objects(lt) if bone is not None else []
    centroid_p = _centroids(lp, npred, offset)

    lesions: list[Lesion] = []
    for i in range(1, nt + 1):
        partners = np.flatnonzero(match[i])
        if partners.size:
            inter = int(overlap[i, partners].sum())
            pred_size = int(size_p[partners].sum())
            dice = 2.0 * inter / (size_t[i] + pred_size)
        else:
            dice = 0.0
        vol = float(size_t[i]) * voxel_mm3
        where: dict[str, Any] = {}
        if bone is not None:  # the component in its own box (find_objects), placed in the full grid
            sl = objects[i - 1]
            contact = surface_contact(lt[sl] == i, bone, offset.astype(int) + [s.start for s in sl])
            where = {"surface_contact": round(contact, 4), "location": location(contact)}
        lesions.append(Lesion("true", i, int(size_t[i]), vol, _bin_of(vol, edges, names), bool(partners.size),
                              float(dice), tuple(int(j) for j in partners), centroid_t[i - 1], **where))
    for j in range(1, npred + 1):
        partners = np.flatnonzero(match[:, j])
        vol = float(size_p[j]) * voxel_mm3
        lesions.append(Lesion("pred", j, int(size_p[j]), vol, _bin_of(vol, edges, names), bool(partners.size),
                              math.nan, tuple(int(i) for i in partners), centroid_p[j - 1]))
    return DetectionResult(tuple(lesions), edges)


def _drop_small(labels: np.ndarray, n: int, min_voxels: float) -> tuple[np.ndarray, int]:
    if min_voxels <= 0 or n == 0:
        return labels, n
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    relabel = np.zeros(n + 1, dtype=labels.dtype)
    relabel[keep] = np.arange(1, int(keep.sum()) + 1, dtype=labels.dtype)
    return relabel[labels], int(keep.sum())


def _centroids(labels: np.ndarray, n: int, offset: np.ndarray) -> list[tuple[float, ...]]:
    if n == 0:
        return []
    flat = labels.ravel()
    fg = flat > 0
    counts = np.bincount(flat[fg], minlength=n + 1)[1:].astype(float)
    out = []
    coords = np.unravel_index(np.flatnonzero(fg), labels.shape)
    sums = [np.bincount(flat[fg], weights=c, minlength=n + 1)[1:] for c in coords]
    for k in range(n):
        out.append(tuple(float(s[k] / counts[k] + o) for s, o in zip(sums, offset)))
    return out


def summarize_detection(results: Sequence[DetectionResult]) -> dict[str, Any]:
    """Pooled over cases: lesion sensitivity, false positives per case, per size bin."""
    if not results:
        return {"n_cases": 0}
    n_true = sum(r.n_true for r in results)
    tp = sum(r.tp for r in results)
    fp = [r.fp for r in results]
    true = [les for r in results for les in r.true_lesions]
    dices = [les.dice for les in true]
    bins: dict[str, dict[str, Any]] = {}
    for r in results:
        for name, b in r.by_size().items():
            acc = bins.setdefault(name, {"n_true": 0, "tp": 0, "fn": 0, "fp": 0, "_dice": []})
            for k in ("n_true", "tp", "fn", "fp"):
                acc[k] += b[k]
            acc["_dice"].extend(les.dice for les in r.true_lesions if les.size_bin == name)
    for acc in bins.values():
        d = acc.pop("_dice")
        acc["sensitivity"] = acc["tp"] / acc["n_true"] if acc["n_true"] else math.nan
        acc["mean_lesion_dice"] = float(np.mean(d)) if d else math.nan
        acc["fp_per_case"] = acc["fp"] / len(results)
    return {
        "n_cases": len(results), "n_true": n_true, "tp": tp, "fn": n_true - tp, "fp": int(sum(fp)),
        "sensitivity": tp / n_true if n_true else math.nan,
        "fp_per_case_mean": float(np.mean(fp)), "fp_per_case_std": float(np.std(fp, ddof=1)) if len(fp) > 1 else 0.0,
        "mean_lesion_dice": float(np.mean(dices)) if dices else math.nan,
        "by_size": bins,
        **({"by_location": _by_location(true)} if any(les.location for les in true) else {}),
        "rules": "lesions = connected components; match = overlap with IoU > min_iou; per-lesion Dice = lesion vs "
                 "union of its matching predictions",
    }


def _by_location(lesions: Sequence[Lesion]) -> dict[str, dict[str, Any]]:
    out = {}
    for name in LOCATIONS:
        true = [les for les in lesions if les.location == name]
        tp = sum(les.detected for les in true)
        out[name] = {"n_true": len(true), "tp": tp, "fn": len(true) - tp,
                     "sensitivity": tp / len(true) if true else math.nan,
                     "mean_lesion_dice": float(np.mean([les.dice for les in true])) if true else math.nan}
    return out


__all__ = ["DEFAULT_SIZE_BINS_MM3", "DetectionResult", "Lesion", "bin_names", "detect_lesions", "summarize_detection"]
