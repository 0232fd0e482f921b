"""A volume stored as the box where it differs from another volume (its base), and read back whole.

A synthetic volume is its healthy femur with one lesion pasted in: outside the lesion's
neighbourhood every voxel is the healthy image's. At the paper's scale (26 healthy femurs, 5675
kept volumes) storing every synthetic volume whole stores each femur about 220 times. With
``image_layout: changed_box`` (:class:`metsynth.synthesis.SynthesisConfig`) the synthesis writes,
for each volume:

* ``images/<id>.nii.gz``: a NIfTI holding only the bounding box of the voxels that differ from the
  base, with that box's own geometry (its origin is the world position of its first voxel), so any
  NIfTI viewer shows it in place over the base;
* ``images/<id>.base.json`` (:func:`companion_path`), written before the box: which file the base
  is (relative to the box's folder), its size and SHA-256, the box's offset and shape in the base.

:meth:`metsynth.volume.Volume.read` sees the companion and returns the whole volume (the base with
the box put back), so the training, the harmonization, the realism measure, the nnU-Net export and
the previews read such a set as any other. The base is checked against the size and digest it had
when the box was written: a re-prepared or moved healthy image is an error naming both files, never
a silently different volume. Outside the box the values are the base's own, to the bit; inside it,
those of the box file (int16 storage: within half a step).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .boxes import index_box
from .errors import InputError
from .fileio import file_sha256, read_json, write_json
from .nifti import IntensityScale
from .recent import recently_used

# Volumes (metsynth.volume.Volume) come in as arguments and their class reads the bases: volume.py
# imports this module to read a box, so this one does not import it.
Volume = Any

__all__ = ["BOX_NOTE", "FORMAT", "base_volume", "box_record", "changed_box", "companion_path", "is_boxed",
           "read_boxed", "write_boxed", "write_image"]

FORMAT = "metsynth changed box 1"
BOX_NOTE = "metsynth changed box"  # the box file's NIfTI descrip starts so: without its record it is refused
RECORD_KEYS = ("format", "image", "base", "base_bytes", "base_sha256", "shape", "offset", "box_shape")
_REMAKE = "make the volume again (rerun its synthesis or harmonization with --force)"
BASES_KEPT = 4  # base volumes kept in memory per process (a worker mostly reads one femur's volumes in a row)
_LOCK = threading.RLock()  # reentrant: a base may itself be a box (harmonized over synthetic)
_BASES: dict[Any, "Volume"] = {}
_DIGESTS: dict[Any, str] = {}


def companion_path(image: str | os.PathLike) -> Path:
    """``images/x.nii.gz`` -> ``images/x.base.json`` (the record that makes ``x`` a box)."""
    image = Path(image)
    name = image.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return image.with_name(f"{name}.base.json")


def is_boxed(image: str | os.PathLike) -> bool:
    """Whether ``image`` is stored as a changed box (its companion record exists)."""
    image = Path(image)
    return image.name.lower().endswith((".nii", ".nii.gz")) and companion_path(image).is_file()


def changed_box(array: np.ndarray, base: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(lo, hi)``: the smallest box holding every voxel where ``array`` differs from ``base`` (one
    voxel at the origin where they are equal: a NIfTI cannot be empty)."""
    if array.shape != base.shape:
        raise ValueError(f"array {array.shape} and base {base.shape} differ in shape")
    changed = np.argwhere(np.asarray(array) != np.asarray(base))
    if not len(changed):
        return (0,) * array.ndim, (1,) * array.ndim
    lo, hi = index_box(changed, array.shape)
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)


def _stamp(path: Path) -> tuple[Any, ...]:
    """What identifies a file's content without reading it (a copy with ``cp -p`` keeps the size and the
    modification time, not the inode and the change time)."""
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def _digest(path: Path) -> str:
    """SHA-256 of a file, computed once per process for each :func:`_stamp` (loaded under the lock: the
    threads of a Dask worker wait for one computation rather than each doing it)."""
    key = _stamp(path)
    with _LOCK:
        return recently_used(_DIGESTS, key, 64, lambda: file_sha256(path))


def _read_only(volume: Volume) -> Volume:
    volume.array.flags.writeable = False  # shared by every box of this base: never written into
    return volume


def base_volume(path: Path, read: Any) -> Volume:
    """The base volume (``read(path)``: ``Volume.read``), kept read-only for the next volumes of the same femur."""
    key = _stamp(path)
    with _LOCK:
        return recently_used(_BASES, key, BASES_KEPT, lambda: _read_only(read(path)))


def _check_base_kind(base_path: Path, what: Path) -> None:
    if not base_path.name.lower().endswith((".nii", ".nii.gz")) or not base_path.is_file():
        raise InputError(
            f"{what}: a changed box needs its base image as one NIfTI file (.nii or .nii.gz), so that its bytes "
            f"can be checked; {base_path} is not one. Prepare the cohort (`metsynth prepare` writes NIfTI) or "
            "use image_layout: whole")


def write_image(volume: Volume, path: str | os.PathLike, base_path: str | os.PathLike | None = None,
                compression_level: int | None = 1, scale: IntensityScale | None = None,
                max_share: float = 1.0) -> Path:
    """Write a generated image in its layout: as a changed box over ``base_path``
    (:func:`write_boxed`), or whole when ``base_path`` is None (removing the record an earlier
    changed-box run left beside ``path``, which would make the whole file read as a box)."""
    if base_path is not None:
        return write_boxed(volume, base_path, path, compression_level, scale, max_share)
    companion_path(path).unlink(missing_ok=True)
    return volume.write(path, compression_level=compression_level, scale=scale)


