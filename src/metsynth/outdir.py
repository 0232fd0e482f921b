"""A stage's output folder: what made it, what a call may do with it, and when it is finished.

Every stage writes into one folder and records there, in one *record* file, what made it (its
settings and the stamps of its inputs). :meth:`OutputFolder.claim` is the one place that decides,
before anything is written, what a call may do with the folder:

=============================  =================================  ======================================
the folder holds               default                            ``force`` / ``replace_other``
=============================  =================================  ======================================
nothing (new or empty)         start                              start
what this call would make      resume: finished work is kept      resume (same)
another run (record differs)   refused, naming the differences    start over: the stage's outputs are
                                                                  removed, files of other names kept
files, but no record           refused, naming some of them       ``force``: write there (nothing is
                                                                  removed); ``replace_other`` alone: refused
=============================  =================================  ======================================

``force`` is the user's ``--force``. ``replace_other`` is for a caller that owns the folder, like
the study (``metsynth experiment``): it replaces what an earlier run of the study made there with
other settings, but never writes into a folder of files it did not make. Neither redoes finished
work of the same settings: same settings and inputs give the same bytes (the seeds are part of
the settings), so a rerun only completes what is missing; to redo it anyway, delete the folder.

:meth:`OutputFolder.finished` and :meth:`OutputFolder.mark_finished` are the one "finished"
marker: a JSON file written last and atomically, so a folder with it holds a complete result.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .config import read_yaml
from .errors import ConfigError, InputError
from .fileio import format_bytes, read_json, write_json

log = logging.getLogger(__name__)

State = Literal["new", "same", "replaced", "foreign"]
SHOWN_CHANGES = 4  # differences named in a refusal (then "... (N differences)")


FILE_INDEX = "files_index"  # in a record: stamp key -> files_index of its files; explains a change, never compared
_STAMP = re.compile(r"[0-9a-f]{16,64}")  # files_stamp / file_sha256 digests as records hold them
_STAMP_WORDS = ": other content (other files, or the same files written again since)"
_STAMP_KEYS = ("inputs",)  # record keys holding digests, besides those named *_files, *_digest, *_sha256, *_stamp


def _is_stamp(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_is_stamp(v) for v in value)
    return isinstance(value, str) and _STAMP.fullmatch(value) is not None


def _is_stamp_change(key: str, old: Any, new: Any) -> bool:
    """A digest of files, a manifest or weights that changed: a key that holds one, digests on both
    sides (or a missing file's None), so that no other setting's values are ever hidden."""
    named = key in _STAMP_KEYS or key.endswith(("_files", "_digest", "_sha256", "_stamp"))
    return named and (_is_stamp(new) or new is None) and (_is_stamp(old) or old is None) and old != new


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Lines ``"a.b: old -> new"`` for every leaf where two nested mappings differ (what the
    refusal of a folder holding another run names). A digest (of files, a manifest, weights) that
    differs is said in words, not as two hashes."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if old == new:
        return []
    if _is_stamp_change(prefix[:-1].rsplit(".", 1)[-1], old, new):
        return [prefix[:-1] + _STAMP_WORDS]
    return [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def _when(ns: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def file_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Which files two :func:`metsynth.fileio.files_index` records disagree on, in words: inputs
    added, no longer given, missing, or written again (size, modification time)."""
    def valid(entry: Any) -> bool:  # [size, mtime_ns], or None for a missing file
        return entry is None or (isinstance(entry, (list, tuple)) and len(entry) == 2
                                 and all(isinstance(v, int) for v in entry))

    if not all(valid(v) for v in (*old.values(), *new.values())):
        return []  # not an index this version wrote: the caller says the files changed, without names
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, ()), new.get(name, ())
        if a == b:
            continue
        if name not in old:
            out.append(f"{name}: a new input")
        elif name not in new:
            out.append(f"{name}: no longer an input")
        elif b is None:
            out.append(f"{name}: missing now")
        elif a is None:
            out.append(f"{name}: was missing, exists now")
        else:
            size = "" if a[0] == b[0] else f", {format_bytes(a[0])} -> {format_bytes(b[0])}"
            out.append(f"{name}: written again since (modified {_when(a[1])} -> {_when(b[1])}{size})")
    return out


def _fill_defaults(record: dict[str, Any], defaults: Mapping[str, Any]) -> None:
    """Give ``record`` the settings of ``defaults`` it lacks, at any depth, where its sections exist."""
    for key, value in defaults.items():
        if isinstance(value, Mapping):
            if isinstance(record.get(key), dict):
                _fill_defaults(record[key], value)
        else:
            record.setdefault(key, value)


