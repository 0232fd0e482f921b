"""DICOM series: recognising a DICOM file and reading a folder that holds one series (SimpleITK/GDCM)."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError


def series_files(folder: Path) -> list[str]:
    """The files of the one DICOM series in ``folder``, checked from their headers (one series, more
    than one slice, evenly spaced); an InputError naming the folder otherwise. No pixel is read."""
    import SimpleITK as sitk

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
    check_slice_spacing(folder, files)
    return list(files)


def _read_dicom_series(folder: Path):
    import SimpleITK as sitk

    files = series_files(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise InputError(f"{folder}: DICOM series cannot be read ({str(err).strip().splitlines()[-1]})") from None


SPACING_TOLERANCE = (0.01, 0.02)  # (mm, share of the typical gap) a slice gap may differ from the typical one


def slice_positions(files) -> list[float] | None:
    """Each file's position along the slice normal (mm): Image Position (Patient) projected on the
    cross product of Image Orientation (Patient)'s row and column directions. None when a file lacks
    those tags (the series is then read as SimpleITK reads it)."""
    import numpy as np
    import SimpleITK as sitk

    positions = []
    normal = None
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(name))
        try:
            reader.ReadImageInformation()
            position = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
            if normal is None:
                cosines = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
                normal = np.cross(cosines[:3], cosines[3:6])
        except (RuntimeError, ValueError, IndexError):
            return None
        if len(position) != 3:
            return None
        positions.append(float(np.dot(position, normal)))
    return positions


def check_slice_spacing(folder: Path, files) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing or duplicated slice): read as one
    grid, its spacing would be averaged and every slice after the gap placed at a wrong position."""
    import numpy as np

    positions = slice_positions(files)
    if positions is None or len(positions) < 3:
        return
    order = np.sort(np.asarray(positions))
    gaps = np.diff(order)
    typical = float(np.median(gaps))
    off = np.abs(gaps - typical) > max(SPACING_TOLERANCE[0], SPACING_TOLERANCE[1] * typical)
    if typical <= 0 or off.any():
        i = int(np.argmax(np.abs(gaps - typical)))
        where = f"the slices at {order[i]:.2f} mm and {order[i + 1]:.2f} mm along the slice normal"
        what = (f"two slices at the same position ({where})" if gaps[i] <= SPACING_TOLERANCE[0]
                else f"a gap of {gaps[i]:.2f} mm between {where}, where the others are {typical:.2f} mm apart "
                     "(a slice missing?)")
        more = f"; {int(off.sum())} uneven gaps in all" if int(off.sum()) > 1 else ""
        raise InputError(f"{folder}: the DICOM slices are not evenly spaced: {what}{more}; read as one grid, "
                         "every slice after it would be misplaced. Restore the missing (or remove the duplicate) "
                         "slice files, or export the series again")


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False
