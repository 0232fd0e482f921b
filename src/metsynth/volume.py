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
(a folder) are read; NIfTI (and the other single-file formats) are written, atomically.

ITK neither reports a NIfTI file cut short (it fills the missing voxels with 0) nor a write
that the disk could not hold (it prints ``NWAD: wrote only N of M bytes`` and carries on), so
both are checked here: a NIfTI file is read only when it holds all the bytes its header
announces (and, gzipped, when its gzip stream is complete), and a written file is renamed to
its final name only when it holds all of them (a full disk is a
:class:`~metsynth.fileio.DiskFullError`).

Stored precision: ``Volume.write(..., scale=IntensityScale(...))`` stores a float image as int16
with the NIfTI ``scl_slope``/``scl_inter`` fields set, so that every NIfTI reader (ITK/SimpleITK,
nibabel, 3D Slicer) returns ``slope * stored + inter`` as floats. :meth:`IntensityScale.hu_step`
makes the step one HU of a prepared cohort's HU window (CT's own precision: at most 0.5 HU of
round-trip error). SimpleITK writes 1 and 0 in those fields whatever the image's metadata says,
so they are written into the header here, between ITK's write and the gzip.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .fileio import DiskFullError, WriteError, atomic_path, free_bytes

READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")

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
    def grid_mismatch(self, other: "Volume") -> str | None:
        """``None`` if both volumes share a grid, else a sentence saying what differs."""
        if self.shape != other.shape:
            return f"shape {self.shape} vs {other.shape}"
        if not np.allclose(self.spacing, other.spacing, rtol=SPACING_RTOL, atol=0):
            return f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)} mm"
        if not np.allclose(self.origin, other.origin, rtol=0, atol=ORIGIN_ATOL_MM):
            return f"origin {_fmt(self.origin)} vs {_fmt(other.origin)} mm"
        if not np.allclose(self.direction, other.direction, rtol=0, atol=DIRECTION_ATOL):
            return "direction cosines differ"
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
        """Read a NIfTI / NRRD / MHA file, or a folder holding one DICOM series."""
        path = Path(path)
        check_readable(path)
        sitk = _sitk()
        if path.is_dir():
            return cls.from_sitk(_read_dicom_series(path), path)
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
        return cls.from_sitk(image, path)

    def write(self, path: str | os.PathLike, compression_level: int | None = 1,
              scale: "IntensityScale | None" = None) -> Path:
        """Write atomically; NIfTI is gzip-compressed when the name ends in .gz.

        ``compression_level``: gzip level for .nii.gz (1 fastest .. 9 smallest; None = 6) and
        for NRRD/MHA (None = uncompressed). Level 1 costs a fraction of level 6's time for a
        few % more bytes (benchmarks/RESULTS.md); masks compress well at any level.

        ``scale``: store the image as int16 ``round((value - inter) / slope)`` with ``scl_slope``
        and ``scl_inter`` in the NIfTI header (NIfTI only); readers get the values back within
        half a step. Values that int16 cannot hold at that step, NaN and infinities are refused.
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
                    sitk.WriteImage(volume.to_sitk(), str(raw), False)
                    _check_written(raw, path, volume)
                    if scale is not None:
                        _set_nifti_scaling(raw, scale)
                    _gzip_file(raw, tmp, 6 if compression_level is None else compression_level)
                finally:
                    raw.unlink(missing_ok=True)
            else:
                compress = compression_level is not None and path.suffix in (".nrrd", ".mha")
                sitk.WriteImage(volume.to_sitk(), str(tmp), compress, compression_level if compress else -1)
                _check_written(tmp, path, volume)
                if scale is not None:
                    _set_nifti_scaling(tmp, scale)
        return path


IMAGE_STORAGES = ("float32", "int16")


@dataclass(frozen=True)
class IntensityScale:
    """Integer storage of a float image: ``value = slope * stored + inter`` (NIfTI ``scl_slope``,
    ``scl_inter``). Both are float32 in a NIfTI-1 header, so they are kept as float32 values:
    what is written is what every reader applies."""

    slope: float
    inter: float

    def __post_init__(self) -> None:
        slope, inter = float(np.float32(self.slope)), float(np.float32(self.inter))
        if not (np.isfinite(slope) and np.isfinite(inter)) or slope <= 0:
            raise InputError(f"intensity scale: slope must be positive and finite, got {self.slope} "
                             f"(inter {self.inter})")
        object.__setattr__(self, "slope", slope)
        object.__setattr__(self, "inter", inter)

    @classmethod
    def hu_step(cls, hu_window: tuple[float, float] | None, step_hu: float = 1.0) -> "IntensityScale":
        """One stored step per ``step_hu`` HU: for a prepared cohort (``hu_window = (lo, hi)`` mapped
        to [-1, 1]) with the default 1 HU the stored integer is the HU value itself (so the window's
        low end, -1, is stored exactly); for raw HU images (``None``) too."""
        if not (np.isfinite(step_hu) and step_hu > 0):
            raise InputError(f"intensity scale: step_hu must be positive, got {step_hu}")
        if hu_window is None:
            return cls(float(step_hu), 0.0)
        lo, hi = (float(v) for v in hu_window)
        if not hi > lo:
            raise InputError(f"intensity scale: hu_window must be (low, high) with low < high, got {hu_window}")
        slope = 2.0 * step_hu / (hi - lo)
        return cls(slope, -1.0 - slope * round(lo / step_hu))

    @classmethod
    def standardized(cls) -> "IntensityScale":
        """For [-1, 1] images whose HU window is unknown: a step of 2^-14 (exact in float32) that holds
        [-2, 2); the round-trip error, window / 65536 HU, is under 0.1 HU for windows up to 6500 HU."""
        return cls(2.0**-14, 0.0)

    @property
    def max_error(self) -> float:
        """Largest round-trip error in the image's units: half a step, plus the float32 rounding of
        the values read (1/1000 of a step covers it in [-1, 1] for HU windows up to ~8000 HU wide)."""
        return 0.5 * self.slope * (1 + 1e-3)

    def quantize(self, array: np.ndarray, what: str = "image") -> np.ndarray:
        """The int16 array stored for ``array`` (raises InputError naming ``what`` if it cannot hold it)."""
        values = np.asarray(array)
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
            raise InputError(f"{what}: image has NaN or infinite voxels, which int16 storage cannot hold; fix "
                             "them or store float32")
        stored = np.rint((values.astype(np.float64) - self.inter) / self.slope)
        info = np.iinfo(np.int16)
        if stored.size and (stored.min() < info.min or stored.max() > info.max):
            lo, hi = float(values.min()), float(values.max())
            raise InputError(
                f"{what}: values span [{lo:g}, {hi:g}], beyond what int16 holds at a step of {self.slope:g} "
                f"({self.restore(np.array([info.min, info.max]))[0]:g} .. "
                f"{self.restore(np.array([info.min, info.max]))[1]:g}); store float32 instead")
        return stored.astype(np.int16)

    def restore(self, stored: np.ndarray) -> np.ndarray:
        """The float32 values a NIfTI reader returns for ``stored``."""
        return (np.asarray(stored, dtype=np.float64) * self.slope + self.inter).astype(np.float32)


def storage_scale(storage: str, hu_window: tuple[float, float] | None) -> IntensityScale | None:
    """The scale of an ``image_storage`` setting: ``None`` for float32 (the array's own type),
    one step per HU of ``hu_window`` for int16 (``None`` window: raw HU images)."""
    if storage == "float32":
        return None
    if storage == "int16":
        return IntensityScale.hu_step(hu_window)
    raise InputError(f"image_storage must be one of {', '.join(IMAGE_STORAGES)}, got {storage!r}")


def _set_nifti_scaling(file: Path, scale: IntensityScale) -> None:
    """Write ``scl_slope``/``scl_inter`` into an uncompressed NIfTI file's header (in place)."""
    import struct

    with open(file, "r+b") as fh:
        head = fh.read(540)
        layout = nifti_layout(head)
        if layout is None:
            raise WriteError(errno.EIO, f"{file}: not a NIfTI header after writing it; cannot record its scaling")
        if struct.unpack(layout.endian + "i", head[:4])[0] == 348:  # NIfTI-1: float32 at 112, 116
            fh.seek(112)
            fh.write(struct.pack(layout.endian + "2f", scale.slope, scale.inter))
        else:  # NIfTI-2: float64 at 176, 184
            fh.seek(176)
            fh.write(struct.pack(layout.endian + "2d", scale.slope, scale.inter))


def read_volume(path: str | os.PathLike) -> Volume:
    return Volume.read(path)


def read_header(path: str | os.PathLike) -> tuple[tuple[int, ...], int]:
    """``(shape in [z, y, x] order, bytes per voxel)`` of an image file, from its header only
    (no voxel is read; for estimating output sizes). Raises InputError if it cannot be read."""
    path = Path(path)
    check_readable(path)
    reader = _sitk().ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(f"{path}: cannot read the image header ({str(err).strip().splitlines()[-1]})") from None
    itemsize = np.dtype(_sitk().GetArrayViewFromImage(_sitk().Image([1] * reader.GetDimension(),
                                                                     reader.GetPixelID())).dtype).itemsize
    return tuple(int(n) for n in reversed(reader.GetSize())), int(itemsize * reader.GetNumberOfComponents())


def check_finite(volume: Volume, what: str = "image") -> None:
    """Raise if the volume holds NaN or infinite values."""
    if np.issubdtype(volume.array.dtype, np.floating):
        bad = ~np.isfinite(volume.array)
        n = int(bad.sum())
        if n:
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(
                f"{volume.name}: {what} has {n} NaN or infinite voxels (first at [z,y,x]={first}); "
                "fix or replace them (e.g. with the air value) before using it"
            )


def as_mask(volume: Volume, reference: Volume | None = None, what: str = "mask") -> Volume:
    """Check a binary mask (values {0, 1} or bool) on the reference grid; return it as uint8."""
    if reference is not None:
        diff = reference.grid_mismatch(volume)
        aligned = volume.aligned_to(reference) if diff is not None else volume
        if aligned is not None:
            volume, diff = aligned, None
        if diff is not None:
            raise InputError(
                f"{volume.name}: {what} is not on the grid of its image {reference.name} ({diff}); "
                "masks must be saved on exactly the image's grid (resample the mask onto the image "
                "with nearest-neighbour interpolation)"
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
                "structure with values 0 and 1 (for a label map, keep the lesion label only)"
            )
    return volume.with_array(array.astype(np.uint8), path=volume.path)


def _read_dicom_series(folder: Path):
    sitk = _sitk()
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"{folder}: no DICOM series found in this folder; point to the folder that "
                         "holds the series' .dcm files")
    files_per_series = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series}
    if len(series) > 1:
        listed = ", ".join(f"{sid} ({len(f)} files)" for sid, f in files_per_series.items())
        raise InputError(f"{folder}: holds {len(series)} DICOM series ({listed}); put each series "
                         "in its own folder")
    files = files_per_series[series[0]]
    if len(files) < 2:
        raise InputError(f"{folder}: the DICOM series has a single slice; a 3D volume is needed")
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise InputError(f"{folder}: DICOM series cannot be read ({str(err).strip().splitlines()[-1]})") from None


