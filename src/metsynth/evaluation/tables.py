"""The paper's results tables (Tables 2 and 3) from the long results table.

:func:`results_table` fills a :class:`Table` of :class:`Cell` s: mean +/- std per model and metric,
best value in bold (higher Dice, lower distances), with the paired difference to the reference and
its interval; the table renders to Markdown, HTML and LaTeX.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from .metrics import HIGHER_IS_BETTER, METRIC_LABELS, METRICS
from .stat_tests import _check_columns, _groups, bootstrap_ci

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_DECIMALS = {"dice": 2, "hd": 1, "hd95": 1, "assd": 1}


@dataclass
class Cell:
    """A table cell: mean +/- std (optionally a CI), bold when best, an optional marker."""

    mean: float
    std: float | None = None
    decimals: int = 2
    bold: bool = False
    marker: str = ""
    ci: tuple[float, float] | None = None
    n: int | None = None
    diff: tuple[float, float, float] | None = None  # (estimate, low, high) of the difference to a reference

    def plain(self) -> tuple[str, str, str]:
        """(mean, std, extra) as text."""
        if self.mean is None or math.isnan(self.mean):
            return ("-", "", "")
        mean = f"{self.mean:.{self.decimals}f}"
        std = "" if self.std is None or math.isnan(self.std) else f"{self.std:.{self.decimals}f}"
        extra = "" if self.ci is None else f"[{self.ci[0]:.{self.decimals}f}, {self.ci[1]:.{self.decimals}f}]"
        return mean, std, extra

    def diff_parts(self) -> tuple[str, str, str] | None:
        """(estimate, low, high) of the difference as signed text ("+0.12", "-∞"), or None."""
        if self.diff is None or math.isnan(self.diff[0]):
            return None
        return tuple(_signed(v, self.decimals) for v in self.diff)  # type: ignore[return-value]

    def to_html(self, diff_label: str = "Δ") -> str:
        """The cell's content as HTML: bold mean, std and CI small, the marker, the difference below."""
        esc = html.escape
        mean, std, extra = self.plain()
        text = f"<b>{esc(mean)}</b>" if self.bold and mean != "-" else esc(mean)
        if std:
            text += f" &plusmn; <small>{esc(std)}</small>"
        if extra:
            text += f" <small>{esc(extra)}</small>"
        text += esc(self.marker)
        diff = self.diff_parts()
        if diff:
            text += f'<br><small class="diff">{esc(diff_label)} {esc(diff[0])} [{esc(diff[1])}, {esc(diff[2])}]</small>'
        return text


