"""Preparation: from a raw cohort to a prepared one, ready for synthesis and training.

For each case, in this order:

1. femur mask: the manifest's, or computed by :func:`metsynth.bone.segment_femur` (on the
   original grid, in HU; a scan in which it finds no proximal femur, e.g. a thorax, fails that case
   with an error naming it and nothing is written for it; a doubtful femur, e.g. a scan ending above
   the lesser trochanter, is logged as a warning naming the image); lesion masks are merged into it
   (a lesion is part of the femur);
2. crop to the femur's bounding box plus a margin (done first, so only the femur region is
   resampled);
3. resample to the target spacing (default 0.85 mm isotropic, the paper's median voxel size)
   keeping the physical extent: the image with linear or B-spline interpolation, masks with
   linear interpolation of each connected component thresholded at 0.5, so volumes are kept and
   a lesion smaller than a voxel is never lost (its most covered voxel is kept);
4. intensity standardization: clip to ``hu_window`` and scale linearly to [-1, 1]; the window is
   recorded in the prepared manifest so :func:`destandardize` can undo it.

Outputs, in ``out_dir``: ``images/``, ``femur/``, ``lesions/`` (one file per annotation),
``cohort.yaml`` (the prepared manifest, same schema, with ``prepared:`` and per-case ``source:``)
``prepare.yaml`` (the settings) and ``prepare_inputs.json`` (the cohort: case ids and a digest of
their files' names). A rerun skips finished cases; another configuration, or another cohort (other
cases), in the same folder is refused unless ``force``.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from .boxes import index_box
from .cohort import (
    Case,
    Cohort,
    LesionAnnotation,
    PreparedInfo,
    about_case,
    check_cohort,
    check_lesion_on_femur,
    load_case,
)
from .config import Settings
from .errors import InputError
from .fileio import DiskFullError
from .volume import Volume

log = logging.getLogger(__name__)

Interpolation = Literal["linear", "bspline"]


class PrepareConfig(Settings):
    """Settings of ``metsynth prepare``."""

    spacing: tuple[float, float, float] = Field(
        (0.85, 0.85, 0.85), description="Target voxel size in mm, (z, y, x). The paper: 0.85 mm isotropic.")
    interpolation: Interpolation = Field("linear", description="Image interpolation: linear or bspline.")
    hu_window: tuple[float, float] = Field(
        (-1000.0, 2000.0), description="HU range mapped to [-1, 1]; values outside are clipped.")
    crop_margin_mm: float = Field(10.0, ge=0, description="Margin around the femur's bounding box, mm.")
    crop: bool = Field(True, description="Crop to the femur (plus margin); False keeps the whole field of view.")

    @field_validator("spacing", mode="before")
    @classmethod
    def _isotropic_shorthand(cls, value):
        if isinstance(value, (int, float)):
            return (float(value),) * 3
        return value

    @field_validator("spacing")
    @classmethod
    def _positive(cls, value):
        import math

        if not all(math.isfinite(v) for v in value) or min(value) <= 0:
            raise ValueError(f"spacing must be positive and finite, got {value}")
        if min(value) < 0.05 or max(value) > 20:
            raise ValueError(f"spacing {value} mm is outside 0.05-20 mm, not a CT voxel size; the paper uses 0.85")
        return value

    @field_validator("hu_window")
    @classmethod
    def _ordered(cls, value):
        if value[1] <= value[0]:
            raise ValueError(f"hu_window must be (low, high) with low < high, got {value}")
        return value


# ------------------------------------------------------------------ intensities
def standardize(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip to ``window`` and map linearly to [-1, 1] (float32)."""
    lo, hi = window
    out = (np.clip(hu.astype(np.float32), lo, hi) - lo) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    return out.astype(np.float32, copy=False)


