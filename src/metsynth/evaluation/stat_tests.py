"""The statistical tests of the paper's analysis (section 2.5), on the long results table.

Holm's correction (:func:`holm`), the Hodges-Lehmann estimate with its Wilcoxon signed-rank interval
(:func:`hodges_lehmann_ci`), Kruskal-Wallis across models (:func:`kruskal_wallis`), each model against a
reference by Mann-Whitney U and paired Wilcoxon (:func:`pairwise_tests`), the smallest difference those
tests could detect (:func:`detectable_difference`) and bootstrap intervals of means
(:func:`bootstrap_ci`). :mod:`metsynth.evaluation.stats` puts them together with the tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    import pandas as pd


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
            raise InputError(f"no results for model {m!r} "
                             f"(models present: {', '.join(map(str, data['model'].unique()))})")
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


def _check_columns(data: "pd.DataFrame", columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise InputError(f"results table lacks column(s) {', '.join(missing)} "
                         f"(has {', '.join(map(str, data.columns))})")


__all__ = [
    "EXACT_SIGNRANK_MAX_N", "TestResult", "bootstrap_ci", "detectable_difference", "hodges_lehmann_ci", "holm",
    "kruskal_wallis", "pairwise_tests",
]
