"""A synthetic or harmonized set on disk, read one way by everything that reads one.

A set is a folder with ``index.csv`` (one row per attempt, :data:`INDEX_COLUMNS` written by
``metsynth synthesize``; ``metsynth harmonize`` keeps those columns and adds its own) and the
volumes it names under ``images/`` and ``labels/``. Training, the nnU-Net export, the
harmonization, the realism measure and the study read it here:

* :func:`parse_kept`: the one reader of the ``kept`` column. ``true/false``, ``1/0``,
  ``yes/no``, ``y/n``, ``t/f`` in any case, or a boolean; an empty cell or no column means kept
  (a hand-made index may list kept volumes only); anything else is an error naming the row.
* :func:`read_set`: the kept volumes as a DataFrame with absolute image/label paths, the
  ``source`` (synthetic or harmonized) and the ``key`` ``source/volume_id`` that training and
  export name volumes by.
* :func:`count_kept`: how many volumes a set holds (the size study's ceiling).
* :func:`fold_volumes`: the volumes fold k may train on (the leakage filter of
  :mod:`metsynth.evaluation.splits`), then, with ``limit``, the size-study subset.
* :func:`choose_subset`: the first N of one seeded permutation of the volumes sorted by key;
  too few volumes raise :class:`NotEnoughVolumes`. The training set and the export call it
  with the same seed for a fold (:func:`metsynth.seeds.fold_seed`: the study trains fold k with ``seed + k``),
  so they pick the same volumes.
* :func:`finished_sidecar`: whether a volume of a set being written is finished (synthesis and
  harmonization resume with it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, InputError
from ..fileio import read_json
from ..nifti import nifti_complete
from ..seeds import SIZE_STUDY_SUBSET

if TYPE_CHECKING:
    import pandas as pd

    from ..evaluation.splits import Splits

INDEX_COLUMNS = ("volume_id", "healthy_case", "donor_case", "donor_lesion", "repeat", "seed", "kept", "reason",
                 "lesion_mm3", "region", "image", "label")
REQUIRED_COLUMNS = ("volume_id", "donor_case", "image", "label")
KEPT_TRUE = frozenset({"true", "1", "yes", "y", "t"})
KEPT_FALSE = frozenset({"false", "0", "no", "n", "f"})
_DTYPES = {"volume_id": str, "donor_case": str, "healthy_case": str, "donor_lesion": str, "kept": str,
           "image": str, "label": str}


class NotEnoughVolumes(ConfigError):
    """``limit`` asks for more volumes than a fold may train on."""

    def __init__(self, requested: int, available: int, fold: int | None):
        self.requested, self.available, self.fold = requested, available, fold
        where = "" if fold is None else f" for fold {fold}"
        super().__init__(
            f"limit={requested} but only {available} synthetic/harmonized volumes remain{where} after the leakage "
            "filter; lower --limit or synthesize more volumes")


def parse_kept(value: Any, where: str = "index.csv") -> bool:
    """One ``kept`` cell as a boolean (empty or missing: kept)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return value is None or bool(value)
    if isinstance(value, float) and np.isnan(value):
        return True
    text = str(value).strip().lower()
    if text in KEPT_TRUE or text == "":
        return True
    if text in KEPT_FALSE:
        return False
    raise InputError(f"{where}: kept={value!r} is not a yes/no value (use true or false)")


def index_path(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    index = folder / "index.csv"
    if not index.is_file():
        raise InputError(f"{index}: no index.csv in the synthetic/harmonized folder; point to the output folder of "
                         "`metsynth synthesize` or `metsynth harmonize`")
    return index


def read_rows(folder: str | os.PathLike) -> "pd.DataFrame":
    """Every row of the set's ``index.csv`` (kept and dropped), cells as strings, plus a boolean
    ``kept`` column; the required columns checked."""
    import pandas as pd

    index = index_path(folder)
    try:
        table = pd.read_csv(index, dtype=_DTYPES, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{index}: not a readable CSV index ({type(err).__name__}: {str(err).splitlines()[0]}); "
                         "rebuild it with the command that made the set (it rewrites index.csv from the sidecars)") \
            from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{index}: missing column(s) {', '.join(missing)} (has {', '.join(map(str, table.columns))}); "
                         "point to the output of `metsynth synthesize` or `metsynth harmonize`")
    if "kept" in table.columns:
        table["kept"] = [parse_kept(v, f"{index}, volume {vid}") for v, vid in zip(table["kept"], table["volume_id"])]
    else:
        table["kept"] = True
    return table


