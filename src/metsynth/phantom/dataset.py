"""A phantom cohort on disk: NIfTI images and masks, a ``cohort.yaml`` manifest, previews.

Layout of ``out_dir``::

    cohort.yaml            the manifest (metsynth.cohort schema)
    phantom.json           how it was made (seed, counts, config): a rerun compares it
    images/<id>.nii.gz     int16 HU
    femur/<id>.nii.gz      uint8 femur mask (lesions inside the bone included, pelvis excluded)
    lesions/<id>.nii.gz    uint8 exact lesion mask ("reference")
    lesions/<id>_<annotator><round>.nii.gz   simulated operators (test cases)
    meta/<id>.json         every drawn parameter and the lesions' sizes and sites
    previews/<id>.png      slices with outlines (with ``preview=True``)

Each case's seed is ``SeedSequence([seed, role, index])``: a case does not depend on how many
other cases are made, nor on the order or the number of processes that make them.

Before anything is written, the cases still to make times their estimated size (from each
centre's grid: :func:`estimate_cohort_bytes`) must fit the free space of ``out_dir``; a disk that
fills up anyway stops the run at the first failed write with one line naming the file
(:class:`~metsynth.fileio.DiskFullError`), nothing left under a final name.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..fileio import DiskFullError, check_free_space, read_json, write_json
from .case import PhantomCase, generate_case
from .config import PhantomConfig

log = logging.getLogger(__name__)

ROLE_CODES = {"healthy": 0, "metastatic": 1, "test": 2}
ROLE_PREFIX = {"healthy": "H", "metastatic": "M", "test": "T"}
GENERATOR = "metsynth.phantom"
FORMAT_VERSION = 1  # bump when the same parameters would give different images


@dataclass(frozen=True)
class CaseTask:
    """What one worker needs to make one case (small and picklable)."""

    key: str
    role: str
    index: int
    seed: int
    centre: str
    out_dir: str
    config: dict
    preview: bool


def case_seed(seed: int, role: str, index: int) -> np.random.SeedSequence:
    """The seed of the ``index``-th case (0-based) of a role."""
    return np.random.SeedSequence([int(seed), ROLE_CODES[role], int(index)])


def case_files(case_id: str, role: str, config: PhantomConfig) -> dict[str, Any]:
    """Relative paths of a case's files; annotator files keyed by (annotator, round)."""
    files: dict[str, Any] = {"image": f"images/{case_id}.nii.gz", "femur": f"femur/{case_id}.nii.gz",
                             "meta": f"meta/{case_id}.json", "preview": f"previews/{case_id}.png"}
    if role != "healthy":
        files["lesion"] = f"lesions/{case_id}.nii.gz"
    if role == "test" or (role == "metastatic" and config.annotate_metastatic):
        files["annotations"] = {(name, rnd): f"lesions/{case_id}_{name}{rnd}.nii.gz"
                                for name, prof in config.annotators.items() for rnd in range(1, prof.rounds + 1)}
    return files


def _all_paths(files: dict[str, Any], preview: bool) -> list[str]:
    paths = [v for k, v in files.items() if k not in ("annotations", "preview")]
    paths += list(files.get("annotations", {}).values())
    if preview:
        paths.append(files["preview"])
    return paths


