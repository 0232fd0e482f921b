"""Pictures for quality control: orthogonal slices with mask outlines, and montages.

Display follows the radiological convention: axial slices are seen from the feet (the patient's
right on the image's left, anterior up); coronal slices have the patient's right on the left
and superior up; sagittal slices have anterior on the left and superior up. Pixels are drawn at
their physical aspect ratio (from the spacing). Figures are built on
:class:`matplotlib.figure.Figure` (Agg), never through pyplot, so nothing leaks between calls,
and PNGs are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import InputError
from .fileio import atomic_path
from .volume import Volume

PLANES = ("axial", "coronal", "sagittal")
WINDOWS: dict[str, tuple[float, float]] = {
    "bone": (-450.0, 1550.0),  # W 2000 / L 550
    "soft": (-160.0, 240.0),  # W 400 / L 40
    "wide": (-250.0, 1250.0),  # bone and soft tissue together (QC default)
}
# Corner letters of each plane: (left, right, top, bottom) of the displayed image.
_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}

Outlines = Union[None, Sequence[tuple[np.ndarray, Any]], Mapping[str, tuple[np.ndarray, Any]]]


@dataclass
class Tile:
    """One cell of a montage: a 2D image (row 0 at the top), outlines and a caption."""

    image: np.ndarray
    outlines: Outlines = None
    title: str = ""
    spacing: tuple[float, float] = (1.0, 1.0)  # (row, column) pixel size in mm
    window: tuple[float, float] | str | None = None


# ------------------------------------------------------------------ orientation
def canonical(volume: Volume) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray, np.ndarray]:
    """The array reordered so that its axes grow along world (z: superior, y: posterior, x: left).

    Returns (array view, spacing, perm, flips): canonical axis ``k`` is volume axis ``perm[k]``,
    flipped where ``flips[k]``. Oblique directions are snapped to the nearest world axis.
    """
    d = np.asarray(volume.direction, dtype=np.float64)
    world_of_axis = np.argmax(np.abs(d), axis=0)  # array axis i runs mostly along world axis world_of_axis[i]
    if sorted(world_of_axis.tolist()) != [0, 1, 2]:
        world_of_axis = np.array([0, 1, 2])
    perm = np.empty(3, dtype=int)
    for i, k in enumerate(world_of_axis):
        perm[k] = i
    flips = np.array([d[k, perm[k]] < 0 for k in range(3)])
    arr = np.transpose(volume.array, perm)
    for k in range(3):
        if flips[k]:
            arr = np.flip(arr, axis=k)
    spacing = tuple(float(volume.spacing[perm[k]]) for k in range(3))
    return arr, spacing, perm, flips  # type: ignore[return-value]


def _canonical_index(volume: Volume, index: Sequence[float], perm: np.ndarray, flips: np.ndarray) -> np.ndarray:
    idx = np.asarray(index, dtype=np.float64)[perm]
    shape = np.asarray(volume.shape)[perm]
    return np.where(flips, shape - 1 - idx, idx)


def display_slice(array: np.ndarray, spacing: Sequence[float], plane: str, index: int
                  ) -> tuple[np.ndarray, tuple[float, float]]:
    """A slice of a canonical array (see :func:`canonical`) as displayed: row 0 at the top.

    Returns the 2D image and its (row, column) pixel size in mm.
    """
    sz, sy, sx = spacing
    if plane == "axial":  # rows: anterior -> posterior; columns: patient's right -> left
        return array[index], (sy, sx)
    if plane == "coronal":  # rows: superior -> inferior
        return array[::-1, index, :], (sz, sx)
    if plane == "sagittal":  # columns: anterior -> posterior
        return array[::-1, :, index], (sz, sy)
    raise InputError(f"unknown plane {plane!r}; choose from {', '.join(PLANES)}")


def volume_slices(volume: Volume, center_index: Sequence[float] | None = None,
                  masks: Mapping[str, tuple[Volume, Any]] | None = None) -> dict[str, Tile]:
    """Axial, coronal and sagittal tiles through one point, with mask outlines (for montages)."""
    arr, spacing, perm, flips = canonical(volume)
    if center_index is None:
        center = np.asarray(arr.shape) // 2
    else:
        center = np.round(_canonical_index(volume, center_index, perm, flips)).astype(int)
    center = np.clip(center, 0, np.asarray(arr.shape) - 1)
    mask_arrays = {}
    for name, (mvol, color) in (masks or {}).items():
        if mvol.shape != volume.shape:
            raise InputError(f"mask {name!r} has shape {mvol.shape}, the image {volume.shape}; "
                             "masks must be on the image's grid")
        marr = np.transpose(mvol.array, perm)
        for k in range(3):
            if flips[k]:
                marr = np.flip(marr, axis=k)
        mask_arrays[name] = (marr, color)
    tiles = {}
    for axis, plane in enumerate(PLANES):
        img, px = display_slice(arr, spacing, plane, int(center[axis]))
        outlines = {name: (display_slice(m, spacing, plane, int(center[axis]))[0], c)
                    for name, (m, c) in mask_arrays.items()}
        tiles[plane] = Tile(np.asarray(img), outlines, plane, px)
    return tiles


# ------------------------------------------------------------------ figures
def ortho_slices(volume: Volume, masks: Mapping[str, tuple[Volume, Any]] | None = None, *,
                 path: str | os.PathLike, center_world: Sequence[float] | None = None,
                 center_index: Sequence[float] | None = None,
                 window: tuple[float, float] | str = "wide", title: str | None = None,
                 width_px: int = 1500, height_px: int | None = None, dpi: int = 100) -> Path:
    """Write a PNG with axial, coronal and sagittal slices through one point.

    ``masks`` maps a name to ``(mask volume on the image grid, matplotlib colour)``; they are
    drawn as outlines. The point is ``center_world`` (mm, z, y, x) or ``center_index`` (voxel
    indices, z, y, x); by default the centre of the first non-empty mask, else of the volume.
    Returns the path written.
    """
    lo, hi = _window(window)
    if center_world is not None and center_index is not None:
        raise InputError("give center_world or center_index, not both")
    if center_world is not None:
        center_index = volume.world_to_index(np.asarray(center_world, dtype=np.float64))
    if center_index is None:
        for mvol, _ in (masks or {}).values():
            if np.any(mvol.array):
                center_index = np.argwhere(mvol.array).mean(axis=0)
                break
    tiles = volume_slices(volume, center_index, masks)
    widths = [t.image.shape[1] * t.spacing[1] for t in tiles.values()]
    heights = [t.image.shape[0] * t.spacing[0] for t in tiles.values()]
    header = 70
    if height_px is None:
        height_px = int(round(width_px * max(heights) / sum(widths) * 1.04)) + header + 10
    fig = _figure(width_px, height_px, dpi)
    top = 1.0 - header / height_px
    gs = fig.add_gridspec(1, 3, width_ratios=widths, left=0.01, right=0.99, bottom=0.01, top=top, wspace=0.03)
    for k, (plane, tile) in enumerate(tiles.items()):
        ax = fig.add_subplot(gs[0, k])
        _draw_tile(ax, tile, (lo, hi), plane=plane, scale_bar=True)
    name = Path(volume.path).name if volume.path is not None else ""
    fig.suptitle(title if title is not None else name, color="white", fontsize=13, y=1.0 - 8 / height_px, va="top")
    _legend(fig, masks, height_px)
    return _save(fig, path, dpi)


def montage(rows: Sequence[Sequence[Tile | tuple | None]], path: str | os.PathLike, *,
            window: tuple[float, float] | str = "wide", title: str | None = None,
            cell_px: int = 256, dpi: int = 100, scale_bar: bool = True) -> Path:
    """Write a PNG grid of 2D images with outlines and captions (QC sheets, report figures).

    Each cell is a :class:`Tile` or a tuple ``(image, outlines, title[, spacing])`` where
    ``outlines`` is ``None``, a list of ``(mask2d, colour)`` or a dict ``name -> (mask2d, colour)``
    and ``spacing`` the (row, column) pixel size in mm (default 1, 1). ``None`` leaves a cell
    empty. Images are drawn with row 0 at the top (use :func:`volume_slices` or
    :func:`display_slice` to get radiologically oriented slices).
    """
    if not rows or not any(rows):
        raise InputError("montage needs at least one row with one image")
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    header = 40 if title else 0
    caption = 22
    width, height = n_cols * cell_px, n_rows * (cell_px + caption) + header
    fig = _figure(width, height, dpi)
    default = _window(window)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            if cell is None:
                continue
            tile = _as_tile(cell)
            left = j * cell_px / width
            bottom = 1.0 - (header + (i + 1) * (cell_px + caption)) / height
            ax = fig.add_axes((left + 2 / width, bottom + 2 / height, (cell_px - 4) / width, (cell_px - 4) / height))
            win = _window(tile.window) if tile.window is not None else default
            _draw_tile(ax, tile, win, plane=None, scale_bar=scale_bar)
            fig.text(left + 0.5 * cell_px / width, bottom + (cell_px + 2) / height, tile.title, color="white",
                     fontsize=9, ha="center", va="bottom")
    if title:
        fig.suptitle(title, color="white", fontsize=13, y=1.0 - 6 / height, va="top")
    return _save(fig, path, dpi)


# ------------------------------------------------------------------ internals
def _figure(width_px: int, height_px: int, dpi: int):
    from matplotlib.figure import Figure

    if width_px < 50 or height_px < 50:
        raise InputError(f"figure size {width_px}x{height_px} px is too small (>= 50 px each)")
    return Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, facecolor="black")


def _save(fig, path: str | os.PathLike, dpi: int) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: pictures are written as PNG; use a .png file name")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return path


def _window(window: tuple[float, float] | str) -> tuple[float, float]:
    if isinstance(window, str):
        if window not in WINDOWS:
            raise InputError(f"unknown window {window!r}; choose from {', '.join(WINDOWS)} or give (low, high)")
        return WINDOWS[window]
    lo, hi = (float(v) for v in window)
    if not hi > lo:
        raise InputError(f"window {window!r}: the upper value must exceed the lower one")
    return lo, hi


def _as_tile(cell: Tile | tuple) -> Tile:
    if isinstance(cell, Tile):
        return cell
    if not isinstance(cell, tuple) or len(cell) not in (3, 4):
        raise InputError("a montage cell is a Tile or a tuple (image, outlines, title[, spacing])")
    image, outlines, title = cell[:3]
    spacing = tuple(cell[3]) if len(cell) == 4 else (1.0, 1.0)
    return Tile(np.asarray(image), outlines, str(title), spacing)  # type: ignore[arg-type]


def _outline_items(outlines: Outlines) -> list[tuple[str, np.ndarray, Any]]:
    if outlines is None:
        return []
    if isinstance(outlines, Mapping):
        return [(name, np.asarray(m), c) for name, (m, c) in outlines.items()]
    return [("", np.asarray(m), c) for m, c in outlines]


def _draw_tile(ax, tile: Tile, window: tuple[float, float], plane: str | None, scale_bar: bool) -> None:
    image = np.asarray(tile.image)
    if image.ndim != 2:
        raise InputError(f"montage/slice images must be 2D, got shape {image.shape}")
    rows, cols = image.shape
    dr, dc = tile.spacing
    extent = (0.0, cols * dc, rows * dr, 0.0)
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], extent=extent, interpolation="nearest",
              origin="upper", aspect="equal")
    for _, mask, color in _outline_items(tile.outlines):
        if mask.shape != image.shape:
            raise InputError(f"outline of shape {mask.shape} does not match its image {image.shape}")
        m = mask.astype(np.float32)
        if m.min() == m.max():
            continue  # empty (or full) in this slice: nothing to outline
        # contour positions are pixel centres: give them the centres' coordinates
        xs = (np.arange(cols) + 0.5) * dc
        ys = (np.arange(rows) + 0.5) * dr
        ax.contour(xs, ys, m, levels=[0.5], colors=[color], linewidths=1.1)
    ax.set_xlim(0, cols * dc)
    ax.set_ylim(rows * dr, 0)
    ax.set_axis_off()
    ax.set_facecolor("black")
    if scale_bar and cols * dc > 0:
        _scale_bar(ax, cols * dc, rows * dr)
    if plane is not None:
        left, right, top, bottom = _LETTERS[plane]
        style = dict(color="#ffd24d", fontsize=10, fontweight="bold")
        ax.text(0.01, 0.5, left, transform=ax.transAxes, ha="left", va="center", **style)
        ax.text(0.99, 0.5, right, transform=ax.transAxes, ha="right", va="center", **style)
        ax.text(0.5, 0.99, top, transform=ax.transAxes, ha="center", va="top", **style)
        ax.text(0.02, 0.99, plane, transform=ax.transAxes, ha="left", va="top", color="white", fontsize=10)


def _scale_bar(ax, width_mm: float, height_mm: float) -> None:
    target = width_mm / 5
    length = max((c for c in (1, 2, 5, 10, 20, 50, 100, 200) if c <= max(target, 1)), default=1)
    x0, y0 = width_mm * 0.04, height_mm * 0.95
    ax.plot([x0, x0 + length], [y0, y0], color="white", linewidth=3, solid_capstyle="butt")
    ax.text(x0 + length / 2, y0 - height_mm * 0.015, f"{length:g} mm", color="white", fontsize=8,
            ha="center", va="bottom")


def _legend(fig, masks: Mapping[str, tuple[Volume, Any]] | None, height_px: int) -> None:
    if not masks:
        return
    from matplotlib.lines import Line2D

    handles = [Line2D([0], [0], color=c, lw=2, label=name) for name, (_, c) in masks.items()]
    fig.legend(handles=handles, loc="upper right", ncol=len(handles), frameon=False, labelcolor="white",
               fontsize=9, bbox_to_anchor=(0.995, 1.0 - 34 / height_px))