def _gzip_file(src: Path, dst: Path, level: int) -> None:
    import gzip
    import shutil

    with open(src, "rb") as fin, open(dst, "wb") as raw_out:
        # mtime=0 and no file name in the header: the same volume gives the same bytes
        with gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=raw_out, mtime=0) as fout:
            shutil.copyfileobj(fin, fout, 1 << 22)


_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


@dataclass(frozen=True)
class NiftiLayout:
    """Where a NIfTI file's voxels are: byte order, datatype code, data offset and data size."""

    endian: str
    datatype: int
    offset: int
    data_bytes: int

    @property
    def total_bytes(self) -> int:
        """Size of a complete single-file NIfTI (header, extensions, voxels), uncompressed."""
        return self.offset + self.data_bytes


def nifti_layout(head: bytes) -> NiftiLayout | None:
    """Parse the first bytes (>= 348, or 540 for NIfTI-2) of a NIfTI file; None if not NIfTI."""
    import struct

    if len(head) < 348:
        return None
    for endian in "<>":
        size = struct.unpack(endian + "i", head[:4])[0]
        if size in (348, 540):
            break
    else:
        return None
    if size == 348:
        dims = struct.unpack(endian + "8h", head[40:56])
        datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
        offset = int(struct.unpack(endian + "f", head[108:112])[0])
    else:
        if len(head) < 540:
            return None
        datatype, bitpix = struct.unpack(endian + "2h", head[12:16])
        dims = struct.unpack(endian + "8q", head[16:80])
        offset = int(struct.unpack(endian + "q", head[168:176])[0])
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8:
        return None
    count = 1
    for n in dims[1:ndim + 1]:
        count *= max(int(n), 0)
    return NiftiLayout(endian, int(datatype), max(offset, size + 4 if size == 348 else size), count * bitpix // 8)


def _incomplete(path: Path, detail: str) -> InputError:
    return InputError(
        f"{path}: the file is incomplete ({detail}), cut short by an interrupted copy or a full disk; "
        "copy or export it again (ITK would read the missing voxels as 0)")


def _scan_nifti(path: Path, nonfinite: bool = True) -> int:
    """Check that a NIfTI file holds every byte its header announces; return its number of NaN or
    infinite voxels (0 for integer types, or when ``nonfinite`` is False: then float images get
    the cheap check of integer ones). Raises InputError naming the file when it is incomplete.

    Uncompressed: the file size. Gzipped: float images are decompressed to count NaNs, which also
    checks the gzip stream to its end (CRC and length); for integer images the gzip trailer's
    length field is compared first (cheap) and the stream decompressed only when it differs.
    """
    import gzip
    import zlib

    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
            try:
                head = fh.read(540)
            except (gzip.BadGzipFile, zlib.error):
                return 0  # not gzip at all: ITK's reader reports it
            layout = nifti_layout(head)
            if layout is None:
                return 0  # not NIfTI (or a header cut short): ITK's reader reports it
            floating = nonfinite and layout.datatype in _NIFTI_FLOAT_TYPES
            if not gz:
                size = os.fstat(fh.fileno()).st_size
                if size < layout.total_bytes:
                    raise _incomplete(path, f"{size:,} of {layout.total_bytes:,} bytes")
            elif not floating and _gzip_trailer_size(path) == layout.total_bytes % (1 << 32):
                return 0  # the stream's own length field says it is complete
            if not floating and not gz:
                return 0
            fh.seek(layout.offset)
            dtype = np.dtype(layout.endian + _NIFTI_FLOAT_TYPES.get(layout.datatype, "u1"))
            count = 0
            seen = fh.tell()  # short of the offset when the stream ends before it
            while chunk := fh.read(1 << 24):
                seen += len(chunk)
                if floating:
                    usable = len(chunk) - len(chunk) % dtype.itemsize
                    count += int((~np.isfinite(np.frombuffer(chunk[:usable], dtype=dtype))).sum())
    except EOFError:
        raise _incomplete(path, "its gzip stream ends before its end marker") from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise _incomplete(path, f"corrupt gzip data: {err}") from None
    if seen < layout.total_bytes:
        raise _incomplete(path, f"{seen:,} of {layout.total_bytes:,} bytes once decompressed")
    return count


def _gzip_trailer_size(path: Path) -> int | None:
    """The ISIZE field of a gzip file (uncompressed length of its last member, mod 2^32)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            return int.from_bytes(fh.read(4), "little")
    except OSError:
        return None


def nifti_complete(path: str | os.PathLike) -> bool:
    """Cheap check that a NIfTI file written by :meth:`Volume.write` is whole: the size of a .nii,
    the header and the gzip trailer of a .nii.gz (then the whole stream only if they differ)."""
    try:
        _scan_nifti(Path(path), nonfinite=False)
    except (InputError, OSError):
        return False
    return True


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


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def check_readable(path: str | os.PathLike, what: str = "") -> None:
    """Raise InputError unless ``path`` exists and is a kind :meth:`Volume.read` reads (cheap: no
    pixel data is read). ``what`` names the input in the message, e.g. "image of 'M001'"."""
    path = Path(path)
    where = f"{path}: {what + ' ' if what else ''}"
    if not path.exists():
        raise InputError(f"{where}file not found; check the path (relative paths in a manifest "
                         "are relative to the manifest's folder)")
    if not path.is_dir() and not _has_suffix(path, READABLE_SUFFIXES) and not _looks_like_dicom(path):
        raise InputError(f"{where}unsupported file type, not an image file; use NIfTI (.nii/.nii.gz), NRRD, MHA, "
                         "or a folder with one DICOM series")


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
