"""The HTML report of a run directory (``metsynth report RUN_DIR`` -> ``RUN_DIR/report/index.html``).

One self-contained file (inline CSS, pictures as PNG data URIs, no scripts, no external URLs),
readable on screen and on paper, with the paper's tables filled with the run's numbers:

1. **Summary**: headline numbers (the model with the highest mean Dice, its paired difference to
   Real as Table 3 gives it, HL Δ, and whether any model differs significantly from Real),
   the cohort by role and centre, the data generated (bank, synthetic, harmonized, folds) and
   the stages run (``stages/*.json``: duration, finish time);
2. **Results tables**: Table 3 (the paper's five training sets: Real, Synthetic, Synthetic+FT,
   Diffusion, Diffusion+FT, and Online and Online+FT where the study trains them; mean ± std of
   Dice ↑, HD ↓, HD95 ↓, ASSD ↓; best value in bold; ``*`` where a model differs from Real; HL Δ:
   the paired Hodges-Lehmann difference), Table 2
   (size of the synthetic set, each size against the smallest, the full set labelled with what
   each fold trained on) and Table 1 (operator variability, from ``variability/`` or computed
   from the cohort's annotations);
3. **Metric distributions**: box plots per metric and model, every case drawn;
4. **Segmentation examples** (the paper's Figure 5): real cases, truth in red, each model's
   prediction in green, one column per model;
5. **Synthesis and harmonization QC**: the stages' preview montages (or ones drawn here) and
   training curves;
6. **Statistics**: Kruskal-Wallis, pairwise tests against Real (Holm; Δ mean: the difference of
   the means), lesion-wise detection;
7. **Configuration and provenance**: ``config.yaml``, versions, stage fingerprints, DDPM
   checkpoint hashes.

Each part appears with a "Not run" note when its inputs are absent, so the report can be written
after any stage. Modules: :mod:`.data` (reading the run directory), :mod:`.figures` (PNGs),
:mod:`.tables` (Tables 1-3, tests, detection), :mod:`.sections` (one builder per section),
:mod:`.page` (HTML and CSS).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .. import __version__
from ..errors import InputError
from ..fileio import write_text
from .data import RunData
from .page import Section, error_box, esc, render_page
from .sections import SECTIONS

log = logging.getLogger(__name__)

__all__ = ["RunData", "Section", "build_sections", "render_report", "write_report"]


def build_sections(run: "RunData | str | os.PathLike") -> list[Section]:
    """Every section of the report of a run directory (a part that fails shows an error box)."""
    run = run if isinstance(run, RunData) else RunData(run)
    sections = []
    for builder in SECTIONS:
        start = time.perf_counter()
        try:
            section = builder(run)
        except Exception as err:  # noqa: BLE001 - keep the other sections; the box names the error
            log.exception("report: section %s failed", builder.__name__)
            name = builder.__name__.removesuffix("_section")
            section = Section(name, name.replace("_", " ").capitalize(), error_box(f"This section ({name})", err))
        log.debug("report: %s in %.2f s", section.id, time.perf_counter() - start)
        sections.append(section)
    return sections


def render_report(run_dir: str | os.PathLike) -> str:
    """The report's HTML text."""
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError(f"{root}: run directory not found; pass the folder given to `metsynth experiment run` "
                         "(it holds config.yaml, stages/, evaluation/, ...)")
    known = ("config.yaml", "stages", "prepared", "bank", "synthetic", "harmonized", "evaluation", "predictions",
             "realism", "stats", "variability")
    if not any((root / name).exists() for name in known):
        raise InputError(f"{root}: not a run directory (none of {', '.join(known)} is in it); pass the folder "
                         "given to `metsynth experiment run --run-dir`")
    run = RunData(root)
    sections = build_sections(run)
    subtitle = (f"Run directory <code>{esc(root.resolve())}</code> · written {time.strftime('%Y-%m-%d %H:%M')} by "
                f"metsynth {esc(__version__)} · reproduction of Saillard et al., femoral bone metastasis "
                "segmentation with synthetic and diffusion-harmonized CT")
    return render_page(f"metsynth report: {run.name}", subtitle, sections)


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the self-contained HTML report of ``run_dir`` to ``out`` (default
    ``RUN_DIR/report/index.html``) atomically; return its path."""
    root = Path(run_dir)
    target = Path(out) if out is not None else root / "report" / "index.html"
    if target.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"{target}: the report is an HTML file; give a path ending in .html")
    start = time.perf_counter()
    text = render_report(root)
    write_text(target, text)
    log.info("report: %s (%.1f MB, %.1f s)", target, len(text.encode()) / 1e6, time.perf_counter() - start)
    return target
