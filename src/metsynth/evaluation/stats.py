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

Modules: :mod:`.stat_tests` (the tests), :mod:`.tables` (the tables), :mod:`.result_files` (reading the
per-case CSVs); this module puts them together (:func:`compare_models`) and is the public entry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .metrics import METRICS
from .result_files import load_results, parse_result_spec
from .stat_tests import (
    TestResult,
    bootstrap_ci,
    detectable_difference,
    hodges_lehmann_ci,
    holm,
    kruskal_wallis,
    pairwise_tests,
)
from .tables import DEFAULT_DECIMALS, DIFF_CI_METHOD, Cell, Table, _signed, results_table

if TYPE_CHECKING:
    import pandas as pd


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


def _fmt_p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


__all__ = [
    "Cell", "Comparison", "DIFF_CI_METHOD", "Table", "TestResult", "bootstrap_ci", "compare_models",
    "detectable_difference",
    "hodges_lehmann_ci", "holm", "kruskal_wallis",
    "load_results", "pairwise_tests", "parse_result_spec", "results_table",
]
