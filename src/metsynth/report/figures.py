"""The report's pictures, returned as PNG bytes: box plots, Figure-5 montages, QC montages.

Plots use :class:`matplotlib.figure.Figure` (Agg), never pyplot; slices use :mod:`metsynth.viz`
(radiological orientation, physical aspect ratio, scale bars).
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..evaluation.metrics import HIGHER_IS_BETTER, METRIC_LABELS, METRICS

if TYPE_CHECKING:
    import pandas as pd

    from ..cohort import Cohort
    from ..viz import Tile

log = logging.getLogger(__name__)

TRUTH_COLOUR = "#ff3b30"
PRED_COLOUR = "#34e05a"
MODEL_COLOURS = {
    "real": "#7f8c8d", "synthetic": "#2e86c1", "synthetic_ft": "#1b4f72",
    "harmonized": "#e67e22", "harmonized_ft": "#a04000",
}
SIZE_COLOUR = "#2e86c1"
WIDE_HU = (-250.0, 1250.0)  # viz's "wide" window: bone and soft tissue together


def png_of(write: Callable[[Path], Any]) -> bytes:
    """Bytes of a PNG that ``write(path)`` writes (for the viz functions that take a path)."""
    with tempfile.TemporaryDirectory(prefix="metsynth-report-") as tmp:
        path = Path(tmp) / "figure.png"
        write(path)
        return path.read_bytes()


def _figure_png(fig, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


# --------------------------------------------------------------------------- box plots
def metric_boxplots(data: "pd.DataFrame", models: Sequence[str], labels: Sequence[str],
                    colours: Sequence[str], title: str = "", metrics: Sequence[str] = METRICS,
                    dpi: int = 110) -> bytes:
    """One panel per metric, one box per model (median, quartiles, 1.5 IQR whiskers) with every
    case drawn as a dot; cases whose distance was undefined (one mask empty) and filled with the
    worst case are drawn as crosses."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.9 * len(metrics), 3.6), dpi=dpi, facecolor="white")
    axes = fig.subplots(1, len(metrics))
    axes = np.atleast_1d(axes)
    rng = np.random.default_rng(0)  # jitter only: fixed so the picture is reproducible
    for ax, metric in zip(axes, metrics):
        series, filled = [], []
        for m in models:
            sub = data[data["model"] == m]
            v = sub[metric].to_numpy(dtype=float)
            f = sub["worst_case_filled"].to_numpy(dtype=bool) if "worst_case_filled" in sub else np.zeros(len(v), bool)
            ok = ~np.isnan(v)
            series.append(v[ok])
            filled.append(f[ok])
        positions = np.arange(1, len(models) + 1)
        nonempty = [i for i, s in enumerate(series) if s.size]
        if nonempty:
            bp = ax.boxplot([series[i] for i in nonempty], positions=positions[nonempty], widths=0.6,
                            showfliers=False, patch_artist=True, medianprops={"color": "black", "lw": 1.4})
            for patch, i in zip(bp["boxes"], nonempty):
                patch.set_facecolor(colours[i])
                patch.set_alpha(0.35)
                patch.set_edgecolor(colours[i])
        for i, (s, f) in enumerate(zip(series, filled)):
            x = positions[i] + rng.uniform(-0.16, 0.16, s.size)
            ax.scatter(x[~f], s[~f], s=13, color=colours[i], edgecolor="black", linewidth=0.3, zorder=3)
            if f.any():
                ax.scatter(x[f], s[f], s=22, marker="x", color="#c0392b", linewidth=1.1, zorder=3)
        arrow = "↑" if HIGHER_IS_BETTER.get(metric, False) else "↓"
        ax.set_title(f"{METRIC_LABELS.get(metric, metric)} {arrow}", fontsize=11)
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=9)
        ax.set_xlim(0.4, len(models) + 0.6)
        if metric == "dice":
            ax.set_ylim(-0.03, 1.03)
        else:
            ax.set_ylim(bottom=0)
        ax.grid(axis="y", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.tick_params(axis="y", labelsize=9)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return _figure_png(fig, dpi)


# --------------------------------------------------------------------------- training curves
def training_curves(history: dict[str, list[tuple[int, float]]], title: str = "", dpi: int = 100) -> bytes:
    """A segmentation training's curves: training Dice loss per epoch and, only where the training
    validated, validation Dice in a second panel (as ``segmentation.callbacks.plot_curves``);
    integer epoch ticks."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = [("train_loss", "training Dice loss", "tab:blue")]
    if history.get("val_dice"):
        panels.append(("val_dice", "validation Dice", "tab:green"))
    fig = Figure(figsize=(4.0 * len(panels), 3.0), dpi=dpi, facecolor="white")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (key, label, colour) in zip(axes, panels):
        points = history.get(key) or []
        if points:
            x, y = zip(*points)
            ax.plot(x, y, marker="o" if len(points) < 30 else None, ms=3, color=colour)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{title}: {label}" if title and key == "train_loss" else label, fontsize=10)
        ax.grid(alpha=0.3)
        if key == "val_dice":
            ax.set_ylim(0, 1)
    fig.tight_layout()
    return _figure_png(fig, dpi)


# --------------------------------------------------------------------------- slices
def largest_component(mask: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the largest 26-connected component, or None when empty."""
    from scipy import ndimage

    labels, n = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def lesion_centre(mask: np.ndarray) -> np.ndarray | None:
    """Index (z, y, x) through the largest lesion: on each axis the slice where it is widest."""
    comp = largest_component(mask)
    if comp is None:
        return None
    idx = np.argwhere(comp)
    centre = idx.mean(axis=0)
    for axis in range(3):
        counts = np.bincount(idx[:, axis])
        centre[axis] = int(np.argmax(counts))
    return centre


def crop_tile(tile: "Tile", around: np.ndarray | None, min_mm: float = 50.0, margin: float = 1.6) -> "Tile":
    """Crop a tile (and its outlines) to a square around the 2D mask ``around`` (or the centre)."""
    rows, cols = tile.image.shape
    dr, dc = tile.spacing
    if around is not None and around.any():
        pts = np.argwhere(around)
        lo, hi = pts.min(axis=0), pts.max(axis=0) + 1
        centre = (lo + hi) / 2.0
        extent_mm = max((hi[0] - lo[0]) * dr, (hi[1] - lo[1]) * dc) * margin
    else:
        centre, extent_mm = np.array([rows, cols]) / 2.0, min_mm
    side_mm = max(min_mm, extent_mm)
    half = [max(4, int(round(side_mm / 2 / s))) for s in (dr, dc)]
    r0 = int(np.clip(round(centre[0]) - half[0], 0, max(rows - 2 * half[0], 0)))
    c0 = int(np.clip(round(centre[1]) - half[1], 0, max(cols - 2 * half[1], 0)))
    box = (slice(r0, r0 + 2 * half[0]), slice(c0, c0 + 2 * half[1]))
    outlines = tile.outlines
    if isinstance(outlines, dict):
        outlines = {k: (np.asarray(m)[box], c) for k, (m, c) in outlines.items()}
    elif outlines is not None:
        outlines = [(np.asarray(m)[box], c) for m, c in outlines]
    return replace(tile, image=tile.image[box], outlines=outlines)


def display_window(cohort: "Cohort | None", image: np.ndarray) -> tuple[float, float]:
    """The grey window of a case: viz's wide CT window in the prepared cohort's units, else the
    1st-99.5th percentile of the image."""
    if cohort is not None and cohort.prepared is not None:
        from ..prepare import hu_to_standardized

        window = tuple(cohort.prepared.hu_window)
        return (hu_to_standardized(WIDE_HU[0], window), hu_to_standardized(WIDE_HU[1], window))
    lo, hi = np.percentile(image, [1, 99.5])
    return (float(lo), float(hi) if hi > lo else float(lo) + 1.0)


@dataclass
class ExampleCase:
    """One row pair of the Figure-5 montage."""

    case_id: str
    label: str  # e.g. "T002 (test, centre A)"
    image: Path
    truth: Path
    predictions: dict[str, Path]  # model name -> prediction file
    dice: dict[str, float]  # model name -> Dice of this case (from metrics.csv)


def segmentation_examples(examples: Sequence[ExampleCase], models: Sequence[str], labels: Sequence[str],
                          cohort: "Cohort | None", cell_px: int = 190) -> bytes:
    """Figure-5-style montage: per case a coronal slice (whole prepared field of view) and an
    axial close-up, both through the largest true lesion; first column the truth alone (red),
    then one column per model with its prediction (green) over the truth."""
    from ..viz import montage, volume_slices
    from ..volume import Volume, as_mask

    rows: list[list[Tile | None]] = []
    for ex in examples:
        image = Volume.read(ex.image)
        truth = as_mask(Volume.read(ex.truth), image, what=f"lesion mask of case {ex.case_id}")
        centre = lesion_centre(truth.array)
        window = display_window(cohort, image.array)
        preds: dict[str, Volume | None] = {}
        for m in models:
            path = ex.predictions.get(m)
            preds[m] = as_mask(Volume.read(path), image, what=f"prediction of {m} for {ex.case_id}") if path else None
        base = volume_slices(image, centre, {"truth": (truth, TRUTH_COLOUR)})
        truth_axial = base["axial"].outlines["truth"][0]  # type: ignore[index]
        for plane, zoom in (("coronal", False), ("axial", True)):
            row: list[Tile | None] = []
            t0 = replace(base[plane], window=window,
                         title=f"{ex.case_id} · truth" if plane == "coronal" else f"{ex.case_id} · axial close-up")
            row.append(crop_tile(t0, truth_axial) if zoom else t0)
            for m, label in zip(models, labels):
                pred = preds[m]
                if pred is None:
                    row.append(None)
                    continue
                tiles = volume_slices(image, centre, {"truth": (truth, TRUTH_COLOUR), "pred": (pred, PRED_COLOUR)})
                dice = ex.dice.get(m)
                title = f"{label} · Dice {dice:.2f}" if dice is not None and not np.isnan(dice) and not zoom else label
                tile = replace(tiles[plane], window=window, title=title)
                row.append(crop_tile(tile, truth_axial) if zoom else tile)
            rows.append(row)
    return png_of(lambda p: montage(rows, p, cell_px=cell_px))


# --------------------------------------------------------------------------- QC fallbacks
def set_montage(folder: Path, rows_csv: list[dict[str, str]] | None, k: int = 3, title: str = "") -> bytes | None:
    """A small QC montage of ``k`` kept volumes of a synthetic/harmonized set: axial and coronal
    through the largest lesion with the label outlined (used when the stage wrote no preview)."""
    from ..viz import montage, volume_slices
    from ..volume import Volume

    items = []
    if rows_csv:
        for r in rows_csv:
            if r.get("kept", "true") == "true" and r.get("image") and r.get("label"):
                items.append((r.get("volume_id") or Path(r["image"]).name, folder / r["image"], folder / r["label"]))
    else:
        for img in sorted((folder / "images").glob("*.nii*")):
            lab = folder / "labels" / img.name
            if not lab.exists():
                alt = folder / "labels" / (img.name + ".gz")
                lab = alt if alt.exists() else lab
            if lab.exists():
                items.append((img.name.split(".nii")[0], img, lab))
    items = [it for it in items if it[1].is_file() and it[2].is_file()]
    if not items:
        return None
    picks = sorted({int(i) for i in np.linspace(0, len(items) - 1, min(k, len(items))).round()})
    rows = []
    for i in picks:
        vid, img_path, lab_path = items[i]
        image = Volume.read(img_path)
        label = Volume.read(lab_path)
        label = image.with_array((label.array > 0).astype(np.uint8))
        centre = lesion_centre(label.array)
        tiles = volume_slices(image, centre, {"label": (label, TRUTH_COLOUR)})
        lo, hi = np.percentile(image.array, [1, 99.5])
        window = (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
        axial_mask = tiles["axial"].outlines["label"][0]  # type: ignore[index]
        coronal_mask = tiles["coronal"].outlines["label"][0]  # type: ignore[index]
        rows.append([
            replace(tiles["coronal"], window=window, title=f"{vid} · coronal"),
            replace(crop_tile(tiles["axial"], axial_mask), window=window, title="axial close-up"),
            replace(crop_tile(tiles["coronal"], coronal_mask), window=window, title="coronal close-up"),
        ])
    return png_of(lambda p: montage(rows, p, title=title or None, cell_px=240))
