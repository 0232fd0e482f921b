"""Cross-validation splits over the metastatic cases, saved once, and the leakage filter.

* :func:`make_splits`: ``n_folds`` folds (default 5) over the cases with role ``metastatic``,
  from a seed; grouped by default so that all cases sharing a ``patient`` land in one fold (a case
  without ``patient:`` is its own patient), or by ``centre``, or not at all (``group_by: null``). Cases with role ``test`` are never in a fold: they are listed as ``test_only``
  (tested by every fold's model, never trained on).
* :func:`load_or_make_splits`: the splits are written to ``splits.json`` the first time and
  reloaded afterwards; a file that disagrees with the requested cases, seed, number of folds or
  grouping is an error (never silently recomputed), so every model of a study sees the same folds.
* :func:`leakage_filter`: given the index of synthetic volumes (columns ``volume_id``,
  ``donor_case``, ``healthy_case``), the training set of fold k drops every volume whose donor
  case (lesion source) is in test fold k or is a test-only case, and every volume built on a
  healthy case that is itself a test case of fold k or test-only, or of the same patient as one
  (with ``group_by: patient``, ``Splits.patients``: a healthy femur whose patient's other femur is
  tested in fold k, or is test-only, is that patient's anatomy). :func:`check_no_leakage`
  raises if a training set breaks that rule.

Assignment: groups are shuffled with ``numpy.random.default_rng(seed)``, then taken from the
largest to the smallest (stable) and each put in the fold with the fewest cases so far (lowest
fold number on ties). Without grouping every case is its own group, which gives folds whose
sizes differ by at most one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from ..config import Settings
from ..errors import ConfigError, InputError
from ..fileio import read_json, write_json

if TYPE_CHECKING:
    import pandas as pd

    from ..cohort import Cohort

log = logging.getLogger(__name__)

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


def _as_cohort(cohort: "Cohort | str | os.PathLike") -> "Cohort":
    from ..cohort import Cohort, load_cohort

    return cohort if isinstance(cohort, Cohort) else load_cohort(cohort)


def _case_groups(cohort: "Cohort", group_by: GroupBy | None) -> dict[str, str]:
    out = {}
    for case in cohort.by_role("metastatic"):
        if group_by is None:
            out[case.id] = case.id
        elif group_by == "patient":
            out[case.id] = case.group
        elif group_by == "centre":
            out[case.id] = case.centre
        else:
            raise ConfigError(f"group_by {group_by!r}: use 'patient', 'centre' or null")
    return out


def make_splits(
    cohort: "Cohort | str | os.PathLike", n_folds: int = 5, seed: int = 0, group_by: GroupBy | None = "patient"
) -> Splits:
    """Assign the cohort's metastatic cases to ``n_folds`` folds (deterministic in ``seed``)."""
    cohort = _as_cohort(cohort)
    if n_folds < 2:
        raise ConfigError(f"n_folds must be at least 2, got {n_folds}")
    groups = _case_groups(cohort, group_by)
    members: dict[str, list[str]] = {}
    for cid, g in groups.items():
        members.setdefault(g, []).append(cid)
    if len(members) < n_folds:
        what = f"{group_by} groups" if group_by else "metastatic cases"
        raise ConfigError(f"cohort {cohort.name!r} has {len(members)} {what} for n_folds={n_folds}; "
                          f"lower n_folds to at most {len(members)}" + (" or drop group_by" if group_by else ""))
    rng = np.random.default_rng(seed)
    names = sorted(members)
    order = [names[i] for i in rng.permutation(len(names))]
    order.sort(key=lambda g: -len(members[g]))  # stable: shuffled order kept among equal sizes
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    for g in order:
        k = min(range(n_folds), key=lambda i: (len(folds[i]), i))
        folds[k].extend(members[g])
    test_only = tuple(sorted(c.id for c in cohort.by_role("test")))
    # only patients that hold several cases matter; a case without patient: is its own patient
    shared = {c.id: c.group for c in cohort.cases if c.patient} if group_by == "patient" else {}
    counts: dict[str, int] = {}
    for p in shared.values():
        counts[p] = counts.get(p, 0) + 1
    patients = {c: p for c, p in shared.items() if counts[p] > 1}
    return Splits(tuple(tuple(sorted(f)) for f in folds), test_only, int(seed), group_by,
                  groups if group_by else {}, patients)


def load_splits(path: str | os.PathLike) -> Splits:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: splits file not found; create it with make_splits / the experiment")
    return Splits.from_dict(read_json(path), source=str(path))


