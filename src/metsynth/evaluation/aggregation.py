"""Per-case metrics over many cases: the worst-case rule for undefined distances, tables, summaries.

:func:`fill_worst_case` replaces the distances left undefined when exactly one mask is empty (by
the field-of-view diagonal, a fixed distance, or not at all), :func:`metrics_table` lays
:class:`~metsynth.evaluation.case_metrics.CaseMetrics` out one row per case and
:func:`aggregate_metrics` gives mean, std, median, min, max and n per metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .case_metrics import DISTANCE_METRICS, METRICS, CaseMetrics

if TYPE_CHECKING:
    import pandas as pd


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


__all__ = ["aggregate_metrics", "fill_worst_case", "metrics_table"]
