"""Score a folder of predicted lesion masks against a cohort's annotations.

Predictions are named ``<case_id>.nii.gz`` (``.nii``, ``.nrrd`` and ``.mha`` are accepted too)
and must lie on the grid of the case's lesion mask. Every case of the chosen roles that has a
lesion annotation is scored: the segmentation metrics of :mod:`.metrics` and the lesion-wise
detection of :mod:`.detection`. A case without a prediction is an error naming the case,
unless ``allow_missing`` is set (then it is skipped and listed in the summary).

Cross-validation: with ``fold`` and ``splits`` only fold ``fold``'s held-out cases are scored (its
test fold plus the test-only cases, :func:`metsynth.evaluation.splits.held_out_cases`), so a
fold's evaluation never scores the cases its model trained on. Without ``fold``, a prediction
folder written by ``metsynth predict --fold`` (its ``predict.json`` records the fold and the
splits file) is scored as that fold; a ``fold`` that differs from the recorded one is refused.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from ..config import Settings
from ..errors import InputError
from ..fileio import write_json, write_text
from .detection import DEFAULT_SIZE_BINS_MM3, detect_lesions, summarize_detection
from .metrics import aggregate_metrics, compute_metrics

if TYPE_CHECKING:
    import pandas as pd

    from ..cohort import Case, Cohort
    from ..volume import Volume

log = logging.getLogger(__name__)

PREDICTION_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


class EvaluationConfig(Settings):
    """Settings of ``metsynth evaluate`` (metrics, lesion-wise detection, aggregation)."""

    annotator: str | None = Field(None, description="Ground-truth annotator; default: the case's reference mask.")
    roles: list[Literal["healthy", "metastatic", "test"]] = Field(
        default_factory=lambda: ["metastatic", "test"], description="Roles of the cases to score.")
    percentile: float = Field(95.0, ge=0, le=100, description="Percentile of the HD95 column.")
    worst_case: float | Literal["diagonal"] | None = Field(
        "diagonal", description="Distance given, at aggregation, to a case whose prediction or truth is empty: "
        "'diagonal' (the field of view's diagonal in mm), a value in mm, or null (leave such cases out).")
    connectivity: Literal[6, 18, 26] = Field(26, description="Voxel connectivity of lesions (connected components).")
    min_iou: float = Field(0.0, ge=0, lt=1, description="A prediction matches a lesion when their IoU exceeds this.")
    min_lesion_mm3: float = Field(0.0, ge=0, description="Ignore components smaller than this (both masks).")
    size_bins_mm3: list[float] = Field(default_factory=lambda: list(DEFAULT_SIZE_BINS_MM3),
                                       description="Edges of the lesion-size bins of the detection report (mm3).")
    allow_missing: bool = Field(False, description="Skip cases without a prediction instead of failing.")

    @field_validator("worst_case", mode="before")
    @classmethod
    def _worst(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "diagonal":
            try:
                return float(value)
            except ValueError:
                raise ValueError("use 'diagonal', a distance in mm, or null") from None
        return value


@dataclass
class EvaluationResult:
    """Per-case table, per-lesion table and the summary of one evaluation."""

    cases: "pd.DataFrame"
    lesions: "pd.DataFrame"
    summary: dict[str, Any]
    missing: list[str] = field(default_factory=list)

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``metrics.csv`` (per case), ``lesions.csv`` and ``summary.json`` atomically."""
        out = Path(out_dir)
        paths = {"cases": out / "metrics.csv", "lesions": out / "lesions.csv", "summary": out / "summary.json"}
        write_text(paths["cases"], self.cases.to_csv(index=False))
        write_text(paths["lesions"], self.lesions.to_csv(index=False))
        write_json(paths["summary"], _json_safe(self.summary))
        return paths


def find_prediction(pred_dir: str | os.PathLike, case_id: str) -> Path | None:
    """The prediction file of a case in ``pred_dir`` (``<case_id>.nii.gz`` first), or None."""
    folder = Path(pred_dir)
    for suffix in PREDICTION_SUFFIXES:
        path = folder / f"{case_id}{suffix}"
        if path.is_file():
            return path
    return None


def read_prediction(path: Path, reference: "Volume", case_id: str,
                    source: dict[str, Any] | None = None) -> "Volume":
    """Read a predicted mask and check it is binary and on the reference's grid. ``source``: the
    case's original scan (a prepared case's ``source`` record), to recognize a prediction made on
    the original scan and scored against the prepared cohort (or the other way round)."""
    from ..volume import Volume, _rounding_fix, as_mask

    volume = Volume.read(path)
    diff = volume.grid_mismatch(reference, names=("prediction", "ground truth"))
    if diff is not None and volume.aligned_to(reference) is None and _rounding_fix(volume, reference) is None:
        raise InputError(f"case {case_id}: {path}: {_off_grid(volume, reference, diff, source)}")
    try:
        return as_mask(volume, reference, what=f"prediction of case {case_id}")
    except InputError as err:
        raise InputError(f"case {case_id}: {err} (ground truth: {reference.name})") from None


