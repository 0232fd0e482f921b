"""NIfTI files below :class:`~metsynth.volume.Volume`: the header's layout, completeness checks,
and int16 storage with ``scl_slope``/``scl_inter``.

ITK neither reports a NIfTI file cut short (it fills the missing voxels with 0) nor a write
that the disk could not hold (it prints ``NWAD: wrote only N of M bytes`` and carries on), so
both are checked: :meth:`Volume.read` reads a NIfTI file only when :func:`_scan_nifti` finds all
the bytes its header announces (and, gzipped, a complete gzip stream), and
:func:`nifti_complete` is the cheap form of that check for resuming runs.

Stored precision: ``Volume.write(..., scale=IntensityScale(...))`` stores a float image as int16
with the NIfTI ``scl_slope``/``scl_inter`` fields set, so that every NIfTI reader (ITK/SimpleITK,
nibabel, 3D Slicer) returns ``slope * stored + inter`` as floats. :meth:`IntensityScale.hu_step`
makes the step one HU of a prepared cohort's HU window (CT's own precision: at most 0.5 HU of
round-trip error). SimpleITK writes 1 and 0 in those fields whatever the image's metadata says,
so :func:`_set_nifti_scaling` writes them into the header, between ITK's write and the gzip
(:func:`_gzip_file`).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .fileio import WriteError

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
    dims: tuple[int, ...] = ()  # the image's size along each of its axes (x, y, z, t, ...)

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
    return NiftiLayout(endian, int(datatype), max(offset, size + 4 if size == 348 else size), count * bitpix // 8,
                       tuple(int(n) for n in dims[1:ndim + 1]))


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
