"""The volume cache: training volumes unpacked once to ``.npy`` files and memory-mapped.

A cached volume is keyed by its files' paths, sizes and modification times, so a volume written
again is unpacked again; a patch then reads only its own voxels.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path, read_json, write_json
from ..volume import Volume
from .training_set import TrainingVolume


@dataclass
class CachedVolume:
    """Memory-mapped arrays of one training volume and where its lesion voxels are."""

    image: np.ndarray          # float32 [z, y, x], memory-mapped
    label: np.ndarray          # uint8 [z, y, x], memory-mapped
    lesion_voxels: np.ndarray  # int32 (n, 3)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]


def _cache_key(item: TrainingVolume) -> str:
    parts = []
    for p in (item.image, item.label):
        st = os.stat(p)
        parts.append(f"{os.path.abspath(p)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def cache_volume(item: TrainingVolume, cache_dir: str | os.PathLike) -> Path:
    """Unpack ``item`` into ``cache_dir`` (once; keyed by paths, sizes and mtimes); return its stem."""
    cache_dir = Path(cache_dir)
    for p in (item.image, item.label):
        if not Path(p).is_file():
            raise InputError(f"{item.key}: file {p} not found; was the training data moved or deleted?")
    stem = cache_dir / _cache_key(item)
    if Path(f"{stem}.json").exists():
        return stem
    image = Volume.read(item.image)
    label = Volume.read(item.label)
    diff = image.grid_mismatch(label)
    if diff is not None:
        raise InputError(f"{item.label}: label is not on the grid of its image {item.image} ({diff}); "
                         "masks must share the image's grid")
    img = np.asarray(image.array, dtype=np.float32)
    if not np.all(np.isfinite(img)):
        raise InputError(f"{item.image}: image has NaN or infinite voxels; fix the file")
    lbl = (np.asarray(label.array) > 0).astype(np.uint8)
    for suffix, array in (("image", img), ("label", lbl), ("lesion", np.argwhere(lbl).astype(np.int32))):
        with atomic_path(Path(f"{stem}_{suffix}.npy")) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, array)
    write_json(f"{stem}.json", {"key": item.key, "image": item.image, "label": item.label,
                                "shape": list(img.shape), "lesion_voxels": int(lbl.sum())})
    return stem


def _cache_task(task: tuple[TrainingVolume, str]) -> str:
    return str(cache_volume(task[0], task[1]))


def cache_volumes(items: Sequence[TrainingVolume], cache_dir: str | os.PathLike, workers: int = 1,
                  progress: bool = True) -> dict[str, str]:
    """Unpack every volume (in parallel with ``workers`` processes); ``{key: stem}``."""
    from ..parallel import map_tasks

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    todo = [(item, str(cache_dir)) for item in items]
    stems = {}
    for item, _ in todo:  # already cached: no task
        stem = Path(cache_dir) / _cache_key(item)
        if Path(f"{stem}.json").exists():
            stems[item.key] = str(stem)
    rest = [t for t in todo if t[0].key not in stems]
    if rest:
        for stem in map_tasks(_cache_task, rest, workers=max(1, workers), progress=progress,
                              desc="unpacking volumes", key=lambda t: t[0].key):
            stems[read_json(f"{stem}.json")["key"]] = stem
    return stems


def open_cached(stem: str | os.PathLike) -> CachedVolume:
    stem = str(stem)
    return CachedVolume(
        image=np.load(f"{stem}_image.npy", mmap_mode="r"),
        label=np.load(f"{stem}_label.npy", mmap_mode="r"),
        lesion_voxels=np.load(f"{stem}_lesion.npy"),
    )
