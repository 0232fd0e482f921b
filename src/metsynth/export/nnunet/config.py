"""The settings of an nnU-Net export, and the names it gives: case identifiers, folders, files."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from ...config import Settings
from ...errors import ConfigError

EXPORT_SOURCES = ("real", "synthetic", "harmonized")
ID_PREFIX = {"real": "real", "synthetic": "syn", "harmonized": "harm"}
FILE_ENDING = ".nii.gz"
MANIFEST = "metsynth_export.json"
CASES_TABLE = "cases.csv"
STAGING_PREFIX = ".partial-"
STAGING_MARK = ".metsynth-fingerprint"
CASES_COLUMNS = ("nnunet_id", "subset", "source", "case", "donor_case", "healthy_case", "train_folds",
                 "val_fold", "source_image", "source_label")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class NnunetExportConfig(Settings):
    """Settings of ``metsynth export nnunet``."""

    dataset_id: int = Field(
        ge=1, le=999, description="nnU-Net dataset id (folder DatasetNNN_Name); unique in nnUNet_raw.")
    name: str = Field("Femur", description="Dataset name after the id: letters, digits, '-' and '_'.")
    sources: tuple[str, ...] = Field(
        ("real", "synthetic"), description="What the folds train on: real, synthetic, harmonized (any mix). "
        "The real cases are always exported: they are the validation cases.")
    limit: int | None = Field(None, ge=1, description="Keep N synthetic/harmonized volumes per fold (size study); "
                              "null keeps all that the leakage filter allows.")
    seed: int = Field(0, description="Seed of the permutation that --limit takes its first N from; fold k draws with "
                                   "seed + k, as the study trains fold k (so a run's seed picks the run's volumes).")
    intensity: Literal["hu", "standardized"] = Field(
        "hu", description="hu: map the prepared [-1, 1] images back to HU (recommended for nnU-Net's CT "
        "normalization); standardized: keep [-1, 1].")
    link: bool = Field(False, description="Hard-link (else symlink) source files that can be used unchanged "
                       "(labels; images too with intensity 'standardized' when already .nii.gz) instead of copying.")
    test_cases: bool = Field(True, description="Export the cohort's test-only cases to imagesTs/labelsTs.")
    annotator: str | None = Field(None, description="Annotator whose masks label the real cases (default: reference).")
    compression_level: int = Field(1, ge=1, le=9, description="gzip level of the written .nii.gz files.")

    @field_validator("name")
    @classmethod
    def _file_safe_name(cls, value: str) -> str:
        if not value or _UNSAFE.search(value):
            raise ValueError(f"dataset name {value!r} must be non-empty letters, digits, '-' or '_' (it becomes "
                             "part of the folder name DatasetNNN_Name)")
        return value

    @field_validator("sources", mode="before")
    @classmethod
    def _parse_sources(cls, value: Any) -> tuple[str, ...]:
        return parse_sources(value)


def parse_sources(sources: str | Sequence[str]) -> tuple[str, ...]:
    """``"real,synthetic"`` or a list -> a validated tuple (order kept, duplicates dropped)."""
    from ...config import look_up_option

    if isinstance(sources, str):
        sources = [s.strip() for s in sources.replace("+", ",").split(",") if s.strip()]
    out: list[str] = []
    for s in sources:
        look_up_option(str(s), list(EXPORT_SOURCES), "export source")
        if s not in out:
            out.append(str(s))
    if not out:
        raise ConfigError("no export source given; use e.g. --sources real,synthetic")
    return tuple(out)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    return f"Dataset{dataset_id:03d}_{name}"


def nnunet_id(source: str, case: str) -> str:
    """The file-safe nnU-Net case identifier of a real case or a synthetic/harmonized volume."""
    return f"{ID_PREFIX[source]}_{_UNSAFE.sub('-', str(case))}"
