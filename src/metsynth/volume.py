"""`Volume`: a 3D array with its geometry, and all file IO.

Convention (the only place where SimpleITK's axis order appears is this file):

* ``array`` is indexed ``[z, y, x]`` (numpy order, as ``sitk.GetArrayFromImage`` returns it);
* ``spacing`` and ``origin`` are given in that same order, ``(z, y, x)``, in millimetres;
* ``direction`` is the 3x3 direction-cosine matrix with *both* axes reversed to array order:
  ``direction[:, i]`` is the world direction (world axes listed z, y, x; LPS as in ITK/DICOM)
  of array axis ``i``.

So the world position of voxel ``idx`` (array order) is
``origin + direction @ (idx * spacing)``, everything in ``(z, y, x)`` order.

Files: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) and DICOM series
(a folder) are read; NIfTI (and the other single-file formats) are written, atomically. A NIfTI
file is read only when it holds all the bytes its header announces, and a written file is renamed
to its final name only when it holds all of them (a full disk is a
:class:`~metsynth.fileio.DiskFullError`): ITK reports neither. The NIfTI header, its completeness
checks and int16 storage with a scale (:class:`IntensityScale`) live in :mod:`metsynth.nifti`, DICOM
series in :mod:`metsynth.dicom`, which files are images in :mod:`metsynth.imagefiles`; their
public names are importable from here too.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .boxed import BOX_NOTE, companion_path, is_boxed, read_boxed
from .dicom import _read_dicom_series, series_files
from .errors import InputError
from .fileio import DiskFullError, WriteError, atomic_path, free_bytes
from .imagefiles import READABLE_SUFFIXES, WRITABLE_SUFFIXES, _has_suffix, check_readable, note_manifest_path
from .nifti import (
    IMAGE_STORAGES,
    IntensityScale,
    NiftiLayout,
    _gzip_file,
    _scan_nifti,
    _set_nifti_scaling,
    nifti_complete,
    nifti_layout,
    storage_scale,
)

# Tolerances for "same grid": NIfTI stores geometry in float32, so exact equality after a
# round trip is not to be expected; these are far below any clinically meaningful offset.
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


def _sitk():
    import SimpleITK as sitk

    return sitk


@dataclass(eq=False)
class Volume:
    """A 3D image or mask with geometry, indexed ``[z, y, x]``."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    path: Path | None = None  # where it was read from, for error messages

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise InputError(
                f"{self.name}: expected a 3D volume, got {self.array.ndim}D with shape "
                f"{self.array.shape}; metsynth works on 3D CT (a single slice or a 4D series "
                "must be converted first)"
            )
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if len(self.spacing) != 3 or len(self.origin) != 3:
            raise InputError(f"{self.name}: spacing and origin need 3 values (z, y, x)")
        if min(self.spacing) <= 0 or not np.all(np.isfinite(self.spacing)):
            raise InputError(f"{self.name}: spacing must be positive and finite, got {self.spacing}")

    # ----------------------------------------------------------------- properties
    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "volume"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size of the field of view along each array axis (voxel edges included)."""
        return tuple(float(n * s) for n, s in zip(self.shape, self.spacing))  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, path: Path | None = None) -> "Volume":
        """A new volume on this volume's grid with another array (same shape required)."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} does not match the grid {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction.copy(), path)

    def crop(self, lo, hi) -> "Volume":
        """The sub-volume ``array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]`` with its true origin.

        Bounds are clipped to the volume; the result keeps spacing and direction.
        """
        lo = np.clip(np.asarray(lo, dtype=int), 0, self.shape)
        hi = np.clip(np.asarray(hi, dtype=int), lo, self.shape)
        array = self.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        origin = self.index_to_world(lo.astype(np.float64))
        return Volume(array, self.spacing, tuple(origin), self.direction.copy(), self.path)

    def geometry(self) -> dict[str, Any]:
        """Plain-data geometry (for JSON sidecars and error messages)."""
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": self.direction.tolist(),
        }

    # ----------------------------------------------------------------- coordinates
    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """World coordinates ``(z, y, x)`` in mm of array indices (``(..., 3)``, may be fractional)."""
        index = np.asarray(index, dtype=np.float64)
        return np.asarray(self.origin) + (index * np.asarray(self.spacing)) @ self.direction.T

    def world_to_index(self, point: np.ndarray) -> np.ndarray:
        """Fractional array indices of world points ``(z, y, x)`` in mm."""
        point = np.asarray(point, dtype=np.float64) - np.asarray(self.origin)
        return (point @ np.linalg.inv(self.direction).T) / np.asarray(self.spacing)

    def axis_world_directions(self) -> np.ndarray:
        """``out[i]`` is the unit world vector (z, y, x; LPS) along which array axis ``i`` grows."""
        return self.direction.T.copy()

    # ----------------------------------------------------------------- grids
    def grid_mismatch(self, other: "Volume", names: tuple[str, str] | None = None) -> str | None:
        """``None`` if both volumes share a grid, else a phrase saying what differs.

        Values are labelled (``names``: what to call this volume and ``other``, in that order;
        by default their file names) and listed in ITK's ``(x, y, z)`` order, as ITK, 3D Slicer
        and nnU-Net show them, e.g. ``origin (x, y, z) mm: mask (0, 0, 5) vs image (0, 0, 0)``.
        Name the volumes in the order the caller's sentence names them.
        """
        a, b = names if names is not None else _default_names(self, other)
        if self.shape != other.shape:
            return f"shape (x, y, z) voxels: {a} {_xyz(self.shape, '{}')} vs {b} {_xyz(other.shape, '{}')}"
        if not np.allclose(self.spacing, other.spacing, rtol=SPACING_RTOL, atol=0):
            return f"spacing (x, y, z) mm: {a} {_xyz(self.spacing)} vs {b} {_xyz(other.spacing)}"
        if not np.allclose(self.origin, other.origin, rtol=0, atol=ORIGIN_ATOL_MM):
            return f"origin (x, y, z) mm: {a} {_xyz(self.origin)} vs {b} {_xyz(other.origin)}"
        if not np.allclose(self.direction, other.direction, rtol=0, atol=DIRECTION_ATOL):
            return f"direction cosines differ between {a} and {b}"
        return None

    def same_grid(self, other: "Volume") -> bool:
        return self.grid_mismatch(other) is None

    def aligned_to(self, reference: "Volume") -> "Volume | None":
        """This volume's voxels in ``reference``'s axis order, or ``None`` if the grids differ.

        Covers the common case of one grid stored in two orientations (e.g. a DICOM series and
        a NIfTI export with a flipped axis): the result is a lossless transpose/flip of the
        array and shares ``reference``'s grid exactly.
        """
        if self.same_grid(reference):
            return self
        relation = np.linalg.solve(reference.direction, self.direction)  # ref axes <- self axes
        rounded = np.round(relation)
        if not np.allclose(relation, rounded, atol=DIRECTION_ATOL) or sorted(np.abs(rounded).sum(0)) != [1, 1, 1]:
            return None
        perm = [int(np.argmax(np.abs(rounded[:, j]))) for j in range(3)]  # self axis j -> ref axis perm[j]
        if sorted(perm) != [0, 1, 2]:
            return None
        array = self.array
        for j in range(3):
            if rounded[perm[j], j] < 0:
                array = np.flip(array, axis=j)
        order = [perm.index(i) for i in range(3)]  # ref axis i <- self axis order[i]
        array = np.ascontiguousarray(np.transpose(array, order))
        if array.shape != reference.shape:
            return None
        candidate = reference.with_array(array, path=self.path)
        # The flip moved the origin to the opposite corner: check it lands on the reference's.
        corner = np.where(rounded.sum(0) < 0, np.asarray(self.shape) - 1, 0)
        if not np.allclose(self.index_to_world(corner), reference.origin, atol=ORIGIN_ATOL_MM):
            return None
        if not np.allclose(np.asarray(self.spacing)[order], reference.spacing, rtol=SPACING_RTOL):
            return None
        return candidate

    # ----------------------------------------------------------------- SimpleITK
    def to_sitk(self):
        sitk = _sitk()
        array = self.array
        if array.dtype == bool:
            array = array.astype(np.uint8)
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetSpacing(tuple(reversed(self.spacing)))
        image.SetOrigin(tuple(reversed(self.origin)))
        image.SetDirection(tuple(self.direction[::-1, ::-1].ravel()))
        return image

    @classmethod
    def from_sitk(cls, image, path: Path | None = None) -> "Volume":
        sitk = _sitk()
        dim = image.GetDimension()
        if dim != 3:
            raise InputError(
                f"{path or 'image'}: expected a 3D volume, got a {dim}D image of size "
                f"{image.GetSize()}; convert a single slice or a 4D series to a 3D volume first"
            )
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(
                f"{path or 'image'}: has {image.GetNumberOfComponentsPerPixel()} components per "
                "voxel (colour or vector image); metsynth needs a scalar CT or mask"
            )
        array = sitk.GetArrayFromImage(image)
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)[::-1, ::-1]
        return cls(
            array,
            spacing=tuple(reversed(image.GetSpacing())),
            origin=tuple(reversed(image.GetOrigin())),
            direction=direction.copy(),
            path=path,
        )

    # ----------------------------------------------------------------- files
    @classmethod
    def read(cls, path: str | os.PathLike) -> "Volume":
        """Read a NIfTI / NRRD / MHA file, or a folder holding one DICOM series.

        A NIfTI stored as the box where it differs from a base image (a ``<name>.base.json`` record
        beside it, :mod:`metsynth.boxed`) is read whole: the base with the box put back."""
        path = Path(path)
        check_readable(path)
        if path.is_dir():
            return cls.from_sitk(_read_dicom_series(path), path)
        if is_boxed(path):
            return read_boxed(path, lambda box: cls._read_file(box, as_box=True), cls.read)
        return cls._read_file(path)

    @classmethod
    def _read_file(cls, path: Path, as_box: bool = False) -> "Volume":
        """One image file as it is on disk (no base). A file that says it is a changed box
        (:mod:`metsynth.boxed`) is refused unless ``as_box``: without its record it is not the volume."""
        sitk = _sitk()
        bad = _scan_nifti(path) if _has_suffix(path, (".nii", ".nii.gz")) else 0  # before ITK zero-fills
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as err:
            first = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
            raise InputError(f"{path}: cannot be read as an image ({first}); is the file complete?") from None
        if bad:
            raise InputError(
                f"{path}: image has {bad} NaN or infinite voxels (NIfTI readers silently turn them "
                "into 0); replace them (e.g. with the air value) before using the file"
            )
        if not as_box and image.HasMetaDataKey("ITK_FileNotes"):
            if image.GetMetaData("ITK_FileNotes").startswith(BOX_NOTE):
                raise InputError(
                    f"{path}: holds only the box where a volume differs from its base image, and its record "
                    f"{companion_path(path).name} (which names the base) is missing; restore the record, or make "
                    "the volume again (rerun its synthesis or harmonization with --force)")
        return cls.from_sitk(image, path)

    def write(self, path: str | os.PathLike, compression_level: int | None = 1,
              scale: "IntensityScale | None" = None, description: str | None = None) -> Path:
        """Write atomically; NIfTI is gzip-compressed when the name ends in .gz.

        ``compression_level``: gzip level for .nii.gz (1 fastest .. 9 smallest; None = 6) and
        for NRRD/MHA (None = uncompressed). Level 1 costs a fraction of level 6's time for a
        few % more bytes (benchmarks/RESULTS.md); masks compress well at any level.

        ``scale``: store the image as int16 ``round((value - inter) / slope)`` with ``scl_slope``
        and ``scl_inter`` in the NIfTI header (NIfTI only); readers get the values back within
        half a step. Values that int16 cannot hold at that step, NaN and infinities are refused.

        ``description``: the NIfTI header's ``descrip`` (80 characters at most; other formats: a note).
        """
        path = Path(path)
        if not _has_suffix(path, WRITABLE_SUFFIXES):
            raise InputError(f"{path}: can only write {', '.join(WRITABLE_SUFFIXES)}")
        volume = self
        if scale is not None:
            if not _has_suffix(path, (".nii", ".nii.gz")):
                raise InputError(f"{path}: int16 storage with a scale needs NIfTI (.nii or .nii.gz); NRRD and "
                                 "MHA have no scl_slope/scl_inter fields")
            volume = self.with_array(scale.quantize(self.array, what=str(path)), path=self.path)
        sitk = _sitk()
        gz = path.name.lower().endswith(".gz")
        with atomic_path(path) as tmp:
            if gz:
                # ITK ignores the compression level for NIfTI: write raw, gzip at our level.
                raw = tmp.with_name(tmp.name[: -len(".gz")])
                try:
                    sitk.WriteImage(_noted(volume.to_sitk(), description), str(raw), False)
                    _check_written(raw, path, volume)
                    if scale is not None:
                        _set_nifti_scaling(raw, scale)
                    _gzip_file(raw, tmp, 6 if compression_level is None else compression_level)
                finally:
                    raw.unlink(missing_ok=True)
            else:
                compress = compression_level is not None and path.suffix in (".nrrd", ".mha")
                sitk.WriteImage(_noted(volume.to_sitk(), description), str(tmp), compress,
                                compression_level if compress else -1)
                _check_written(tmp, path, volume)
                if scale is not None:
                    _set_nifti_scaling(tmp, scale)
        return path


