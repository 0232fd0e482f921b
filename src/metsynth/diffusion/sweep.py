"""The start-timestep sweep (the paper's Figure 4): the same volumes harmonized from several lambda.

SDEdit's one free choice is how far the synthetic volume is noised before it is denoised: too
little and the DDPM changes nothing, too much and it redraws the anatomy, the lesion included.
:func:`sweep_start_timesteps` harmonizes the same synthetic volumes (by default those the realism
measure samples, :func:`metsynth.realism.measure.sample_volume_ids`) from each start timestep into
``OUT/t<T>/`` (each a harmonized set with its index, sidecars and consistency table; ``t0`` is the
synthetic set itself and is not copied), and :func:`sweep_table` reads back, per timestep, the lesion
contrast the consistency check kept. ``metsynth realism`` then measures every ``t<T>`` set, and
:func:`metsynth.realism.figure.figure4` draws realism AUC, contrast kept and (where a study trained
them) the segmentation Dice against the start timestep, with the lesions themselves above.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from ..config import Settings
from ..errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["SweepConfig", "sweep_start_timesteps", "sweep_table"]


class SweepConfig(Settings):
    """Settings of the start-timestep sweep (``metsynth harmonize-sweep``, the study's ``sweep`` stage)."""

    timesteps: tuple[int, ...] = Field(
        (0, 5, 10, 20), description="Start timesteps to harmonize from (0: the synthetic set itself). The paper's "
        "Figure 4 shows 5 to 50.")
    volumes: int | None = Field(
        None, ge=4, description="Volumes harmonized per timestep (None: as many as the realism measure samples, "
        "i.e. as many as there are real lesions (realism.roles, realism.max_real_cases); fewer: that many of that "
        "sample, so that the realism measure compares each timestep on lesions of its own sample; at least 4, the "
        "fewest it compares).")

    @field_validator("timesteps")
    @classmethod
    def _sorted(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or min(value) < 0:
            raise ValueError(f"timesteps must be non-negative and at least one, got {value}")
        return tuple(sorted(set(int(v) for v in value)))


def sweep_start_timesteps(synthetic_dir: str | os.PathLike, checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                          volume_ids: list[str], timesteps: tuple[int, ...], harmonize: Any = None, *,
                          workers: int = 1, scheduler: Any = None, device: str = "auto", precision: str = "32",
                          progress: bool = True, force: bool = False,
                          replace_other: bool = False) -> dict[int, Path]:
    """Harmonize ``volume_ids`` of the synthetic set from each of ``timesteps`` into ``out_dir/t<T>``.

    ``harmonize``: the :class:`~metsynth.diffusion.presets.HarmonizeConfig` whose start timestep is
    replaced (default: the checkpoint's). Resumable like :func:`~metsynth.diffusion.harmonize.harmonize_set`.
    Returns timestep -> set folder (``0`` -> the synthetic set).
    """
    from .harmonize import checkpoint_settings, harmonize_set
    from .presets import check_harmonize

    synthetic_dir, out = Path(synthetic_dir), Path(out_dir)
    settings = checkpoint_settings(checkpoint)
    base = harmonize or settings.harmonize
    for t in timesteps:  # every timestep checked before anything is written
        try:
            check_harmonize(base.model_copy(update={"start_timestep": int(t)}), settings.noise, settings.train)
        except ValueError as err:
            raise ConfigError(f"sweep timestep {t}: {err}") from None
    sets: dict[int, Path] = {}
    for t in sorted(set(int(v) for v in timesteps)):
        if t == 0:
            sets[0] = synthetic_dir
            continue
        folder = out / f"t{t}"
        harmonize_set(synthetic_dir, folder, checkpoint, base.model_copy(update={"start_timestep": t}),
                      workers=workers, scheduler=scheduler, device=device, precision=precision, progress=progress,
                      force=force, replace_other=replace_other, volume_ids=volume_ids)
        sets[t] = folder
    return sets


def sweep_table(sets: dict[int, Path]) -> list[dict[str, Any]]:
    """Per timestep: volumes, judged lesions, median (and 10th percentile of) contrast kept, flagged lesions."""
    rows = []
    for t, folder in sorted(sets.items()):
        if t == 0:
            rows.append({"timestep": 0, "folder": str(folder), "lesions": None, "contrast_kept": 1.0,
                         "contrast_kept_p10": 1.0, "collapsed": 0})
            continue
        ratios, collapsed = [], 0
        path = Path(folder) / "consistency.csv"
        if path.is_file():
            with open(path, newline="") as fh:
                for row in csv.DictReader(fh):
                    if row.get("judged") == "true" and row.get("ratio"):
                        ratios.append(float(row["ratio"]))
                        collapsed += row.get("collapsed") == "true"
        rows.append({"timestep": t, "folder": str(folder), "lesions": len(ratios),
                     "contrast_kept": float(np.median(ratios)) if ratios else None,
                     "contrast_kept_p10": float(np.percentile(ratios, 10)) if ratios else None,
                     "collapsed": collapsed})
    return rows
