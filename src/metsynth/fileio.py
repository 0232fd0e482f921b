"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted run therefore never leaves a half-written file under a final name, and a rerun
can treat "the file exists" as "the file is complete". A write that fails because the disk (or
the quota) is full raises :class:`DiskFullError`, one line naming the file, and leaves nothing
under the final name; :func:`check_free_space` refuses a request before it starts writing when
its estimated output cannot fit.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import InputError, OutputError, file_ancestor

DISK_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)


class WriteError(OutputError):
    """A file could not be written completely (nothing is left under its final name).

    Also an :class:`OSError` (``errno`` is kept), so code that handles OSError still does; its
    text is the one-line message alone.
    """


class DiskFullError(WriteError):
    """The disk (or the user's quota) filled up while writing a file."""

    @classmethod
    def writing(cls, path: str | os.PathLike) -> "DiskFullError":
        return cls(errno.ENOSPC, f"disk full writing {path}: free space or choose another --out")


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` is an OSError saying the disk or the quota is full."""
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS


def temp_path_for(path: Path) -> Path:
    """A unique hidden path in the same folder that keeps the full suffix (.nii.gz stays .nii.gz)."""
    path = Path(path)
    return path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``, else removed.

    An OSError saying the disk or the quota is full (raised by the writer, by the rename or by
    the folder's creation) becomes :class:`DiskFullError` naming ``path``.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if is_disk_full(err) and not isinstance(err, WriteError):
            raise DiskFullError.writing(path) from err
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` atomically, and the same bytes for the same tensors: saved through an open
    file, the archive's inner folder is always ``archive`` (given a path, torch names it after the
    file, here a random temporary name, so each export of the same weights hashed differently and a
    harmonization keyed on the checkpoint's sha256 refused its own folder)."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` atomically (a temporary file renamed: never a half-copied file)."""
    import shutil

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike, what: str = "what metsynth wrote there",
              fix: str = "delete it and rerun the command that wrote it") -> Any:
    """A JSON file's content; a file that is not UTF-8 or not JSON (truncated by a crash or a full
    disk, or another file under that name) raises :class:`InputError` naming it, ``what`` it
    should be and ``fix``. (InputError is a ValueError, as json's own errors are.)"""
    path = Path(path)
    data = path.read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        problem = f"not UTF-8 text (byte 0x{data[err.start]:02x} on line {line})"
    except json.JSONDecodeError as err:
        problem = f"not valid JSON ({err.msg}; line {err.lineno}, column {err.colno})"
    raise InputError(f"{path}: {problem}; it is truncated or not {what}: {fix}")


def check_output_path(path: str | os.PathLike, kind: str | None = None, option: str = "--out") -> None:
    """Refuse, before anything is written, an output path that cannot be written.

    ``kind`` is ``"folder"`` or ``"file"`` (what the command writes at ``path``), or None when
    either may be. Refused with :class:`OutputError` naming the path and the fix: a path under a
    file, a file where a folder is to be written and the reverse, and a path to be created in a
    folder this user cannot write (no permission, read-only file system). An existing output is
    not checked for write permission: a rerun whose outputs are all done writes nothing.
    """
    path = Path(path)
    blocker = file_ancestor(path.parent) if path.parent != path else None
    if blocker is not None:
        raise OutputError(errno.ENOTDIR, f"{path}: cannot be written, {blocker} is a file and not a folder; "
                                         f"choose another {option}, or move the file away")
    if path.exists():
        if kind == "folder" and not path.is_dir():
            raise OutputError(errno.ENOTDIR, f"{path}: is a file, but {option} is the folder to write into; "
                                             f"choose another {option} (a new or existing folder), or move "
                                             "the file away")
        if kind == "file" and path.is_dir():
            raise OutputError(errno.EISDIR, f"{path}: is a folder, but {option} is the file to write; give "
                                            f"the path of a file (e.g. inside {path}), or move the folder away")
        return
    existing = path.parent
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        probe = os.statvfs(existing) if hasattr(os, "statvfs") else None
        if probe is not None and probe.f_flag & getattr(os, "ST_RDONLY", 1):
            raise OutputError(errno.EROFS, f"{path}: {existing} is on a read-only file system; choose another "
                                           f"{option} on a writable disk")
        raise OutputError(errno.EACCES, f"{path}: {existing} is not writable (permission denied); choose "
                                        f"another {option} in a folder you can write, or fix its permissions")


