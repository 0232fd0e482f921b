"""``metsynth export whole``: a synthetic or harmonized set with every image written as a whole volume.

A set stored as changed boxes (``image_layout: changed_box``, :mod:`metsynth.boxed`) is read whole
by metsynth only; this writes a copy that any NIfTI tool (TorchIO, MONAI, 3D Slicer, nnU-Net) reads
as it is: ``images/`` (every kept image whole, float32 or int16 with its scaling), ``labels/`` and
``sidecars/`` copied, ``index.csv`` naming the new files, and the set's ``config.yaml`` (its HU
window) and ``harmonize.yaml`` when present. Resumable: an image already written is kept; files are
written atomically. The output folder must not be the set itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, InputError
from ..fileio import copy_file, write_text
from ..outdir import OutputFolder, recorded_changes

__all__ = ["WholeSummary", "export_whole"]

RECORD = "whole.yaml"
COPIED = ("config.yaml", "harmonize.yaml")  # what the set's readers look up beside index.csv
OUTPUTS = ("images", "labels", "sidecars", "index.csv", *COPIED, RECORD)


@dataclass
class WholeSummary:
    out_dir: Path
    volumes: int
    written: int
    already: int

    def describe(self) -> str:
        return (f"{self.volumes} volumes written whole to {self.out_dir / 'images'}: {self.written} now, "
                f"{self.already} already there")


def _copy(src: Path, dst: Path) -> None:
    if not dst.exists():  # copied by an interrupted run
        copy_file(src, dst)


def _write_one(task: dict[str, Any]) -> bool:
    """One volume: its image whole (unless already there), its label and sidecar copied. True if written now."""
    from ..volume import Volume

    image_out = Path(task["image_out"])
    written = not image_out.exists()
    if written:
        Volume.read(task["image"]).write(image_out, compression_level=1, scale=task["scale"])
    _copy(Path(task["label"]), Path(task["label_out"]))
    if task["sidecar"] is not None and Path(task["sidecar"]).is_file():
        _copy(Path(task["sidecar"]), Path(task["sidecar_out"]))
    return written


def export_whole(set_dir: str | os.PathLike, out_dir: str | os.PathLike, storage: str = "float32", *,
                 force: bool = False, workers: int = 1, scheduler: Any = None,
                 progress: bool = True) -> WholeSummary:
    """Write every kept volume of the set at ``set_dir`` whole into ``out_dir`` (see the module).

    ``storage``: ``float32`` (the values as read) or ``int16`` (one HU of the set's recorded HU
    window per step, NIfTI ``scl_slope``/``scl_inter``, as ``image_storage: int16``)."""
    from ..diffusion.source_set import output_scale
    from ..parallel import map_tasks
    from ..synthesis.sets import read_rows, read_set

    src, out = Path(set_dir), Path(out_dir)
    if storage not in ("float32", "int16"):
        raise ConfigError(f"storage must be float32 or int16, got {storage!r}")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ConfigError(f"{out}: the output folder must not be the set {src} or inside it; choose another --out")
    table = read_set(src)  # the kept volumes, absolute paths; errors name index.csv
    missing = [p for p in table["image"] if not Path(p).is_file()][:3]
    if missing:
        raise InputError(f"{src}: image file(s) {', '.join(missing)} named by index.csv are missing")
    scale = output_scale(storage, src)
    identity = {"set": str(src.resolve()), "storage": storage}
    OutputFolder(out, "a set written whole", RECORD, outputs=OUTPUTS).claim(
        lambda record: recorded_changes(record, identity), force=force)
    for name in ("images", "labels", "sidecars"):
        (out / name).mkdir(parents=True, exist_ok=True)
    write_text(out / RECORD, yaml.safe_dump(identity, sort_keys=False))
    for name in COPIED:
        if (src / name).is_file():
            _copy(src / name, out / name)
    tasks = []
    for row in table.itertuples(index=False):
        image, label = Path(row.image), Path(row.label)
        sidecar = src / "sidecars" / f"{row.volume_id}.json"
        tasks.append({"key": row.volume_id, "image": str(image), "label": str(label), "scale": scale,
                      "image_out": str(out / "images" / image.name), "label_out": str(out / "labels" / label.name),
                      "sidecar": str(sidecar) if sidecar.is_file() else None,
                      "sidecar_out": str(out / "sidecars" / sidecar.name)})
    written = sum(bool(w) for w in map_tasks(_write_one, tasks, workers=workers, scheduler=scheduler,
                                             progress=progress, desc="whole volumes",
                                             key=lambda t: t["key"]))
    rows = read_rows(src)  # every row, dropped ones too; the kept ones name their new files
    names = {r.volume_id: (Path(r.image).name, Path(r.label).name) for r in table.itertuples(index=False)}
    rows["image"] = [f"images/{names[v][0]}" if v in names else "" for v in rows["volume_id"]]
    rows["label"] = [f"labels/{names[v][1]}" if v in names else "" for v in rows["volume_id"]]
    rows["kept"] = ["true" if k else "false" for k in rows["kept"]]
    write_text(out / "index.csv", rows.to_csv(index=False, lineterminator="\n"))
    return WholeSummary(out, len(tasks), written, len(tasks) - written)