def write_boxed(volume: Volume, base_path: str | os.PathLike, path: str | os.PathLike,
                compression_level: int | None = 1, scale: IntensityScale | None = None,
                max_share: float = 1.0) -> Path:
    """Write ``volume`` as the box where it differs from the image at ``base_path`` (read here, on
    the same grid), with its companion record first; ``compression_level``, ``scale``: as
    :meth:`Volume.write`. Where the box would hold more than ``max_share`` of the voxels (a volume
    changed all over), the whole volume is written instead, with no record. Returns ``path``."""
    base_path, path = Path(base_path), Path(path)
    _check_base_kind(base_path, path)
    base = base_volume(base_path, type(volume).read)
    diff = volume.grid_mismatch(base, names=("volume", "base"))
    if diff is not None:
        raise InputError(f"{path}: cannot store it as a box over {base_path}: not on its grid ({diff})")
    lo, hi = changed_box(np.asarray(volume.array, dtype=np.result_type(volume.array, base.array)),
                         np.asarray(base.array, dtype=np.result_type(volume.array, base.array)))
    if np.prod(np.subtract(hi, lo), dtype=np.float64) > max_share * volume.array.size:
        return write_image(volume, path, None, compression_level, scale)
    try:
        relative = os.path.relpath(base_path.resolve(), path.parent.resolve())
    except ValueError:  # another drive (Windows): the absolute path
        relative = str(base_path.resolve())
    write_json(companion_path(path), {
        "format": FORMAT,
        "about": "The NIfTI file beside this record holds only the box where the volume differs from its base "
                 "image; metsynth reads the whole volume (base with the box put back). Viewers show the box in "
                 "place over the base.",
        "image": path.name,
        "base": Path(relative).as_posix(),
        "base_bytes": base_path.stat().st_size,
        "base_sha256": _digest(base_path),
        "shape": list(base.shape),
        "offset": list(lo),
        "box_shape": [h - lo_ for lo_, h in zip(lo, hi)],
    })
    box = volume.crop(lo, hi)
    box = box.with_array(np.ascontiguousarray(box.array), path=volume.path)
    return box.write(path, compression_level=compression_level, scale=scale,
                     description=f"{BOX_NOTE}: see {companion_path(path).name}")


def box_record(path: str | os.PathLike) -> tuple[dict[str, Any], Path, np.ndarray, np.ndarray]:
    """The checked record of a box file: ``(record, base path, lo, hi)``, the box being
    ``base[lo:hi]``; the base exists and holds the bytes the record names (else InputError)."""
    path = Path(path)
    record_path = companion_path(path)
    record = read_json(record_path, what="the record of a volume stored as a box", fix=_REMAKE)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(f"{record_path}: not a record of a changed box ({FORMAT!r}); delete it if {path.name} "
                         "is a whole volume")
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing or record["image"] != path.name:
        what = f"lacks {', '.join(missing)}" if missing else f"is the record of {record['image']}, not {path.name}"
        raise InputError(f"{record_path}: {what}; {_REMAKE}")
    base_path = Path(record["base"])
    base_path = base_path if base_path.is_absolute() else Path(os.path.normpath(path.parent / base_path))
    if not base_path.exists():
        raise InputError(
            f"{path}: stores only the box where the volume differs from its base image {base_path}, which is "
            f"missing (was the prepared cohort or the synthetic set moved or deleted?); restore it, or {_REMAKE}")
    _check_base_kind(base_path, path)
    if base_path.stat().st_size != record["base_bytes"] or _digest(base_path) != record["base_sha256"]:
        raise InputError(
            f"{path}: its base image {base_path} has changed since the box was written (prepared again?), so the "
            f"whole volume cannot be rebuilt; {_REMAKE}")
    lo = np.asarray(record["offset"], dtype=int)
    return record, base_path, lo, lo + np.asarray(record["box_shape"], dtype=int)


def read_boxed(path: str | os.PathLike, read_box: Any, read_base: Any) -> Volume:
    """The whole volume of a box file ``path``; ``read_box(path)`` reads the box file itself,
    ``read_base(path)`` an image whole (``Volume.read``: a base may itself be a box)."""
    path = Path(path)
    record, base_path, lo, hi = box_record(path)
    record_path = companion_path(path)
    box = read_box(path)
    base = base_volume(base_path, read_base)
    if tuple(record["shape"]) != base.shape or box.shape != tuple(int(n) for n in hi - lo) or np.any(hi > base.shape):
        raise InputError(f"{path}: its shape {box.shape} does not match its record {record_path.name} (box "
                         f"{record['box_shape']} at {record['offset']} in {record['shape']}); {_REMAKE}")
    diff = box.grid_mismatch(base.crop(lo, hi), names=("box", "its place in the base"))
    if diff is not None:
        raise InputError(f"{path}: the box is not where its record puts it in {base_path} ({diff}); {_REMAKE}")
    array = base.array.astype(np.result_type(base.array, box.array), copy=True)
    array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = box.array
    return base.with_array(array, path=path)