def _noted(image, description: str | None):
    if description:
        image.SetMetaData("ITK_FileNotes", description[:80])
    return image


def read_volume(path: str | os.PathLike) -> Volume:
    return Volume.read(path)


def read_header(path: str | os.PathLike) -> tuple[tuple[int, ...], int]:
    """``(shape in [z, y, x] order, bytes per voxel)`` of an image file, from its header only
    (no voxel is read; for estimating output sizes). Raises InputError if it cannot be read."""
    path = Path(path)
    check_readable(path)
    reader = _header_reader(path)
    itemsize = np.dtype(_sitk().GetArrayViewFromImage(_sitk().Image([1] * reader.GetDimension(),
                                                                     reader.GetPixelID())).dtype).itemsize
    return tuple(int(n) for n in reversed(reader.GetSize())), int(itemsize * reader.GetNumberOfComponents())




def check_3d_header(path: str | os.PathLike, what: str = "") -> None:
    """Raise InputError unless the image file ``path`` is one 3D scalar volume, from its header only
    (a 2D slice, a volume of one slice, a 4D series or a colour image is refused before any voxel is
    read or any output written); a folder, from its DICOM files' headers (one series, evenly spaced
    slices). ``what`` names the input."""
    path = Path(path)
    check_readable(path, what)
    if path.is_dir():  # a DICOM series: one series of evenly spaced slices, from the files' headers
        series_files(path)
        return
    where = f"{path}: {what + ' ' if what else ''}"
    quick = _nifti_size(path)
    if quick is not None:  # a NIfTI's 348-byte header, read directly: 50x faster than SimpleITK's probe
        size, components = quick
        _check_size(where, size, components)
        return
    reader = _header_reader(path, what)
    _check_size(where, tuple(reader.GetSize()), reader.GetNumberOfComponents())


