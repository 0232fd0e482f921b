"""One harmonization task: a volume of the set, refined and written (image, label copy, then the
sidecar last). Tasks are small and picklable; they run in worker processes or Dask workers, each
of which loads the network once."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..boxed import write_image
from ..errors import InputError
from ..fileio import copy_file, files_stamp, read_json, write_json
from ..volume import IntensityScale, Volume
from .consistency import check_consistency
from .denoiser import cached_denoiser
from .presets import HarmonizeConfig
from .refine import harmonize_volume, volume_seed
from .source_set import SyntheticItem


@dataclass(frozen=True)
class HarmonizeTask:
    """One volume to harmonize (small and picklable: paths and settings)."""

    item: SyntheticItem
    out_dir: str
    checkpoint: str
    config: dict[str, Any]
    device: str
    precision: str
    threads: int | None = None
    image_scale: IntensityScale | None = None  # int16 storage (HarmonizeConfig.image_storage), else None

    @property
    def key(self) -> str:
        return self.item.volume_id


def run_task(task: HarmonizeTask) -> dict[str, Any]:
    """Harmonize one volume and write image, label copy and sidecar (last). Returns a small record."""
    from ..devices import torch_threads

    with torch_threads(task.threads):
        return _run_task(task)


def _run_task(task: HarmonizeTask) -> dict[str, Any]:
    import torch

    start = time.perf_counter()
    config = HarmonizeConfig.from_dict(task.config)
    denoiser = cached_denoiser(task.checkpoint, task.device, task.precision)
    item = task.item
    if item.image is None or not Path(item.image).is_file():
        raise InputError(f"volume {item.volume_id}: image file {item.image} not found")
    image = Volume.read(item.image)
    label = None
    if item.label is not None:
        label = Volume.read(item.label)
        diff = label.grid_mismatch(image, names=("label", "image"))
        if diff:
            raise InputError(f"{item.label}: label is not on the grid of {item.image} ({diff})")
    elif config.region == "lesion":
        raise InputError(f"volume {item.volume_id}: no label file (labels/{item.volume_id}.nii.gz); region "
                         "'lesion' needs it (or use region 'volume')")
    seed = volume_seed(config.seed, item.volume_id)
    array, info = harmonize_volume(image, label, denoiser, config, seed)
    report = None
    if label is not None:
        report = check_consistency(image.array, array, label.array, image.spacing, config.ring_mm,
                                   config.min_contrast_ratio, config.min_contrast, config.min_lesion_voxels)
    out = Path(task.out_dir)
    image_rel = f"images/{item.volume_id}.nii.gz"
    base = item.image if config.image_layout == "changed_box" else None  # the box where it differs from its source
    write_image(image.with_array(array), out / image_rel, base, scale=task.image_scale, max_share=0.5)
    label_rel = None
    if item.label is not None:
        label_rel = f"labels/{Path(item.label).name}"
        copy_file(item.label, out / label_rel)
    seconds = time.perf_counter() - start
    sidecar = read_json(item.sidecar) if item.sidecar else {"volume_id": item.volume_id}
    collapsed = bool(report.collapsed) if report is not None else False
    dropped = collapsed and config.drop_inconsistent
    sidecar.update({
        "volume_id": item.volume_id,
        "image": image_rel,
        "label": label_rel,
        "harmonization": {
            "source_image": str(Path(item.image).resolve()),
            "source_label": str(Path(item.label).resolve()) if item.label else None,
            "source_sidecar": str(Path(item.sidecar).resolve()) if item.sidecar else None,
            "source_stamp": files_stamp([item.image, item.label]),
            "checkpoint": str(Path(task.checkpoint).resolve()),
            "checkpoint_sha256": denoiser.sha256,
            "weights": denoiser.weights,
            "start_timestep": config.start_timestep,
            "ddim_steps": config.ddim_steps,
            "eta": config.eta,
            "region": config.region,
            "seed": config.seed,
            "volume_seed": seed,
            "device": str(denoiser.device),
            "precision": denoiser.precision,
            "threads": torch.get_num_threads(),
            "seconds": round(seconds, 3),
            "settings": config.model_dump(mode="json"),
            **info,
        },
        "consistency": report.to_dict() if report is not None else None,
    })
    if dropped:
        sidecar["kept"] = False
        sidecar["reason"] = "harmonization: lesion contrast collapsed"
    write_json(out / "sidecars" / f"{item.volume_id}.json", sidecar)  # last: marks the volume finished
    return {"volume_id": item.volume_id, "seconds": seconds, "collapsed": collapsed}
