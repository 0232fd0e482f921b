"""Errors a user can act on.

Every error raised for bad input or bad configuration is a :class:`MetsynthError`: its message
names the file, the case or the parameter, and says how to fix it. The command line prints the
message as one line (no traceback) and exits non-zero.

:func:`os_error_message` words the operating system's refusals that a user can fix (a path that
is a file where a folder is needed or the reverse, no permission, a read-only file system, a full
disk) as such a line; the command line uses it as a last resort for an :class:`OSError` that no
library function turned into a :class:`MetsynthError` itself.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path


class MetsynthError(Exception):
    """Base class of errors that are the user's to fix (not bugs)."""


class InputError(MetsynthError, ValueError):
    """An input file or its content is wrong: missing, unreadable, wrong grid, NaNs..."""


class ConfigError(MetsynthError, ValueError):
    """A configuration value is wrong, or a run directory belongs to another configuration."""


class OutputError(MetsynthError, OSError):
    """An output path cannot be written: a file where a folder is needed (or the reverse), a path
    under a file, a folder without write permission or on a read-only disk, a full disk.

    Also an :class:`OSError` (``errno`` is kept when given), so code that handles OSError still
    does; its text is the one-line message alone.
    """

    def __str__(self) -> str:
        return str(self.strerror if self.strerror is not None else super().__str__())


# errno -> kind of refusal that :func:`os_error_message` words (the user's to fix, not a bug)
_USER_ERRNOS = {
    errno.EISDIR: "is-dir", errno.ENOTDIR: "not-dir", errno.EEXIST: "exists",
    errno.EACCES: "permission", errno.EPERM: "permission", errno.EROFS: "read-only",
    errno.ENOSPC: "full", **({errno.EDQUOT: "full"} if hasattr(errno, "EDQUOT") else {}),
}
_TEMP_NAME = re.compile(r"^\.tmp-[0-9a-f]{12}-")


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as a message shows it: the final name for a temporary file of an atomic write."""
    p = Path(os.fsdecode(path))
    name = _TEMP_NAME.sub("", p.name)
    return str(p.with_name(name)) if name and name != p.name else str(p)


def file_ancestor(path: str | os.PathLike) -> Path | None:
    """The first existing folder-to-be of ``path`` (itself or a parent) that is not a folder."""
    p = Path(os.fsdecode(path))
    for candidate in [*reversed(p.parents), p]:
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def os_error_message(err: BaseException, option: str = "--out") -> str | None:
    """One line naming the path and the fix for an OSError that is the user's to fix; else None.

    Handled: a file where a folder is needed (ENOTDIR, EEXIST) or a folder where a file is
    (EISDIR), no permission (EACCES, EPERM), a read-only file system (EROFS) and a full disk or
    quota (ENOSPC, EDQUOT). Other OSErrors (and OSErrors naming no file) give None: they are bugs
    or need the traceback.
    """
    if not isinstance(err, OSError):
        return None
    kind = _USER_ERRNOS.get(err.errno)  # type: ignore[arg-type]
    raw = err.filename2 if err.filename2 is not None and kind in ("is-dir", "exists") else err.filename
    if kind is None or raw is None:
        return None
    path = shown_path(raw)
    if kind == "full":
        return f"disk full writing {path}: free space or choose another {option}"
    if kind == "read-only":
        return f"{path}: the file system is read-only; choose another {option} on a writable disk"
    if kind == "permission":
        return (f"{path}: permission denied; fix its permissions (chmod/chown), or, for an output, choose "
                f"another {option} in a folder you can write")
    if kind == "is-dir":
        return (f"{path}: is a folder where a file is to be written; give the path of a file, or move the "
                "folder away")
    blocker = file_ancestor(raw)
    if blocker is not None:
        where = f"{path}: cannot be a folder, {blocker} is a file" if str(blocker) != str(raw) \
            else f"{path}: is a file where a folder is needed"
        return f"{where}; choose another {option}, or move the file away"
    if kind == "exists":
        return f"{path}: already exists; choose another {option}, or move it away"
    return None
