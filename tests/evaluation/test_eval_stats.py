"""Statistics against scipy on known data; Holm; bootstrap; the Tables 2/3 layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from metsynth.errors import InputError
from metsynth.evaluation.stats import (
    bootstrap_ci,
    compare_models,
    holm,
    kruskal_wallis,
    load_results,
    pairwise_tests,
    parse_result_spec,
    results_table,
)

REAL = [0.10, 0.45, 0.52, 0.30, 0.71, 0.05, 0.60, 0.44, 0.38, 0.50]
SYNTH = [0.55, 0.60, 0.66, 0.48, 0.80, 0.20, 0.70, 0.59, 0.47, 0.61]
DIFF = [0.60, 0.64, 0.70, 0.52, 0.79, 0.35, 0.75, 0.66, 0.50, 0.69]


@pytest.fixture
def long_table() -> pd.DataFrame:
    rows = []
    for model, dice in (("Real", REAL), ("Synthetic", SYNTH), ("Diffusion+FT", DIFF)):
        for i, d in enumerate(dice):
            rows.append({"model": model, "case_id": f"C{i:02d}", "dice": d,
                         "hd": 100 * (1 - d) + i, "hd95": 90 * (1 - d) + i, "assd": 20 * (1 - d)})
    return pd.DataFrame(rows)


def test_holm_known_values():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    out = holm([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)
    assert holm([]).size == 0


def test_kruskal_matches_scipy(long_table):
    res = kruskal_wallis(long_table, "dice")
    ref = sps.kruskal(REAL, SYNTH, DIFF)
    assert res.statistic == pytest.approx(ref.statistic) and res.pvalue == pytest.approx(ref.pvalue)
    assert res.n == {"Real": 10, "Synthetic": 10, "Diffusion+FT": 10}
    same = long_table.assign(dice=0.5)
    assert kruskal_wallis(same, "dice").pvalue == 1.0


def test_pairwise_matches_scipy_and_pairs_by_case(long_table):
    # shuffle rows and drop one case of one model: pairing must follow case ids, not row order
    shuffled = long_table.sample(frac=1.0, random_state=1)
    shuffled = shuffled[~((shuffled["model"] == "Synthetic") & (shuffled["case_id"] == "C03"))]
    df = pairwise_tests(shuffled, "dice", reference="Real")
    row = df.set_index("model").loc["Synthetic"]
    synth = [s for i, s in enumerate(SYNTH) if i != 3]
    real_paired = [r for i, r in enumerate(REAL) if i != 3]
    assert row["mannwhitney_p"] == pytest.approx(sps.mannwhitneyu(synth, REAL).pvalue)
    assert row["wilcoxon_p"] == pytest.approx(sps.wilcoxon(synth, real_paired).pvalue)
    assert row["n_paired"] == 9 and row["n"] == 9
    raw = df["wilcoxon_p"].to_numpy()
    np.testing.assert_allclose(df["wilcoxon_p_holm"], holm(raw))
    np.testing.assert_allclose(df["mannwhitney_p_holm"], holm(df["mannwhitney_p"].to_numpy()))
    assert set(df["model"]) == {"Synthetic", "Diffusion+FT"}


def test_pairwise_identical_models_and_duplicates(long_table):
    twin = long_table[long_table["model"] == "Real"].assign(model="Twin")
    df = pairwise_tests(pd.concat([long_table, twin]), "dice", reference="Real", models=["Real", "Twin"])
    assert df.iloc[0]["wilcoxon_p"] == 1.0
    dup = pd.concat([long_table, long_table.iloc[[0]]])
    with pytest.raises(InputError, match="several rows for case"):
        pairwise_tests(dup, "dice", reference="Synthetic")
    with pytest.raises(InputError, match="no results for model"):
        pairwise_tests(long_table, "dice", reference="Nope")


def test_bootstrap_ci_is_deterministic_and_close_to_scipy():
    data = np.random.default_rng(0).normal(10, 2, size=40)
    a = bootstrap_ci(data, np.random.default_rng(7), n_resamples=4000)
    b = bootstrap_ci(data, np.random.default_rng(7), n_resamples=4000)
    assert a == b and a[0] < data.mean() < a[1]
    ref = sps.bootstrap((data,), np.mean, n_resamples=4000, method="percentile",
                        rng=np.random.default_rng(1)).confidence_interval
    assert a[0] == pytest.approx(ref.low, abs=0.1) and a[1] == pytest.approx(ref.high, abs=0.1)
    wider = bootstrap_ci(data, 7, n_resamples=4000, confidence=0.99)
    assert wider[0] < a[0] and wider[1] > a[1]
    assert np.isnan(bootstrap_ci([np.nan])[0])
    with pytest.raises(InputError, match="confidence"):
        bootstrap_ci(data, confidence=95)


def test_table_bold_best_and_markers(long_table):
    cmp = compare_models(long_table, reference="Real", title="Table 3")
    md = cmp.table.to_markdown()
    dice_diff = f"**{np.mean(DIFF):.2f}** ± {np.std(DIFF, ddof=1):.2f}"
    assert dice_diff in md  # best Dice (highest) in bold
    lines = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "**" not in lines["Real (ref.)"]  # Real is worst on every metric
    assert "**" in lines["Diffusion+FT"].split("|")[3]  # lowest HD in bold too
    assert "Dice ↑" in md and "HD95 (mm) ↓" in md
    # every model beats Real on all 10 cases: paired Wilcoxon p = 0.002, Holm 0.004 -> marked
    assert dice_diff + "*" in md
    html = cmp.table.to_html()
    assert "<b>" in html and "&plusmn;" in html and "<table" in html
    tex = cmp.table.to_latex()
    assert "\\mathbf{" in tex and "\\pm" in tex and "\\begin{tabular}" in tex and "Diffusion+FT" in tex
    report = cmp.report()
    assert "Kruskal-Wallis dice" in report and "Holm" in report
    assert cmp.to_dict()["reference"] == "Real"


def test_table_ties_and_ci(long_table):
    tied = long_table.copy()
    tied.loc[tied["model"] == "Synthetic", "dice"] = DIFF
    t = results_table(tied, ["dice"], ci=True, rng=0, n_resamples=500)
    assert sum(c[0].bold for _, c in t.rows) == 2
    assert t.rows[0][1][0].ci is not None and "[" in t.to_markdown()
    df = t.to_dataframe()
    assert df.loc["Real", "Dice ↑"] == pytest.approx(np.mean(REAL))


def test_load_results_names_and_worst_case(tmp_path):
    a = pd.DataFrame({"case_id": ["C1", "C2"], "dice": [0.5, 0.0], "hd": [3.0, np.nan], "hd95": [2.0, np.nan],
                      "assd": [1.0, np.nan], "diagonal_mm": [300.0, 250.0]})
    (tmp_path / "real").mkdir()
    a.to_csv(tmp_path / "real" / "metrics.csv", index=False)
    a.to_csv(tmp_path / "synthetic.csv", index=False)
    data = load_results([str(tmp_path / "real" / "metrics.csv"), f"diff={tmp_path / 'synthetic.csv'}",
                         str(tmp_path / "synthetic.csv")])
    assert list(dict.fromkeys(data["model"])) == ["real", "diff", "synthetic"]
    assert data.loc[data["case_id"] == "C2", "hd"].tolist() == [250.0] * 3
    assert parse_result_spec("x=y.csv") == ("x", tmp_path.__class__("y.csv"))
    with pytest.raises(InputError, match="used twice"):
        load_results([str(tmp_path / "synthetic.csv")] * 2)
    with pytest.raises(InputError, match="not found"):
        load_results([str(tmp_path / "missing.csv")])
    pd.DataFrame({"case": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="case_id"):
        load_results([str(tmp_path / "bad.csv")])


def test_detectable_difference_follows_the_paired_spread_and_holm(long_table):
    from metsynth.evaluation.stats import detectable_difference

    table = detectable_difference(long_table, "dice", "Real", ["Real", "Synthetic", "Diffusion+FT"]).set_index("model")
    z = sps.norm.ppf(1 - 0.05 / 2 / 2) + sps.norm.ppf(0.8)  # two comparisons: Holm's strictest level 0.025
    for model, values in (("Synthetic", SYNTH), ("Diffusion+FT", DIFF)):
        sd = np.std(np.subtract(values, REAL), ddof=1)
        assert table.loc[model, "n_paired"] == 10
        assert table.loc[model, "detectable"] == pytest.approx(z * sd / np.sqrt(10))
    # four times the cases, half the detectable difference
    big = pd.concat([long_table.assign(case_id=long_table["case_id"].astype(str) + f"-{k}") for k in range(4)])
    bigger = detectable_difference(big, "dice", "Real", ["Real", "Synthetic", "Diffusion+FT"]).set_index("model")
    assert bigger.loc["Synthetic", "detectable"] == pytest.approx(table.loc["Synthetic", "detectable"] / 2, rel=0.05)


# ------------------------------------------------------------------ differences against the reference
def _walsh(d):
    return sorted((d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d)))


def _inverted_wilcoxon(d, confidence):
    """Slow reference: the shifts mu whose exact two-sided signed-rank test of d - mu keeps p > 1 - confidence,
    tried between every two consecutive Walsh averages (where d - mu has neither zeros nor ties)."""
    w = _walsh(d)
    mids = [w[0] - 1.0] + [(a + b) / 2 for a, b in zip(w, w[1:]) if b > a] + [w[-1] + 1.0]
    kept = [mu for mu in mids if sps.wilcoxon(np.subtract(d, mu), method="exact").pvalue > 1 - confidence]
    lo = max((v for v in w if v < min(kept)), default=-np.inf)
    hi = min((v for v in w if v > max(kept)), default=np.inf)
    return lo, hi


@pytest.mark.parametrize("n", [6, 9, 13])
def test_hodges_lehmann_interval_inverts_the_exact_wilcoxon_test(n):
    from metsynth.evaluation.stats import hodges_lehmann_ci

    rng = np.random.default_rng(n)
    x, y = rng.normal(0.5, 0.2, n), rng.normal(0.4, 0.2, n)
    d = list(x - y)
    for confidence in (0.95, 1 - 0.05 / 4):
        est, lo, hi = hodges_lehmann_ci(x, y, confidence=confidence)
        assert est == pytest.approx(np.median(_walsh(d)), abs=1e-12)
        ref_lo, ref_hi = _inverted_wilcoxon(d, confidence)
        assert (lo, hi) == (pytest.approx(ref_lo, abs=1e-12), pytest.approx(ref_hi, abs=1e-12)), (n, confidence)
    assert hodges_lehmann_ci(d) == hodges_lehmann_ci(x, y)  # y=None: x are the differences


def test_hodges_lehmann_small_samples_nan_and_normal_approximation(monkeypatch):
    import metsynth.evaluation.stat_tests as st  # where _signrank_critical reads EXACT_SIGNRANK_MAX_N

    # three pairs: P(T+ = 0) = 1/8 > 0.025, no finite 95% interval exists
    assert st.hodges_lehmann_ci([1.0, 2.0, 4.0], confidence=0.95)[1:] == (-np.inf, np.inf)
    assert st.hodges_lehmann_ci([1.0, np.nan, 2.0, 4.0, 3.0, 5.0, 6.0], [0.0] * 7)[0] == pytest.approx(3.5)
    assert all(np.isnan(st.hodges_lehmann_ci([np.nan], [1.0])))
    assert st.hodges_lehmann_ci([0.0] * 8) == (0.0, 0.0, 0.0)  # identical models
    with pytest.raises(InputError, match="confidence"):
        st.hodges_lehmann_ci([1.0, 2.0], confidence=95)
    exact = [st._signrank_critical(n, 0.0125) for n in (40, 80)]
    monkeypatch.setattr(st, "EXACT_SIGNRANK_MAX_N", 0)
    approx = [st._signrank_critical(n, 0.0125) for n in (40, 80)]
    assert all(0 <= e - a <= 4 for e, a in zip(exact, approx)), (exact, approx)


def test_difference_intervals_are_holm_matched_wider_and_deterministic(long_table):
    from metsynth.evaluation.stats import hodges_lehmann_ci

    df = pairwise_tests(long_table, "dice", reference="Real").set_index("model")
    for model, values in (("Synthetic", SYNTH), ("Diffusion+FT", DIFF)):
        row = df.loc[model]
        assert row["diff_ci_confidence"] == pytest.approx(1 - 0.05 / 2)  # two comparisons with Real
        adjusted = hodges_lehmann_ci(values, REAL, confidence=1 - 0.05 / 2)
        assert (row["diff_hl"], row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx(adjusted)
        _, lo, hi = hodges_lehmann_ci(values, REAL, confidence=0.95)  # unadjusted
        assert row["diff_ci_low"] <= lo and row["diff_ci_high"] >= hi
        assert row["diff_ci_low"] < lo or row["diff_ci_high"] > hi  # strictly wider
        assert row["diff_ci_low"] <= row["diff_hl"] <= row["diff_ci_high"]
    one = pairwise_tests(long_table, "dice", reference="Real", models=["Real", "Synthetic"]).iloc[0]
    assert one["diff_ci_confidence"] == pytest.approx(0.95)  # a single comparison: no adjustment
    shuffled = long_table.sample(frac=1.0, random_state=3)
    again = pairwise_tests(shuffled, "dice", reference="Real").set_index("model")
    cols = ["diff_hl", "diff_ci_low", "diff_ci_high", "diff_ci_confidence"]
    pd.testing.assert_frame_equal(again.loc[df.index, cols], df[cols])


def test_tables_show_the_difference_intervals(long_table):
    from metsynth.evaluation.stats import hodges_lehmann_ci

    cmp = compare_models(long_table, reference="Real", title="Table 3")
    est, lo, hi = hodges_lehmann_ci(SYNTH, REAL, confidence=0.975)
    shown = f"Δ {est:+.2f} [{lo:+.2f}, {hi:+.2f}]"
    md = cmp.table.to_markdown()
    lines = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert f"({shown})" in lines["Synthetic"].split("|")[2]
    assert lines["Synthetic"].count("(Δ ") == 4 and lines["Diffusion+FT"].count("(Δ ") == 4
    assert "Δ" not in lines["Real (ref.)"]
    assert "Hodges-Lehmann" in md and "97.5%" in md and "m = 2" in md and "Holm" in md
    assert shown in cmp.table.to_html() and "Hodges-Lehmann" in cmp.table.to_html()
    tex = cmp.table.to_latex()
    assert f"$\\Delta\\,{est:+.2f}\\;[{lo:+.2f}, {hi:+.2f}]$" in tex and "Δ" not in tex and "−" not in tex
    report = cmp.report()
    assert f"difference (HL) {est:+.3f} [{lo:+.3f}, {hi:+.3f}] (97.5% CI)" in report
    record = next(r for r in cmp.to_dict()["pairwise"] if r["model"] == "Synthetic" and r["metric"] == "dice")
    assert (record["diff_ci_low"], record["diff_ci_high"]) == pytest.approx((lo, hi))
    assert "Hodges-Lehmann" in cmp.to_dict()["difference_intervals"]
    assert "Δ" not in results_table(long_table).to_markdown()  # no reference, no differences
    tiny = long_table[long_table["case_id"].isin(["C00", "C01", "C02"])]
    assert "[-∞, +∞]" in compare_models(tiny, reference="Real").table.to_markdown()
