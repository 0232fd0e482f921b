"""Export to an nnU-Net v2 raw dataset, with cross-validation splits that honour the leakage rule.

Output, in ``out`` (your ``nnUNet_raw`` folder)::

    DatasetNNN_Name/
      dataset.json             channel_names {"0": "CT"}, labels {"background": 0, "lesion": 1},
                               numTraining, file_ending ".nii.gz", reader SimpleITKIO
      imagesTr/<id>_0000.nii.gz  real metastatic cases + the synthetic/harmonized volumes that
                               some fold may train on
      labelsTr/<id>.nii.gz     lesion labels, uint8 {0, 1}, on exactly the image's grid
      imagesTs/, labelsTs/     the cohort's test-only cases (role ``test``), when it has any
      splits_final.json        one {"train": [...], "val": [...]} per fold of splits.json
      cases.csv                nnU-Net id -> source, case or volume id, donor and healthy case, folds
      metsynth_export.json     settings, input digests, counts (and what a rerun compares)

Identifiers: ``real_<case>``, ``syn_<volume_id>``, ``harm_<volume_id>`` (characters other than
letters, digits, ``-`` and ``_`` become ``-``; a collision is an error).

Folds: fold k of ``splits_final.json`` validates on the real cases of test fold k of
``splits.json`` and trains on the other real cases (``real`` in the sources) plus the
synthetic/harmonized volumes that :func:`metsynth.evaluation.splits.leakage_filter` allows for
fold k: no volume whose donor lesion comes from a case of test fold k or a test-only case, none
built on a test-only healthy case. Each fold is checked again with ``check_no_leakage`` before
anything is written. Volumes allowed in no fold are not exported, so ``nnUNetv2_train ... all``
(every case of imagesTr) never sees test-only data either. ``limit`` keeps N synthetic/harmonized
volumes per fold: the first N of one seeded permutation of the fold's allowed volumes, fold k
seeded with ``seed + k`` (:func:`metsynth.synthesis.sets.fold_volumes`, the rule of metsynth's
own training sets, which the study trains fold k with seed + k: the run's seed gives the run's
size-study volumes).

Intensities: prepared images are standardized to [-1, 1] from a HU window. By default they are
mapped back to HU (:func:`metsynth.prepare.destandardize` with the prepared manifest's
``hu_window``; values outside the window stay clipped at its ends), so nnU-Net's ``CT``
normalization and any HU-based post-processing behave as on scanner data. ``intensity=
"standardized"`` keeps [-1, 1] (nnU-Net's CT normalization is affine-invariant, so training is
the same either way; only the stored values differ).

Files are written through :class:`~metsynth.volume.Volume` (geometry kept exactly) into a
staging folder ``.partial-DatasetNNN_Name`` (an interrupted export resumes there) that is
renamed into place at the end. A dataset folder of other content is refused unless ``force``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from .. import __version__
from ..config import Settings, differences
from ..errors import ConfigError, InputError
from ..fileio import file_sha256, read_json, write_json, write_text

if TYPE_CHECKING:
    import pandas as pd

    from ..cohort import Cohort
    from ..evaluation.splits import Splits

log = logging.getLogger(__name__)

__all__ = [
    "EXPORT_SOURCES",
    "ExportCase",
    "ExportInputs",
    "ExportPlan",
    "ExportSummary",
    "NnunetExportConfig",
    "check_export_leakage",
    "dataset_folder_name",
    "export_nnunet",
    "nnunet_id",
    "plan_export",
    "resolve_inputs",
]

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
    from ..config import look_up_option

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


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class ExportInputs:
    """The files an export reads (absolute paths)."""

    cohort: Path
    splits: Path
    synthetic: Path | None = None
    harmonized: Path | None = None


def run_seed(run_dir: str | os.PathLike) -> int:
    """The seed of the study in ``run_dir`` (its ``config.yaml``), 0 when it has none."""
    from ..config import read_yaml
    from ..layout import RunLayout

    path = RunLayout(Path(run_dir)).config
    if not path.is_file():
        return 0
    data = read_yaml(path) or {}
    return int(data.get("seed", 0)) if isinstance(data, dict) else 0


def resolve_inputs(
    run_dir: str | os.PathLike | None = None,
    *,
    cohort: str | os.PathLike | None = None,
    splits: str | os.PathLike | None = None,
    synthetic: str | os.PathLike | None = None,
    harmonized: str | os.PathLike | None = None,
    sources: Sequence[str] = ("real", "synthetic"),
) -> ExportInputs:
    """Find the prepared cohort, splits.json and the sets named in ``sources``.

    Explicit paths win; the rest comes from the run directory's layout (:mod:`metsynth.layout`).
    """
    from ..layout import RunLayout

    sources = parse_sources(sources)
    layout = None
    if run_dir is not None:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise InputError(f"{run_dir}: run directory not found; give the folder of `metsynth experiment run`, "
                             "or pass --cohort, --splits and --synthetic explicitly")
        layout = RunLayout(run_dir)
    how = "`metsynth experiment run CONFIG --run-dir RUN --until {stage}`"

    if cohort is None and layout is None:
        raise ConfigError("no input: give a RUN_DIR, or --cohort (prepared cohort.yaml) and --splits (splits.json)")
    manifest = Path(cohort) if cohort is not None else layout.prepared_manifest  # type: ignore[union-attr]
    if manifest.is_dir():
        manifest = manifest / "cohort.yaml"
    if not manifest.is_file():
        raise InputError(f"{manifest}: prepared cohort manifest not found; run the prepare stage "
                         f"({how.format(stage='prepare')}, or `metsynth prepare`) or pass --cohort")

    if splits is None and layout is None:
        raise ConfigError("no splits: pass --splits splits.json (or a RUN_DIR that has one)")
    splits_path = Path(splits) if splits is not None else layout.splits  # type: ignore[union-attr]
    if splits_path.is_dir():
        splits_path = splits_path / "splits.json"
    if not splits_path.is_file():
        raise InputError(f"{splits_path}: splits file not found; run the splits stage "
                         f"({how.format(stage='splits')}) or pass --splits")

    folders: dict[str, Path | None] = {}
    for source, given, stage in (("synthetic", synthetic, "synthesize"), ("harmonized", harmonized, "harmonize")):
        if source not in sources:
            if given is not None:
                raise ConfigError(f"--{source} {given} is given but --sources {','.join(sources)} does not include "
                                  f"'{source}'; add it to --sources or drop --{source}")
            folders[source] = None
            continue
        if given is None and layout is None:
            raise ConfigError(f"source '{source}' needs its folder: pass --{source} DIR (with index.csv)")
        folder = Path(given) if given is not None else getattr(layout, source)
        if not (folder / "index.csv").is_file():
            raise InputError(f"{folder / 'index.csv'}: no {source} set here; run the {stage} stage "
                             f"({how.format(stage=stage)}), pass --{source} DIR, or drop '{source}' from --sources")
        folders[source] = folder.resolve()
    return ExportInputs(manifest.resolve(), splits_path.resolve(), folders["synthetic"], folders["harmonized"])


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class ExportCase:
    """One exported case: where it comes from and what it becomes."""

    nnunet_id: str
    subset: Literal["Tr", "Ts"]
    source: str                      # real | synthetic | harmonized
    case: str                        # real case id or volume id
    image: str                       # absolute source paths
    label: str | None
    donor_case: str | None = None
    healthy_case: str | None = None
    train_folds: tuple[int, ...] = ()
    val_fold: int | None = None


@dataclass
class ExportPlan:
    """Everything to write, decided before writing anything (see :func:`plan_export`)."""

    config: NnunetExportConfig
    inputs: ExportInputs
    cases: list[ExportCase]
    splits_final: list[dict[str, list[str]]]
    hu_window: tuple[float, float]
    dropped_leaking: list[int]       # per fold: synthetic/harmonized volumes the leakage filter removed
    not_exported: int                # volumes allowed in no fold (or beyond --limit in every fold)
    inputs_digest: dict[str, str] = field(default_factory=dict)

    @property
    def folder_name(self) -> str:
        return dataset_folder_name(self.config.dataset_id, self.config.name)

    @property
    def training(self) -> list[ExportCase]:
        return [c for c in self.cases if c.subset == "Tr"]

    @property
    def test(self) -> list[ExportCase]:
        return [c for c in self.cases if c.subset == "Ts"]

    def fingerprint(self) -> dict[str, Any]:
        """What makes two exports the same: settings and the digests of every input file."""
        return {"settings": self.config.model_dump(mode="json"), "inputs": dict(self.inputs_digest)}

    def fingerprint_hash(self) -> str:
        text = json.dumps(self.fingerprint(), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]



def _real_case(case, subset: str, annotator: str | None, **extra: Any) -> ExportCase:
    ann = case.reference_lesion(annotator)
    if ann is None and subset == "Tr":
        raise InputError(f"case {case.id}: metastatic case without a lesion mask; add it to the manifest")
    return ExportCase(nnunet_id("real", case.id), subset, "real", case.id, str(case.image),
                      str(ann.path) if ann is not None else None, **extra)  # type: ignore[arg-type]


def plan_export(inputs: ExportInputs, config: NnunetExportConfig) -> ExportPlan:
    """Decide every file and every fold (reads manifests and indexes only; writes nothing)."""
    from ..cohort import load_cohort
    from ..evaluation.splits import check_splits_match, load_splits
    from ..synthesis.sets import fold_seed, fold_volumes, read_set

    cohort = load_cohort(inputs.cohort)
    if cohort.prepared is None:
        raise InputError(f"{inputs.cohort}: not a prepared cohort (no 'prepared:' block with the HU window); export "
                         "the output of `metsynth prepare` (RUN/prepared/cohort.yaml)")
    splits = load_splits(inputs.splits)
    check_splits_match(splits, cohort, inputs.splits)
    known = [c.id for c in cohort.cases]
    if config.limit is not None and not any(s in ("synthetic", "harmonized") for s in config.sources):
        raise ConfigError(f"limit={config.limit} applies to synthetic/harmonized volumes, but the sources are "
                          f"{','.join(config.sources)}; add 'synthetic' or 'harmonized' or drop --limit")

    sets = [read_set(folder, source) for source, folder in
            (("synthetic", inputs.synthetic), ("harmonized", inputs.harmonized))
            if source in config.sources and folder is not None]
    pool = fold_volumes(sets, None, None).volumes

    chosen_per_fold: list[list[str]] = []
    dropped: list[int] = []
    for k in range(splits.n_folds):
        # the volumes metsynth's own training of fold k takes (leakage filter, then --limit's subset)
        chosen = fold_volumes(sets, splits, k, known_cases=known, limit=config.limit,
                              seed=fold_seed(config.seed, k))
        dropped.append(chosen.dropped_leaking)
        chosen_per_fold.append(list(chosen.volumes["key"]))

    folds_of: dict[str, list[int]] = {}
    for k, keys in enumerate(chosen_per_fold):
        for key in keys:
            folds_of.setdefault(key, []).append(k)

    cases: list[ExportCase] = []
    for cid in sorted(splits.cases):
        k_val = splits.fold_of(cid)
        train = tuple(k for k in range(splits.n_folds) if k != k_val) if "real" in config.sources else ()
        cases.append(_real_case(cohort.case(cid), "Tr", config.annotator, train_folds=train, val_fold=k_val))
    for row in pool.itertuples(index=False):
        if row.key not in folds_of:
            continue
        healthy = str(row.healthy_case) or None
        cases.append(ExportCase(nnunet_id(row.source, row.volume_id), "Tr", row.source, str(row.volume_id),
                                row.image, row.label, str(row.donor_case), healthy, tuple(folds_of[row.key])))
    if config.test_cases:
        for cid in sorted(splits.test_only):
            cases.append(_real_case(cohort.case(cid), "Ts", config.annotator))

    seen: dict[str, ExportCase] = {}
    for c in cases:
        if c.nnunet_id in seen:
            other = seen[c.nnunet_id]
            raise InputError(f"nnU-Net id {c.nnunet_id!r} is given to both {other.source} {other.case!r} and "
                             f"{c.source} {c.case!r} (unsafe characters become '-'); rename one of them")
        seen[c.nnunet_id] = c

    splits_final = []
    for k in range(splits.n_folds):
        train = [c.nnunet_id for c in cases if c.subset == "Tr" and k in c.train_folds]
        val = [nnunet_id("real", cid) for cid in splits.test(k)]
        if not train:
            raise ConfigError(f"fold {k}: the training set for sources {','.join(config.sources)} is empty; check the "
                              "cohort roles, the splits and the synthetic index")
        splits_final.append({"train": train, "val": val})

    digests = {"cohort": file_sha256(inputs.cohort, 16), "splits": file_sha256(inputs.splits, 16)}
    for source, folder in (("synthetic", inputs.synthetic), ("harmonized", inputs.harmonized)):
        if folder is not None and source in config.sources:
            digests[source] = file_sha256(folder / "index.csv", 16)
    pool_keys = set(pool["key"]) if len(pool) else set()
    if pool_keys - set(folds_of):
        log.info("%d synthetic/harmonized volume(s) are in no fold's training set (leakage filter or --limit) "
                 "and are not exported", len(pool_keys - set(folds_of)))
    hu_window = (float(cohort.prepared.hu_window[0]), float(cohort.prepared.hu_window[1]))
    return ExportPlan(config, inputs, cases, splits_final, hu_window, dropped, len(pool_keys - set(folds_of)), digests)


# ----------------------------------------------------------------------------- writing
def _link(src: Path, dst: Path) -> None:
    """Hard link (symlink across file systems), atomically."""
    from ..fileio import temp_path_for

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(dst)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            os.symlink(src.resolve(), tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


def write_case(task: dict[str, Any]) -> dict[str, Any]:
    """Write one case's image (and label): read, check, convert, write. Module level: picklable."""
    from ..prepare import destandardize
    from ..volume import Volume, as_mask, check_finite

    image_dst, label_dst = Path(task["image_dst"]), task["label_dst"] and Path(task["label_dst"])
    if image_dst.exists() and (label_dst is None or label_dst.exists()):  # done in an interrupted run
        return {"key": task["key"], "linked": 0, "resumed": True}
    src = Path(task["image"])
    image = Volume.read(src)
    check_finite(image, f"image of {task['what']}")
    linked = 0
    if label_dst is not None:
        raw = Volume.read(task["label"])
        label = as_mask(raw, image, what=f"lesion label of {task['what']}")
        if task["link"] and raw.array.dtype == np.uint8 and raw.same_grid(image) and \
                str(task["label"]).endswith(FILE_ENDING):
            _link(Path(task["label"]), label_dst)
            linked += 1
        else:
            label.write(label_dst, compression_level=task["level"])
    if task["intensity"] == "hu":
        image.with_array(destandardize(image.array, tuple(task["hu_window"]))).write(
            image_dst, compression_level=task["level"])
    elif task["link"] and image.array.dtype == np.float32 and str(src).endswith(FILE_ENDING):
        _link(src, image_dst)
        linked += 1
    else:
        image.with_array(image.array.astype(np.float32, copy=False)).write(image_dst, compression_level=task["level"])
    return {"key": task["key"], "linked": linked, "resumed": False}


