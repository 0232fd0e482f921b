"""Statistics across models and the paper's results tables (Tables 2 and 3).

Input: a long table with one row per (model, case) and one column per metric (``dice``,
``hd``, ``hd95``, ``assd``), as written by ``metsynth evaluate`` and read by
:func:`load_results`. The paper's analysis (section 2.5):

* Kruskal-Wallis across all models, per metric (:func:`kruskal_wallis`);
* each model against a reference model (the paper's "Real"): Mann-Whitney U (unpaired) and
  Wilcoxon signed-rank paired by case (cases present for both models, NaN pairs dropped), with
  Holm's correction over the comparisons of one metric and one test (:func:`pairwise_tests`);
* for each of those comparisons, the paired difference (model - reference) as a Hodges-Lehmann
  estimate with its Wilcoxon signed-rank confidence interval at the Bonferroni level
  ``1 - alpha/m``, simultaneous over the ``m`` comparisons of a metric (:func:`hodges_lehmann_ci`);
* bootstrap confidence intervals of means (:func:`bootstrap_ci`, percentile method, with a
  ``numpy.random.Generator``);
* tables of mean +/- std per metric, best value in bold (higher Dice, lower distances), with the
  difference to the reference and its interval, in Markdown, HTML and LaTeX (:func:`results_table`).

Distances undefined for a case (one mask empty) must be filled before the tests (see
:func:`metsynth.evaluation.metrics.fill_worst_case`); :func:`load_results` does it by default.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .metrics import HIGHER_IS_BETTER, METRIC_LABELS, METRICS, fill_worst_case

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_DECIMALS = {"dice": 2, "hd": 1, "hd95": 1, "assd": 1}


# ---------------------------------------------------------------------------------- tests
@dataclass(frozen=True)
class TestResult:
    """One omnibus test."""

    __test__ = False  # not a pytest test class

    test: str
    metric: str
    statistic: float
    pvalue: float
    n: dict[str, int]
    note: str = ""


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1; NaN kept as NaN)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


EXACT_SIGNRANK_MAX_N = 400  # exact null distribution up to this many pairs, normal approximation above


def _signrank_cdf(n: int) -> np.ndarray:
    """``P(T+ <= t)``, t = 0..n(n+1)/2, of the signed-rank statistic of ``n`` untied pairs under H0."""
    total = n * (n + 1) // 2
    prob = np.zeros(total + 1)
    prob[0] = 1.0
    for k in range(1, n + 1):  # rank k enters the positive sum with probability 1/2
        shifted = np.zeros_like(prob)
        shifted[k:] = prob[:total + 1 - k]
        prob = 0.5 * (prob + shifted)
    return np.cumsum(prob)


def _signrank_critical(n: int, level: float) -> int:
    """The largest ``c`` with ``P(T+ <= c - 1) <= level / 2`` for ``n`` pairs (0: there is none)."""
    if n <= EXACT_SIGNRANK_MAX_N:
        return int(np.searchsorted(_signrank_cdf(n), level / 2 * (1 + 1e-12), side="right"))
    from scipy import stats

    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24)  # continuity-corrected normal approximation
    return max(0, math.floor(n * (n + 1) / 4 + 0.5 - float(stats.norm.isf(level / 2)) * sd))


def hodges_lehmann_ci(
    x: Sequence[float],
    y: Sequence[float] | None = None,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Hodges-Lehmann estimate of the paired difference ``x - y`` and its Wilcoxon signed-rank interval.

    The estimate is the median of the Walsh averages ``(d_i + d_j) / 2`` (``i <= j``) of the
    per-pair differences ``d`` (NaN pairs dropped; ``y`` None: ``x`` are the differences). The
    interval inverts the two-sided exact signed-rank test: it holds every shift ``mu`` at which the
    test of ``d - mu`` has p > ``1 - confidence``, i.e. ``[W_(c), W_(N+1-c)]`` of the ``N = n(n+1)/2``
    sorted Walsh averages, ``c`` the largest count with ``P(T+ <= c - 1) <= (1 - confidence) / 2``
    (Hollander & Wolfe; R's ``wilcox.test(conf.int=TRUE)``). Exact null distribution up to
    ``EXACT_SIGNRANK_MAX_N`` pairs, normal approximation above. Coverage is at least
    ``confidence`` (for untied differences); with too few pairs to reach it
    (``2 ** -n > (1 - confidence) / 2``) the interval is ``(-inf, inf)``. Deterministic (no
    resampling). Returns (estimate, low, high), NaNs when no pair is left.
    """
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    d = np.asarray(x, dtype=float)
    if y is not None:
        other = np.asarray(y, dtype=float)
        if other.shape != d.shape:
            raise InputError(f"paired samples differ in length ({d.size} and {other.size})")
        d = d - other
    d = d[~np.isnan(d)]
    n = d.size
    if n == 0:
        return (math.nan, math.nan, math.nan)
    i, j = np.triu_indices(n)
    walsh = np.sort((d[i] + d[j]) / 2.0)
    estimate = float(np.median(walsh))
    c = _signrank_critical(n, 1.0 - confidence)
    if c == 0:
        return (estimate, -math.inf, math.inf)
    return (estimate, float(walsh[c - 1]), float(walsh[walsh.size - c]))


