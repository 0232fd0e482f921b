"""Statistics across models and the paper's results tables (Tables 2 and 3).

Input: a long table with one row per (model, case) and one column per metric (``dice``,
``hd``, ``hd95``, ``assd``), as written by ``metsynth evaluate`` and read by
:func:`load_results`. The paper's analysis (section 2.5):

* Kruskal-Wallis across all models, per metric (:func:`kruskal_wallis`);
* each model against a reference model (the paper's "Real"): Mann-Whitney U (unpaired) and
  Wilcoxon signed-rank paired by case (cases present for both models, NaN pairs dropped), with
  Holm's correction over the comparisons of one metric and one test (:func:`pairwise_tests`);
* bootstrap confidence intervals of means (:func:`bootstrap_ci`, percentile method, with a
  ``numpy.random.Generator``);
* tables of mean +/- std per metric, best value in bold (higher Dice, lower distances), in
  Markdown, HTML and LaTeX (:func:`results_table`).

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
) -> "pd.DataFrame":
    """Every other model against ``reference``: Mann-Whitney U and paired Wilcoxon, Holm-corrected.

    Columns: model, reference, metric, n, n_paired, mean, reference_mean, mean_diff,
    mannwhitney_u, mannwhitney_p, mannwhitney_p_holm, wilcoxon_w, wilcoxon_p, wilcoxon_p_holm.
    Holm's correction runs over the comparisons in this table (one metric, one test).
    """
    import pandas as pd
    from scipy import stats

    groups = _groups(data, metric, models)
    if reference not in groups:
        groups.update(_groups(data, metric, [reference]))
    rows = []
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
    columns = ["model", "reference", "metric", "n", "n_paired", "mean", "reference_mean", "mean_diff",
               "mannwhitney_u", "mannwhitney_p", "mannwhitney_p_holm", "wilcoxon_w", "wilcoxon_p", "wilcoxon_p_holm"]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=columns)
    df["mannwhitney_p_holm"] = holm(df["mannwhitney_p"].to_numpy())
    df["wilcoxon_p_holm"] = holm(df["wilcoxon_p"].to_numpy())
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
                lines.append(f"  {r.metric:5s} {r.model}: Mann-Whitney p={_fmt_p(r.mannwhitney_p_holm)}, "
                             f"Wilcoxon (paired, n={r.n_paired}) p={_fmt_p(r.wilcoxon_p_holm)}")
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
    """Kruskal-Wallis per metric, pairwise tests against ``reference`` (default: first model), table."""
    import pandas as pd

    models = list(models) if models is not None else list(dict.fromkeys(data["model"]))
    reference = reference if reference is not None else models[0]
    if reference not in models:
        raise InputError(f"reference model {reference!r} is not among the results ({', '.join(models)})")
    kw = [kruskal_wallis(data, m, models) for m in metrics]
    pw = [pairwise_tests(data, m, reference, models) for m in metrics]
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

    def plain(self) -> tuple[str, str, str]:
        """(mean, std, extra) as text."""
        if self.mean is None or math.isnan(self.mean):
            return ("-", "", "")
        mean = f"{self.mean:.{self.decimals}f}"
        std = "" if self.std is None or math.isnan(self.std) else f"{self.std:.{self.decimals}f}"
        extra = "" if self.ci is None else f"[{self.ci[0]:.{self.decimals}f}, {self.ci[1]:.{self.decimals}f}]"
        return mean, std, extra


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
                texts.append(text + c.marker)
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
                tds.append(f"<td>{text}{esc(c.marker)}</td>")
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
    ("wilcoxon" or "mannwhitney") get a ``*``. ``ci=True`` adds bootstrap 95% CIs of the mean.
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
    columns = [f"{METRIC_LABELS.get(m, m)} {'↑' if HIGHER_IS_BETTER.get(m, False) else '↓'}" for m in metrics]
    label = {m: f"{m} (ref.)" if m == reference and pairwise is not None else m for m in models}
    notes = ["mean ± std over cases; bold: best per metric"]
    if pairwise is not None and not pairwise.empty:
        test_name = "paired Wilcoxon signed-rank" if marker_test == "wilcoxon" else "Mann-Whitney U"
        notes.append(f"*: {test_name} against {reference}, Holm-adjusted p < {alpha:g}")
    if ci:
        notes.append(f"[..]: bootstrap {n_resamples}-resample 95% CI of the mean")
    return Table(columns, [(label[m], cells[m]) for m in models], row_header="Model", title=title, notes=notes)


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


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


_TEX = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def _tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text)).replace("±", r"$\pm$")


def _tex_header(text: str) -> str:
    return _tex_escape(text).replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$")


__all__ = [
    "Cell", "Comparison", "Table", "TestResult", "bootstrap_ci", "compare_models", "detectable_difference", "holm", "kruskal_wallis",
    "load_results", "pairwise_tests", "parse_result_spec", "results_table",
]