def _tasks(plan: ExportPlan, folder: Path) -> list[dict[str, Any]]:
    tasks = []
    for c in plan.cases:
        images, labels = folder / f"images{c.subset}", folder / f"labels{c.subset}"
        tasks.append({
            "key": c.nnunet_id, "what": f"{c.source} {c.case}", "image": c.image, "label": c.label,
            "image_dst": str(images / f"{c.nnunet_id}_0000{FILE_ENDING}"),
            "label_dst": str(labels / f"{c.nnunet_id}{FILE_ENDING}") if c.label is not None else None,
            "intensity": plan.config.intensity, "hu_window": list(plan.hu_window), "link": plan.config.link,
            "level": plan.config.compression_level,
        })
    return tasks


def _dataset_json(plan: ExportPlan) -> dict[str, Any]:
    cfg = plan.config
    lo, hi = plan.hu_window
    values = (f"HU (prepared images mapped back from [-1, 1] with the window [{lo:g}, {hi:g}] HU; values outside "
              "it are clipped)" if cfg.intensity == "hu" else f"standardized: [-1, 1] <- [{lo:g}, {hi:g}] HU")
    return {
        "name": plan.folder_name,
        "description": (f"Femoral bone metastases (lesion label), exported by metsynth {__version__}: real cases and "
                        f"training sources {', '.join(cfg.sources)}; intensities {values}. Folds: splits_final.json "
                        "(leak-free by donor case); provenance: cases.csv, metsynth_export.json."),
        "reference": "Saillard et al., synthetic femoral metastasis CT (metsynth reproduction)",
        "licence": "as the source cohort's",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": len(plan.training),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
    }


