"""Sections 2 and 3: the results tables (Tables 3, 2 and 1) and the box plots of the metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...layout import display_name
from .. import figures
from ..page import Section, esc, figure, not_run, part
from ..tables import size_labels, table1_html, table2_html, table3_html
from .parts import _subpart

if TYPE_CHECKING:
    from ..data import RunData


def tables_section(run: "RunData") -> Section:
    parts = [
        _subpart("Table 3 · Segmentation of the real cases by training set", table3_html, run),
        _subpart("Table 2 · Segmentation by size of the synthetic training set", table2_html, run),
        _subpart("Table 1 · Operator variability and the automatic segmentation", table1_html, run),
    ]
    ran = bool(run.evaluated) or run.variability_stored is not None or run.has_operator_annotations()
    return Section("tables", "Results tables", "\n".join(parts), ran)


def boxplots_section(run: "RunData") -> Section:
    if not run.evaluated:
        return Section("boxplots", "Metric distributions",
                       not_run("no evaluation yet (<code>evaluation/&lt;model&gt;/metrics.csv</code>)."), False)
    parts = []
    caption = ("Boxes: median and quartiles, whiskers 1.5 × IQR; dots: cases; red crosses: distance undefined "
               "(one mask empty), set to the worst case. HD, HD95 and ASSD in mm.")
    if run.paper_models:
        models = run.paper_models
        png = figures.metric_boxplots(run.results, models, [display_name(m) for m in models],  # type: ignore[arg-type]
                                      [figures.MODEL_COLOURS.get(m, "#555555") for m in models])
        parts.append(part("The training sets of Table 3", figure(png, esc(caption), "box plots, Table 3 models")))
    if run.size_models:
        labels = size_labels(run)
        models = run.size_models
        shades = [str(0.75 - 0.55 * i / max(len(models) - 1, 1)) for i in range(len(models))]
        png = figures.metric_boxplots(run.results, models, [labels[m] for m in models], shades)  # type: ignore[arg-type]
        parts.append(part("Size of the synthetic training set (Table 2)",
                          figure(png, esc(caption), "box plots, size study")))
    others = [m for m in run.evaluated if m not in run.paper_models and m not in run.size_models]
    if others:
        png = figures.metric_boxplots(run.results, others, others, ["#555555"] * len(others))  # type: ignore[arg-type]
        parts.append(part("Other models", figure(png, esc(caption), "box plots, other models")))
    return Section("boxplots", "Metric distributions", "\n".join(parts))
