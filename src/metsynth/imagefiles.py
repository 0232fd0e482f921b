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


# Paths read from a manifest (absolute) -> (the manifest, the path as the manifest writes it), so that a
# missing one is reported with the manifest's rules and a missing file given on the command line is not
_MANIFEST_PATHS: dict[str, tuple[str, str]] = {}


def note_manifest_path(path: str | os.PathLike, manifest: str | os.PathLike, written: str) -> None:
    """Remember that ``path`` comes from ``manifest``, where it is written ``written``
    (:func:`metsynth.cohort.load_cohort` calls it for every file a manifest names)."""
    _MANIFEST_PATHS[os.fspath(path)] = (os.fspath(manifest), written)


def _not_found(path: Path, what: str) -> str:
    listed = _MANIFEST_PATHS.get(os.fspath(path))
    if listed is not None:
        manifest, written = listed
        where = f"{path}: {what + ' ' if what else ''}"
        if Path(os.path.expanduser(written)).is_absolute():
            return f"{where}file not found; check the path (as written in {manifest})"
        return f"{where}file not found; check the path ({written!r} in {manifest} is relative to the manifest's folder)"
    if path.is_symlink():
        return (f"file not found: {path} is a link to {os.readlink(path)}, which does not exist"
                + (f" (the {what})" if what else "") + "; fix the link or give the file itself")
    absolute = Path(os.path.abspath(path))
    text = f"file not found: {path}" + (f" (absolute path {absolute})" if str(absolute) != str(path) else "")
    if what:
        text += f", given as the {what}"
    folder = next((f for f in absolute.parents if f.exists()), None)
    if folder is not None and folder != absolute.parent:
        text += f"; the folder {absolute.parent} does not exist either"
    return text + "; check the path"


def check_readable(path: str | os.PathLike, what: str = "") -> None:
    """Raise InputError unless ``path`` exists and is a kind :meth:`Volume.read` reads (cheap: no
    pixel data is read). ``what`` names the input in the message, e.g. "image of 'M001'".

    A missing file named by a manifest is reported with the manifest and how it writes the path; one
    given directly (the command line) as ``file not found: PATH`` with its absolute form."""
    path = Path(path)
    where = f"{path}: {what + ' ' if what else ''}"
    if not path.exists():
        raise InputError(_not_found(path, what))
    if not path.is_dir() and not _has_suffix(path, READABLE_SUFFIXES) and not _looks_like_dicom(path):
        raise InputError(f"{where}unsupported file type, not an image file; use NIfTI (.nii/.nii.gz), NRRD, MHA, "
                         "or a folder with one DICOM series")