def _cases_csv(plan: ExportPlan) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CASES_COLUMNS)
    for c in plan.cases:
        writer.writerow([c.nnunet_id, c.subset, c.source, c.case, c.donor_case or "", c.healthy_case or "",
                         ";".join(map(str, c.train_folds)), "" if c.val_fold is None else c.val_fold,
                         c.image, c.label or ""])
    return buffer.getvalue()


def _manifest(plan: ExportPlan, linked: int, seconds: float) -> dict[str, Any]:
    per_source: dict[str, int] = {}
    for c in plan.training:
        per_source[c.source] = per_source.get(c.source, 0) + 1
    return {
        "metsynth_version": __version__,
        **plan.fingerprint(),
        "fingerprint": plan.fingerprint_hash(),
        "complete": True,
        "paths": {k: (str(v) if v is not None else None) for k, v in vars(plan.inputs).items()},
        "hu_window": list(plan.hu_window),
        "counts": {"training": len(plan.training), "test": len(plan.test), "per_source": per_source,
                   "linked_files": linked, "not_exported": plan.not_exported},
        "folds": [{"fold": k, "train": len(f["train"]), "val": len(f["val"]),
                   "dropped_leaking": plan.dropped_leaking[k]} for k, f in enumerate(plan.splits_final)],
        "seconds": round(seconds, 2),
    }


