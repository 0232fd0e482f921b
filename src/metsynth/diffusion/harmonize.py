"""Harmonization (``metsynth harmonize``): SDEdit with DDIM on synthetic volumes.

Each volume is noised to ``start_timestep`` (equation 2 of the paper) and denoised with DDIM
through the grid timesteps at or below it (:func:`~metsynth.diffusion.schedule.ddim_timesteps`).
The network's noise estimate for a region larger than one patch is computed window by window
(MONAI ``sliding_window_inference``, Gaussian-weighted blending of overlapping windows) at every
step, so the whole region shares one noise field and one trajectory: no seams.

``region``:

* ``lesion``: a box around each lesion of the label (``lesion_margin_mm`` plus ``feather_mm``,
  grown to at least one patch, overlapping boxes merged) is refined and blended back with a
  weight that is 1 over the lesion and its margin and falls to 0 over ``feather_mm`` towards the
  box border. Voxels outside the boxes are not changed (bit for bit).
* ``volume``: the whole volume is refined (the paper's use).

Determinism: each volume's noise comes from a CPU ``torch.Generator`` seeded with
``SeedSequence([seed, stable_hash(volume_id)])``, so the same settings give the same bytes on CPU
whatever the number of workers, their order or the scheduler: every task runs on the same number
of torch threads (``threads``, 1 by default; floating-point sums in the convolutions depend on
it, so a default of "the cores divided among the workers" gave other bytes for ``--workers 1``
and ``--workers 2``). Parallelism comes from the worker processes. The sidecar records the
threads. GPU kernels are not bit-reproducible in general.

Input: a synthetic set folder (``images/``, ``labels/``, optional ``sidecars/`` and
``index.csv``; any folder with that layout works). Output: the same layout in a new folder;
each sidecar is the synthesis sidecar plus ``harmonization`` (source files, checkpoint sha256,
start timestep, DDIM steps, timesteps, seed, boxes) and ``consistency``
(:mod:`~metsynth.diffusion.consistency`). Files are written atomically, the sidecar last; a rerun
skips finished volumes, unless their synthetic files were written again since (``source_stamp``).

Storage: ``image_storage: int16`` stores one HU per step of the HU window the synthetic set's
cohort was prepared with (the ``intensity`` record of the set's ``config.yaml``), with NIfTI
``scl_slope``/``scl_inter`` (:class:`~metsynth.volume.IntensityScale`); a set without that record
gets a step of 2^-14 of [-1, 1] instead. An int16 synthetic set harmonized to int16 keeps the
stored integers of every voxel the harmonization leaves alone. ``image_layout: changed_box`` stores
each image as the box where it differs from its synthetic image (:mod:`metsynth.boxed`), which
``Volume.read`` puts back whole: with ``region: lesion``, a few kB a volume.

Modules: :mod:`.denoiser` (the network), :mod:`.refine` (SDEdit on an array and on one volume),
:mod:`.regions` (lesion boxes and their blend weight), :mod:`.source_set` (the synthetic set read),
:mod:`.harmonize_task` (one volume, written); this module runs a set and re-exports their names.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..devices import resolve_device
from ..errors import ConfigError, InputError
from ..fileio import file_sha256, files_stamp, read_json, remove_stale_temps, write_text
from ..synthesis.sets import finished_sidecar
from .denoiser import Denoiser, cached_denoiser, checkpoint_settings, load_denoiser, read_checkpoint
from .harmonize_task import HarmonizeTask, run_task
from .presets import HarmonizeConfig, check_harmonize
from .refine import count_windows, harmonize_volume, predict_noise_tiled, refine_array, volume_seed
from .regions import Box, feather_weight, lesion_boxes
from .schedule import ddim_timesteps
from .source_set import SyntheticItem, output_scale, read_synthetic_set, source_hu_window

log = logging.getLogger(__name__)

EXTRA_COLUMNS = ("source_image", "harmonize_region", "start_timestep", "ddim_steps", "checkpoint_sha256",
                 "contrast_before", "contrast_after", "contrast_ratio", "consistent")
OUTPUT_DIRS = ("images", "labels", "sidecars")
OUTPUT_FILES = ("index.csv", "consistency.csv", "harmonize.yaml", "preview.png")


# ----------------------------------------------------------------------------- the run
def _harmonized(out: Path, item: SyntheticItem) -> bool:
    """Whether ``item`` is harmonized in ``out`` from its synthetic files as they are now (a volume
    that the synthesis wrote again since, e.g. after a change of its settings, is redone)."""
    sidecar = finished_sidecar(out, item.volume_id)
    if sidecar is None:
        return False
    recorded = (sidecar.get("harmonization") or {}).get("source_stamp")
    return recorded is None or recorded == files_stamp([item.image, item.label])


@dataclass
class HarmonizeSummary:
    out_dir: Path
    volumes: int
    done_before: int
    done_now: int
    flagged: list[str]
    seconds: float
    index: Path
    consistency: Path
    failures: list[Any] = field(default_factory=list)
    preview: Path | None = None
    checkpoint_sha256: str = ""

    def describe(self) -> str:
        text = (f"{self.volumes} volumes: {self.done_now} harmonized now, {self.done_before} already done; "
                f"{len(self.flagged)} flagged by the consistency check; {self.seconds:.1f} s")
        if self.failures:
            text += f"; {len(self.failures)} FAILED (rerun to retry)"
        return text


def _claim_out_dir(out: Path, source: Path, resolved: dict[str, Any], force: bool,
                   replace_other: bool = False) -> None:
    from ..outdir import OutputFolder, recorded_changes

    if out.resolve() == source.resolve():
        raise ConfigError(f"{out}: the output folder must differ from the synthetic set it reads")
    identity = {k: resolved[k] for k in ("source", "checkpoint_sha256", "harmonize")}
    OutputFolder(out, "a harmonization", "harmonize.yaml", outputs=(*OUTPUT_DIRS, *OUTPUT_FILES)).claim(
        lambda record: recorded_changes(record, identity, {"harmonize": {"image_storage": "float32",
                                                                         "image_layout": "whole"}}),
        force=force, replace_other=replace_other)  # from before these settings existed: float32, whole
    for name in OUTPUT_DIRS:
        (out / name).mkdir(exist_ok=True)
    remove_stale_temps(out)
    write_text(out / "harmonize.yaml", yaml.safe_dump(resolved, sort_keys=False))


def harmonize_config_for(checkpoint: str | os.PathLike, overrides: dict[str, Any] | None = None) -> HarmonizeConfig:
    """The checkpoint's own harmonization settings (its preset's), with overrides merged in."""
    data = checkpoint_settings(checkpoint).harmonize.model_dump()
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return HarmonizeConfig.from_dict(data, source="harmonize settings")


def harmonize_set(
    synthetic_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    checkpoint: str | os.PathLike,
    config: HarmonizeConfig | None = None,
    *,
    workers: int = 1,
    scheduler: Any = None,
    device: str = "auto",
    precision: str = "32",
    progress: bool = True,
    force: bool = False,
    preview: int = 0,
    limit: int | None = None,
    threads: int | None = None,
    volume_ids: list[str] | None = None,
    replace_other: bool = False,
) -> HarmonizeSummary:
    """Harmonize every kept volume of a synthetic set into ``out_dir`` (resumable, parallel).

    ``config``: the harmonization settings (default: those stored with the checkpoint, i.e. its
    preset's). ``workers``/``scheduler``: see :func:`metsynth.parallel.map_tasks`; each worker
    loads the network once. ``device``: auto (cuda if available), cpu, gpu/cuda.
    ``preview``: write ``preview.png`` with that many lesions (synthetic / harmonized / difference).
    ``limit``: harmonize only the first ``limit`` kept volumes of the set (trials, previews).
    ``volume_ids``: harmonize only these kept volumes (the start-timestep sweep harmonizes the
    volumes the realism measure samples); an id the set does not have is an error. The folder's
    ``index.csv`` and ``consistency.csv`` then list these volumes only, whatever it holds from before.
    ``threads``: torch CPU threads per task (default 1, whatever the workers, so that the bytes
    do not depend on them; use ``workers`` for speed). Results are byte-identical on CPU for the
    same settings and the same threads per task, whatever the number of workers or the scheduler.
    A folder holding another harmonization is refused unless ``force`` or ``replace_other``
    (:class:`metsynth.outdir.OutputFolder`).
    """
    from ..parallel import TasksFailed, map_tasks

    start = time.perf_counter()
    synthetic_dir, out = Path(synthetic_dir), Path(out_dir)
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "model.pt"
    torch_device = resolve_device(device)
    inline = workers == 1 and scheduler is None
    # Load (and so validate) the checkpoint before anything is written; inline runs reuse this copy.
    denoiser = (cached_denoiser(str(checkpoint.resolve()), str(torch_device), str(precision)) if inline
                else load_denoiser(checkpoint, "cpu", str(precision)))
    config = config or denoiser.config.harmonize
    try:
        check_harmonize(config, denoiser.config.noise, denoiser.config.train)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    items, columns = read_synthetic_set(synthetic_dir)
    scale = output_scale(config.image_storage, synthetic_dir)
    resolved = {"source": str(synthetic_dir.resolve()), "checkpoint": str(checkpoint.resolve()),
                "checkpoint_sha256": denoiser.sha256, "harmonize": config.model_dump(mode="json")}

    kept = [i for i in items if i.kept]
    if volume_ids is not None:
        known = {i.volume_id for i in kept}
        missing = sorted(set(volume_ids) - known)
        if missing:
            raise ConfigError(f"{synthetic_dir}: no kept volume {missing[:3]}{' ...' if len(missing) > 3 else ''} "
                              f"to harmonize ({len(missing)} of {len(volume_ids)} requested ids)")
        wanted = set(volume_ids)
        kept = [i for i in kept if i.volume_id in wanted]
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit must be >= 1, got {limit}")
        kept = kept[:limit]
    missing = [i for i in kept if i.image is None or not Path(i.image).is_file()
               or (config.region == "lesion" and i.label is None)]
    if missing:  # before the output folder exists (each volume's task would fail alone, leaving a skeleton)
        item = missing[0]
        problem = (f"image file {item.image} not found" if item.image is None or not Path(item.image).is_file()
                   else f"no label file (labels/{item.volume_id}.nii.gz); region 'lesion' needs it (or use region "
                        "'volume')")
        more = f" ({len(missing)} of {len(kept)} volumes so)" if len(missing) > 1 else ""
        raise InputError(f"{synthetic_dir}: volume {item.volume_id}: {problem}{more}; give the --out folder of "
                         "`metsynth synthesize` (index.csv, images/, labels/)")
    _claim_out_dir(out, synthetic_dir, resolved, force, replace_other)
    todo = [i for i in kept if not _harmonized(out, i)]
    done_before = len(kept) - len(todo)
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if threads is None:
        threads = 1
    tasks = [HarmonizeTask(i, str(out.resolve()), str(checkpoint.resolve()), config.model_dump(mode="json"),
                           str(torch_device), str(precision), threads, scale) for i in todo]
    timesteps = ddim_timesteps(denoiser.config.noise.num_train_timesteps, config.ddim_steps, config.start_timestep)
    log.info("harmonize: %d kept volumes, %d already done; region %s, start t=%d, DDIM timesteps %s on %s",
             len(kept), done_before, config.region, config.start_timestep, timesteps, torch_device)
    del denoiser
    results = map_tasks(run_task, tasks, workers=workers, scheduler=scheduler, progress=progress,
                        desc="harmonize", raise_on_failure=False)
    done_now = sum(1 for _ in results)
    # with volume_ids, the set is those volumes: a folder harmonized before for other ids (the sweep of a
    # realism sample that has since changed size) keeps their files, but its index and table list these only
    listed = items if volume_ids is None else [i for i in items if not i.kept or i.volume_id in wanted]
    index, flagged = build_index(out, listed, columns)
    consistency = build_consistency_table(out, listed)
    summary = HarmonizeSummary(out, len(kept), done_before, done_now, flagged, time.perf_counter() - start,
                               index, consistency, list(results.failures),
                               checkpoint_sha256=resolved["checkpoint_sha256"])
    if preview:
        from .preview import write_before_after

        summary.preview = write_before_after(synthetic_dir, out, preview, out / "preview.png")
    log.info("harmonize: %s", summary.describe())
    if results.failures:
        raise TasksFailed(results.failures, len(tasks), "harmonization tasks")
    return summary


def build_index(out: Path, items: list[SyntheticItem], columns: list[str]) -> tuple[Path, list[str]]:
    """``index.csv`` in the synthetic set's order: its columns (image/label pointing here) + ours."""
    header = list(columns) + [c for c in EXTRA_COLUMNS if c not in columns]
    for name in ("image", "label", "kept"):
        if name not in header:
            header.append(name)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    flagged = []
    for item in items:
        row = {k: item.row.get(k, "") for k in header}
        if item.kept:
            sidecar_path = out / "sidecars" / f"{item.volume_id}.json"
            if not sidecar_path.is_file():
                continue  # failed or not run yet
            data = read_json(sidecar_path)
            h, c = data["harmonization"], data.get("consistency") or {}
            row.update({
                "image": data["image"], "label": data.get("label") or "",
                "kept": "true" if data.get("kept", True) else "false",
                "source_image": h["source_image"], "harmonize_region": h["region"],
                "start_timestep": h["start_timestep"], "ddim_steps": h["ddim_steps"],
                "checkpoint_sha256": h["checkpoint_sha256"],
                "contrast_before": _fmt(c.get("contrast_before")), "contrast_after": _fmt(c.get("contrast_after")),
                "contrast_ratio": _fmt(c.get("ratio")),
                "consistent": "" if not c else ("false" if c.get("collapsed") else "true"),
            })
            if "reason" in header and not data.get("kept", True):
                row["reason"] = data.get("reason", "")
            if c.get("collapsed"):
                flagged.append(item.volume_id)
        writer.writerow(row)
    return write_text(out / "index.csv", buffer.getvalue()), flagged


def build_consistency_table(out: Path, items: list[SyntheticItem]) -> Path:
    """``consistency.csv``: one row per lesion (volume, lesion, means before/after, ratio, flags)."""
    buffer = io.StringIO()
    fields = ["volume_id", "lesion", "voxels", "inside_before", "ring_before", "inside_after", "ring_after",
              "contrast_before", "contrast_after", "ratio", "judged", "collapsed"]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for item in items:
        path = out / "sidecars" / f"{item.volume_id}.json"
        if not item.kept or not path.is_file():
            continue
        report = read_json(path).get("consistency") or {}
        for les in report.get("lesions", []):
            writer.writerow([item.volume_id, les["index"], les["voxels"], _fmt(les["inside_before"]),
                             _fmt(les["ring_before"]), _fmt(les["inside_after"]), _fmt(les["ring_after"]),
                             _fmt(les["contrast_before"]), _fmt(les["contrast_after"]), _fmt(les["ratio"]),
                             str(les["judged"]).lower(), str(les["collapsed"]).lower()])
    return write_text(out / "consistency.csv", buffer.getvalue())


def _fmt(value: Any) -> str:
    return "" if value is None else f"{float(value):.5f}"


__all__ = [
    "Box", "Denoiser", "HarmonizeSummary", "HarmonizeTask", "SyntheticItem", "build_index", "cached_denoiser",
    "checkpoint_settings",
    "count_windows", "feather_weight", "file_sha256", "harmonize_config_for", "harmonize_set",
    "harmonize_volume", "lesion_boxes", "load_denoiser", "output_scale", "predict_noise_tiled", "read_checkpoint",
    "read_synthetic_set", "refine_array", "resolve_device", "run_task", "source_hu_window", "volume_seed",
]
