"""Section 5: synthesis and harmonization QC (the stages' previews or ones drawn here) and
training curves.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...layout import TABLE3_MODELS
from .. import figures
from ..page import Section, esc, figure, not_run
from ..tables import model_label
from .parts import _rel, _subpart, ddim_text

if TYPE_CHECKING:
    from ..data import RunData

log = logging.getLogger(__name__)


def qc_section(run: "RunData") -> Section:
    parts = [
        _subpart("Synthesis (ad-hoc lesion pasting)", _synthesis_qc, run),
        _subpart("Harmonization (DDPM, SDEdit with DDIM)", _harmonization_qc, run),
        _subpart("Training curves", _training_curves, run),
    ]
    ran = run.synthetic_index is not None or run.layout.harmonized.is_dir()
    return Section("qc", "Synthesis and harmonization QC", "\n".join(parts), ran)


def _preview(folder: Path, fallback) -> tuple[bytes | None, str]:
    stored = folder / "preview.png"
    if stored.is_file():
        return stored.read_bytes(), f"{folder.name}/preview.png, written by the stage"
    try:
        png = fallback()
    except Exception as err:  # noqa: BLE001 - a preview is optional; say why it is missing
        log.warning("report: no QC montage for %s (%s)", folder, err)
        return None, ""
    return png, "drawn by the report (the stage wrote no preview.png)"


def _synthesis_qc(run: "RunData") -> str:
    folder = run.layout.synthetic
    rows = run.synthetic_index
    if rows is None:
        return not_run("no synthetic set (<code>synthetic/index.csv</code>, stage synthesize).")
    kept = [r for r in rows if r.get("kept") == "true"]
    facts = [f"{len(kept)} of {len(rows)} attempts kept"]
    regions = Counter(r.get("region") for r in kept if r.get("region"))
    if regions:
        facts.append("lesion sites: " + ", ".join(f"{k} {n}" for k, n in regions.most_common()))
    vols = [float(r["lesion_mm3"]) for r in kept if r.get("lesion_mm3")]
    if vols:
        facts.append(f"pasted lesion volume {min(vols):.0f}–{max(vols):.0f} mm³ (median {np.median(vols):.0f})")

    def fallback() -> bytes | None:
        try:
            from ...synthesis.qc import write_preview

            return figures.png_of(lambda p: write_preview(folder, 3, cohort=run.cohort, out_png=p))
        except Exception as err:  # noqa: BLE001 - fall back to the plain montage below
            log.info("report: synthesis preview unavailable (%s); plain montage instead", err)
            return figures.set_montage(folder, rows, title="synthetic volumes with their labels")

    png, source = _preview(folder, fallback)
    html = f'<p class="note">{esc("; ".join(facts))}.</p>'
    if png is None:
        return html + not_run("no preview could be drawn (no readable kept volume).")
    return html + figure(png, f"Synthetic volumes: healthy femur before and after pasting, label outlined. "
                              f"Source: {esc(source)}.", "synthesis QC")


def _harmonization_qc(run: "RunData") -> str:
    folder = run.layout.harmonized
    if not folder.is_dir():
        return not_run("no harmonized set (<code>harmonized/</code>, stage harmonize).")
    facts = []
    for ck in run.checkpoints():
        facts.append(f"checkpoint {ck['sha256'][:12] or '?'} (sha256 prefix) on {ck['volumes']} volumes, "
                     f"{ddim_text(ck, run.num_train_timesteps)}, region {ck['region']}")
    rows = run.harmonized_index
    if rows is not None:
        flagged = [r.get("volume_id", "?") for r in rows if r.get("consistent") == "false"]
        facts.append(f"{len(flagged)} volume(s) flagged: lesion contrast collapsed" if flagged
                     else "no volume flagged by the lesion-contrast check")

    def fallback() -> bytes | None:
        try:
            from ...diffusion.preview import write_before_after

            png = figures.png_of(lambda p: _must(write_before_after(run.layout.synthetic, folder, 3, p)))
            return png
        except Exception as err:  # noqa: BLE001 - fall back to the plain montage below
            log.info("report: harmonization before/after unavailable (%s); plain montage instead", err)
            return figures.set_montage(folder, rows, title="harmonized volumes with their labels")

    png, source = _preview(folder, fallback)
    html = f'<p class="note">{esc("; ".join(facts))}.</p>' if facts else ""
    if png is None:
        return html + not_run("no harmonized volume to show (<code>harmonized/images</code> is empty).")
    return html + figure(png, f"Harmonization: the same slice before (synthetic) and after the diffusion model, label "
                              f"outlined. Source: {esc(source)}.", "harmonization QC", width=760)


def _must(path: Path | None) -> Path:
    if path is None:
        raise FileNotFoundError("nothing to draw")
    return path


def _training_curves(run: "RunData") -> str:
    items = []
    loss = run.layout.diffusion / "loss.png"
    if loss.is_file():
        items.append(figure(loss.read_bytes(), "DDPM training loss (diffusion/loss.png)", "DDPM loss"))
    for model in [*(m for m in TABLE3_MODELS if run.shown(m)), *[m for m in run.evaluated if m.startswith("size_")]]:
        curves = sorted((run.root / "models" / model).glob("fold*/curves.png"))
        if not curves:
            continue
        folder = curves[0].parent
        fold = int(folder.name[4:]) if folder.name[4:].isdigit() else 0
        history = run.training_history(model, fold)
        if history is not None and history.get("train_loss"):  # redrawn: one panel where nothing validated
            png = figures.training_curves(history, model_label(model))
            source = f"drawn from {_rel(run, folder / 'logs' / 'metrics.csv')}"
        else:
            png, source, history = curves[0].read_bytes(), _rel(run, curves[0]), None
        val = _validated(run, model, fold, history)
        what = ("training loss and validation Dice" if val
                else "training loss only (no validation cases, val_cases 0)" if val is False
                else "training curves")
        items.append(figure(png, f"{esc(model_label(model))}, {folder.name}: {esc(what)} ({esc(source)}; "
                                 f"{len(curves)} fold(s) in all)", f"curves {model}"))
    if not items:
        return not_run("no training curves (<code>diffusion/loss.png</code>, "
                       "<code>models/&lt;model&gt;/fold&lt;k&gt;/curves.png</code>).")
    return '<div class="grid">' + "".join(items) + "</div>"


def _validated(run: "RunData", model: str, fold: int, history: dict | None) -> bool | None:
    """Whether a fold validated on real cases: its logged validation Dice, else its training set's
    validation cases; None when neither tells."""
    if history is not None:
        return bool(history.get("val_dice"))
    for data in run.training_sets(model):
        if data.get("fold") == fold:
            return bool(data.get("val"))
    return None
