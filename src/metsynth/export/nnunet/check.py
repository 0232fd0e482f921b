"""Checking an exported dataset's folds against the CV splits: no fold trains on what it must not see."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import InputError
from ...fileio import read_json
from .config import CASES_TABLE, nnunet_id

if TYPE_CHECKING:
    from ...evaluation.splits import Splits


def check_export_leakage(dataset_dir: str | os.PathLike, splits: "Splits | str | os.PathLike") -> None:
    """Re-check an exported dataset's ``splits_final.json`` against the CV splits (InputError if it leaks).

    Fold k must validate on exactly test fold k's real cases, train on no real case of test fold
    k or test-only, and hold no synthetic/harmonized volume that the leakage filter excludes
    for fold k (donor or healthy case in test fold k or test-only).
    """
    import pandas as pd

    from ...evaluation.splits import Splits, check_no_leakage, load_splits

    dataset_dir = Path(dataset_dir)
    splits = splits if isinstance(splits, Splits) else load_splits(splits)
    final = read_json(dataset_dir / "splits_final.json")
    table = pd.read_csv(dataset_dir / CASES_TABLE, dtype=str, keep_default_na=False)
    rows = {r["nnunet_id"]: r for r in table.to_dict("records")}
    if len(final) != splits.n_folds:
        raise InputError(f"{dataset_dir}: splits_final.json has {len(final)} folds, the CV splits {splits.n_folds}")
    for k, fold in enumerate(final):
        want_val = sorted(nnunet_id("real", c) for c in splits.test(k))
        if sorted(fold["val"]) != want_val:
            raise InputError(f"{dataset_dir}: fold {k} validates on {sorted(fold['val'])}, not test fold {k} "
                             f"({want_val})")
        unknown = [i for i in fold["train"] if i not in rows]
        if unknown:
            raise InputError(f"{dataset_dir}: fold {k} trains on {unknown[0]!r}, which is not in {CASES_TABLE}")
        banned = splits.excluded_from_training(k)
        real = [rows[i]["case"] for i in fold["train"] if rows[i]["source"] == "real"]
        leaking = sorted(set(real) & banned)
        if leaking:
            raise InputError(f"{dataset_dir}: fold {k} trains on real test case(s) {', '.join(leaking)}")
        synthetic = pd.DataFrame(
            [{"volume_id": rows[i]["case"], "donor_case": rows[i]["donor_case"] or None,
              "healthy_case": rows[i]["healthy_case"] or None}
             for i in fold["train"] if rows[i]["source"] != "real"],
            columns=["volume_id", "donor_case", "healthy_case"])
        check_no_leakage(synthetic, splits, k)