def generate_cohort(out_dir: str | os.PathLike, n_healthy: int, n_metastatic: int, n_test: int = 0, seed: int = 0,
                    config: PhantomConfig | None = None, preview: bool = False, force: bool = False,
                    progress: bool = False, workers: int = 1, name: str = "phantom",
                    replace_other: bool = False) -> Path:
    """Write a phantom cohort to ``out_dir`` and return the path of its ``cohort.yaml``.

    Cases: ``H001..`` healthy, ``M001..`` metastatic (1-3 lesions, exact reference mask),
    ``T001..`` test (metastatic, plus the configured operators' masks: A and B in two rounds,
    C once). Centres cycle through the configured ones within each role (healthy from the first,
    metastatic from the second, test from the third). A folder already made with the same
    parameters is completed (existing files are kept); one made with other parameters (or a
    folder of other files) is an error unless ``force=True`` (or ``replace_other``, the study's),
    which regenerates everything (:class:`metsynth.outdir.OutputFolder`).
    """
    from ..parallel import map_tasks

    config = config or PhantomConfig()
    for label, n in (("n_healthy", n_healthy), ("n_metastatic", n_metastatic), ("n_test", n_test)):
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ConfigError(f"{label} must be a whole number >= 0, got {n!r}")
    if n_healthy + n_metastatic + n_test == 0:
        raise ConfigError("the cohort would be empty: ask for at least one healthy, metastatic or test case")
    out = Path(out_dir)
    params = {"generator": GENERATOR, "format": FORMAT_VERSION, "name": name, "seed": int(seed),
              "n_healthy": int(n_healthy), "n_metastatic": int(n_metastatic), "n_test": int(n_test),
              "config": config.model_dump(mode="json")}
    counts = {"healthy": int(n_healthy), "metastatic": int(n_metastatic), "test": int(n_test)}
    _check_output_fits(out, counts, config, preview, force or replace_other)
    _claim(out, params, force, replace_other)
    write_json(out / "phantom.json", params)

    centres = list(config.centres)
    tasks = []
    for role, n in (("healthy", n_healthy), ("metastatic", n_metastatic), ("test", n_test)):
        for i in range(n):
            case_id = f"{ROLE_PREFIX[role]}{i + 1:03d}"
            centre = centres[(i + ROLE_CODES[role]) % len(centres)]  # each role cycles through the centres
            tasks.append(CaseTask(case_id, role, i, int(seed), centre, str(out),
                                  params["config"], preview))
    todo = [t for t in tasks if not all((out / p).exists() for p in
                                                  _all_paths(case_files(t.key, t.role, config), preview))]
    if todo:
        iterator = iter(map_tasks(_make_case_or_disk_full, todo, workers=workers, progress=progress,
                                  desc="phantom cases"))
        try:
            for result in iterator:
                if isinstance(result, DiskFull):  # stop at once: every other write would fail too
                    raise DiskFullError(errno.ENOSPC, result.message)
        finally:
            iterator.close()
    manifest = _write_manifest(out, name, tasks, config)
    log.info("phantom cohort: %s (%d cases, %d generated)", manifest, len(tasks), len(todo))
    return manifest


@dataclass(frozen=True)
class DiskFull:
    """What a task returns instead of raising when the disk filled up (so the run stops at once)."""

    message: str


def _make_case_or_disk_full(task: CaseTask) -> str | DiskFull:
    try:
        return make_case(task)
    except DiskFullError as err:
        return DiskFull(str(err))


# Bytes per voxel of the files of a case, measured on the `small` preset (gzip level 1): int16
# HU with noise 1.34, femur mask 0.027, a lesion mask 0.005; rounded up as margins.
IMAGE_BYTES_PER_VOXEL = 1.5
FEMUR_BYTES_PER_VOXEL = 0.05
LESION_BYTES_PER_VOXEL = 0.02
META_BYTES = 32 * 1024
PREVIEW_BYTES = 256 * 1024  # a PNG of 3 x 2 cells of 420 px (76-162 KB measured)
BLOCK = 4096


def estimate_cohort_bytes(counts: dict[str, int], config: PhantomConfig, preview: bool = False) -> float:
    """Bytes the files of ``counts`` cases per role take, from each centre's grid (cases cycle
    through the centres as :func:`generate_cohort` assigns them) and the bytes per voxel above."""
    centres = list(config.centres)
    k = len(centres)

    def blocks(n: float) -> float:
        return BLOCK * float(np.ceil(max(n, 1.0) / BLOCK))

    total = 0.0
    for role, n in counts.items():
        code = ROLE_CODES[role]
        masks = 0
        if role != "healthy":
            masks = 1
            if role == "test" or config.annotate_metastatic:
                masks += sum(prof.rounds for prof in config.annotators.values())
        for ci, centre in enumerate(centres):
            # cases i of the role with (i + code) % k == ci
            first = (ci - code) % k
            m = 0 if n <= first else (n - first + k - 1) // k
            if not m:
                continue
            spacing = config.centre_spacing(centre)
            voxels = float(np.prod([max(int(round(f / s)), 8) for f, s in zip(config.fov_mm, spacing)]))
            case = (blocks(voxels * IMAGE_BYTES_PER_VOXEL) + blocks(voxels * FEMUR_BYTES_PER_VOXEL)
                    + masks * blocks(voxels * LESION_BYTES_PER_VOXEL) + META_BYTES + (PREVIEW_BYTES if preview else 0))
            total += m * case
    return total


def _check_output_fits(out: Path, counts: dict[str, int], config: PhantomConfig, preview: bool, force: bool) -> None:
    """Refuse (before anything is written) a cohort whose missing cases cannot fit on the disk."""
    count = sum(counts.values())
    estimate = estimate_cohort_bytes(counts, config, preview)
    images = out / "images"
    if images.is_dir() and not force:  # a completed folder: only the missing cases are still to be written
        done = sum(1 for e in os.scandir(images) if e.name.endswith(".nii.gz") and not e.name.startswith("."))
        remaining = max(count - done, 0)
        estimate = estimate * remaining / count
        count = remaining
    check_free_space(out, count, estimate, "phantom cases",
                     "ask for fewer cases (--healthy, --metastatic, --test) or choose another --out with more "
                     "free space")