def destandardize(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`standardize` (exact inside the window), back to HU (float32)."""
    lo, hi = window
    return ((values.astype(np.float32) + 1.0) * np.float32((hi - lo) / 2.0) + np.float32(lo)).astype(np.float32)


def hu_to_standardized(hu: float, window: tuple[float, float]) -> float:
    lo, hi = window
    return 2.0 * (float(hu) - lo) / (hi - lo) - 1.0


# ------------------------------------------------------------------ resampling
def target_grid(volume: Volume, spacing: tuple[float, float, float]) -> Volume:
    """An empty volume on the grid with ``spacing`` covering ``volume``'s field of view.

    Voxel edges start where the input's start; the extent is kept to within half a voxel.
    """
    old_sp = np.asarray(volume.spacing)
    new_sp = np.asarray(spacing, dtype=np.float64)
    size = np.maximum(1, np.round(np.asarray(volume.shape) * old_sp / new_sp)).astype(int)
    # first voxel centre: input's first edge + half a new voxel, along each array axis
    start = (-0.5 * old_sp + 0.5 * new_sp) / old_sp  # in input index units
    origin = volume.index_to_world(start)
    return Volume(np.zeros(tuple(size), dtype=np.uint8), tuple(new_sp), tuple(origin), volume.direction.copy())


def resample_image(volume: Volume, grid: Volume, interpolation: Interpolation = "linear",
                   default: float | None = None) -> Volume:
    """``volume`` interpolated onto ``grid`` (float32). Outside the input: ``default``
    (the input's minimum, i.e. air, when None)."""
    import SimpleITK as sitk

    interp = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline}[interpolation]
    fill = float(volume.array.min()) if default is None else float(default)
    src = volume.with_array(volume.array.astype(np.float32)).to_sitk()
    out = sitk.Resample(src, grid.to_sitk(), sitk.Transform(), interp, fill, sitk.sitkFloat32)
    result = Volume.from_sitk(out)
    if interpolation == "bspline":  # B-spline overshoots; keep the input's range
        np.clip(result.array, volume.array.min(), volume.array.max(), out=result.array)
    return grid.with_array(result.array)


def resample_mask(mask: Volume, grid: Volume) -> Volume:
    """A binary mask on ``grid``: each connected component interpolated linearly and thresholded
    at 0.5; a component that would vanish keeps the voxel that holds its centroid."""
    import SimpleITK as sitk
    from scipy import ndimage

    out = np.zeros(grid.shape, dtype=np.uint8)
    labels, n = ndimage.label(mask.array > 0)
    if n == 0:
        return grid.with_array(out)
    for sl in ndimage.find_objects(labels):
        lo = np.array([s.start for s in sl]) - 2
        hi = np.array([s.stop for s in sl]) + 2
        part = mask.crop(lo, hi)
        comp = part.with_array((part.array > 0).astype(np.float32))
        # the component's box on the target grid (+1 voxel)
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])], float)
        idx = grid.world_to_index(mask.index_to_world(corners - 0.5))
        tlo = np.clip(np.floor(idx.min(0)).astype(int) - 1, 0, grid.shape)
        thi = np.clip(np.ceil(idx.max(0)).astype(int) + 2, tlo, grid.shape)
        if np.any(thi <= tlo):
            continue
        sub = grid.crop(tlo, thi)
        res = sitk.Resample(comp.to_sitk(), sub.to_sitk(), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        values = Volume.from_sitk(res).array
        keep = values >= 0.5
        region = out[tlo[0]:thi[0], tlo[1]:thi[1], tlo[2]:thi[2]]
        region |= keep.astype(np.uint8)
        if not keep.any():  # smaller than a target voxel: keep the voxel holding its centroid
            centroid = mask.index_to_world(np.argwhere(labels[sl] > 0).mean(0) + np.array([s.start for s in sl]))
            index = np.clip(np.round(grid.world_to_index(centroid)).astype(int), 0, np.asarray(grid.shape) - 1)
            out[tuple(index)] = 1
    return grid.with_array(out)


def femur_crop_box(femur: Volume, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Index box (lo, hi) of the femur mask's bounding box plus ``margin_mm``."""
    idx = np.argwhere(femur.array > 0)
    margin = np.ceil(margin_mm / np.asarray(femur.spacing)).astype(int)
    return index_box(idx, femur.shape, margin)


# ------------------------------------------------------------------ one case
def prepare_case(case: Case, config: PrepareConfig, femur_config=None) -> dict[str, Volume]:
    """Prepared volumes of one case: ``image``, ``femur`` and one entry per lesion annotation
    (key ``lesion:<annotator>:<round>``). Nothing is written. Lesion marks away from a femur it
    segments are refused here; those of a manifest's femur mask by :func:`check_cohort`."""
    loaded = load_case(case, lesion=False)
    image = loaded.image
    femur = loaded.femur
    femur_source = "manifest"
    lesions = {annotation_key(ann): load_case_mask(ann, image) for ann in case.lesion_masks}
    if femur is None:
        from .bone import segment_femur

        femur = segment_femur(image, side=case.side, config=femur_config)
        femur_source = "automatic"
        # a mark away from the femur (a mask of another scan or side); against a manifest's femur mask
        # check_cohort has checked it already, which prepare_cohort runs first
        for ann in case.lesion_masks:
            check_lesion_on_femur(case, ann, lesions[annotation_key(ann)], femur,
                                  f"found automatically{', side ' + case.side if case.side else ''}")
    union = femur.array.astype(bool)
    for vol in lesions.values():
        union |= vol.array.astype(bool)
    femur = femur.with_array(union.astype(np.uint8))

    if config.crop:
        lo, hi = femur_crop_box(femur, config.crop_margin_mm)
        image, femur = image.crop(lo, hi), femur.crop(lo, hi)
        lesions = {key: vol.crop(lo, hi) for key, vol in lesions.items()}
    else:
        lo, hi = np.zeros(3, int), np.asarray(image.shape)

    grid = target_grid(image, config.spacing)
    hu = resample_image(image, grid, config.interpolation)
    out = {
        "image": hu.with_array(standardize(hu.array, config.hu_window)),
        "femur": resample_mask(femur, grid),
    }
    for key, vol in lesions.items():
        out[key] = resample_mask(vol, grid)
    out["_source"] = {  # type: ignore[assignment]
        "image": str(case.image),
        "shape": list(loaded.image.shape),
        "spacing": list(loaded.image.spacing),
        "origin": list(loaded.image.origin),
        "direction": loaded.image.direction.tolist(),
        "crop_box": [lo.tolist(), hi.tolist()],
        "femur_mask": femur_source,
    }
    return out


def annotation_key(ann: LesionAnnotation) -> str:
    return f"lesion:{ann.annotator}:{ann.round}"


def load_case_mask(ann: LesionAnnotation, image: Volume) -> Volume:
    from .volume import as_mask

    return as_mask(Volume.read(ann.path), image, what=f"lesion mask ({ann.annotator}, round {ann.round})")


# ------------------------------------------------------------------ the cohort
def prepare_cohort(cohort: Cohort, out_dir: str | os.PathLike, config: PrepareConfig | None = None,
                   force: bool = False, progress: bool = True, femur_config=None,
                   workers: int = 1, scheduler=None, replace_other: bool = False) -> Path:
    """Prepare every case into ``out_dir``; return the prepared manifest's path.

    The input cohort is fully checked before anything is written. Finished cases are skipped. A
    folder holding another preparation is refused unless ``force`` or ``replace_other``
    (:class:`metsynth.outdir.OutputFolder`).
    Cases run through :func:`metsynth.parallel.map_tasks` (``workers`` local processes, or a
    Dask ``scheduler``); a case that fails does not stop the others, except a full disk, which
    stops the run with :class:`~metsynth.fileio.DiskFullError` (every write is atomic: nothing
    is left under a final name, and a rerun resumes). A folder holding another cohort's preparation
    (other case ids, or the same ids with other files) is another preparation, as one of other settings.
    """
    from .parallel import map_tasks

    config = config or PrepareConfig()
    out_dir = Path(out_dir)
    manifest = out_dir / "cohort.yaml"
    settings_file = out_dir / "prepare.yaml"
    check_cohort(cohort, progress=False)  # raises before anything is written
    _claim_run_dir(out_dir, settings_file, config, force, replace_other, inputs=cohort_inputs(cohort))

    tasks = [{"key": case.id, "case": case, "out_dir": out_dir, "config": config, "femur_config": femur_config}
             for case in cohort.cases]
    done: dict[str, Case] = {}
    iterator = iter(map_tasks(_prepare_task, tasks, workers=workers, scheduler=scheduler, progress=progress,
                              desc="prepare"))
    try:
        for case in iterator:
            if isinstance(case, _DiskFull):  # stop at once: every other write would fail too
                raise DiskFullError(errno.ENOSPC, case.message)
            done[case.id] = case
    finally:
        iterator.close()  # pending cases are cancelled
    cases = [done[case.id] for case in cohort.cases]
    prepared = Cohort(
        name=f"{cohort.name}-prepared",
        prepared=PreparedInfo(spacing=config.spacing, hu_window=config.hu_window),
        cases=cases,
    )
    prepared.save(manifest)
    log.info("prepared %d cases -> %s", len(cases), manifest)
    return manifest


INPUTS_FILE = "prepare_inputs.json"  # which cohort the folder's cases come from (see _input_changes)


def cohort_inputs(cohort: Cohort) -> dict:
    """What a preparation is made of, beside its settings: the case ids and a digest of what the
    manifest says of each case that the prepared files depend on (its image, masks and side; paths
    relative to the manifest's folder, so a moved cohort is the same). Another cohort (other
    cases, other files) differs; a case whose files were written again does not (it is redone)."""
    import hashlib
    import json

    from .cohort import _relative

    base = (cohort.root or Path.cwd()).resolve()

    def rel(path) -> str | None:
        return None if path is None else _relative(Path(path), base)

    def digest(data) -> str:
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    described = [{"id": c.id, "image": rel(c.image), "femur_mask": rel(c.femur_mask), "side": c.side,
                  "lesion_masks": [[rel(a.path), a.annotator, a.round] for a in c.lesion_masks]}
                 for c in cohort.cases]
    return {"cohort": cohort.name, "cases": [c.id for c in cohort.cases], "cases_digest": digest(described),
            # per case, so that cases added to the manifest are prepared beside the others (_input_changes)
            "case_digests": {d["id"]: digest(d) for d in described}}


def _ids(ids) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:6]) + (f", ... ({len(ids)} cases)" if len(ids) > 6 else "")


