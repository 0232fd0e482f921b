"""The paper's Figure 4, measured: what each start timestep of the harmonization does.

:func:`figure4` plots, against the start timestep (0 = the synthetic set, not harmonized):

1. **realism**: the C2ST AUC of each set (features, and the CNN where it ran) with its 95%
   interval, the band that the real-vs-real null control spans (what chance gives), and the
   donor reference (hatched: real lesions of as many random patients as the set has donors
   against the others, 5th-95th percentile; dashed: copies of the donors' own real lesions);
   above each harmonized point, its features AUC change against 0 on the same lesions
   (``paired``, :func:`metsynth.realism.measure.paired_difference`), starred where the paired
   95% interval excludes 0;
2. **lesion kept**: the median contrast between lesion and bone ring after / before (the
   harmonization's consistency check) and its 10th percentile;
3. **segmentation**: mean Dice of the models trained on each set, where a study trained them
   (the ``synthetic`` model at 0 and the ``harmonized`` one at the study's start timestep).

:func:`figure4_lesions` is the paper's picture itself: the same lesions (rows) after each start
timestep (columns), one axial slice through the lesion, label outlined.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .reference import donor_reference_parts

__all__ = ["figure4", "figure4_lesions", "sweep_points"]


def sweep_points(realism: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """timestep -> the realism entry of the set the sweep measured there (its rows name the set)."""
    return {row["timestep"]: realism["sets"][row["set"]] for row in realism.get("sweep", [])}


def figure4(realism: dict[str, Any], sweep_rows: list[dict[str, Any]], path: str | os.PathLike,
            dice: dict[int, tuple[float, float, float]] | None = None, chosen: int | None = None,
            dpi: int = 110, real_dice: float | None = None) -> Path:
    """PNG of the three panels (module docstring). ``dice``: timestep -> (mean, low, high);
    ``real_dice``: the Real model's mean Dice, drawn as a reference line."""
    from matplotlib.figure import Figure

    from ..fileio import atomic_path
    from .paired import direction, signed

    points = sweep_points(realism)
    panels = 3 if dice else 2
    fig = Figure(figsize=(4.2 * panels, 3.6), dpi=dpi, facecolor="white")
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    ts = sorted(points)
    ax = axes[0]
    null = realism.get("null_real", {}).get("features")
    if null and null.get("ci95") is not None:  # None: not meaningful (too few lesions, measure.not_meaningful)
        ax.axhspan(null["ci95"][0], null["ci95"][1], color="#dddddd", label="features null (real vs real, range)")
    cnn_null = realism.get("null_real", {}).get("cnn")
    if cnn_null and cnn_null.get("ci95") is not None and any("cnn" in points[t] for t in points):
        # the CNN's own chance level: a CNN AUC means something only against this, not against 0.5
        ax.axhspan(cnn_null["ci95"][0], cnn_null["ci95"][1], color="#d62728", alpha=0.10, lw=0,
                   label="3D CNN null (real vs real, 95% CI)")
        ax.axhline(cnn_null["auc"], color="#d62728", lw=1.0, ls="--", alpha=0.8)
    reference, copies, chance = donor_reference_parts(realism)  # empty: none, or an earlier version's
    if chance.get("p5_p95") is not None:  # patients' own differences: what a set of k donors meets by chance
        ax.axhspan(chance["p5_p95"][0], chance["p5_p95"][1], facecolor="none", edgecolor="#1f77b4", hatch="///",
                   lw=0, alpha=0.35, label=f"features: {reference['k']} random patients vs the rest (5th-95th pct)")
    if copies.get("auc") is not None:
        ax.axhline(copies["auc"], color="#1f77b4", lw=1.0, ls="--", alpha=0.8,
                   label="features: copies of the donors' own lesions")
    ax.axhline(0.5, color="#888888", lw=0.8, ls=":")
    for key, colour, label in (("features", "#1f77b4", "features (trees)"), ("cnn", "#d62728", "3D CNN")):
        xs = [t for t in ts if key in points[t] and points[t][key].get("auc") is not None]
        if not xs:
            continue
        ys = np.array([points[t][key]["auc"] for t in xs])
        lo = ys - np.array([points[t][key]["ci95"][0] for t in xs])
        hi = np.array([points[t][key]["ci95"][1] for t in xs]) - ys
        ax.errorbar(xs, ys, yerr=[lo, hi], color=colour, marker="o", capsize=3, label=label)
    changes = []  # (timestep, its change against t = 0), where both were measured
    for row in sweep_rows:
        t, delta = row["timestep"], row.get("paired") or {}
        if delta.get("delta_auc") is not None and t in points and points[t]["features"].get("auc") is not None:
            changes.append((t, delta))
    for t, delta in changes:  # the change against t = 0 on the same lesions, above the point's interval
        top = (points[t]["features"].get("ci95") or [None, points[t]["features"]["auc"]])[1]
        decided = direction(delta) != 0
        ax.annotate(signed(delta["delta_auc"]) + ("*" if decided else ""), (t, min(top + 0.02, 0.97)),
                    ha="center", fontsize=7, color="#1f77b4", fontweight="bold" if decided else "normal")
    if changes:
        ax.text(0.02, 0.98, "numbers: features AUC change against 0, same lesions\n(*: its paired 95% interval "
                "excludes 0)", transform=ax.transAxes, fontsize=6.5, va="top", color="#1f77b4")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("start timestep (0 = not harmonized)")
    ax.set_ylabel("C2ST AUC (0.5 = looks real)")
    ax.set_title("realism")
    if ax.get_legend_handles_labels()[0]:  # none where no test had enough lesions to learn (a tiny cohort)
        ax.legend(fontsize=7, loc="lower right")

    ax = axes[1]
    rows = sorted((r for r in sweep_rows if r.get("contrast_kept") is not None), key=lambda r: r["timestep"])
    if rows:
        ax.plot([r["timestep"] for r in rows], [r["contrast_kept"] for r in rows], marker="o", color="#2ca02c",
                label="median")
        ax.plot([r["timestep"] for r in rows], [r["contrast_kept_p10"] for r in rows], marker=".", ls="--",
                color="#2ca02c", alpha=0.6, label="10th percentile")
    ax.axhline(0.5, color="#d62728", lw=0.8, ls=":", label="collapse threshold")
    ax.set_ylim(0.0, 1.2)
    ax.set_xlabel("start timestep")
    ax.set_ylabel("lesion contrast after / before")
    ax.set_title("lesion kept")
    ax.legend(fontsize=7, loc="lower left")

    if dice:
        ax = axes[2]
        xs = sorted(dice)
        ys = np.array([dice[t][0] for t in xs])
        ax.errorbar(xs, ys, yerr=[ys - np.array([dice[t][1] for t in xs]), np.array([dice[t][2] for t in xs]) - ys],
                    marker="s", color="#9467bd", capsize=3, ls="none", label="trained on the set")
        if real_dice is not None:
            ax.axhline(real_dice, color="#555555", ls="--", lw=1.0, label="Real (reference)")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_xlabel("start timestep")
        ax.set_ylabel("Dice (mean, 95% CI)")
        ax.set_title("segmentation (trained on the set)")
        ax.set_ylim(0.0, 1.0)
    for ax in axes:
        if chosen is not None:
            ax.axvline(chosen, color="#ff7f0e", lw=1.0, ls="--")
        ax.set_xticks(sorted(set(ts) | ({chosen} if chosen is not None else set())))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def figure4_lesions(sets: dict[int, Path], path: str | os.PathLike, k: int = 2) -> Path | None:
    """The same ``k`` lesions (rows) after each start timestep (columns); ``sets``: timestep -> set folder."""
    from ..diffusion.preview import lesion_tiles
    from ..synthesis.sets import read_set
    from ..viz import Tile, montage
    from ..volume import Volume

    ts = sorted(sets)
    tables = {t: read_set(sets[t]).set_index("volume_id") for t in ts}
    common = sorted(set.intersection(*(set(tab.index) for tab in tables.values())))
    rows = []
    for vid in common[:k]:
        label = Volume.read(tables[ts[0]].loc[vid, "label"])
        base = Volume.read(tables[ts[0]].loc[vid, "image"])
        row: list[Tile | None] = []
        for t in ts:
            image = Volume.read(tables[t].loc[vid, "image"])
            tiles = lesion_tiles(base, image, label, vid, f"t = {t}")
            if tiles is None:
                break
            tile = tiles[1]
            row.append(Tile(tile.image, tile.outlines, f"{vid[:18]}: t = {t}" if t == ts[0] else f"t = {t}",
                            tile.spacing, tiles[0].window))
        if row:
            rows.append(row)
    if not rows:
        return None
    return montage(rows, path, title="the same lesions harmonized from each start timestep (label outlined)",
                   cell_px=240)
