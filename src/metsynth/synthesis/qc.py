"""Visual check of a synthesis run: a PNG montage of K kept volumes, before and after.

Each row is one kept volume: the axial and the coronal slice through the pasted lesion's
centroid (radiological orientation, drawn with :mod:`metsynth.viz`), each shown as *healthy
(before)*, *synthetic (after)* and *after with the label outline*, cropped around the lesion,
with the same grey window for before and after (the 1st to 99.5th percentile of the healthy
crop, so it works for any intensity units). Rows are chosen evenly over the kept volumes of
``index.csv`` (deterministic).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..fileio import read_json
from ..volume import Volume

log = logging.getLogger(__name__)

__all__ = ["lesion_tiles", "write_preview"]


def _crop(tile: Any, centre: tuple[float, float], half_mm: float) -> Any:
    """Crop a viz Tile (and its outlines) to a square of ``2 * half_mm`` around ``centre`` (row, col)."""
    from dataclasses import replace

    rows, cols = tile.image.shape
    half = [max(8, int(round(half_mm / s))) for s in tile.spacing]
    lo = [int(min(max(round(c) - h, 0), max(n - 2 * h, 0))) for c, h, n in zip(centre, half, (rows, cols))]
    box = (slice(lo[0], lo[0] + 2 * half[0]), slice(lo[1], lo[1] + 2 * half[1]))
    outlines = {k: (m[box], c) for k, (m, c) in (tile.outlines or {}).items()}
    return replace(tile, image=tile.image[box], outlines=outlines or None)


def lesion_tiles(before: Volume, after: Volume, label: Volume, centre_index: Any, half_mm: float,
                 captions: tuple[str, str] = ("", "")) -> list[Any]:
    """Six montage tiles: axial and coronal through the lesion centre, before / after / after + label."""
    from ..viz import volume_slices

    masks = {"label": (label, "#ff3030")}
    tiles_before = volume_slices(before, centre_index, masks)
    tiles_after = volume_slices(after, centre_index, masks)
    row = []
    for plane in ("axial", "coronal"):
        b, a = tiles_before[plane], tiles_after[plane]
        mask2d = a.outlines["label"][0]
        centre = np.argwhere(mask2d).mean(axis=0) if mask2d.any() else np.asarray(mask2d.shape) / 2
        b, a = _crop(b, centre, half_mm), _crop(a, centre, half_mm)
        window = tuple(float(v) for v in np.percentile(b.image, [1, 99.5]))
        if window[1] <= window[0]:
            window = (window[0], window[0] + 1.0)
        row += [
            replace_tile(b, outlines=None, title=(plane == "axial" and captions[0]) or f"{plane} before",
                         window=window),
            replace_tile(a, outlines=None, title=(plane == "axial" and captions[1]) or f"{plane} after",
                         window=window),
            replace_tile(a, title=f"{plane} + label", window=window),
        ]
    return row


def replace_tile(tile: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(tile, **changes)


def write_preview(run_dir: str | os.PathLike, k: int, cohort: Any = None, out_png: str | os.PathLike | None = None,
                  half_window_mm: float = 24.0) -> Path:
    """Write ``run_dir/preview.png`` (or ``out_png``) for ``k`` kept volumes of a synthesis run."""
    from ..viz import montage

    run = Path(run_dir)
    index = run / "index.csv"
    if not index.is_file():
        raise InputError(f"{run}: no index.csv; is this a finished `metsynth synthesize` folder?")
    with open(index, newline="", encoding="utf-8") as fh:
        kept = [row for row in csv.DictReader(fh) if row["kept"] == "true"]
    if not kept:
        raise InputError(f"{run}: no kept volume to preview")
    if cohort is None:
        import yaml

        from ..cohort import load_cohort

        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        cohort = load_cohort(config["cohort"])
    picks = sorted({int(i) for i in np.linspace(0, len(kept) - 1, min(k, len(kept))).round()})
    rows = []
    for i in picks:
        sidecar = read_json(run / "sidecars" / f"{kept[i]['volume_id']}.json")
        after = Volume.read(run / sidecar["image"])
        label = Volume.read(run / sidecar["label"])
        before = Volume.read(cohort.case(sidecar["healthy_case"]).image)
        lesion = sidecar["lesion"]
        captions = (f"{sidecar['volume_id']}", f"after: {lesion['region']}, {lesion['mm3']:.0f} mm3")
        rows.append(lesion_tiles(before, after, label, lesion["centroid_index"], half_window_mm, captions))
    target = Path(out_png) if out_png is not None else run / "preview.png"
    montage(rows, target, title=f"{run.name}: {len(rows)} of {len(kept)} kept volumes; axial and coronal "
            "through the lesion: before | after | after + label", cell_px=220)
    log.info("preview of %d volumes: %s", len(rows), target)
    return target
