"""Inference on a cohort or on image files: every case segmented (:mod:`.volume_inference` does
one volume), the folds' predictions of a cross-validated model put together.

:func:`predict_cohort` does a whole manifest (in parallel with
:func:`metsynth.parallel.map_tasks`), skipping cases already written.

Cross-validation (``fold`` and ``splits``, ``metsynth predict --fold K --splits splits.json``):
only the cases fold K's model was not trained on are predicted, as the study's predict stage
chooses them: test fold K's cases plus the test-only cases (role ``test``, in no fold, never
trained on; every fold's model predicts them)
(:func:`metsynth.evaluation.splits.held_out_cases`, which checks the splits against the cohort
as training does). A model records the fold it was trained for; predicting another fold with it
is refused (that fold's cases are among its training cases). Without ``fold``, a model trained
for fold F is run on fold F when ``splits`` is given; without ``splits``, a manifest holding cases
it trained on or validated on (its ``training_set.json``) is refused, since their masks would be
scored as results. The fold and the splits file are recorded in ``predict.json``, where
``metsynth evaluate`` finds them.

The test-only cases of a cross-validated model are predicted by its folds together
(:class:`ModelEnsemble`: the mean of the folds' lesion probabilities, thresholded and
post-processed once, as nnU-Net ensembles folds). A vote of the folds' binary masks would, with
two folds, keep only what both found: on the demo's seeds 0-3 that lowered the Real model's mean
Dice on its 24 test-only cases (the demo's then) by 0.07-0.34, the fine-tuned synthetic model's by 0.01-0.12
(benchmarks/RESULTS.md, "The test-only cases by the folds together").
:func:`gather_fold_predictions` assembles the folds' predictions of one model
(``<model>/fold<k>/``, ``<model>/test_only/``) into ``<model>/<case>.nii.gz`` as the study does.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..devices import resolve_device
from ..errors import ConfigError, InputError
from ..fileio import copy_file, file_sha256, files_index, files_stamp, read_json, write_json
from ..outdir import FILE_INDEX, OutputFolder, recorded_changes
from ..volume import Volume
from .postprocess import PostprocessConfig
from .presets import InferenceConfig
from .volume_inference import (
    ModelEnsemble,
    Prediction,
    SegmentationModel,
    empty_grid,
    predict_volume,
    resample_linear,
    restore_source_grid,
)

log = logging.getLogger(__name__)

Grid = Literal["input", "source"]


AUTO_FEMUR = "auto"  # --femur auto: each image's femur found by metsynth.bone.segment_femur


@dataclass(frozen=True)
class PredictTask:
    """One volume to segment (picklable: paths and settings only)."""

    key: str
    image: str
    out: str
    femur: str | None  # a mask's path, AUTO_FEMUR (found in the image, on femur_side), or None
    standardized: bool
    source: dict[str, Any] | None
    grid: str
    model: str | tuple[str, ...]  # several: a fold ensemble (mean probability)
    device: str
    postprocess: dict[str, Any]
    inference: dict[str, Any]
    threads: int = 0
    femur_side: str | None = None  # with AUTO_FEMUR: the manifest's side of the case (None: every femur)


_MODELS: dict[tuple[Any, str], SegmentationModel | ModelEnsemble] = {}


def _load(path: str | tuple[str, ...], device: str) -> SegmentationModel | ModelEnsemble:
    if isinstance(path, str):
        return SegmentationModel.load(path, device)
    return ModelEnsemble([SegmentationModel.load(p, device) for p in path])


def _model_for(path: str | tuple[str, ...], device: str) -> SegmentationModel | ModelEnsemble:
    key = (path, device)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = _load(path, device)
    return _MODELS[key]


def run_predict_task(task: PredictTask) -> dict[str, Any]:
    """Segment one volume and write its mask (atomically); returns a row of ``predictions.csv``."""
    import time

    from ..devices import torch_threads

    start = time.perf_counter()
    with torch_threads(task.threads):  # put back after: a kept worker's later tasks
        return _predict(task, start)


def _check_intensities(image: Volume, standardized: bool) -> None:
    """Warn when an image's values contradict how it is read: a standardized image ([-1, 1]) taken
    as HU would be segmented as water, an image in HU taken as standardized as solid bone."""
    lo, hi = float(np.min(image.array)), float(np.max(image.array))
    if not standardized and -1.5 <= lo and hi <= 1.5:
        log.warning("%s: values in [%.2f, %.2f] look standardized, not HU; pass --standardized (a prepared "
                    "image), or give the scan in HU", image.path or image.name, lo, hi)
    elif standardized and (hi > 50 or lo < -50):
        log.warning("%s: values in [%.0f, %.0f] look like HU, not a standardized image; pass --hu",
                    image.path or image.name, lo, hi)


def _predict(task: PredictTask, start: float) -> dict[str, Any]:
    import time

    model = _model_for(task.model, task.device)
    image = Volume.read(task.image)
    _check_intensities(image, task.standardized)
    if task.femur == AUTO_FEMUR:
        from ..bone import segment_femur

        femur = segment_femur(image, side=task.femur_side)  # none found: an InputError naming the file
    else:
        femur = Volume.read(task.femur) if task.femur else None
    post = PostprocessConfig.from_dict(task.postprocess)
    if femur is None and post.keep_in_femur:
        log.warning("%s: no femur mask, so lesions are searched in the whole scan and the femur filter is "
                    "skipped; give --femur auto (metsynth finds the femur), --femur MASK, or --no-femur-filter",
                    task.image)
        post = post.merged(keep_in_femur=False)  # said here, with the file's name, not again below
    inf = InferenceConfig.from_dict(task.inference)
    if task.grid == "source" and task.source is not None:
        pred = predict_volume(model, image, femur, standardized=task.standardized,
                              postprocess_config=PostprocessConfig(min_lesion_mm3=0, keep_in_femur=False,
                                                                   fill_holes=False),
                              inference=inf, keep_probability=True)
        lo, hi = pred.box
        prob_full = np.zeros(image.shape, np.float32)
        prob_full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = pred.probability
        mask = restore_source_grid(image.with_array(prob_full), task.source, inf.threshold, femur, post)
        raw = pred.raw_voxels
    else:
        pred = predict_volume(model, image, femur, standardized=task.standardized, postprocess_config=post,
                              inference=inf)
        mask, raw = pred.mask, pred.raw_voxels
    mask.write(task.out)
    voxels = int(mask.array.sum())
    return {"case": task.key, "mask": task.out, "voxels": voxels, "raw_voxels": raw,
            "lesion_mm3": voxels * mask.voxel_volume_mm3, "seconds": time.perf_counter() - start}




def _trained_cases(model_path: Path) -> set[str] | None:
    """Ids of the real cases a model trained or validated on (its folder's ``training_set.json``);
    None when the file is not beside the model (a bare ``model.pt`` copied elsewhere)."""
    folder = model_path.parent
    if model_path.suffix == ".ckpt" and folder.name == "checkpoints":
        folder = folder.parent
    path = folder / "training_set.json"
    if not path.is_file():
        return None
    try:
        data = read_json(path)
        return {str(v["case"]) for part in ("train", "val") for v in data.get(part) or [] if v.get("source") == "real"}
    except (ValueError, TypeError, KeyError, AttributeError):
        log.warning("%s: unreadable; cannot tell which cases the model trained on", path)
        return None


def _fold_selection(model: SegmentationModel, model_path: Path, cohort: Any, manifest: Any,
                    fold: int | None, splits: str | os.PathLike | None) -> tuple[int | None, set[str] | None]:
    """The fold to predict and its cases (None: every case), refusing what would predict training cases."""
    trained_for = model.meta.get("fold")
    if (fold is not None or splits is not None) and trained_for is None:
        raise ConfigError(f"{model_path}: trained without --fold (on every metastatic case), so no fold is held out "
                          f"from it; drop --fold/--splits, or use a model trained with --fold")
    if fold is None and trained_for is not None and splits is not None:
        fold = int(trained_for)
        log.info("%s: trained for fold %d; predicting that fold's held-out cases (--fold %d)", model_path, fold, fold)
    if fold is not None and splits is None:
        raise ConfigError(f"--fold {fold} needs the splits file the model was trained with: pass --splits splits.json")
    ids: set[str] | None = None
    if fold is not None:
        from ..evaluation.splits import held_out_cases

        _, held_out = held_out_cases(splits, fold, cohort)  # type: ignore[arg-type]  # fold range, cohort
        if int(trained_for) != fold:
            raise ConfigError(f"{model_path}: trained for fold {trained_for}, so fold {fold}'s cases are among its "
                              f"training cases; predict fold {fold} with fold {fold}'s model, or pass "
                              f"--fold {trained_for}")
        ids = set(held_out) & {c.id for c in cohort.cases}
        if not ids:
            raise InputError(f"{manifest}: none of fold {fold}'s test or test-only cases ({', '.join(held_out[:5])}) "
                             f"is in this cohort; give the cohort the splits were made for")
    trained = _trained_cases(model_path)
    chosen = [c.id for c in cohort.cases if ids is None or c.id in ids]
    seen = sorted(set(chosen) & (trained or set()))
    if seen and fold is not None:
        raise InputError(f"{splits}: fold {fold}'s cases {', '.join(seen[:5])} are among the cases {model_path} "
                         "trained on: not the splits file it was trained with; pass that one")
    if seen and trained_for is not None:
        raise ConfigError(f"{manifest}: holds {len(seen)} case(s) that {model_path} trained on "
                          f"({', '.join(seen[:5])}); "
                          f"pass --fold {trained_for} --splits splits.json to predict only its held-out cases")
    if seen:
        log.warning("%s: %d case(s) of %s are its training cases (%s): their masks are not held-out results; do not "
                    "score them", model_path, len(seen), manifest, ", ".join(seen[:5]))
    elif trained is None and trained_for is not None and fold is None:
        log.warning("%s: trained for fold %s, but no training_set.json beside it tells which cases it trained on; "
                    "pass --fold %s --splits splits.json to predict only its held-out cases", model_path,
                    trained_for, trained_for)
    return fold, ids


def _ensemble_selection(paths: list[Path], cohort: Any, manifest: Any, fold: int | None,
                        splits: str | os.PathLike | None) -> set[str] | None:
    """The cases an ensemble predicts (None: every case): with ``splits``, its test-only cases; refused
    where any member trained on one of them (its result there would not be held out)."""
    if fold is not None:
        raise ConfigError(f"--fold {fold} picks one fold model's held-out cases; an ensemble of the folds' models "
                          "predicts the cases none of them trained on: pass --splits alone (its test-only cases), "
                          "or one model with --fold")
    ids: set[str] | None = None
    if splits is not None:
        from ..evaluation.splits import load_fold_splits

        split_obj = load_fold_splits(splits, 0, cohort)
        ids = set(split_obj.test_only) & {c.id for c in cohort.cases}
        if not ids:
            raise InputError(f"{manifest}: none of the test-only cases of {splits} is in this cohort; give the "
                             "cohort the splits were made for")
    chosen = {c.id for c in cohort.cases if ids is None or c.id in ids}
    for path in paths:
        seen = sorted(chosen & (_trained_cases(path) or set()))
        if seen:
            raise ConfigError(f"{manifest}: holds {len(seen)} case(s) that {path} trained on ({', '.join(seen[:5])}); "
                              "an ensemble predicts only cases none of its models trained on: pass --splits "
                              "splits.json to predict the test-only cases")
    return ids


def predict_cohort(
    model_path: str | os.PathLike | list[str | os.PathLike],
    inputs: str | os.PathLike | list[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    fold: int | None = None,
    splits: str | os.PathLike | None = None,
    femur: str | os.PathLike | None = None,
    grid: Grid = "input",
    standardized: bool | None = None,
    postprocess_config: PostprocessConfig | None = None,
    inference: InferenceConfig | None = None,
    device: str | None = "auto",
    workers: int = 1,
    scheduler: Any = None,
    force: bool = False,
    replace_other: bool = False,
    progress: bool = True,
) -> Path:
    """Segment every case of a manifest (or a list of image files) into ``out_dir``.

    ``inputs``: a cohort manifest (raw or prepared) or image file(s). Cases of a prepared
    cohort are standardized already; raw manifests and files are taken as HU (override with
    ``standardized``). ``grid="source"`` writes prepared cases' masks on their original scan's
    grid. Writes ``<out>/<case>.nii.gz``, ``predictions.csv`` and ``predict.json``; finished
    cases are skipped on a rerun with the same model, settings and input files. A folder holding
    predictions of another model, settings or input images (or other files) is refused, unless
    ``force`` or ``replace_other`` (for callers that own the folder, like the experiment runner):
    :class:`metsynth.outdir.OutputFolder`.

    ``fold`` and ``splits`` (a manifest only): predict only fold ``fold``'s held-out cases (its test
    fold and the test-only cases; see the module's docstring for the checks and the default fold).

    ``model_path`` a list of several models: a :class:`ModelEnsemble` (their mean probability,
    thresholded and post-processed once), e.g. the folds of a study. It predicts only cases none of
    its models trained on; with ``splits`` (and no ``fold``), the splits' test-only cases.
    """
    import pandas as pd

    from ..cohort import load_cohort
    from ..parallel import map_tasks

    given = [model_path] if isinstance(model_path, (str, os.PathLike)) else list(model_path)
    if not given:
        raise ConfigError("no model to predict with")
    model_paths = [Path(p) / "model.pt" if Path(p).is_dir() else Path(p) for p in given]
    if len(set(model_paths)) != len(model_paths):
        raise ConfigError(f"a model is given twice: {[str(p) for p in model_paths]}")
    members = [SegmentationModel.load(p, "cpu") for p in model_paths]  # validates the files early
    model = members[0] if len(members) == 1 else ModelEnsemble(members)
    model_path = model_paths[0]
    post = postprocess_config if postprocess_config is not None else model.config.postprocess
    inf = inference or model.config.inference
    out = Path(out_dir)
    device = str(resolve_device(device))

    auto = femur is not None and str(femur) == AUTO_FEMUR
    items: list[tuple[str, str, str | None, bool, dict | None]] = []
    sides: dict[str, str | None] = {}  # a manifest's side per case, for --femur auto
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if len(paths) == 1 and (Path(paths[0]).is_dir() and (Path(paths[0]) / "cohort.yaml").exists()
                            or str(paths[0]).endswith((".yaml", ".yml"))):
        cohort = load_cohort(paths[0])
        is_prepared = cohort.prepared is not None
        if femur is not None and not auto:
            raise ConfigError("--femur is for single image files; a manifest gives each case's femur mask "
                              "(--femur auto finds it where a case has none)")
        if len(members) == 1:
            fold, fold_ids = _fold_selection(model, model_path, cohort, paths[0], fold, splits)
        else:
            fold_ids = _ensemble_selection(model_paths, cohort, paths[0], fold, splits)
        for case in cohort.cases:
            if fold_ids is not None and case.id not in fold_ids:
                continue
            sides[case.id] = case.side
            items.append((case.id, str(case.image), str(case.femur_mask) if case.femur_mask else (
                AUTO_FEMUR if auto else None), is_prepared if standardized is None else standardized, case.source))
        if grid == "source" and not is_prepared:
            raise ConfigError("grid 'source' maps prepared cases back to their original scans; this manifest "
                              "is not prepared, and its masks are written on the input grid anyway (use grid 'input')")
    else:
        if fold is not None or splits is not None:
            raise ConfigError("--fold/--splits select the cases of a cohort manifest; image files are predicted "
                              "as given")
        if femur is not None and not auto and len(paths) != 1:
            raise ConfigError("--femur MASK goes with exactly one image file (--femur auto with any number)")
        for p in paths:
            name = Path(p).name
            for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            items.append((name, str(p), AUTO_FEMUR if auto else str(femur) if femur else None, bool(standardized),
                          None))
        if grid == "source":
            raise ConfigError("grid 'source' needs a prepared manifest; image files are always written on their "
                              "own grid")
    names: dict[str, list[str]] = {}
    for key, img, *_ in items:
        names.setdefault(key, []).append(img)
    shared = {key: files for key, files in names.items() if len(files) > 1}
    if shared:
        key, files = next(iter(shared.items()))
        raise ConfigError(f"inputs {', '.join(files)} share the name {key!r}, and each mask is written as "
                          f"<name>.nii.gz: give files with distinct names (rename or link one), or predict "
                          "them into separate --out folders")
    from ..fileio import check_not_an_input
    from ..volume import check_3d_header

    if any(fem == AUTO_FEMUR and std for _, _, fem, std, _ in items):  # cases with their own mask need none
        raise ConfigError("--femur auto finds the femur in HU; these images are standardized (a prepared cohort "
                          "gives each case's femur mask): give --femur MASK, or the scans in HU")
    inputs = [p for _, img, fem, *_ in items for p in (img, fem) if p not in (None, AUTO_FEMUR)]
    for key, img, fem, *_ in items:  # every input checked before anything is written
        for what, path in (("image", img), ("femur mask", fem)):
            if path not in (None, AUTO_FEMUR):  # a 2D slice or a 4D series refused here, before any case is predicted
                check_3d_header(path, f"{what} of {key!r}")
        check_not_an_input(out / f"{key}.nii.gz", inputs, "--out")  # even with --force: never a mask over a scan

    ensemble = len(model_paths) > 1
    settings = {"model": [str(p) for p in model_paths] if ensemble else str(model_path),
                "model_sha256": [file_sha256(p, 16) for p in model_paths] if ensemble else file_sha256(model_path, 16),
                "grid": grid,
                "postprocess": post.model_dump(), "inference": inf.model_dump(),
                # the images as they are now: scans written again since are predicted again
                "inputs": files_stamp(inputs),
                FILE_INDEX: {"inputs": files_index(inputs)}}
    # None without auto: a record from before --femur auto existed (no key) reads as None, the same run;
    # a folder predicted with auto and one without are other runs of each other
    settings["femur"] = AUTO_FEMUR if auto else None
    if fold is not None:  # read by `metsynth evaluate` (its default fold) and gather_fold_predictions
        settings.update(fold=fold, splits=str(Path(splits).resolve()))  # type: ignore[arg-type]
    elif ensemble and splits is not None:  # the test-only cases: read by gather_fold_predictions
        settings.update(test_only=True, splits=str(Path(splits).resolve()))
    folder = OutputFolder(out, "predictions", "predict.json", outputs=("*.nii.gz", "predictions.csv"),
                          ignore=("cases.yaml",))  # the study's manifest of the fold's cases
    existed = out.exists()
    def changes(record: Path) -> list[str]:
        # scans added to the command (the others, the model and the settings as they were) are predicted
        # beside the masks already there; a scan left out or written again makes it another run
        return [c for c in recorded_changes(record, settings) if not c.endswith(": a new input")]

    state = folder.claim(changes, force=force, replace_other=replace_other).state
    write_json(folder.record_file, settings)

    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0
    task_model: str | tuple[str, ...] = tuple(str(p) for p in model_paths) if ensemble else str(model_path)
    tasks = [
        PredictTask(key=key, image=img, out=str(out / f"{key}.nii.gz"), femur=fem, standardized=std, source=src,
                    grid=grid, model=task_model, device=device, postprocess=post.model_dump(),
                    inference=inf.model_dump(), threads=threads,
                    femur_side=sides.get(key) if fem == AUTO_FEMUR else None)
        for key, img, fem, std, src in items
    ]
    table_file = out / "predictions.csv"
    rows: dict[str, dict[str, Any]] = {}
    if table_file.exists():
        for row in pd.read_csv(table_file, dtype={"case": str}).to_dict("records"):
            rows[row["case"]] = row
    todo = [t for t in tasks if not (Path(t.out).exists() and t.key in rows)]
    if len(todo) < len(tasks):
        log.info("%d of %d cases already predicted: skipped", len(tasks) - len(todo), len(tasks))
    if workers == 1 and scheduler is None:
        _MODELS.clear()
        _MODELS[(task_model, device)] = model if device == "cpu" else _load(task_model, device)
    try:
        for row in map_tasks(run_predict_task, todo, workers=workers, scheduler=scheduler, progress=progress,
                             desc="predict"):
            rows[row["case"]] = row
    except BaseException:
        if state == "new" and not rows:  # nothing predicted (an unusable image): leave no record to refuse a rerun
            if existed:
                folder.record_file.unlink(missing_ok=True)
            else:
                import shutil

                shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        if rows:
            from ..fileio import atomic_path

            table = pd.DataFrame([rows[k] for k in sorted(rows)])
            with atomic_path(table_file) as tmp:
                table.to_csv(tmp, index=False)
    return out


TEST_ONLY_DIR = "test_only"  # a model's folder of the test-only cases predicted by its folds' ensemble


def combine_fold_predictions(final: Path, splits) -> None:
    """``final/<case>.nii.gz``: each cross-validated case from the fold that held it out
    (``final/fold<k>/``), each test-only case from the folds' ensemble (``final/test_only/``: the
    folds' mean probability, :class:`ModelEnsemble`); ``metsynth experiment``'s predict stage and
    :func:`gather_fold_predictions`."""
    for fold in range(splits.n_folds):
        for case in splits.test(fold):
            copy_file(final / f"fold{fold}" / f"{case}.nii.gz", final / f"{case}.nii.gz")
    for case in splits.test_only:
        copy_file(final / TEST_ONLY_DIR / f"{case}.nii.gz", final / f"{case}.nii.gz")


def missing_fold_predictions(model_dir: str | os.PathLike) -> tuple[Any, list[str]] | None:
    """What :func:`gather_fold_predictions` still needs in ``model_dir``: ``(splits, missing)``, where
    ``missing`` lists the folders (``fold<k>``, ``test_only``) not yet predicted; None when no
    ``fold<k>/`` there was predicted with ``--fold`` (nothing to gather)."""
    from ..evaluation.splits import load_splits

    root = Path(model_dir)
    records: dict[int, str] = {}
    for sub in root.glob("fold*"):
        marker = sub / "predict.json"
        if sub.name[4:].isdigit() and marker.is_file():
            data = read_json(marker)
            if isinstance(data, dict) and data.get("fold") == int(sub.name[4:]) and data.get("splits"):
                records[int(sub.name[4:])] = data["splits"]
    if not records or len(set(records.values())) != 1:
        return None
    split_path = next(iter(records.values()))
    split_obj = load_splits(split_path)
    missing = []
    for k in range(split_obj.n_folds):
        if k not in records or any(not (root / f"fold{k}" / f"{case}.nii.gz").is_file()
                                   for case in split_obj.test(k)):
            missing.append(f"fold{k}")
    if split_obj.test_only:
        marker = root / TEST_ONLY_DIR / "predict.json"
        data = read_json(marker) if marker.is_file() else None
        if not (isinstance(data, dict) and data.get("test_only") and data.get("splits") == split_path
                and all((root / TEST_ONLY_DIR / f"{case}.nii.gz").is_file() for case in split_obj.test_only)):
            missing.append(TEST_ONLY_DIR)
    return split_obj, missing


def gather_fold_predictions(model_dir: str | os.PathLike) -> list[Path] | None:
    """Assemble one model's per-fold predictions into the study's layout, once every part is there.

    ``model_dir`` holds ``fold<k>/`` folders written by ``predict_cohort(..., fold=k)`` (``metsynth
    predict --fold k -o MODEL_DIR/fold<k>``) and, when the splits have test-only cases,
    ``test_only/`` written by the folds' ensemble (``metsynth predict FOLD0_MODEL --ensemble
    FOLD1_MODEL ... --splits splits.json -o MODEL_DIR/test_only``). When every fold of their splits
    file is predicted (each folder's ``predict.json`` records its fold and the same splits, and holds
    its test fold's cases) and so are the test-only cases, writes ``MODEL_DIR/<case>.nii.gz`` as
    ``metsynth experiment`` does (:func:`combine_fold_predictions`). Returns the masks written, or
    None while a part is missing (nothing is written then).
    """
    state = missing_fold_predictions(model_dir)
    if state is None or state[1]:
        return None
    split_obj = state[0]
    root = Path(model_dir)
    combine_fold_predictions(root, split_obj)
    return [root / f"{case}.nii.gz" for case in sorted(set(split_obj.cases) | set(split_obj.test_only))]


__all__ = [
    "TEST_ONLY_DIR", "ModelEnsemble", "Prediction", "PredictTask", "SegmentationModel", "combine_fold_predictions",
    "empty_grid", "gather_fold_predictions", "missing_fold_predictions", "predict_cohort", "predict_volume",
    "resample_linear", "resolve_device", "restore_source_grid", "run_predict_task",
]
