"""Reading the per-case result CSVs of several models into one long results table.

A CSV per model as written by ``metsynth evaluate`` (one row per case, columns ``case_id`` and the
metrics); :func:`load_results` adds a ``model`` column and fills undefined distances (see
:func:`metsynth.evaluation.metrics.fill_worst_case`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .metrics import METRICS, fill_worst_case

if TYPE_CHECKING:
    import pandas as pd


def parse_result_spec(spec: str | os.PathLike) -> tuple[str, Path]:
    """``name=path`` or ``path`` -> (model name, path); the name defaults to the file stem, or
    to the parent folder's name when the file has a generic name (``metrics.csv``)."""
    text = os.fspath(spec)
    if "=" in text and not Path(text).exists():
        name, _, path = text.partition("=")
        if not name:
            raise InputError(f"{text!r}: empty model name before '='; write NAME=PATH")
        return name, Path(path)
    path = Path(text)
    stem = re.sub(r"\.(csv|tsv)$", "", path.name)
    if stem in ("metrics", "results", "per_case", "cases"):
        stem = path.resolve().parent.name
    return stem, path


def load_results(
    specs: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
    worst_case: Any = "diagonal",
) -> "pd.DataFrame":
    """Read per-case CSVs of several models into one long table with a ``model`` column.

    ``specs``: paths or ``name=path`` strings, or a mapping name -> path. Undefined distances
    are filled with ``worst_case`` (see :func:`~metsynth.evaluation.metrics.fill_worst_case`).
    """
    import pandas as pd

    items = list(specs.items()) if isinstance(specs, Mapping) else [parse_result_spec(s) for s in specs]
    if not items:
        raise InputError("no result files given; pass per-case CSVs written by `metsynth evaluate`")
    frames = []
    seen: set[str] = set()
    for name, path in items:
        path = Path(path)
        if name in seen:
            raise InputError(f"model name {name!r} is used twice; name them explicitly with NAME=PATH")
        seen.add(name)
        if not path.is_file():
            raise InputError(f"{path}: results file not found (model {name!r})")
        try:
            df = pd.read_csv(path)
        except Exception as err:  # noqa: BLE001 - any parse failure is the user's file
            raise InputError(f"{path}: cannot be read as CSV ({err})") from None
        if "case_id" not in df:
            raise InputError(f"{path}: no 'case_id' column; expected a per-case CSV from `metsynth evaluate`")
        missing = [m for m in METRICS if m not in df]
        if missing:
            raise InputError(f"{path}: missing metric column(s) {', '.join(missing)}")
        df = fill_worst_case(df, worst_case)
        df.insert(0, "model", name)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


__all__ = ["load_results", "parse_result_spec"]
