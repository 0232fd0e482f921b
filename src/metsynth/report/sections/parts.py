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


def ddim_text(ck: dict[str, Any], total: int | None = None) -> str:
    """The DDIM steps a harmonization actually ran, e.g. "DDIM from t=2: 2 steps (t = 2, 0; 20
    requested over the full 200-step schedule)" (``ck``: an entry of ``RunData.checkpoints``)."""
    start, asked, steps = ck.get("start_timestep"), ck.get("ddim_steps"), ck.get("timesteps")
    schedule = f"the full {total}-step schedule" if total else "the full schedule"
    if steps:
        n = len(steps)
        return (f"DDIM from t={start}: {n} step{'s' if n != 1 else ''} (t = {', '.join(str(t) for t in steps)}; "
                f"{asked} requested over {schedule})")
    return f"DDIM from t={start}; {asked} steps requested over {schedule} (the steps run are not recorded)"
