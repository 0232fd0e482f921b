"""The leakage filter: which synthetic volumes fold k's training set may hold.

Given the index of synthetic volumes (columns ``volume_id``, ``donor_case``, ``healthy_case``),
the training set of fold k drops every volume whose donor case (lesion source) is in test fold k or
is a test-only case, and every volume built on a healthy case that is itself a test case of fold k
or test-only, or of the same patient as one (with ``group_by: patient``, ``Splits.patients``: a
healthy femur whose patient's other femur is tested in fold k, or is test-only, is that patient's
anatomy). :func:`leakage_filter` splits the index and gives the reasons, :func:`training_index`
keeps what is allowed, :func:`check_no_leakage` raises if a training set breaks that rule.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .folds import Splits

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class LeakageReport:
    """The training index of one fold and what was removed from it, with reasons."""

    fold: int
    kept: "pd.DataFrame"
    excluded: "pd.DataFrame"  # same columns plus "reason"


def _donors(value: Any) -> list[str]:
    """``donor_case`` may hold one id, a list of ids, or ids joined by ';' or ','."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [str(v) for v in value]
    text = str(value)
    for sep in (";", ","):
        if sep in text:
            return [v.strip() for v in text.split(sep) if v.strip()]
    return [text.strip()] if text.strip() else []


def read_index(index: "pd.DataFrame | Sequence[Mapping[str, Any]] | str | os.PathLike") -> "pd.DataFrame":
    """The synthetic-volume index as a DataFrame (from a DataFrame, records, or a CSV/JSON file)."""
    import pandas as pd

    if isinstance(index, pd.DataFrame):
        df = index.copy()
    elif isinstance(index, (str, os.PathLike)):
        path = Path(index)
        if not path.is_file():
            raise InputError(f"{path}: synthetic index not found")
        if path.suffix == ".csv":
            df = pd.read_csv(path, dtype={"volume_id": str, "donor_case": str, "healthy_case": str})
        elif path.suffix in (".json", ".jsonl"):
            df = pd.read_json(path, lines=path.suffix == ".jsonl", dtype=False)
        elif path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            raise InputError(f"{path}: index must be .csv, .json, .jsonl or .parquet")
    else:
        df = pd.DataFrame(list(index))
    missing = [c for c in ("volume_id", "donor_case", "healthy_case") if c not in df.columns]
    if missing:
        raise InputError(f"synthetic index lacks column(s) {', '.join(missing)} "
                         f"(has {', '.join(map(str, df.columns))})")
    return df


def leakage_filter(
    index: "pd.DataFrame | Sequence[Mapping[str, Any]] | str | os.PathLike",
    splits: Splits,
    fold: int,
    known_cases: Sequence[str] | None = None,
) -> LeakageReport:
    """Split the synthetic index into fold ``fold``'s training volumes and the excluded ones.

    A volume is excluded when one of its donor cases is in test fold ``fold`` or test-only, or
    when its healthy case is. Donor cases must be known (in the splits, or in ``known_cases``,
    e.g. all cohort ids): an unknown donor is an error, since it could hide a leak.
    """
    df = read_index(index)
    banned = splits.excluded_from_training(fold)
    known = set(splits.cases) | set(splits.test_only) | set(known_cases or ())
    reasons = []
    for row in df.itertuples(index=False):
        donors = _donors(getattr(row, "donor_case"))
        unknown = [d for d in donors if d not in known]
        if unknown:
            raise InputError(
                f"synthetic volume {getattr(row, 'volume_id')}: donor case {unknown[0]!r} is not in the splits "
                f"(folds hold {len(splits.cases)} metastatic cases); the index and splits.json come from "
                "different cohorts: rebuild one of them"
            )
        why = [f"donor {d} is {splits.why_excluded(d, fold)}" for d in donors if d in banned]
        healthy = getattr(row, "healthy_case")
        healthy = None if healthy is None or (isinstance(healthy, float) and np.isnan(healthy)) else str(healthy)
        if healthy is not None and healthy in banned:
            why.append(f"healthy case {healthy} is {splits.why_excluded(healthy, fold)}")
        reasons.append("; ".join(why))
    mask = np.array([bool(r) for r in reasons], dtype=bool)
    kept = df.loc[~mask].reset_index(drop=True)
    excluded = df.loc[mask].copy()
    excluded["reason"] = [r for r in reasons if r]
    return LeakageReport(fold, kept, excluded.reset_index(drop=True))


def training_index(
    index: "pd.DataFrame | Sequence[Mapping[str, Any]] | str | os.PathLike", splits: Splits, fold: int,
    known_cases: Sequence[str] | None = None,
) -> "pd.DataFrame":
    """The synthetic volumes allowed in fold ``fold``'s training set (see :func:`leakage_filter`)."""
    report = leakage_filter(index, splits, fold, known_cases)
    if len(report.excluded):
        log.info("fold %d: %d synthetic volume(s) excluded to prevent leakage", fold, len(report.excluded))
    return report.kept


def check_no_leakage(
    index: "pd.DataFrame | Sequence[Mapping[str, Any]] | str | os.PathLike", splits: Splits, fold: int,
    known_cases: Sequence[str] | None = None,
) -> None:
    """Raise InputError if a training index for fold ``fold`` contains a leaking volume."""
    report = leakage_filter(index, splits, fold, known_cases)
    if len(report.excluded):
        first = report.excluded.iloc[0]
        raise InputError(
            f"fold {fold}: the training set holds {len(report.excluded)} synthetic volume(s) that leak test data "
            f"(first: {first['volume_id']}: {first['reason']}); build it with training_index()"
        )


__all__ = ["LeakageReport", "check_no_leakage", "leakage_filter", "read_index", "training_index"]
