"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted run therefore never leaves a half-written file under a final name, and a rerun
can treat "the file exists" as "the file is complete".
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def temp_path_for(path: Path) -> Path:
    """A unique hidden path in the same folder that keeps the full suffix (.nii.gz stays .nii.gz)."""
    path = Path(path)
    return path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


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


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete temporary files left by an interrupted run in ``folder`` (recursively)."""
    n = 0
    for tmp in Path(folder).rglob(".tmp-*"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            n += 1
    return n


def finished_sidecar(folder: str | os.PathLike, volume_id: str) -> dict[str, Any] | None:
    """The sidecar of a generated volume of a set folder (``images/``, ``labels/``, ``sidecars/``)
    when the volume is complete, else None.

    The sidecar is written last, atomically, so a readable ``sidecars/<id>.json`` whose named files
    (``image``, ``label``) all exist marks the volume done; a kept volume must name its image, a
    dropped one (``kept: false``) may name none. Used by synthesis and harmonization to resume
    (harmonization also checks what the sidecar records of its sources).
    """
    folder = Path(folder)
    sidecar = folder / "sidecars" / f"{volume_id}.json"
    if not sidecar.is_file():
        return None
    try:
        data = read_json(sidecar)
    except ValueError:
        return None
    if data.get("kept", True) and not data.get("image"):
        return None
    if not all((folder / data[key]).is_file() for key in ("image", "label") if data.get(key)):
        return None
    return data