@dataclass
class ExportSummary:
    """What an export did."""

    dataset_dir: Path
    n_training: int
    n_test: int
    folds: list[dict[str, int]]
    up_to_date: bool = False
    linked: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        if self.up_to_date:
            return f"{self.dataset_dir}: already exported with these inputs and settings (nothing to do)"
        folds = "; ".join(f"fold {f['fold']}: {f['train']} train / {f['val']} val"
                          + (f" ({f['dropped_leaking']} leaking volumes left out)" if f["dropped_leaking"] else "")
                          for f in self.folds)
        return (f"{self.n_training} training case(s), {self.n_test} test case(s) -> {self.dataset_dir}; {folds}; "
                f"{self.seconds:.1f} s")


def _existing_state(final: Path, plan: ExportPlan) -> str | None:
    """None if ``final`` holds this very export; else a sentence saying what differs."""
    manifest = final / MANIFEST
    if not manifest.is_file():
        return "the folder was not written by `metsynth export nnunet` (no metsynth_export.json)"
    try:
        old = read_json(manifest)
    except ValueError:
        return "its metsynth_export.json is damaged"
    if not old.get("complete"):
        return "it is incomplete"
    new = plan.fingerprint()
    diffs = differences({k: old.get(k) for k in new}, new)
    if not diffs:
        return None
    return "; ".join(diffs[:4]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > 4 else "")