def _femur_for_location(case: "Case", truth: "Volume") -> "Volume | None":
    """The case's femur mask on the truth's grid, for the lesions' locations; None (no location,
    with a warning) when the case has none or it cannot be used: the scores never depend on it."""
    from ..volume import Volume, as_mask

    if case.femur_mask is None:
        return None
    try:
        return as_mask(Volume.read(case.femur_mask), truth, what=f"femur mask of case {case.id}")
    except InputError as err:
        log.warning("case %s: lesions scored without a location (cortical/medullary): %s", case.id, err)
        return None


def _off_grid(pred: "Volume", truth: "Volume", diff: str, source: dict[str, Any] | None) -> str:
    """Why a prediction is on another grid than its ground truth, and the fix: most often the
    scans of one cohort were predicted and the masks of another (raw against prepared) given."""
    import numpy as np

    from ..segmentation.volume_inference import empty_grid

    where = f"the prediction is not on the grid of the ground truth {truth.name} ({diff})"
    if source and all(k in source for k in ("shape", "spacing", "origin", "direction")):
        original = empty_grid(source["shape"], source["spacing"], source["origin"], source["direction"])
        if pred.aligned_to(original) is not None:
            return (f"{where}: it is on the grid of the case's original scan {source.get('image')}, the truth on the "
                    "prepared cohort's. Score it against the original cohort's masks (--truth: the manifest "
                    "that was prepared), or predict the prepared cohort (metsynth predict MODEL "
                    "PREPARED/cohort.yaml -o PRED) and score that")
    spacing = np.asarray(pred.spacing)
    if not np.allclose(spacing, truth.spacing, rtol=1e-3) and np.allclose(spacing, spacing[0], rtol=1e-3):
        return (f"{where}: its isotropic {spacing[0]:g} mm spacing may be a prepared cohort's: if the prepared "
                "cases were predicted, score them against the prepared manifest (--truth PREPARED/cohort.yaml), or "
                "predict them with --grid source to get masks on the original scans")
    return (f"{where}; score it against the masks of the cohort whose images were predicted, or resample it onto the "
            "ground truth's grid (nearest-neighbour interpolation)")


def recorded_fold(pred_dir: str | os.PathLike) -> tuple[int | None, str | None]:
    """``(fold, splits file)`` recorded by ``metsynth predict --fold`` in ``pred_dir/predict.json``;
    ``(None, None)`` for a folder predicted without a fold (or not by ``metsynth predict``)."""
    from ..fileio import read_json

    marker = Path(pred_dir) / "predict.json"
    if not marker.is_file():
        return None, None
    try:
        data = read_json(marker)
    except ValueError:
        return None, None
    if not isinstance(data, dict) or data.get("fold") is None:
        return None, None
    return int(data["fold"]), data.get("splits")


def _fold_cases(pred_dir: Path, cohort: "Cohort", fold: int | None,
                splits: str | os.PathLike | None) -> tuple[int | None, str | None, set[str] | None]:
    """The fold to score, its splits file and its held-out case ids (None: every case)."""
    from ..errors import ConfigError
    from .splits import held_out_cases

    recorded, recorded_splits = recorded_fold(pred_dir)
    if fold is not None and recorded is not None and fold != recorded:
        raise InputError(f"{pred_dir}: predictions of fold {recorded} (predict.json), not of fold {fold}; pass "
                         f"--fold {recorded}, or the folder of fold {fold}'s predictions")
    if fold is None and recorded is not None:
        fold = recorded
        log.info("%s: predictions of fold %d (predict.json): scoring that fold's held-out cases", pred_dir, fold)
        if splits is None:
            splits = recorded_splits
            if splits is not None and not Path(splits).is_file():
                raise InputError(f"{pred_dir}: predict.json names the splits file {splits}, which is gone; pass "
                                 "--splits splits.json")
    if fold is None:
        if splits is not None:
            raise ConfigError("--splits goes with --fold (which fold's held-out cases to score)")
        return None, None, None
    if splits is None:
        raise ConfigError(f"--fold {fold} needs the splits file: pass --splits splits.json")
    _, ids = held_out_cases(splits, fold, cohort)
    return fold, str(splits), set(ids)


