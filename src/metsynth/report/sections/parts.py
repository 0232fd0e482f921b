"""What every section builds with: a part that shows its own failure, paths and code as text."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..page import error_box, esc, part

if TYPE_CHECKING:
    from ..data import RunData

log = logging.getLogger(__name__)


def _rel(run: "RunData", path: Path) -> str:
    try:
        return str(path.relative_to(run.root))
    except ValueError:
        return str(path)


def _code(text: str) -> str:
    return f"<code>{esc(text)}</code>"


def _subpart(title: str, build, *args: Any) -> str:
    """An ``<h3>`` part whose failure shows as an error box instead of sinking the report."""
    try:
        body = build(*args)
    except Exception as err:  # noqa: BLE001 - one broken input must not hide the rest of the report
        log.exception("report: %s failed", title)
        body = error_box(title, err)
    return part(title, body)
