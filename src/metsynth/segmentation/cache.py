"""The volume cache: training volumes unpacked once to ``.npy`` files and memory-mapped.

A cached volume is keyed by its files' paths, sizes and modification times, so a volume written
again is unpacked again; a patch then reads only its own voxels.

What is stored whole and what as a box: an image is a float32 ``<stem>_image.npy``, except an
image stored as a changed box (:mod:`metsynth.boxed`: a synthetic volume over its healthy femur),
which is cached the same way: the box (``<stem>_imagebox.npy``) over its base's array, cached once
for all the volumes of that femur (``base-<its SHA-256>_image.npy``). A label is cached as the box
around its lesion (``<stem>_labelbox.npy``; zeros elsewhere). Both read back as :class:`Overlaid` arrays,
equal voxel for voxel to the whole ones, so a training gets the same patches; at the paper's scale
the cache of a synthetic set shrinks from ~14 MB a volume (float32 image and uint8 label at 0.85
mm) to the boxes. Caches written whole by earlier versions are read as they are.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..boxed import base_volume, box_record, is_boxed
from ..boxes import index_box
from ..errors import InputError
from ..fileio import atomic_path, read_json, write_json
from ..volume import Volume
from .training_set import TrainingVolume


class Overlaid:
    """A read-only 3D array: ``base`` (an array, or zeros when None) with ``box`` put at ``offset``.

    Supports what the patch code asks of a cached array: ``shape``, ``dtype``, ``ndim``, a block
    of three slices of step 1 (a new array), one voxel by three integers, and ``np.asarray``
    (the whole array); any other index goes through the whole array."""

    def __init__(self, box: np.ndarray, offset: Sequence[int], shape: Sequence[int],
                 base: np.ndarray | None = None) -> None:
        self.box = box
        self.offset = tuple(int(o) for o in offset)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.result_type(box, base) if base is not None else box.dtype
        self.ndim = len(self.shape)
        self.base = base
        if base is not None and tuple(base.shape) != self.shape:
            raise ValueError(f"base {base.shape} is not of shape {self.shape}")
        if any(o < 0 or o + n > s for o, n, s in zip(self.offset, box.shape, self.shape)):
            raise ValueError(f"a box {box.shape} at {self.offset} leaves the shape {self.shape}")

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if len(key) == self.ndim and all(isinstance(k, (int, np.integer)) for k in key):
            idx = tuple(int(k) + n if k < 0 else int(k) for k, n in zip(key, self.shape))
            rel = tuple(i - o for i, o in zip(idx, self.offset))
            if all(0 <= r < n for r, n in zip(rel, self.box.shape)):
                return self.box[rel]
            return self.base[idx] if self.base is not None else self.dtype.type(0)
        if len(key) == self.ndim and all(isinstance(k, slice) for k in key):
            ranges = [k.indices(n) for k, n in zip(key, self.shape)]
            if all(step == 1 for _, _, step in ranges):
                lo = [start for start, _, _ in ranges]
                hi = [max(stop, start) for start, stop, _ in ranges]
                out = (np.array(self.base[key], dtype=self.dtype) if self.base is not None
                       else np.zeros([h - lo_ for lo_, h in zip(lo, hi)], dtype=self.dtype))
                a = [max(lo_, o) for lo_, o in zip(lo, self.offset)]
                b = [min(h, o + n) for h, o, n in zip(hi, self.offset, self.box.shape)]
                if all(y > x for x, y in zip(a, b)):
                    out[tuple(slice(x - lo_, y - lo_) for x, y, lo_ in zip(a, b, lo))] = \
                        self.box[tuple(slice(x - o, y - o) for x, y, o in zip(a, b, self.offset))]
                return out
        return np.asarray(self)[key]

    def __array__(self, dtype=None, copy=None):
        out = (np.array(self.base, dtype=self.dtype) if self.base is not None
               else np.zeros(self.shape, dtype=self.dtype))
        out[tuple(slice(o, o + n) for o, n in zip(self.offset, self.box.shape))] = self.box
        return out if dtype is None else out.astype(dtype, copy=False)


@dataclass
class CachedVolume:
    """Memory-mapped arrays of one training volume and where its lesion voxels are."""

    image: np.ndarray | Overlaid          # float32 [z, y, x], memory-mapped (or a box over its base's)
    label: np.ndarray | Overlaid          # uint8 [z, y, x] (the box around the lesion, zeros elsewhere)
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


def _read_checked(item: TrainingVolume) -> tuple[np.ndarray, np.ndarray]:
    """The image (float32) and binary label (uint8) of ``item``, checked: the label on the image's
    grid, the image finite. Raises :class:`InputError` naming the volume, the file and the fix."""
    image = Volume.read(item.image)
    label = Volume.read(item.label)
    diff = label.grid_mismatch(image, names=("label", "image"))
    if diff is not None:
        raise InputError(f"{item.label}: label of training volume {item.key} is not on the grid of its image "
                         f"{item.image} ({diff}); masks must share the image's grid (fix the mask, or rerun "
                         "`metsynth prepare` on a corrected cohort)")
    img = np.asarray(image.array, dtype=np.float32)
    if not np.all(np.isfinite(img)):
        n = int((~np.isfinite(img)).sum())
        raise InputError(f"{item.image}: image of training volume {item.key} has {n} NaN or infinite voxels; "
                         "fix or replace the file (e.g. rerun `metsynth prepare` on a corrected cohort)")
    return img, (np.asarray(label.array) > 0).astype(np.uint8)


def check_training_volumes(items: Sequence[TrainingVolume], cache_dir: str | os.PathLike | None = None,
                           read: Callable[[TrainingVolume], bool] = lambda item: True) -> None:
    """Check a training's volumes before anything is written (reads only).

    Every image and label must be a file (all missing ones are named at once); the volumes for
    which ``read(item)`` is true and that are not in ``cache_dir`` yet (a cached volume was checked
    when it was cached) are read and checked as :func:`cache_volume` checks them (the label on the
    image's grid, no NaN). Raises :class:`InputError`, one line naming the volume, the file and the fix.
    """
    missing = [(item, p) for item in items for kind, p in (("image", item.image), ("label", item.label))
               if not Path(p).is_file()]
    if missing:
        item, path = missing[0]
        more = f" (and {len(missing) - 1} more missing files)" if len(missing) > 1 else ""
        raise InputError(f"{path}: file of training volume {item.key} not found{more}; was the training data "
                         "moved or deleted? Restore it, or rerun the stage that wrote it (e.g. `metsynth "
                         "prepare`) and train on its manifest")
    for item in items:
        if not read(item):
            continue
        if cache_dir is not None and Path(f"{Path(cache_dir) / _cache_key(item)}.json").exists():
            continue
        try:
            _read_checked(item)
        except InputError as err:
            if item.key in str(err):
                raise
            raise InputError(f"training volume {item.key}: {err}") from None


def cache_volume(item: TrainingVolume, cache_dir: str | os.PathLike) -> Path:
    """Unpack ``item`` into ``cache_dir`` (once; keyed by paths, sizes and mtimes); return its stem."""
    cache_dir = Path(cache_dir)
    for p in (item.image, item.label):
        if not Path(p).is_file():
            raise InputError(f"{item.key}: file {p} not found; was the training data moved or deleted?")
    stem = cache_dir / _cache_key(item)
    if Path(f"{stem}.json").exists():
        return stem
    img, lbl = _read_checked(item)
    lesion = np.argwhere(lbl).astype(np.int32)
    label_lo, label_hi = index_box(lesion, lbl.shape) if len(lesion) else (np.zeros(3, int), np.ones(3, int))
    arrays = {"labelbox": _block(lbl, label_lo, label_hi), "lesion": lesion}
    meta = {"key": item.key, "image": item.image, "label": item.label, "shape": list(img.shape),
            "lesion_voxels": int(lbl.sum()), "label_offset": [int(v) for v in label_lo]}
    boxed = _boxed_image(item.image, img, cache_dir)
    if boxed is None:
        arrays["image"] = img
    else:
        meta["image_base"], meta["image_offset"], arrays["imagebox"] = boxed
    for suffix, array in arrays.items():
        _save(Path(f"{stem}_{suffix}.npy"), array)
    write_json(f"{stem}.json", meta)
    return stem


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


def _block(array: np.ndarray, lo, hi) -> np.ndarray:
    return np.ascontiguousarray(array[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))])


def _boxed_image(image_path: str, img: np.ndarray, cache_dir: Path) -> tuple[str, list[int], np.ndarray] | None:
    """For an image stored as a changed box: ``(base stem name, offset, box)``, the base's float32 array
    cached once (``base-<its SHA-256>_image.npy``, named by content: ``Volume.read`` has just checked the
    base against that digest and holds it in memory); None for a whole image."""
    if not is_boxed(image_path):
        return None
    record, base_path, lo, hi = box_record(image_path)
    name = f"base-{record['base_sha256'][:20]}"
    base_file = cache_dir / f"{name}_image.npy"
    if not base_file.exists():
        _save(base_file, np.asarray(base_volume(base_path, Volume.read).array, dtype=np.float32))
    return name, [int(v) for v in lo], _block(img, lo, hi)


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
    whole_image, whole_label = os.path.exists(f"{stem}_image.npy"), os.path.exists(f"{stem}_label.npy")
    meta = None if whole_image and whole_label else read_json(f"{stem}.json")
    if whole_image:
        image = np.load(f"{stem}_image.npy", mmap_mode="r")
    else:
        base = np.load(str(Path(stem).parent / f"{meta['image_base']}_image.npy"), mmap_mode="r")
        image = Overlaid(np.load(f"{stem}_imagebox.npy"), meta["image_offset"], meta["shape"], base)
    if whole_label:  # a cache written before labels were cached as boxes
        label = np.load(f"{stem}_label.npy", mmap_mode="r")
    else:
        label = Overlaid(np.load(f"{stem}_labelbox.npy"), meta["label_offset"], meta["shape"])
    return CachedVolume(image=image, label=label, lesion_voxels=np.load(f"{stem}_lesion.npy"))
