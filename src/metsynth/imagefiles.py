"""Which files are images: the suffixes :class:`~metsynth.volume.Volume` reads and writes, and the
cheap check that a path is one of them (no pixel data is read)."""

from __future__ import annotations

import os
from pathlib import Path

from .dicom import _looks_like_dicom
from .errors import InputError

READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


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