@dataclass
class Table:
    """Rows of cells under column headers; renders to Markdown, HTML and LaTeX strings."""

    columns: list[str]
    rows: list[tuple[str, list[Cell]]]
    row_header: str = ""
    title: str = ""
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = []
        if self.title:
            lines += [f"**{self.title}**", ""]
        lines.append("| " + " | ".join([self.row_header] + self.columns) + " |")
        lines.append("|" + "---|" * (len(self.columns) + 1))
        for label, cells in self.rows:
            texts = []
            for c in cells:
                mean, std, extra = c.plain()
                text = f"**{mean}**" if c.bold and mean != "-" else mean
                if std:
                    text += f" ± {std}"
                if extra:
                    text += f" {extra}"
                text += c.marker
                diff = c.diff_parts()
                if diff:
                    text += f" (Δ {diff[0]} [{diff[1]}, {diff[2]}])"
                texts.append(text)
            lines.append("| " + " | ".join([_md_escape(label)] + texts) + " |")
        lines += [""] + [f"{n}" for n in self.notes] if self.notes else []
        return "\n".join(lines).rstrip() + "\n"

    def to_html(self) -> str:
        esc = html.escape
        out = ['<table class="metsynth-table">']
        if self.title:
            out.append(f"  <caption>{esc(self.title)}</caption>")
        out.append("  <thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in [self.row_header] + self.columns)
                   + "</tr></thead>")
        out.append("  <tbody>")
        for label, cells in self.rows:
            out.append(f"    <tr><th>{esc(label)}</th>" + "".join(f"<td>{c.to_html()}</td>" for c in cells) + "</tr>")
        out.append("  </tbody>")
        out.append("</table>")
        if self.notes:
            out.append("".join(f"<p><small>{esc(n)}</small></p>" for n in self.notes))
        return "\n".join(out) + "\n"

    def to_latex(self) -> str:
        out = ["\\begin{table}", "\\centering"]
        if self.title:
            out.append(f"\\caption{{{_tex_escape(self.title)}}}")
        out.append("\\begin{tabular}{l" + "c" * len(self.columns) + "}")
        out.append("\\hline")
        out.append(" & ".join(_tex_header(h) for h in [self.row_header] + self.columns) + " \\\\")
        out.append("\\hline")
        for label, cells in self.rows:
            texts = []
            for c in cells:
                mean, std, extra = c.plain()
                if mean == "-":
                    texts.append("--")
                    continue
                text = f"\\mathbf{{{mean}}}" if c.bold else mean
                if std:
                    text += f"\\scriptstyle{{\\pm {std}}}"
                text = f"${text}$"
                if extra:
                    text += f" {{\\scriptsize {extra}}}"
                if c.marker:
                    text += f"$^{{{c.marker}}}$"
                diff = c.diff_parts()
                if diff:
                    est, lo, hi = (v.replace("∞", "\\infty") for v in diff)
                    text += f" {{\\scriptsize $\\Delta\\,{est}\\;[{lo}, {hi}]$}}"
                texts.append(text)
            out.append(" & ".join([_tex_escape(label)] + texts) + " \\\\")
        out += ["\\hline", "\\end{tabular}"]
        for n in self.notes:
            out.append(f"\\\\[2pt]{{\\footnotesize {_tex_escape(n)}}}")
        out.append("\\end{table}")
        return "\n".join(out) + "\n"

    def to_dataframe(self) -> "pd.DataFrame":
        import pandas as pd

        data = {}
        for label, cells in self.rows:
            data[label] = {col: c.mean for col, c in zip(self.columns, cells)}
        return pd.DataFrame.from_dict(data, orient="index")


def results_table(
    data: "pd.DataFrame",
    metrics: Sequence[str] = METRICS,
    models: Sequence[str] | None = None,
    reference: str | None = None,
    pairwise: "pd.DataFrame | None" = None,
    alpha: float = 0.05,
    marker_test: str = "wilcoxon",
    decimals: Mapping[str, int] | None = None,
    ci: bool = False,
    rng: np.random.Generator | int | None = None,
    n_resamples: int = 10_000,
    title: str = "",
) -> Table:
    """The paper's Table 2/3 layout: one row per model, mean ± std (ddof=1) per metric.

    The best mean of each metric (after rounding to the shown decimals) is bold: highest Dice,
    lowest distances; ties are all bold. With ``pairwise`` (from :func:`pairwise_tests`), models
    that differ from ``reference`` with Holm-adjusted p < ``alpha`` in ``marker_test``
    ("wilcoxon" or "mannwhitney") get a ``*``, and every compared model's cell shows its paired
    difference to ``reference`` as ``Δ estimate [low, high]``: the Hodges-Lehmann estimate and its
    Wilcoxon signed-rank interval at the Bonferroni level ``1 - alpha/m`` (simultaneous
    ``1 - alpha`` over the ``m`` comparisons of a metric; see :func:`pairwise_tests`), explained in
    a footnote. ``ci=True`` adds bootstrap 95% CIs of the mean.
    """
    _check_columns(data, ["model", *metrics])
    if marker_test not in ("wilcoxon", "mannwhitney"):
        raise InputError(f"marker_test {marker_test!r}: use 'wilcoxon' or 'mannwhitney'")
    models = list(models) if models is not None else list(dict.fromkeys(data["model"]))
    dec = {**DEFAULT_DECIMALS, **(decimals or {})}
    rng = np.random.default_rng(rng)
    cells: dict[str, list[Cell]] = {m: [] for m in models}
    for metric in metrics:
        groups = _groups(data, metric, models)
        d = dec.get(metric, 2)
        means = {}
        for model in models:
            v = groups[model]
            mean = float(v.mean()) if v.size else math.nan
            std = float(v.std(ddof=1)) if v.size > 1 else (0.0 if v.size else math.nan)
            interval = bootstrap_ci(v, rng, n_resamples) if ci and v.size else None
            cells[model].append(Cell(mean, std, d, ci=interval, n=int(v.size)))
            means[model] = round(mean, d) if not math.isnan(mean) else math.nan
        finite = [v for v in means.values() if not math.isnan(v)]
        if finite:
            best = max(finite) if HIGHER_IS_BETTER.get(metric, False) else min(finite)
            for model in models:
                if means[model] == best:
                    cells[model][-1].bold = True
        if pairwise is not None and not pairwise.empty:
            col = f"{marker_test}_p_holm"
            sub = pairwise[pairwise["metric"] == metric]
            for r in sub.itertuples():
                p = getattr(r, col)
                if r.model in cells and not math.isnan(p) and p < alpha:
                    cells[r.model][-1].marker = "*"
                if r.model in cells and r.model != reference and hasattr(r, "diff_hl"):
                    cells[r.model][-1].diff = (float(r.diff_hl), float(r.diff_ci_low), float(r.diff_ci_high))
    columns = [f"{METRIC_LABELS.get(m, m)} {'↑' if HIGHER_IS_BETTER.get(m, False) else '↓'}" for m in metrics]
    label = {m: f"{m} (ref.)" if m == reference and pairwise is not None else m for m in models}
    notes = ["mean ± std over cases; bold: best per metric"]
    if pairwise is not None and not pairwise.empty:
        test_name = "paired Wilcoxon signed-rank" if marker_test == "wilcoxon" else "Mann-Whitney U"
        notes.append(f"*: {test_name} against {reference}, Holm-adjusted p < {alpha:g}")
        if "diff_ci_confidence" in pairwise:
            note = _diff_note(pairwise, reference, alpha)
            if note:
                notes.append(note)
    if ci:
        notes.append(f"[..]: bootstrap {n_resamples}-resample 95% CI of the mean")
    return Table(columns, [(label[m], cells[m]) for m in models], row_header="Model", title=title, notes=notes)