def _groups(data: "pd.DataFrame", metric: str, models: Sequence[str] | None) -> dict[str, np.ndarray]:
    _check_columns(data, ["model", metric])
    models = list(models) if models is not None else list(dict.fromkeys(data["model"]))
    out = {}
    for m in models:
        values = data.loc[data["model"] == m, metric].to_numpy(dtype=float)
        if values.size == 0:
            raise InputError(f"no results for model {m!r} (models present: {', '.join(map(str, data['model'].unique()))})")
        out[m] = values[~np.isnan(values)]
    return out


def kruskal_wallis(data: "pd.DataFrame", metric: str, models: Sequence[str] | None = None) -> TestResult:
    """Kruskal-Wallis H test of ``metric`` across models (NaN values left out)."""
    from scipy import stats

    groups = _groups(data, metric, models)
    n = {k: int(v.size) for k, v in groups.items()}
    usable = [v for v in groups.values() if v.size]
    if len(usable) < 2:
        return TestResult("kruskal-wallis", metric, math.nan, math.nan, n, "fewer than two models with values")
    allv = np.concatenate(usable)
    if np.all(allv == allv[0]):
        return TestResult("kruskal-wallis", metric, 0.0, 1.0, n, "all values identical")
    res = stats.kruskal(*usable)
    return TestResult("kruskal-wallis", metric, float(res.statistic), float(res.pvalue), n)


