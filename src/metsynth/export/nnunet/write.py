"""Writing a planned export: the cases in parallel into a staging folder, then dataset.json,
splits_final.json, cases.csv and metsynth_export.json, and the rename into place."""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ... import __version__
from ...errors import ConfigError
from ...fileio import read_json, write_json, write_text
from ...outdir import OutputFolder, differences
from .config import CASES_COLUMNS, CASES_TABLE, FILE_ENDING, MANIFEST, STAGING_MARK, STAGING_PREFIX, NnunetExportConfig
from .inputs import resolve_inputs
from .plan import ExportPlan, plan_export

log = logging.getLogger(__name__)


def _link(src: Path, dst: Path) -> None:
    """Hard link (symlink across file systems), atomically."""
    from ...fileio import temp_path_for

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
    from ...boxed import is_boxed
    from ...prepare import destandardize
    from ...volume import Volume, as_mask, check_finite

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
    elif task["link"] and image.array.dtype == np.float32 and str(src).endswith(FILE_ENDING) and not is_boxed(src):
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


def _export_changes(manifest: Path, plan: ExportPlan) -> list[str]:
    """How the export recorded in ``manifest`` differs from ``plan`` (empty: this very export)."""
    old = read_json(manifest)
    if not old.get("complete"):
        return ["it is incomplete"]
    new = plan.fingerprint()
    return differences({k: old.get(k) for k in new}, new)


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
    from ...parallel import map_tasks

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
    if final.exists():  # nothing is removed here: a new export replaces the old one once complete
        claim = OutputFolder(final, "an nnU-Net dataset", MANIFEST, place="--dataset-id/--name or --out").claim(
            lambda record: _export_changes(record, plan), force=force)
        if claim.state == "same":
            folds = read_json(final / MANIFEST).get("folds", [])
            log.info("%s: up to date", final)
            return ExportSummary(final, len(plan.training), len(plan.test), folds, up_to_date=True)

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
    log.debug("nnU-Net export: %s", summary.describe())  # the command prints it; said once
    return summary