def evaluate_cohort(
    pred_dir: str | os.PathLike,
    cohort: "Cohort | str | os.PathLike",
    config: EvaluationConfig | None = None,
    progress: bool = False,
    *,
    fold: int | None = None,
    splits: str | os.PathLike | None = None,
) -> EvaluationResult:
    """Score every prediction in ``pred_dir`` against the cohort's lesion annotations (only fold
    ``fold``'s held-out cases with ``fold``, or when ``pred_dir`` records a fold: see above)."""
    import pandas as pd

    from ..cohort import Cohort, load_cohort
    from ..volume import Volume, as_mask

    config = config or EvaluationConfig()
    cohort = cohort if isinstance(cohort, Cohort) else load_cohort(cohort)
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"{pred_dir}: predictions folder not found (expected files <case_id>.nii.gz)")
    fold, splits, fold_ids = _fold_cases(pred_dir, cohort, fold, splits)
    cases = [c for c in _cases_to_score(cohort, config) if fold_ids is None or c.id in fold_ids]
    if not cases:
        raise InputError(f"cohort {cohort.name!r} has no case with role {' or '.join(config.roles)} and a lesion "
                         "annotation" + (f" among fold {fold}'s held-out cases" if fold is not None else "")
                         + "; nothing to evaluate")
    missing = [c.id for c in cases if find_prediction(pred_dir, c.id) is None]
    if missing and not config.allow_missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise InputError(f"no prediction for case(s) {shown} in {pred_dir} (expected <case_id>.nii.gz, e.g. "
                         f"{missing[0]}.nii.gz); run the prediction for them, or pass --allow-missing to skip them")
    for cid in missing:
        log.warning("case %s: no prediction in %s, skipped (--allow-missing)", cid, pred_dir)

    rows, lesion_tables, detections, results = [], [], [], []
    todo = [c for c in cases if c.id not in missing]
    for case in _progress(todo, progress):
        ann = case.reference_lesion(config.annotator)
        truth = as_mask(Volume.read(ann.path), what=f"lesion mask of case {case.id}")
        pred = read_prediction(find_prediction(pred_dir, case.id), truth, case.id, case.source)  # type: ignore[arg-type]
        m = compute_metrics(pred, truth, percentile=config.percentile)
        femur = _femur_for_location(case, truth)  # each lesion's location: cortical or medullary
        det = detect_lesions(pred, truth, connectivity=config.connectivity, min_iou=config.min_iou,
                             min_size_mm3=config.min_lesion_mm3, size_bins_mm3=config.size_bins_mm3, femur=femur)
        results.append(m)
        detections.append(det)
        d = det.summary()
        rows.append({
            "case_id": case.id, "role": case.role, "centre": case.centre, "annotator": ann.annotator,
            **{k: v for k, v in m.as_dict().items()},
            "n_true_lesions": d["n_true"], "n_pred_lesions": d["n_pred"], "tp": d["tp"], "fn": d["fn"],
            "fp": d["fp"], "lesion_sensitivity": d["sensitivity"], "lesion_precision": d["precision"],
            "mean_lesion_dice": d["mean_lesion_dice"],
        })
        lesion_tables.append(det.table(case.id))
    per_case = pd.DataFrame(rows)
    lesions = pd.concat(lesion_tables, ignore_index=True) if lesion_tables else pd.DataFrame()
    summary: dict[str, Any] = {
        "n_cases": len(rows), "missing": missing, "predictions": str(pred_dir), "cohort": cohort.name,
        "settings": config.model_dump(mode="json"),
        **({"fold": fold, "splits": splits} if fold is not None else {}),
        "metrics": aggregate_metrics(per_case, worst_case=config.worst_case) if rows else {},
        "detection": summarize_detection(detections),
    }
    if rows:
        summary["by_role"] = {role: aggregate_metrics(group, worst_case=config.worst_case)
                              for role, group in per_case.groupby("role", sort=True)}
    return EvaluationResult(per_case, lesions, summary, missing)


def _cases_to_score(cohort: "Cohort", config: EvaluationConfig) -> list["Case"]:
    out = []
    for case in cohort.cases:
        if case.role not in config.roles:
            continue
        if case.reference_lesion(config.annotator) is None:
            log.info("case %s: no lesion annotation, not scored", case.id)
            continue
        out.append(case)
    return out


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="evaluating", unit="case")


def _json_safe(obj: Any) -> Any:
    """NaN/inf become null/strings so the JSON is standard."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            return _json_safe(obj.item())
        except (TypeError, ValueError):
            return obj
    return obj


__all__ = ["EvaluationConfig", "EvaluationResult", "evaluate_cohort", "find_prediction", "read_prediction",
           "recorded_fold"]
