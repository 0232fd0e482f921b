"""The synthetic set a harmonization reads: its volumes (:class:`SyntheticItem`, from ``index.csv``
or ``images/``) and the HU window its cohort was prepared with, which sets the int16 scale of the
harmonized images (:func:`output_scale`)."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import read_yaml
from ..errors import InputError
from ..synthesis.sets import parse_kept
from ..volume import IntensityScale, storage_scale

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the set
@dataclass(frozen=True)
class SyntheticItem:
    """One volume of a synthetic set: its files and its index row (strings)."""

    volume_id: str
    image: str | None
    label: str | None
    sidecar: str | None
    row: dict[str, str]
    kept: bool


def read_synthetic_set(folder: str | os.PathLike) -> tuple[list[SyntheticItem], list[str]]:
    """The volumes of a synthetic set and the index's columns (``index.csv``, else ``images/``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: synthetic set folder not found (the --out folder of `metsynth synthesize`)")
    index = folder / "index.csv"
    items: list[SyntheticItem] = []
    if index.is_file():
        with open(index, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            if "volume_id" not in columns:
                raise InputError(f"{index}: no 'volume_id' column (columns: {', '.join(columns)})")
            for row in reader:
                vid = row["volume_id"]
                kept = parse_kept(row.get("kept"), f"{index}, volume {vid}") and bool(row.get("image"))
                image = _resolve(folder, row.get("image")) or _guess(folder, "images", vid)
                label = _resolve(folder, row.get("label")) or _guess(folder, "labels", vid)
                sidecar = folder / "sidecars" / f"{vid}.json"
                items.append(SyntheticItem(vid, image if kept else None, label if kept else None,
                                           str(sidecar) if sidecar.is_file() else None, dict(row), kept))
    else:
        if (folder / "cohort.yaml").is_file():  # e.g. the --out folder of `metsynth prepare`
            raise InputError(f"{folder}: a cohort (cohort.yaml), not a synthetic set (no index.csv); give the --out "
                             "folder of `metsynth synthesize` (index.csv, images/, labels/)")
        columns = ["volume_id", "kept", "image", "label"]
        files = sorted(p for p in (folder / "images").glob("*.nii*")) if (folder / "images").is_dir() else []
        if not files:
            raise InputError(f"{folder}: neither index.csv nor images/*.nii.gz found; point to a synthetic set "
                             "(images/<id>.nii.gz, labels/<id>.nii.gz)")
        for path in files:
            vid = path.name.split(".nii")[0]
            sidecar = folder / "sidecars" / f"{vid}.json"
            items.append(SyntheticItem(vid, str(path), _guess(folder, "labels", vid),
                                       str(sidecar) if sidecar.is_file() else None,
                                       {"volume_id": vid, "kept": "true", "image": f"images/{path.name}",
                                        "label": ""}, True))
    ids = [i.volume_id for i in items]
    if len(set(ids)) != len(ids):
        raise InputError(f"{folder}: duplicate volume ids in the index")
    return items, columns


def source_hu_window(folder: str | os.PathLike) -> tuple[float, float] | None:
    """The HU window a synthetic set's cohort was prepared with (``intensity`` in its config.yaml,
    written by ``metsynth synthesize``), or None if the set does not record it."""
    config_file = Path(folder) / "config.yaml"
    record = (read_yaml(config_file, error=InputError) or {}).get("intensity") if config_file.is_file() else None
    window = record.get("hu_window") if isinstance(record, dict) and record.get("units") == "standardized" else None
    return None if window is None else (float(window[0]), float(window[1]))


def output_scale(storage: str, synthetic_dir: str | os.PathLike) -> IntensityScale | None:
    """The int16 scale of the harmonized images: one HU of the set's HU window; a set that does not
    record its window (not written by `metsynth synthesize`) gets the fine standardized step."""
    if storage == "float32":
        return None
    window = source_hu_window(synthetic_dir)
    if window is None:
        log.warning("%s: config.yaml records no HU window of a prepared cohort (a set not written by `metsynth "
                    "synthesize`), so one HU is unknown; int16 images are stored at a step of 2^-14 of [-1, 1] "
                    "instead (under 0.1 HU for usual windows; larger files)", Path(synthetic_dir) / "config.yaml")
        return IntensityScale.standardized()
    return storage_scale(storage, window)


def _resolve(folder: Path, value: str | None) -> str | None:
    if not value:
        return None
    path = Path(value)
    return str(path if path.is_absolute() else folder / path)


def _guess(folder: Path, sub: str, vid: str) -> str | None:
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        path = folder / sub / f"{vid}{suffix}"
        if path.is_file():
            return str(path)
    return None
