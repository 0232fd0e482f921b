"""Progress bars, and the switch that turns them off (``metsynth --quiet``).

The command line sets the switch (:func:`set_quiet`); library code reads it (:func:`quiet`) and
draws its bars with :func:`progress_bar`. The switch belongs to the process: worker processes
start with it off (bars on), as they always did.
"""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar", "quiet", "set_quiet"]

_state: dict[str, bool] = {"quiet": False}


def quiet() -> bool:
    """Whether progress bars and chatter are switched off (``metsynth --quiet``)."""
    return _state["quiet"]


def set_quiet(value: bool) -> None:
    """Switch progress bars and chatter off (``True``) or on for this process."""
    _state["quiet"] = bool(value)


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "task") -> Any:
    """A tqdm bar of ``total`` steps labelled ``desc``, or None when ``enabled`` is false, there is
    nothing to count or the process is quiet."""
    if not enabled or total == 0 or quiet():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