def export_nnunet(
    out: str | os.PathLike,
    config: NnunetExportConfig,
    run_dir: str | os.PathLike | None = None,
    *,
    cohort: str | os.PathLike | None = None,
    splits: str | os.PathLike | None = None,
    synthetic: str | os.PathLike | None = None,
    harmonized: str | os.PathLike | None = None,
    force: bool = False,
    workers: int = 1,
    scheduler: Any = None,
    progress: bool = True,
) -> ExportSummary:
    """Write ``out/DatasetNNN_Name`` (an nnU-Net v2 raw dataset) with leak-free ``splits_final.json``.

    Inputs: a run directory (``run_dir``; its ``prepared/cohort.yaml``, ``splits.json``,
    ``synthetic/`` and ``harmonized/``) and/or explicit paths, which win. A rerun with the same
    inputs and settings does nothing; a folder of other content is refused unless ``force``
    (which replaces it once the new export is complete).
    """
    from ..parallel import map_tasks

    start = time.perf_counter()
    inputs = resolve_inputs(run_dir, cohort=cohort, splits=splits, synthetic=synthetic, harmonized=harmonized,
                            sources=config.sources)
    plan = plan_export(inputs, config)
    out = Path(out)
    name = plan.folder_name
    final, staging = out / name, out / f"{STAGING_PREFIX}{name}"

    prefix = f"Dataset{config.dataset_id:03d}_"
    if out.is_dir():
        clash = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name.startswith(prefix) and p.name != name)
        if clash:
            raise ConfigError(f"{out / clash[0]}: already uses dataset id {config.dataset_id}; nnU-Net finds datasets "
                              "by id, so choose another --dataset-id (or remove that dataset)")
    if final.exists():
        why = _existing_state(final, plan)
        if why is None:
            folds = read_json(final / MANIFEST).get("folds", [])
            log.info("%s: up to date", final)
            return ExportSummary(final, len(plan.training), len(plan.test), folds, up_to_date=True)
        if not force:
            raise ConfigError(f"{final}: holds another dataset ({why}); use another --dataset-id/--name or --out, "
                              "or --force to replace it")

    fingerprint = plan.fingerprint_hash()
    mark = staging / STAGING_MARK
    if staging.exists() and not (mark.is_file() and mark.read_text(encoding="utf-8").strip() == fingerprint):
        shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    write_text(mark, fingerprint + "\n")

    linked = 0
    for record in map_tasks(write_case, _tasks(plan, staging), workers=workers, scheduler=scheduler,
                            progress=progress, desc="nnU-Net export"):
        linked += record["linked"]
    write_json(staging / "dataset.json", _dataset_json(plan))
    write_json(staging / "splits_final.json", plan.splits_final)
    write_text(staging / CASES_TABLE, _cases_csv(plan))
    seconds = time.perf_counter() - start
    write_json(staging / MANIFEST, _manifest(plan, linked, seconds))
    mark.unlink()

    old = None
    if final.exists():  # --force: swap, then delete the old dataset
        old = out / f".old-{uuid.uuid4().hex[:8]}-{name}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    summary = ExportSummary(final, len(plan.training), len(plan.test), _manifest(plan, linked, seconds)["folds"],
                            linked=linked, seconds=seconds)
    log.info("nnU-Net export: %s", summary.describe())
    return summary


# ----------------------------------------------------------------------------- checking
def check_export_leakage(dataset_dir: str | os.PathLike, splits: "Splits | str | os.PathLike") -> None:
    """Re-check an exported dataset's ``splits_final.json`` against the CV splits (InputError if it leaks).

    Fold k must validate on exactly test fold k's real cases, train on no real case of test fold
    k or test-only, and hold no synthetic/harmonized volume that the leakage filter excludes
    for fold k (donor or healthy case in test fold k or test-only).
    """
    import pandas as pd

    from ..evaluation.splits import Splits, check_no_leakage, load_splits

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
