"""DICOM series: recognising a DICOM file and reading a folder that holds one series (SimpleITK/GDCM)."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError


def _read_dicom_series(folder: Path):
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
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise InputError(f"{folder}: DICOM series cannot be read ({str(err).strip().splitlines()[-1]})") from None


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False