def make_case(task: CaseTask) -> str:
    """Generate one case and write its missing files."""
    config = PhantomConfig.from_dict(task.config, source="phantom config")
    out = Path(task.out_dir)
    case = generate_case(task.key, task.role, case_seed(task.seed, task.role, task.index), config, centre=task.centre)
    files = case_files(task.key, task.role, config)

    def needed(rel: str) -> bool:
        return not (out / rel).exists()

    if needed(files["image"]):
        case.image.write(out / files["image"])
    if needed(files["femur"]):
        case.femur.write(out / files["femur"])
    if "lesion" in files and case.lesion is not None and needed(files["lesion"]):
        case.lesion.write(out / files["lesion"])
    for key, rel in files.get("annotations", {}).items():
        if needed(rel):
            case.annotations[key].write(out / rel)
    if needed(files["meta"]):
        write_json(out / files["meta"], {"case": task.key, "role": task.role,
                                         "seed": [task.seed, ROLE_CODES[task.role], task.index],
                                         "lesions": case.lesions, "parameters": case.params})
    if task.preview and needed(files["preview"]):
        write_preview(case, out / files["preview"])
    return task.key


def write_preview(case: PhantomCase, path: Path) -> Path:
    """Axial, coronal and sagittal slices through the largest lesion (or the femoral neck) and,
    below, through the femoral neck, with the femur, lesion and operators' outlines."""
    from ..viz import montage, volume_slices

    masks: dict[str, tuple[Any, str]] = {"femur": (case.femur, "#ffd000")}
    if case.lesion is not None:
        masks["lesion"] = (case.lesion, "#ff2a2a")
    colours = {"A": "#33ff66", "B": "#ff66ff", "C": "#33ccff"}
    for (who, rnd), vol in case.annotations.items():
        if rnd == 1:
            masks[f"{who}{rnd}"] = (vol, colours.get(who, "white"))
    neck = np.asarray(case.params["anatomy"]["derived"]["neck_base_world"]) * 0.5 \
        + np.asarray(case.params["anatomy"]["derived"]["head_centre_world"]) * 0.5
    rows = []
    spacing = "x".join(f"{s:g}" for s in case.image.spacing)
    if case.lesions:
        big = max(case.lesions, key=lambda lesion: lesion["volume_mm3"])
        tiles = volume_slices(case.image, case.image.world_to_index(np.asarray(big["centre_world"])), masks)
        cap = (f"lesion {big['index']}: {big['region']}, {big['volume_mm3']:.0f} mm3"
               + (", breaks cortex" if big["breaks_cortex"] else ""))
        rows.append([_captioned(t, f"{plane} | {cap}") for plane, t in tiles.items()])
    tiles = volume_slices(case.image, case.image.world_to_index(neck), masks)
    rows.append([_captioned(t, f"{plane} | femoral neck") for plane, t in tiles.items()])
    legend = ", ".join(masks)
    title = (f"{case.case_id} ({case.role}, centre {case.centre}, {case.side} femur, {spacing} mm, "
             f"{len(case.lesions)} lesion(s)) - outlines: {legend}")
    return montage(rows, path, window="wide", title=title, cell_px=420)


def _captioned(tile, caption: str):
    tile.title = caption
    return tile


def _claim(out: Path, params: dict, force: bool, replace_other: bool) -> None:
    from ..outdir import OutputFolder, recorded_changes

    OutputFolder(out, "a phantom cohort", "phantom.json",
                 outputs=("images", "femur", "lesions", "meta", "previews", "cohort.yaml")).claim(
        lambda record: recorded_changes(record, params), force=force, replace_other=replace_other)


def _write_manifest(out: Path, name: str, tasks: list[CaseTask], config: PhantomConfig) -> Path:
    from ..cohort import Case, Cohort, LesionAnnotation

    cases = []
    for t in tasks:
        files = case_files(t.key, t.role, config)
        masks = []
        if "lesion" in files:
            masks.append(LesionAnnotation(path=out / files["lesion"], annotator="reference", round=1,
                                          expertise="reference"))
        for (who, rnd), rel in files.get("annotations", {}).items():
            masks.append(LesionAnnotation(path=out / rel, annotator=who, round=rnd,
                                          expertise=config.annotators[who].expertise))
        side = read_json(out / files["meta"])["parameters"]["side"] if (out / files["meta"]).exists() else None
        cases.append(Case(id=t.key, image=out / files["image"], role=t.role, centre=t.centre, patient=t.key,
                          side=side, femur_mask=out / files["femur"], lesion_masks=masks))
    return Cohort(name=name, cases=cases).save(out / "cohort.yaml")
