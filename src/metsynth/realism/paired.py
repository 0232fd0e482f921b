"""How a paired change reads: a set's features AUC minus another set's on the same lesions, with its
paired 95% interval (:func:`metsynth.realism.measure.paired_difference`), as a cell and in words.

Below both :mod:`.measure` and :mod:`.figure`, which print it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["direction", "paired_cell", "paired_reading", "signed"]


def direction(delta: dict[str, Any]) -> int:
    """1 where a paired difference's 95% interval lies above 0 (decided easier to tell from real), -1 where it
    lies below (decided harder), 0 where it holds 0."""
    lo, hi = delta["ci95"]
    return 1 if lo > 0 else -1 if hi < 0 else 0


def paired_reading(delta: dict[str, Any]) -> str:
    """One paired difference in words: easier / harder to tell from real than the first set, or level."""
    if delta.get("delta_auc") is None or not all(np.isfinite(delta["ci95"])):
        return "not compared"
    return {1: "easier to tell from real", -1: "harder to tell from real",
            0: "level (the interval holds 0)"}[direction(delta)]


def signed(value: float) -> str:
    """``+0.14``, ``-0.05``; ``0.00`` for what rounds to zero (not ``-0.00``)."""
    text = f"{value:+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text


def paired_cell(delta: dict[str, Any] | None, space: str = " ") -> str:
    """A paired difference as a table cell: ``+0.14 [+0.08, +0.20]`` ("-": none)."""
    if not delta:
        return "-"
    if delta.get("delta_auc") is None:
        return "not compared"
    lo, hi = delta["ci95"]
    return f"{signed(delta['delta_auc'])}{space}[{signed(lo)},{space}{signed(hi)}]"
