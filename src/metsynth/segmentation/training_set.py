"""Training sets: the volumes of one training and its validation cases (``training_set.json``).

:func:`build_training_set` lists the volumes of one training: ``real`` (the prepared
cohort's metastatic cases outside test fold k), ``synthetic`` and ``harmonized`` (the
kept volumes of those sets' ``index.csv``, filtered by the leakage filter of
:mod:`metsynth.evaluation.splits` so that no volume whose donor lesion comes from a case of
test fold k remains), any mix of them, and ``online`` (fresh synthetic volumes drawn on the
fly), alone or mixed with the others: an epoch then draws from every listed source, the share
of online patches set by ``online_share`` (default: proportional, as an offline mix would do;
see :class:`~metsynth.segmentation.sampler.PatchSampler`). ``limit`` keeps N of the
synthetic/harmonized volumes (the size study: 100 / 500 / 2000 / all) as the first N of one
seeded permutation, so smaller sets are nested in larger ones. A few real training-fold cases
(``val_cases``) are held out for validation, chosen by the seed alone, so every model of a fold
is validated on the same cases.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from ..fileio import files_stamp, read_json, write_json
from ..seeds import VALIDATION_CASES
from ..synthesis.sets import fold_volumes, read_set
from .presets import SOURCES

log = logging.getLogger(__name__)

SYNTHETIC_SOURCES = ("synthetic", "harmonized")


@dataclass(frozen=True)
class TrainingVolume:
    """One volume of a training or validation set."""

    key: str                   # "<source>/<id>", unique in a training set
    source: str                # real | synthetic | harmonized
    image: str                 # absolute paths (str: JSON- and pickle-friendly)
    label: str
    case: str                  # real case id, or the synthetic volume id
    donor_case: str | None = None
    healthy_case: str | None = None
    femur: str | None = None


@dataclass
class TrainingSet:
    """The volumes of one training (and its validation cases), saved as ``training_set.json``."""

    sources: tuple[str, ...]
    train: list[TrainingVolume]
    val: list[TrainingVolume]
    fold: int | None = None
    test_cases: list[str] = field(default_factory=list)
    dropped_leaking: int = 0
    limit: int | None = None
    spacing: tuple[float, float, float] | None = None
    hu_window: tuple[float, float] | None = None
    online: dict[str, Any] | None = None  # settings of the on-the-fly synthesis

    @property
    def has_synthetic(self) -> bool:
        return any(s != "real" for s in self.sources)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.train:
            out[item.source] = out.get(item.source, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = list(self.sources)
        data["counts"] = self.counts()
        return data

    def save(self, path: str | os.PathLike) -> Path:
        return write_json(path, self.to_dict())

    def files_stamp(self) -> str | None:
        """:func:`metsynth.fileio.files_stamp` of the set's images and labels (changes when a stage
        writes one of them again; None when one is missing)."""
        return files_stamp(p for item in self.train + self.val for p in (item.image, item.label))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainingSet":
        data = read_json(path)
        data.pop("counts", None)
        data["sources"] = tuple(data["sources"])
        data["train"] = [TrainingVolume(**v) for v in data["train"]]
        data["val"] = [TrainingVolume(**v) for v in data["val"]]
        for key in ("spacing", "hu_window"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def parse_sources(sources: str | Sequence[str]) -> tuple[str, ...]:
    """``"real,synthetic"`` or a list -> a validated tuple (order kept, duplicates dropped)."""
    if isinstance(sources, str):
        sources = [s.strip() for s in sources.replace("+", ",").split(",") if s.strip()]
    out: list[str] = []
    for s in sources:
        if s not in SOURCES:
            import difflib

            hint = difflib.get_close_matches(s, SOURCES, n=1)
            extra = f"; did you mean '{hint[0]}'?" if hint else ""
            raise ConfigError(f"unknown training source '{s}' (choose from {', '.join(SOURCES)}){extra}")
        if s not in out:
            out.append(s)
    if not out:
        raise ConfigError("no training source given; use e.g. --sources real or --sources synthetic,real")
    return tuple(out)


def build_training_set(
    cohort,
    sources: str | Sequence[str] = ("real",),
    *,
    fold: int | None = None,
    splits: str | os.PathLike | None = None,
    synthetic: str | os.PathLike | None = None,
    harmonized: str | os.PathLike | None = None,
    limit: int | None = None,
    val_cases: int = 3,
    seed: int = 0,
    bank: str | os.PathLike | None = None,
    synthesis: dict[str, Any] | str | os.PathLike | None = None,
) -> TrainingSet:
    """List the volumes of a training on ``sources`` for CV fold ``fold``.

    ``cohort`` is a prepared :class:`~metsynth.cohort.Cohort` (or its manifest path): its real
    cases give the ``real`` source and the validation cases. With ``fold`` set, ``splits``
    (``splits.json``) is required: cases of test fold ``fold`` are excluded from training and
    validation, and the synthetic/harmonized indexes go through the leakage filter. Without a
    fold, every metastatic case is available (no test set; a warning says so if synthetic data
    are used, since nothing can leak without a test set).

    ``online`` needs ``bank`` (the lesion bank folder) and optionally ``synthesis`` (synthesis
    settings: a mapping or YAML); its donors are restricted to the real training cases of the
    fold (never test or validation cases) and its recipients are the cohort's healthy cases.
    """
    from ..cohort import Cohort, load_cohort

    sources = parse_sources(sources)
    manifest = None
    if not isinstance(cohort, Cohort):
        manifest = Path(cohort)
        manifest = manifest / "cohort.yaml" if manifest.is_dir() else manifest
        cohort = load_cohort(manifest)
    elif cohort.root is not None:
        manifest = Path(cohort.root) / "cohort.yaml"
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of synthetic volumes, got {limit}")
    if limit is not None and not any(s in SYNTHETIC_SOURCES for s in sources):
        raise ConfigError(f"limit={limit} applies to synthetic/harmonized volumes, but sources are "
                          f"{', '.join(sources)}; add 'synthetic' or 'harmonized' or drop --limit")
    if fold is not None and splits is None:
        raise ConfigError(f"fold {fold} needs the CV splits file (splits.json, `metsynth splits`); pass --splits")

    test_cases: list[str] = []
    excluded: set[str] = set()
    split_obj = None
    if fold is not None:
        from ..evaluation.splits import load_fold_splits

        split_obj = load_fold_splits(splits, fold, cohort)
        test_cases = sorted(split_obj.test(fold))
        excluded = split_obj.excluded_from_training(fold)

    candidates = [c for c in cohort.by_role("metastatic") if c.id not in excluded]
    candidates.sort(key=lambda c: c.id)
    if val_cases >= len(candidates) and val_cases > 0:
        raise ConfigError(
            f"val_cases={val_cases} but only {len(candidates)} real metastatic case(s) are outside the test "
            "fold; lower val_cases (a few cases are enough for early stopping)")
    order = np.random.default_rng(np.random.SeedSequence([seed, VALIDATION_CASES])).permutation(len(candidates))
    val_ids = {candidates[i].id for i in order[:val_cases]}
    real_items = [_real_volume(c) for c in candidates]
    val = [v for v in real_items if v.case in val_ids]
    train: list[TrainingVolume] = []
    if "real" in sources:
        train += [v for v in real_items if v.case not in val_ids]

    sets = []
    for source, folder in (("synthetic", synthetic), ("harmonized", harmonized)):
        if source not in sources:
            continue
        if folder is None:
            raise ConfigError(f"source '{source}' needs its folder: pass --{source} DIR (with index.csv)")
        sets.append(read_set(folder, source))
    chosen = fold_volumes(sets, split_obj, fold, known_cases=[c.id for c in cohort.cases], limit=limit, seed=seed)
    dropped = chosen.dropped_leaking
    if chosen.excluded is not None and len(chosen.excluded):
        first = chosen.excluded.iloc[0]
        log.info("fold %d: %d synthetic/harmonized volume(s) dropped by the leakage filter (e.g. %s: %s)", fold,
                 len(chosen.excluded), first["key"], first["reason"])
    if sets and fold is None:
        log.warning("training on synthetic data without a CV fold: no leakage filter applies (no test set)")
    synthetic_items = [
        TrainingVolume(key=row["key"], source=row["source"], image=row["image"], label=row["label"],
                       case=str(row["volume_id"]), donor_case=str(row["donor_case"]),
                       healthy_case=str(row["healthy_case"]) or None)
        for _, row in chosen.volumes.iterrows()
    ]
    train += synthetic_items

    online = None
    if "online" in sources:
        if bank is None:
            raise ConfigError("source 'online' draws lesions from a lesion bank: pass --bank DIR "
                              "(`metsynth lesions extract`)")
        if manifest is None:
            raise ConfigError("source 'online' needs the cohort's manifest path (pass the path, not a Cohort "
                              "object without root)")
        if isinstance(synthesis, (str, os.PathLike)):
            from ..config import read_yaml

            synthesis = read_yaml(synthesis)
            synthesis = synthesis.get("synthesis", synthesis)
        donors = sorted(v.case for v in real_items if v.case not in val_ids)
        if not donors:
            raise ConfigError(f"source 'online' has no donor case: fold {fold} leaves no real training case "
                              "outside the test and validation cases")
        online = {"manifest": str(manifest), "bank": str(Path(bank).resolve()), "synthesis": synthesis or {},
                  "donor_cases": donors,
                  # never a femur of a patient the fold tests (with patient grouping, the leakage rule)
                  "healthy_cases": sorted(c.id for c in cohort.by_role("healthy") if c.id not in excluded)}
    if not train and "online" not in sources:
        raise ConfigError(f"the training set for sources {', '.join(sources)} (fold {fold}) is empty; "
                          "check the cohort roles and the synthetic index")
    prepared = cohort.prepared
    if prepared is None:
        log.warning("cohort %s is not a prepared cohort (no 'prepared:' block); train on the output "
                    "of `metsynth prepare` so intensities and spacing match at prediction", cohort.name)
    return TrainingSet(
        sources=sources, train=train, val=val, fold=fold, test_cases=test_cases, dropped_leaking=dropped,
        limit=limit, spacing=tuple(prepared.spacing) if prepared else None,
        hu_window=tuple(prepared.hu_window) if prepared else None,
        online=online,
    )


def _real_volume(case) -> TrainingVolume:
    ann = case.reference_lesion()
    if ann is None:
        raise InputError(f"case {case.id}: metastatic case without a lesion mask; add it to the manifest")
    return TrainingVolume(
        key=f"real/{case.id}", source="real", image=str(case.image), label=str(ann.path), case=case.id,
        femur=str(case.femur_mask) if case.femur_mask else None,
    )