def recorded_changes(record: Path, new: Mapping[str, Any],
                     defaults: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """How the settings recorded in ``record`` (YAML or JSON) differ from ``new``, on ``new``'s keys.
    ``defaults``: per section (nested as the record), the value a setting had in records written before
    it existed (``{"synthesis": {"image_storage": "float32"}}``), so that such a record is not another run.
    A :data:`FILE_INDEX` (``{stamp key: files_index(...)}``) is not compared: when a stamp it indexes
    differs, the files that changed are named instead."""
    old = read_json(record) if record.suffix == ".json" else read_yaml(record, error=InputError)
    if not isinstance(old, dict):
        raise InputError(f"{record}: a JSON {type(old).__name__}, not a mapping of settings")
    _fill_defaults(old, defaults or {})
    plain = json.loads(json.dumps(dict(new), default=str))  # as a record holds it: lists, not tuples
    old_index, new_index = old.pop(FILE_INDEX, None), plain.pop(FILE_INDEX, None)
    found = differences({key: old.get(key) for key in plain}, plain)
    if isinstance(old_index, dict) and isinstance(new_index, dict):
        for key, files in new_index.items():  # a stamp's files said by name, in place of "other content"
            line = key + _STAMP_WORDS
            if line in found and isinstance(old_index.get(key), dict) and isinstance(files, dict):
                named = file_changes(old_index[key], files)
                if named:
                    at = found.index(line)
                    found[at:at + 1] = named
    return found


def shown(changes: Sequence[str], limit: int = SHOWN_CHANGES, width: int = 160) -> str:
    """The first ``limit`` changes, each cut at ``width`` characters, for a one-line message."""
    text = "; ".join(c if len(c) <= width else c[: width - 3] + "..." for c in changes[:limit])
    return text + (f"; ... ({len(changes)} differences)" if len(changes) > limit else "")


@dataclass(frozen=True)
class Claim:
    """What :meth:`OutputFolder.claim` found: ``state`` is ``new`` (nothing there), ``same`` (this
    call's run, to resume), ``replaced`` (another run, whose outputs were removed) or ``foreign``
    (files of no recorded run, written over with ``force``); ``changes`` says how the recorded run
    differed."""

    path: Path
    state: State
    changes: tuple[str, ...] = ()

    @property
    def resumes(self) -> bool:
        return self.state == "same"


@dataclass(frozen=True)
class OutputFolder:
    """A stage's output folder.

    ``what``: what the stage makes, with its article ("a lesion bank"), for messages. ``record``:
    the file (relative to the folder) saying what made it. ``outputs``: the names (globs allowed,
    relative) of everything the stage writes, removed when another run is replaced. ``finished``:
    the marker file of a complete result. ``place``: how the user names another folder in the
    messages (``--out folder``). ``ignore``: names that do not make a folder foreign (files a
    caller puts there before the stage runs, like the study's ``cases.yaml``).
    """

    path: Path
    what: str
    record: str
    outputs: tuple[str, ...] = ()
    finished_marker: str | None = None
    place: str = "--out folder"
    ignore: tuple[str, ...] = ()

    @property
    def record_file(self) -> Path:
        return self.path / self.record

    def claim(self, changes: Callable[[Path], Sequence[str]], *, force: bool = False,
              replace_other: bool = False) -> Claim:
        """Decide what this call may do with the folder (the module's table), before it writes.

        ``changes(record_file)``: how the recorded run differs from this call's (empty: the same);
        called only when the record exists. A record it cannot read (an :class:`InputError` or
        ``ValueError``) is another run. Removes the outputs of a replaced run and creates the folder.
        """
        path = self.path
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path}: exists and is not a folder; choose another {self.place}")
        if self.record_file.is_file():
            try:
                found = tuple(changes(self.record_file))
            except (InputError, ValueError) as err:  # truncated by a crash, or another file of that name
                detail = str(err).splitlines()[0].removeprefix(f"{self.record_file}: ").split("; it is truncated")[0]
                if not (force or replace_other):
                    raise ConfigError(f"{self.record_file}: truncated or not {self.what} ({detail[:160]}); choose "
                                      f"another {self.place}, or pass --force to replace it") from None
                found = (f"{self.record} unreadable ({detail[:120]})",)
            if not found:
                claim = Claim(path, "same")
            elif force or replace_other:
                log.warning("%s: replacing %s of other settings or inputs (%s)", path, self.what, shown(found))
                self.remove_outputs()
                claim = Claim(path, "replaced", found)
            else:
                raise ConfigError(f"{path}: holds {self.what} of other settings or inputs ({shown(found)}); "
                                  f"choose another {self.place}, or pass --force to replace it")
        else:
            others = self.foreign_files()
            if not others:
                claim = Claim(path, "new")
            elif force:
                log.warning("%s: writing %s into a folder of other files (--force)", path, self.what)
                claim = Claim(path, "foreign")
            else:
                names = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
                raise ConfigError(f"{path}: holds files that are not {self.what} ({names}; no {self.record}); "
                                  f"choose an empty or new {self.place}, or pass --force to write there anyway")
        path.mkdir(parents=True, exist_ok=True)
        return claim

    def foreign_files(self) -> list[str]:
        """The folder's entries that are neither ignored names nor temporary files (sorted)."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir()
                      if p.name not in self.ignore and not p.name.startswith(".tmp-"))

    def remove_outputs(self) -> None:
        """Delete everything :attr:`outputs` names (and the finished marker); other files stay."""
        names = (*self.outputs, *((self.finished_marker,) if self.finished_marker else ()))
        for pattern in names:
            for item in self.path.glob(pattern):
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item)
                else:
                    item.unlink(missing_ok=True)

    # ------------------------------------------------------------------ finished
    @property
    def finished_file(self) -> Path:
        if self.finished_marker is None:
            raise ValueError(f"{self.what}: no finished marker defined")
        return self.path / self.finished_marker

    def finished(self) -> bool:
        """Whether the folder holds a complete result (its marker, written last, exists)."""
        return self.finished_file.is_file()

    def mark_finished(self, data: dict[str, Any]) -> Path:
        """Write the finished marker (atomically: a crash leaves no marker, never half of one)."""
        return write_json(self.finished_file, data)

    def read_finished(self) -> Any:
        return read_json(self.finished_file, what=f"the finished marker of {self.what}")


def force_help(what: str) -> str:
    """The ``--force`` help of a command whose output folder is an :class:`OutputFolder` of ``what``."""
    return (f"Replace {what} of other settings or inputs in the output folder (its outputs are deleted), or write "
            "into a folder of other files. Not needed to resume: a rerun with the same settings completes what "
            "is missing.")


__all__ = ["Claim", "OutputFolder", "differences", "force_help", "recorded_changes", "shown"]