def _header_reader(path: Path, what: str = ""):
    """A SimpleITK reader that has read ``path``'s header (no voxel); InputError if it cannot."""
    reader = _sitk().ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(f"{path}: {what + ' ' if what else ''}cannot read the image header "
                         f"({str(err).strip().splitlines()[-1]})") from None
    return reader


def _check_size(where: str, size: tuple[int, ...], components: int) -> None:
    """The refusals of :func:`check_3d_header`, from an image's size (x, y, z, ...) and components."""
    if len(size) != 3:
        raise InputError(f"{where}expected a 3D volume, got a {len(size)}D image of size "
                         f"{size}; convert a single slice or a 4D series to a 3D volume first")
    if components != 1:
        raise InputError(f"{where}has {components} components per voxel (colour or vector "
                         "image); metsynth needs a scalar CT or mask")
    if 1 in size:
        raise InputError(f"{where}is a single slice (size {size}); metsynth needs a 3D volume")


def _nifti_size(path: Path) -> tuple[tuple[int, ...], int] | None:
    """(size (x, y, z, ...), components) from a NIfTI header (:func:`metsynth.nifti.nifti_layout`),
    as SimpleITK reads it (trailing axes of length 1 dropped, down to 3; RGB and RGBA types have 3 and
    4 components); None for any file that is not one, which SimpleITK then reads."""
    import gzip
    import zlib

    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    try:
        with (gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb")) as handle:
            layout = nifti_layout(handle.read(540))
    except (OSError, EOFError, zlib.error):
        return None
    if layout is None:
        return None
    size = list(layout.dims)
    while len(size) > 3 and size[-1] == 1:
        size.pop()
    return tuple(size), {128: 3, 2304: 4}.get(layout.datatype, 1)


def check_finite(volume: Volume, what: str = "image") -> None:
    """Raise if the volume holds NaN or infinite values."""
    if np.issubdtype(volume.array.dtype, np.floating):
        bad = ~np.isfinite(volume.array)
        n = int(bad.sum())
        if n:
            # The array is (z, y, x); the voxel is named as 3D Slicer and ITK-SNAP number it, (i, j, k).
            first = tuple(int(i) for i in np.argwhere(bad)[0][::-1])
            raise InputError(
                f"{volume.name}: {what} has {n} NaN or infinite voxels (the first at voxel (i, j, k) = {first}, "
                "as 3D Slicer and ITK-SNAP number them); "
                "fix or replace them (e.g. with the air value) before using it"
            )


def _rounding_fix(volume: Volume, reference: Volume) -> str | None:
    """The fix when two grids differ only by rounding (same shape, directions equal, origin and
    spacing off by under a tenth of a voxel): copy the image's geometry onto the mask, since
    resampling would move nothing but could flip boundary voxels. None otherwise."""
    if volume.shape != reference.shape or not np.allclose(volume.direction, reference.direction, atol=1e-4):
        return None
    spacing = np.asarray(reference.spacing, dtype=np.float64)
    origin_off = float(np.max(np.abs(np.subtract(volume.origin, reference.origin))))
    spacing_off = np.abs(np.subtract(volume.spacing, spacing))
    if origin_off >= 0.1 * float(spacing.min()) or np.any(spacing_off >= 0.1 * spacing / max(volume.shape)):
        return None
    return (f"they differ by at most {origin_off:.3g} mm, under a tenth of a voxel: a rounding when the files "
            "were written, not another grid; copy the image's geometry onto the mask (SimpleITK: "
            "mask.CopyInformation(image)) rather than resample it")


def as_mask(volume: Volume, reference: Volume | None = None, what: str = "mask") -> Volume:
    """Check a binary mask (values {0, 1} or bool) on the reference grid; return it as uint8."""
    if reference is not None:
        diff = volume.grid_mismatch(reference, names=(_short(what), "image"))
        aligned = volume.aligned_to(reference) if diff is not None else volume
        if aligned is not None:
            volume, diff = aligned, None
        if diff is not None:
            raise InputError(
                f"{volume.name}: {what} is not on the grid of its image {reference.name} ({diff}); "
                + (_rounding_fix(volume, reference) or "masks must be saved on exactly the image's grid (resample "
                   "the mask onto the image with nearest-neighbour interpolation)")
            )
    array = volume.array
    if array.dtype != bool:
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise InputError(f"{volume.name}: {what} has NaN or infinite values")
        values = np.unique(array)
        if not np.all(np.isin(values, (0, 1))):
            shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if values.size > 6 else "")
            raise InputError(
                f"{volume.name}: {what} is not binary (values {shown}); save one mask per "
                "structure with values 0 and 1 (from a label map, keep only the label of this structure)"
            )
    return volume.with_array(array.astype(np.uint8), path=volume.path)