def _paired(data: "pd.DataFrame", metric: str, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    _check_columns(data, ["model", "case_id", metric])
    left = data.loc[data["model"] == a, ["case_id", metric]]
    right = data.loc[data["model"] == b, ["case_id", metric]]
    for name, part in ((a, left), (b, right)):
        dup = part["case_id"][part["case_id"].duplicated()].unique()
        if dup.size:
            raise InputError(f"model {name!r} has several rows for case(s) {', '.join(map(str, dup[:5]))}; "
                             "pairing by case needs one row per case")
    merged = left.merge(right, on="case_id", suffixes=("_a", "_b"))
    x = merged[f"{metric}_a"].to_numpy(dtype=float)
    y = merged[f"{metric}_b"].to_numpy(dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    return x[ok], y[ok]


def pairwise_tests(
    data: "pd.DataFrame",
    metric: str,
    reference: str,
    models: Sequence[str] | None = None,
    alternative: str = "two-sided",
    alpha: float = 0.05,
) -> "pd.DataFrame":
    """Every other model against ``reference``: Mann-Whitney U and paired Wilcoxon, Holm-corrected.

    Columns: model, reference, metric, n, n_paired, mean, reference_mean, mean_diff,
    mannwhitney_u, mannwhitney_p, mannwhitney_p_holm, wilcoxon_w, wilcoxon_p, wilcoxon_p_holm,
    diff_hl, diff_ci_low, diff_ci_high, diff_ci_confidence.
    Holm's correction runs over the comparisons in this table (one metric, one test).

    ``diff_*``: the paired difference model - reference over the cases of the Wilcoxon test, as
    the Hodges-Lehmann estimate with its signed-rank interval (:func:`hodges_lehmann_ci`, always
    two-sided) at confidence ``1 - alpha / m``, ``m`` the comparisons with a Wilcoxon p (Holm's
    ``m``): Bonferroni intervals, simultaneous ``1 - alpha`` coverage over the table. Holm's
    step-down test has no exact interval counterpart; these are the usual simultaneous intervals
    that go with it. An interval excludes 0 exactly where the exact signed-rank test (untied
    differences) has p <= alpha / m; Holm is less strict, so it can mark a comparison whose
    interval holds 0.
    """
    import pandas as pd
    from scipy import stats

    groups = _groups(data, metric, models)
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    if reference not in groups:
        groups.update(_groups(data, metric, [reference]))
    rows = []
    differences = []
    for model, values in groups.items():
        if model == reference:
            continue
        ref = groups[reference]
        row: dict[str, Any] = {"model": model, "reference": reference, "metric": metric, "n": int(values.size),
                               "mean": float(values.mean()) if values.size else math.nan,
                               "reference_mean": float(ref.mean()) if ref.size else math.nan}
        row["mean_diff"] = row["mean"] - row["reference_mean"]
        if values.size and ref.size:
            mw = stats.mannwhitneyu(values, ref, alternative=alternative)
            row["mannwhitney_u"], row["mannwhitney_p"] = float(mw.statistic), float(mw.pvalue)
        else:
            row["mannwhitney_u"] = row["mannwhitney_p"] = math.nan
        x, y = _paired(data, metric, model, reference)
        row["n_paired"] = int(x.size)
        if x.size == 0:
            row["wilcoxon_w"] = row["wilcoxon_p"] = math.nan
        elif np.all(x == y):
            row["wilcoxon_w"], row["wilcoxon_p"] = 0.0, 1.0
        else:
            w = stats.wilcoxon(x, y, alternative=alternative)
            row["wilcoxon_w"], row["wilcoxon_p"] = float(w.statistic), float(w.pvalue)
        rows.append(row)
        differences.append(x - y)
    columns = ["model", "reference", "metric", "n", "n_paired", "mean", "reference_mean", "mean_diff",
               "mannwhitney_u", "mannwhitney_p", "mannwhitney_p_holm", "wilcoxon_w", "wilcoxon_p", "wilcoxon_p_holm",
               "diff_hl", "diff_ci_low", "diff_ci_high", "diff_ci_confidence"]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=columns)
    df["mannwhitney_p_holm"] = holm(df["mannwhitney_p"].to_numpy())
    df["wilcoxon_p_holm"] = holm(df["wilcoxon_p"].to_numpy())
    confidence = 1.0 - alpha / max(int(df["wilcoxon_p"].notna().sum()), 1)
    intervals = [hodges_lehmann_ci(d, confidence=confidence) for d in differences]
    df["diff_hl"], df["diff_ci_low"], df["diff_ci_high"] = (list(v) for v in zip(*intervals))
    df["diff_ci_confidence"] = [confidence if d.size else math.nan for d in differences]
    return df[columns]


def detectable_difference(data: "pd.DataFrame", metric: str, reference: str, models: Sequence[str],
                          alpha: float = 0.05, power: float = 0.8) -> "pd.DataFrame":
    """The smallest mean difference to ``reference`` each paired comparison could detect.

    Normal approximation of the paired test: ``(z(1 - a/2) + z(power)) * sd(d) / sqrt(n)`` with
    ``d`` the per-case differences seen in this run and ``a = alpha / m``, Holm's strictest level
    over the ``m`` comparisons (the Wilcoxon test's efficiency is within 5% of the t-test's on
    such data, so the figure holds for it too). Columns: model, n_paired, sd_diff, detectable.
    """
    import pandas as pd
    from scipy import stats

    others = [m for m in models if m != reference]
    level = alpha / max(len(others), 1)
    z = float(stats.norm.ppf(1 - level / 2) + stats.norm.ppf(power))
    rows = []
    for model in others:
        x, y = _paired(data, metric, model, reference)
        sd = float(np.std(x - y, ddof=1)) if x.size > 1 else math.nan
        rows.append({"model": model, "n_paired": int(x.size), "sd_diff": sd,
                     "detectable": z * sd / math.sqrt(x.size) if x.size > 1 else math.nan})
    return pd.DataFrame(rows, columns=["model", "n_paired", "sd_diff", "detectable"])


def bootstrap_ci(
    values: Sequence[float],
    rng: np.random.Generator | int | None = None,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (NaN values left out).

    ``rng`` is a ``numpy.random.Generator`` (or a seed for ``default_rng``): the same generator
    state gives the same interval.
    """
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise InputError(f"n_resamples must be at least 1, got {n_resamples}")
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(rng)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // x.size)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return (float(lo), float(hi))


@dataclass
class Comparison:
    """Everything ``metsynth stats`` reports: omnibus tests, pairwise tests, the table."""

    kruskal: list[TestResult]
    pairwise: "pd.DataFrame"
    table: "Table"
    reference: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "kruskal_wallis": [vars(t) for t in self.kruskal],
            "pairwise": self.pairwise.to_dict(orient="records"),
            "difference_intervals": DIFF_CI_METHOD,
        }

    def report(self) -> str:
        lines = [self.table.to_markdown(), ""]
        for t in self.kruskal:
            lines.append(f"Kruskal-Wallis {t.metric}: H={t.statistic:.3f}, p={_fmt_p(t.pvalue)}"
                         + (f" ({t.note})" if t.note else ""))
        if not self.pairwise.empty:
            lines.append("")
            lines.append(f"Against {self.reference} (Holm-corrected per metric and test):")
            for r in self.pairwise.itertuples():
                d = DEFAULT_DECIMALS.get(r.metric, 2) + 1
                diff = ""
                if not math.isnan(r.diff_hl):
                    diff = (f", difference (HL) {_signed(r.diff_hl, d)} [{_signed(r.diff_ci_low, d)}, "
                            f"{_signed(r.diff_ci_high, d)}] ({100 * r.diff_ci_confidence:.4g}% CI)")
                lines.append(f"  {r.metric:5s} {r.model}: Mann-Whitney p={_fmt_p(r.mannwhitney_p_holm)}, "
                             f"Wilcoxon (paired, n={r.n_paired}) p={_fmt_p(r.wilcoxon_p_holm)}{diff}")
            lines.append(f"  difference: model - {self.reference}; {DIFF_CI_METHOD}")
        return "\n".join(lines)


def compare_models(
    data: "pd.DataFrame",
    metrics: Sequence[str] = METRICS,
    reference: str | None = None,
    models: Sequence[str] | None = None,
    alpha: float = 0.05,
    marker_test: str = "wilcoxon",
    ci: bool = False,
    rng: np.random.Generator | int | None = None,
    n_resamples: int = 10_000,
    title: str = "",
) -> Comparison:
    """Kruskal-Wallis per metric, pairwise tests against ``reference`` (default: first model), table.

    The table shows, beside each model's mean, its paired difference to ``reference`` with the
    Bonferroni-level interval that goes with the Holm-corrected tests (see :func:`pairwise_tests`).
    """
    import pandas as pd

    models = list(models) if models is not None else list(dict.fromkeys(data["model"]))
    reference = reference if reference is not None else models[0]
    if reference not in models:
        raise InputError(f"reference model {reference!r} is not among the results ({', '.join(models)})")
    kw = [kruskal_wallis(data, m, models) for m in metrics]
    pw = [pairwise_tests(data, m, reference, models, alpha=alpha) for m in metrics]
    pairwise = pd.concat(pw, ignore_index=True) if pw else pd.DataFrame()
    table = results_table(data, metrics, models, reference=reference, pairwise=pairwise, alpha=alpha,
                          marker_test=marker_test, ci=ci, rng=rng, n_resamples=n_resamples, title=title)
    return Comparison(kw, pairwise, table, reference)


# ---------------------------------------------------------------------------------- tables
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
            tds = []
            for c in cells:
                mean, std, extra = c.plain()
                text = f"<b>{esc(mean)}</b>" if c.bold and mean != "-" else esc(mean)
                if std:
                    text += f" &plusmn; <small>{esc(std)}</small>"
                if extra:
                    text += f" <small>{esc(extra)}</small>"
                text += esc(c.marker)
                diff = c.diff_parts()
                if diff:
                    text += f'<br><small class="diff">Δ {esc(diff[0])} [{esc(diff[1])}, {esc(diff[2])}]</small>'
                tds.append(f"<td>{text}</td>")
            out.append(f"    <tr><th>{esc(label)}</th>" + "".join(tds) + "</tr>")
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


# ---------------------------------------------------------------------------------- loading
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


# ---------------------------------------------------------------------------------- helpers
def _check_columns(data: "pd.DataFrame", columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise InputError(f"results table lacks column(s) {', '.join(missing)} (has {', '.join(map(str, data.columns))})")


def _fmt_p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


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


__all__ = [
    "Cell", "Comparison", "DIFF_CI_METHOD", "Table", "TestResult", "bootstrap_ci", "compare_models", "detectable_difference",
    "hodges_lehmann_ci", "holm", "kruskal_wallis",
    "load_results", "pairwise_tests", "parse_result_spec", "results_table",
]