def check_not_an_input(path: str | os.PathLike, inputs: Any, option: str = "--out") -> None:
    """Refuse, before anything is written, an output file ``path`` that is one of the ``inputs``.

    ``inputs``: paths (or lists of paths, or None) the command reads. Compared as files
    (:func:`os.path.samefile`: the same file under another name, a symbolic or hard link, counts),
    so ``metsynth femur CT -o CT`` never writes the mask over the CT. A missing output is no input.
    """
    out = Path(path)
    if not out.exists() or out.is_dir():
        return
    stack = [inputs]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, (bool, int, float)):
            continue
        if isinstance(item, (list, tuple, set)):
            stack.extend(item)
            continue
        if not isinstance(item, (str, os.PathLike)):
            continue
        candidate = Path(item)
        try:
            same = candidate.exists() and not candidate.is_dir() and os.path.samefile(out, candidate)
        except OSError:
            same = False
        if same:
            raise OutputError(errno.EEXIST, f"{out}: is also an input of this command ({candidate}); writing "
                                            f"{option} there would overwrite it; choose another {option}")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def file_sha256(path: str | os.PathLike, length: int | None = None) -> str:
    """SHA-256 of a file's bytes (read in chunks), hex, optionally cut to ``length`` characters."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def files_stamp(paths: Iterable[str | os.PathLike | None]) -> str | None:
    """A short fingerprint of files as they are on disk now: each one's name, size and modification
    time (not its folder, so a moved run keeps it). Recorded next to what was made from them, it
    tells a rerun on the same inputs (resume, skip) from one on inputs that an earlier step wrote
    again (redo), as ``make`` does. ``None`` paths are skipped; None when a file is missing."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        if path is None:
            continue
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        digest.update(f"{Path(path).name}:{st.st_size}:{st.st_mtime_ns}|".encode())
    return digest.hexdigest()[:20]


def files_index(paths: Iterable[str | os.PathLike | None]) -> dict[str, list[int] | None]:
    """What :func:`files_stamp` hashes, file by file: each file's path relative to the folder that
    holds all their folders (``"images/M001.nii.gz"``: unique, and the same for a moved cohort) ->
    ``[size, mtime_ns]`` (``None`` for a missing file). Recorded beside a stamp, it lets a refusal
    name the files that changed instead of showing two hashes (:func:`metsynth.outdir.file_changes`)."""
    files = [Path(os.path.abspath(p)) for p in paths if p is not None]
    if not files:
        return {}
    root = Path(os.path.commonpath([str(f.parent.parent) for f in files]))  # keys keep the file's folder
    index: dict[str, list[int] | None] = {}
    for path in files:
        key = path.relative_to(root).as_posix()
        try:
            st = os.stat(path)
        except FileNotFoundError:
            index[key] = None
            continue
        index[key] = [st.st_size, st.st_mtime_ns]
    return index


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'`` (binary units, for messages)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def free_bytes(folder: str | os.PathLike) -> int:
    """Free space for this user in ``folder`` (or in its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return int(shutil.disk_usage(folder).free)


def check_free_space(out: str | os.PathLike, count: int, estimate_bytes: float, what: str, fix: str) -> None:
    """Refuse, before anything is written, a request whose output cannot fit in ``out``.

    ``count`` items (``what``, e.g. "synthetic volumes") of ``estimate_bytes`` in all: a
    :class:`DiskFullError` naming the count, the estimate, the free space and ``fix`` when the
    estimate exceeds the free space of ``out``'s file system.
    """
    free = free_bytes(out)
    if estimate_bytes > free:
        raise DiskFullError(errno.ENOSPC, (
            f"{out}: {count:,} {what} would need about {format_bytes(estimate_bytes)} but only "
            f"{format_bytes(free)} is free there; {fix}"))


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete temporary files left by an interrupted run in ``folder`` (recursively)."""
    n = 0
    for tmp in Path(folder).rglob(".tmp-*"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            n += 1
    return n