def _check_written(file: Path, target: Path, volume: Volume) -> None:
    """Raise unless ``file`` (just written by ITK for ``target``) holds the whole image.

    ITK reports no error when the disk fills up: it prints ``NWAD: wrote only N of M bytes`` and
    leaves a short file. NIfTI files are checked against their header (or, with no header, the
    array's size); other formats are read back.
    """
    size = file.stat().st_size if file.exists() else 0
    if _has_suffix(file, (".nii",)):
        layout = None
        if size:
            with open(file, "rb") as fh:
                layout = nifti_layout(fh.read(540))
        expected = layout.total_bytes if layout is not None else 352 + volume.array.size * max(
            volume.array.dtype.itemsize, 1)
        if layout is not None and size >= expected:
            return
    else:
        try:
            back = Volume.from_sitk(_sitk().ReadImage(str(file)))
            if back.shape == volume.shape and np.array_equal(back.array, volume.array,
                                                             equal_nan=np.issubdtype(volume.array.dtype, np.floating)):
                return
        except (RuntimeError, InputError):
            pass
        expected = size + 1  # unknown: at least one byte is missing
    missing = expected - size
    if free_bytes(file.parent) < missing + (1 << 20):
        raise DiskFullError.writing(target)
    raise WriteError(
        errno.EIO, f"{target}: the image writer stopped after {size:,} of {expected:,} bytes without an error; "
        "check the disk (free space, quota, a failing or network drive) or choose another --out")


