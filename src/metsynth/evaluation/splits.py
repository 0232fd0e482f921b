"""Cross-validation splits over the metastatic cases, saved once, and the leakage filter.

* :func:`make_splits`: ``n_folds`` folds (default 5) over the cases with role ``metastatic``,
  from a seed; grouped by default so that all cases sharing a ``patient`` land in one fold (a case
  without ``patient:`` is its own patient), or by ``centre``, or not at all (``group_by: null``). Cases with
  role ``test`` are never in a fold: they are listed as ``test_only``
  (tested by every fold's model, never trained on).
* :func:`load_or_make_splits`: the splits are written to ``splits.json`` the first time and
  reloaded afterwards; a file that disagrees with the requested cases, seed, number of folds or
  grouping is an error (never silently recomputed), so every model of a study sees the same folds.
* :func:`~metsynth.evaluation.leakage.leakage_filter` (:mod:`.leakage`): given the index of synthetic
  volumes, the training set of fold k drops every volume whose donor case (lesion source) or healthy
  case is tested in fold k, is test-only, or is of the same patient as such a case.
  :func:`~metsynth.evaluation.leakage.check_no_leakage` raises if a training set breaks that rule.
* :func:`held_out_cases`: the cases a fold's model is tested on, from the splits checked against
  the cohort.

Assignment: groups are shuffled with ``numpy.random.default_rng(seed)``, then taken from the
largest to the smallest (stable) and each put in the fold with the fewest cases so far (lowest
fold number on ties). Without grouping every case is its own group, which gives folds whose
sizes differ by at most one.

Modules: :mod:`.folds` (:class:`Splits`, :class:`SplitConfig`), :mod:`.leakage` (the filter); this
module makes, saves and checks the folds and re-exports the others.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, InputError
from ..fileio import read_json
from .folds import GroupBy, SplitConfig, Splits
from .leakage import LeakageReport, check_no_leakage, leakage_filter, read_index, training_index

if TYPE_CHECKING:
    from ..cohort import Cohort

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SettingNames:
    """How an error message names the fold settings: the study's config keys (the default), or a
    command's flags (:data:`CLI_NAMES`), so that the fix it asks for is one the user can type."""

    n_folds: str = "n_folds"
    group_by: str = "group_by"
    no_groups: str = "group_by: null"  # the setting that turns grouping off

    def value(self, name: str, value: object) -> str:
        """``n_folds=5`` for a config key, ``--folds 5`` for a flag."""
        return f"{name} {value}" if name.startswith("-") else f"{name}={value}"


CONFIG_NAMES = SettingNames()
CLI_NAMES = SettingNames("--folds", "--group-by", "--group-by none")


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


def check_fold_count(cohort: "Cohort", n_folds: int, group_by: GroupBy | None = "patient",
                     names: SettingNames = CONFIG_NAMES) -> dict[str, list[str]]:
    """The cohort's metastatic cases by group (``group_by``), or a ConfigError when they cannot make
    ``n_folds`` folds; what :func:`make_splits` checks first, and a study before it writes anything."""
    if n_folds < 2:
        raise ConfigError(f"{names.n_folds} must be at least 2, got {n_folds}")
    groups = _case_groups(cohort, group_by)
    members: dict[str, list[str]] = {}
    for cid, g in groups.items():
        members.setdefault(g, []).append(cid)
    if len(members) < n_folds:
        what = f"{group_by} groups" if group_by else "metastatic cases"
        fix = f"lower {names.n_folds} to at most {len(members)}" if len(members) >= 2 else "add metastatic cases"
        if group_by and len(groups) > len(members):  # ungrouped, more folds can be made
            fix += (f", or use {names.no_groups} (up to {len(groups)} folds; the cases of one {group_by} "
                    "may then be split over folds)")
        raise ConfigError(f"cohort {cohort.name!r} has {len(members)} {what} for "
                          f"{names.value(names.n_folds, n_folds)}; {fix}")
    return members


def make_splits(
    cohort: "Cohort | str | os.PathLike", n_folds: int = 5, seed: int = 0, group_by: GroupBy | None = "patient",
    names: SettingNames = CONFIG_NAMES,
) -> Splits:
    """Assign the cohort's metastatic cases to ``n_folds`` folds (deterministic in ``seed``).
    ``names``: how errors name the settings (config keys by default; :data:`CLI_NAMES` for flags)."""
    cohort = _as_cohort(cohort)
    members = check_fold_count(cohort, n_folds, group_by, names)
    groups = _case_groups(cohort, group_by)
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
    names: SettingNames = CONFIG_NAMES,
) -> Splits:
    """Reload ``path`` if it exists and matches the request; else make the splits and save them.

    A file made for other cases, another seed, fold count or grouping raises a ConfigError (the
    folds are never recomputed silently: models of one study must share them). ``names``: how
    errors name the settings (config keys by default; :data:`CLI_NAMES` for the command's flags).
    """
    path = Path(path)
    cohort = _as_cohort(cohort)
    if not path.exists():
        splits = make_splits(cohort, n_folds, seed, group_by, names=names)
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


def held_out_cases(path: str | os.PathLike, fold: int,
                   cohort: "Cohort | str | os.PathLike") -> tuple[Splits, list[str]]:
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


__all__ = ["CLI_NAMES", "CONFIG_NAMES", "LeakageReport", "SettingNames", "SplitConfig", "Splits", "check_no_leakage",
           "check_splits_match", "held_out_cases", "leakage_filter", "load_fold_splits", "load_or_make_splits",
           "load_splits", "make_splits", "read_index", "training_index"]