def read_set(folder: str | os.PathLike, source: str = "synthetic") -> "pd.DataFrame":
    """The kept volumes of a set: its columns, absolute ``image``/``label`` paths, ``source`` and
    ``key`` (``source/volume_id``), in index order."""
    folder = Path(folder)
    table = read_rows(folder)
    index = folder / "index.csv"
    table = table[table["kept"]]
    no_file = table["volume_id"][table["image"].str.strip() == ""].tolist()
    if no_file:
        raise InputError(f"{index}: kept volume(s) {', '.join(no_file[:5])} name no image; rebuild the index with the "
                         "command that made the set")
    dup = table["volume_id"][table["volume_id"].duplicated()].tolist()
    if dup:
        raise InputError(f"{index}: duplicate volume id(s) {', '.join(dup[:5])}")
    table = table.copy()
    for col in ("image", "label"):
        table[col] = [str(p if Path(p).is_absolute() else folder / p) for p in table[col]]
    if "healthy_case" not in table.columns:
        table["healthy_case"] = ""
    table["source"] = source
    table["key"] = [f"{source}/{v}" for v in table["volume_id"]]
    return table.reset_index(drop=True)


def count_kept(folder: str | os.PathLike) -> int:
    """How many volumes the set at ``folder`` holds."""
    return int(read_rows(folder)["kept"].sum())


def choose_subset(volumes: "pd.DataFrame", limit: int, seed: int, fold: int | None = None) -> "pd.DataFrame":
    """The size-study subset: the first ``limit`` of one permutation (seeded by ``seed``) of
    ``volumes`` sorted by ``key``."""
    if limit > len(volumes):
        raise NotEnoughVolumes(limit, len(volumes), fold)
    ordered = volumes.sort_values("key", kind="stable").reset_index(drop=True)
    perm = np.random.default_rng(np.random.SeedSequence([seed, SIZE_STUDY_SUBSET])).permutation(len(ordered))
    return ordered.iloc[perm[:limit]].reset_index(drop=True)


@dataclass
class FoldVolumes:
    """The synthetic/harmonized volumes of one fold's training set and how many the leakage filter dropped."""

    volumes: "pd.DataFrame"
    excluded: "pd.DataFrame | None" = None  # what the leakage filter removed, with the reason

    @property
    def dropped_leaking(self) -> int:
        return 0 if self.excluded is None else len(self.excluded)


def fold_volumes(sets: "list[pd.DataFrame]", splits: "Splits | None", fold: int | None,
                 known_cases: list[str] | None = None, limit: int | None = None, seed: int = 0) -> FoldVolumes:
    """The volumes of ``sets`` (from :func:`read_set`) that fold ``fold`` may train on, then the
    subset of ``limit`` (seeded by ``seed``). Without a fold (``splits`` None) nothing is filtered."""
    import pandas as pd

    pool = pd.concat(sets, ignore_index=True) if sets else pd.DataFrame(
        columns=["volume_id", "donor_case", "healthy_case", "image", "label", "source", "key"])
    excluded = None
    if fold is not None and splits is not None:
        from ..evaluation.splits import leakage_filter

        report = leakage_filter(pool, splits, fold, known_cases=known_cases)
        pool, excluded = report.kept.reset_index(drop=True), report.excluded
    if limit is not None:
        pool = choose_subset(pool, limit, seed, fold)
    return FoldVolumes(pool, excluded)


def finished_sidecar(folder: str | os.PathLike, volume_id: str) -> dict[str, Any] | None:
    """The sidecar of a generated volume of a set folder (``images/``, ``labels/``, ``sidecars/``)
    when the volume is complete, else None.

    The sidecar is written last, atomically, so a readable ``sidecars/<id>.json`` whose named files
    (``image``, ``label``) all exist marks the volume done; a kept volume must name its image, a
    dropped one (``kept: false``) may name none. Used by synthesis and harmonization to resume
    (harmonization also checks what the sidecar records of its sources). Named NIfTI files must
    also be whole (:func:`metsynth.nifti.nifti_complete`, a cheap check of their size against
    their header): a file cut short by a full disk under an older version is redone.
    """
    folder = Path(folder)
    sidecar = folder / "sidecars" / f"{volume_id}.json"
    if not sidecar.is_file():
        return None
    try:
        data = read_json(sidecar)
    except ValueError:
        return None
    if data.get("kept", True) and not data.get("image"):
        return None
    if not all((folder / data[key]).is_file() for key in ("image", "label") if data.get(key)):
        return None
    if not all(nifti_complete(folder / data[key]) for key in ("image", "label")
               if data.get(key) and str(data[key]).lower().endswith((".nii", ".nii.gz"))):
        return None
    return data


__all__ = ["INDEX_COLUMNS", "FoldVolumes", "NotEnoughVolumes", "choose_subset", "count_kept",
           "finished_sidecar", "fold_volumes", "index_path", "parse_kept", "read_rows", "read_set"]