DIFF_CI_METHOD = (
    "Hodges-Lehmann estimate of the paired difference (median of the Walsh averages of the per-case "
    "differences) with its Wilcoxon signed-rank confidence interval at the Bonferroni level 1 - alpha/m, "
    "m = comparisons with the reference per metric: simultaneous 1 - alpha coverage, the intervals that go "
    "with Holm's correction (which has no exact interval counterpart)"
)


def _diff_note(pairwise: "pd.DataFrame", reference: str | None, alpha: float) -> str:
    """The footnote of the Δ intervals: method, per-interval level and family-wise coverage."""
    sub = pairwise.dropna(subset=["diff_ci_confidence"])
    if sub.empty:
        return ""
    counts = sorted({int(g["wilcoxon_p"].notna().sum()) for _, g in pairwise.groupby("metric", sort=False)})
    levels = sorted(set(sub["diff_ci_confidence"].round(10)))
    m = f"m = {counts[0]}" if len(counts) == 1 else "m = comparisons per metric"
    each = f"{100 * levels[0]:.4g}% " if len(levels) == 1 else ""
    text = (f"Δ [..]: model − {reference}, paired by case: Hodges-Lehmann estimate and Wilcoxon signed-rank "
            f"{each}confidence interval (Bonferroni 1 − α/m, α = {alpha:g}, {m}: simultaneous "
            f"{100 * (1 - alpha):.4g}% over a metric's comparisons, the intervals that go with Holm's correction; "
            "Holm is less strict, so a * may stand beside an interval that holds 0)")
    if (np.isinf(sub["diff_ci_low"]) | np.isinf(sub["diff_ci_high"])).any():
        text += "; ∞: too few paired cases to reach that level"
    return text


# ---------------------------------------------------------------------------------- text helpers
def _signed(value: float, decimals: int) -> str:
    """``+0.12`` / ``-0.12`` / ``0.00`` / ``+∞`` / ``-∞``: a difference with its sign."""
    if math.isinf(value):
        return "+∞" if value > 0 else "-∞"
    text = f"{value:+.{decimals}f}"
    return text[1:] if float(text) == 0 else text  # 0.00, not -0.00


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


_TEX = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def _tex_escape(text: str) -> str:
    return ("".join(_TEX.get(ch, ch) for ch in str(text)).replace("±", r"$\pm$").replace("−", "-")
            .replace("Δ", r"$\Delta$").replace("α", r"$\alpha$").replace("∞", r"$\infty$"))


def _tex_header(text: str) -> str:
    return _tex_escape(text).replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$")


__all__ = ["DEFAULT_DECIMALS", "DIFF_CI_METHOD", "Cell", "Table", "results_table"]
