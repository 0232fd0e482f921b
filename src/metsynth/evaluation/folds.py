"""The cross-validation folds as data: how they are made (:class:`SplitConfig`) and what they hold.

:class:`Splits` holds the test cases of each fold, the test-only cases, the seed and grouping, and
the patient of every case that shares one; it is saved as ``splits.json`` and read back
(:meth:`Splits.from_dict`). Making and checking the folds is :mod:`metsynth.evaluation.splits`; the
leakage filter that reads them is :mod:`metsynth.evaluation.leakage`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..config import Settings
from ..errors import InputError
from ..fileio import write_json

SPLITS_VERSION = 1
GroupBy = Literal["patient", "centre"]


class SplitConfig(Settings):
    """How the cross-validation folds are made."""

    n_folds: int = Field(5, ge=2, description="Number of folds over the metastatic cases (paper: 5).")
    seed: int = Field(0, description="Seed of the fold assignment (saved in splits.json).")
    group_by: GroupBy | None = Field(
        "patient", description="Keep cases of one 'patient' (the manifest's patient:, else each case is its own "
        "patient) or one 'centre' in one fold; null: every case on its own, even two femurs of one patient.")


@dataclass(frozen=True)
class Splits:
    """Folds of test cases; the training cases of fold k are the other folds' cases."""

    folds: tuple[tuple[str, ...], ...]
    test_only: tuple[str, ...] = ()
    seed: int = 0
    group_by: GroupBy | None = None
    groups: Mapping[str, str] = field(default_factory=dict)
    # patient of every case of the cohort, all roles (group_by 'patient' only): a healthy femur of a
    # patient whose other femur is tested in fold k must not feed fold k's synthetic training data
    patients: Mapping[str, str] = field(default_factory=dict)

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    @property
    def cases(self) -> tuple[str, ...]:
        """All cases in folds, sorted."""
        return tuple(sorted(c for fold in self.folds for c in fold))

    def _check_fold(self, k: int) -> None:
        if not 0 <= k < self.n_folds:
            raise InputError(f"fold {k} does not exist; folds are 0..{self.n_folds - 1}")

    def test(self, k: int) -> list[str]:
        """Cases tested in fold k (not counting the test-only cases, tested in every fold)."""
        self._check_fold(k)
        return list(self.folds[k])

    def train(self, k: int) -> list[str]:
        """Real cases available for training in fold k (all other folds' cases)."""
        self._check_fold(k)
        return sorted(c for i, fold in enumerate(self.folds) if i != k for c in fold)

    def fold_of(self, case_id: str) -> int | None:
        for i, fold in enumerate(self.folds):
            if case_id in fold:
                return i
        return None

    def excluded_from_training(self, k: int) -> set[str]:
        """Cases whose data (lesions or anatomy) must not reach fold k's training set: its test
        cases, the test-only cases, and every other case of their patients (``patients``)."""
        banned = set(self.test(k)) | set(self.test_only)
        patients = {self.patients[c] for c in banned if c in self.patients}
        return banned | {c for c, p in self.patients.items() if p in patients}

    def why_excluded(self, case: str, k: int) -> str:
        """Why ``case`` may not feed fold k's training (empty: it may)."""
        if case in self.test_only:
            return "test-only"
        if case in self.folds[k]:
            return f"in test fold {k}"
        if case in self.excluded_from_training(k):
            return f"of patient {self.patients[case]}, tested in fold {k}"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SPLITS_VERSION,
            "seed": self.seed,
            "n_folds": self.n_folds,
            "group_by": self.group_by,
            "cases": list(self.cases),
            "test_only": list(self.test_only),
            "folds": [{"fold": i, "test": list(f), "train": self.train(i)} for i, f in enumerate(self.folds)],
            "groups": dict(self.groups) if self.group_by else {},
            **({"patients": dict(self.patients)} if self.patients else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "splits") -> "Splits":
        try:
            folds = tuple(tuple(str(c) for c in f["test"]) for f in data["folds"])
            return cls(folds=folds, test_only=tuple(str(c) for c in data.get("test_only", [])),
                       seed=int(data["seed"]), group_by=data.get("group_by"), groups=dict(data.get("groups") or {}),
                       patients={str(k): str(v) for k, v in (data.get("patients") or {}).items()})
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{source}: not a valid splits file ({type(err).__name__}: {err}); delete it to "
                             "make new splits") from None

    def save(self, path: str | os.PathLike) -> Path:
        return write_json(path, self.to_dict())


__all__ = ["SPLITS_VERSION", "GroupBy", "SplitConfig", "Splits"]