def load_or_make_splits(
    path: str | os.PathLike,
    cohort: "Cohort | str | os.PathLike",
    n_folds: int = 5,
    seed: int = 0,
    group_by: GroupBy | None = "patient",
) -> Splits:
    """Reload ``path`` if it exists and matches the request; else make the splits and save them.

    A file made for other cases, another seed, fold count or grouping raises a ConfigError (the
    folds are never recomputed silently: models of one study must share them).
    """
    path = Path(path)
    cohort = _as_cohort(cohort)
    if not path.exists():
        splits = make_splits(cohort, n_folds, seed, group_by)
        splits.save(path)
        log.info("wrote %s (%d folds, seed %d)", path, n_folds, seed)
        return splits
    saved = load_splits(path)
    problems = []
    if saved.seed != seed:
        problems.append(f"seed {saved.seed} (requested {seed})")
    if saved.n_folds != n_folds:
        problems.append(f"{saved.n_folds} folds (requested {n_folds})")
    if saved.group_by != group_by:
        problems.append(f"group_by {saved.group_by} (requested {group_by})")
    wanted = sorted(c.id for c in cohort.by_role("metastatic"))
    if list(saved.cases) != wanted:
        extra, lacking = sorted(set(saved.cases) - set(wanted)), sorted(set(wanted) - set(saved.cases))
        problems.append("other metastatic cases (" + "; ".join(
            p for p in (f"not in the cohort: {', '.join(extra[:5])}" if extra else "",
                        f"missing from the file: {', '.join(lacking[:5])}" if lacking else "") if p) + ")")
    test_only = sorted(c.id for c in cohort.by_role("test"))
    if sorted(saved.test_only) != test_only:
        problems.append(f"test-only cases {list(saved.test_only)} (cohort has {test_only})")
    if not problems and group_by:
        groups = _case_groups(cohort, group_by)
        for g in set(groups.values()):
            folds = {saved.fold_of(c) for c, gg in groups.items() if gg == g}
            if len(folds) > 1:
                problems.append(f"{group_by} {g!r} is split over folds {sorted(folds)}")
    if problems:
        raise ConfigError(
            f"{path} was made for another setting: {'; '.join(problems)}. The folds are fixed once made; "
            "use the same settings, or delete the file to make new folds (earlier results then no longer match)"
        )
    return saved


# ---------------------------------------------------------------------------------- leakage
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
        raise InputError(f"synthetic index lacks column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))})")
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


# ---------------------------------------------------------------------------------- a fold's test set
def check_splits_match(splits: Splits, cohort: "Cohort", path: str | os.PathLike) -> None:
    """Refuse splits made for another cohort: the folds must hold exactly the cohort's metastatic
    cases and ``test_only`` its test cases (a metastatic case in no fold would train everywhere;
    a fold case the cohort lacks means the folds were drawn over other cases)."""
    problems = []
    for what, have, want in (("metastatic cases", set(splits.cases), {c.id for c in cohort.by_role("metastatic")}),
                             ("test-only cases", set(splits.test_only), {c.id for c in cohort.by_role("test")})):
        extra, lacking = sorted(have - want), sorted(want - have)
        if extra:
            problems.append(f"{what} not in the cohort: {', '.join(extra[:5])}")
        if lacking:
            problems.append(f"{what} missing from the splits: {', '.join(lacking[:5])}")
    if problems:
        raise InputError(f"{path}: made for another cohort than {cohort.name!r} ({'; '.join(problems)}); remake the "
                         "splits for this cohort (delete splits.json and rerun `metsynth splits` or the splits stage)")


def load_fold_splits(path: str | os.PathLike, fold: int, cohort: "Cohort") -> Splits:
    """The saved CV splits for training or testing fold ``fold``, checked against the cohort
    (:func:`check_splits_match`)."""
    split_obj = load_splits(path)
    if not 0 <= fold < split_obj.n_folds:
        raise ConfigError(f"fold {fold} does not exist in {path}; folds are 0..{split_obj.n_folds - 1}")
    check_splits_match(split_obj, cohort, path)
    return split_obj


def held_out_cases(path: str | os.PathLike, fold: int, cohort: "Cohort | str | os.PathLike") -> tuple[Splits, list[str]]:
    """The cases fold ``fold``'s model is tested on, as the study's predict stage chooses them: the
    cases of test fold ``fold`` plus the test-only cases (role ``test``: in no fold, never trained
    on, tested by every fold's model); sorted.

    ``path`` (``splits.json``) is checked against ``cohort`` as ``metsynth train --fold`` checks it
    (a fold outside the file, or a cohort whose metastatic cases are in no fold, i.e. splits made
    for another cohort, are refused in one line). Used by ``metsynth predict --fold`` and
    ``metsynth evaluate --fold``.
    """
    split_obj = load_fold_splits(path, fold, _as_cohort(cohort))
    return split_obj, sorted(set(split_obj.test(fold)) | set(split_obj.test_only))


__all__ = ["LeakageReport", "SplitConfig", "Splits", "check_no_leakage", "check_splits_match", "held_out_cases",
           "leakage_filter", "load_fold_splits", "load_or_make_splits", "load_splits", "make_splits", "read_index", "training_index"]