def _xyz(values, fmt: str = "{:.4g}") -> str:
    """``values`` given in array order ``(z, y, x)``, shown in ITK's ``(x, y, z)`` order."""
    return "(" + ", ".join(fmt.format(v) for v in reversed(tuple(values))) + ")"


def _short(what: str) -> str:
    """``'lesion mask (reference, round 1)'`` -> ``'lesion mask'``; ``'prediction of case M01'`` ->
    ``'prediction'``: how a grid message labels a mask's values."""
    return what.split(" (")[0].split(" of ")[0].strip() or "mask"


def _default_names(a: Volume, b: Volume) -> tuple[str, str]:
    """Labels for two volumes in a grid message: their file names, or more of their paths where
    the file names are the same (``imagesTr/x.nii.gz`` vs ``labelsTr/x.nii.gz``)."""
    if a.path is None or b.path is None:
        return (Path(a.path).name if a.path is not None else "first volume",
                Path(b.path).name if b.path is not None else "second volume")
    pa, pb = Path(a.path), Path(b.path)
    return (pa.name, pb.name) if pa.name != pb.name else (str(pa), str(pb))


__all__ = [
    "IMAGE_STORAGES", "READABLE_SUFFIXES", "WRITABLE_SUFFIXES", "IntensityScale", "NiftiLayout", "Volume", "as_mask",
    "check_3d_header", "check_finite", "check_readable", "nifti_complete", "nifti_layout", "note_manifest_path",
    "read_header", "read_volume", "storage_scale",
]