def _input_changes(out_dir: Path, new: dict) -> list[str]:
    """How the cohort the folder was prepared from differs from ``new`` (:func:`cohort_inputs`).
    Cases added to the manifest, the others unchanged, are no difference: a rerun prepares them.

    A folder prepared before :data:`INPUTS_FILE` existed is judged by the cases it holds (its
    ``sources/`` and ``cohort.yaml``): a case not in the new cohort makes it another preparation."""
    from .fileio import read_json

    record = out_dir / INPUTS_FILE
    new_ids = set(new["cases"])
    if record.is_file():
        old = read_json(record, what="the record of a preparation's cohort")
        if not isinstance(old, dict):
            return [f"{INPUTS_FILE} unreadable"]
        old_ids = set(old.get("cases") or [])
        per_case = old.get("case_digests")
        if isinstance(per_case, dict):
            # only the cases prepared to the end bind the folder: cases added to the manifest are made
            # beside them, and one that never finished (it failed) may be dropped or pointed at other files
            finished = {p.stem for p in (out_dir / "sources").glob("*.json")} & set(per_case)
            removed = sorted(finished - new_ids)
            if removed:
                return [f"cases {_ids(removed)} are prepared here but not in cohort {new['cohort']!r}"]
            changed = sorted(i for i in finished if per_case[i] != new["case_digests"].get(i))
            if changed:
                return [f"cases {_ids(changed)}: other image or mask files (or sides) than prepared"]
            return []
        if old_ids != new_ids:
            return [f"cases: {_ids(old_ids)} -> {_ids(new_ids)}"]
        if old.get("cases_digest") != new["cases_digest"]:
            return [f"cohort {old.get('cohort')!r} -> {new['cohort']!r}: the same case ids with other image or "
                    "mask files (or sides)"]
        return []
    held = {p.stem for p in (out_dir / "sources").glob("*.json")}
    manifest = out_dir / "cohort.yaml"
    if manifest.is_file():
        try:
            from .config import read_yaml

            data = read_yaml(manifest, error=InputError)
            held |= {str(c.get("id")) for c in data.get("cases", []) if isinstance(c, dict)}
        except (InputError, ValueError, AttributeError):
            pass
    others = held - new_ids
    return [f"cases {_ids(others)} are not in cohort {new['cohort']!r}"] if others else []


def _claim_run_dir(out_dir: Path, settings_file: Path, config: PrepareConfig, force: bool,
                   replace_other: bool = False, inputs: dict | None = None) -> None:
    from .fileio import write_json
    from .outdir import OutputFolder, differences

    folder = OutputFolder(out_dir, "a preparation", settings_file.name,
                          outputs=("images", "femur", "lesions", "sources", "cohort.yaml", INPUTS_FILE))
    new = config.model_dump(mode="json")

    def changes(record: Path) -> list[str]:
        found = differences(PrepareConfig.from_yaml(record).model_dump(mode="json"), new)
        return found + (_input_changes(out_dir, inputs) if inputs is not None else [])

    folder.claim(changes, force=force, replace_other=replace_other)
    config.to_yaml(settings_file)
    if inputs is not None:
        write_json(out_dir / INPUTS_FILE, inputs)


@dataclass(frozen=True)
class _DiskFull:
    """What a task returns instead of raising when the disk filled up (so the run stops at once)."""

    message: str


def _prepare_task(task: dict) -> Case | _DiskFull:
    try:
        return _prepare_and_write(task["case"], task["out_dir"], task["config"], task["femur_config"])
    except DiskFullError as err:
        return _DiskFull(str(err))


def _prepare_and_write(case: Case, out_dir: Path, config: PrepareConfig, femur_config) -> Case:
    paths = {
        "image": out_dir / "images" / f"{case.id}.nii.gz",
        "femur": out_dir / "femur" / f"{case.id}.nii.gz",
    }
    for ann in case.lesion_masks:
        paths[annotation_key(ann)] = out_dir / "lesions" / f"{case.id}__{ann.annotator}_r{ann.round}.nii.gz"
    source_file = out_dir / "sources" / f"{case.id}.json"
    from .fileio import files_stamp, read_json, write_json

    # the case's input files as they are now: a case whose scan or masks were written again is redone
    inputs = files_stamp([case.image, case.femur_mask, *(ann.path for ann in case.lesion_masks)])
    done = all(p.exists() for p in paths.values()) and source_file.exists()
    if done and read_json(source_file).get("input_files", inputs) != inputs:
        log.info("case %s: its input files were written again since it was prepared; preparing it again", case.id)
        done = False
    if not done:
        try:
            volumes = prepare_case(case, config, femur_config)
        except InputError as err:
            raise InputError(about_case(case.id, err)) from None
        source = {**volumes.pop("_source"), "input_files": inputs}
        for key, vol in volumes.items():
            vol.write(paths[key])  # type: ignore[union-attr]
        write_json(source_file, source)  # written last: marks the case complete
    source = read_json(source_file)
    return case.model_copy(update={
        "image": paths["image"],
        "femur_mask": paths["femur"],
        "lesion_masks": [ann.model_copy(update={"path": paths[annotation_key(ann)]})
                         for ann in case.lesion_masks],
        "source": source,
    })
