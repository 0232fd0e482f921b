"""The paper's tables (Tables 1, 2 and 3), their statistics and the lesion-wise detection table,
as HTML fragments built from a :class:`~metsynth.report.data.RunData`."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation.metrics import METRIC_LABELS, METRICS
from ..layout import PAPER_MODELS, TABLE3_MODELS, display_name
from .page import data_table, esc, fmt, fmt_p, not_run

if TYPE_CHECKING:
    from ..evaluation.stats import Comparison
    from ..evaluation.variability import VariabilityResult
    from .data import RunData

DECIMALS = {"dice": 2, "hd": 1, "hd95": 1, "assd": 1}
PAPER_ANALYSIS = (
    "Paper (section 2.5): Kruskal-Wallis across the five models, then each model against Real. The paper "
    "names the pairwise test both a paired test and Mann-Whitney U; both are reported here: Mann-Whitney U "
    "(unpaired) and the Wilcoxon signed-rank test paired by case, each Holm-corrected over the comparisons "
    "of one metric."
)


def model_label(model: str) -> str:
    """Table 3's models by their display name, size-study models as "<N> synthetic"."""
    if model in TABLE3_MODELS:
        return display_name(model)
    if model.startswith("size_"):
        n = display_name(model)
        return "all synthetic" if n == "all" else f"{n} synthetic"
    return model



# =========================================================================== comparisons
def paper_comparison(run: "RunData") -> "Comparison | None":
    """Table 3's statistics: the paper's models, Real as the reference (cached on ``run``)."""
    if "paper_comparison" not in run.__dict__:
        models = run.paper_models
        comp = None
        if models:
            from ..evaluation.stats import compare_models

            labels = [display_name(m) for m in models]
            reference = display_name("real") if "real" in models else labels[0]
            comp = compare_models(run.results_for(models), models=labels, reference=reference)
            comp.table.row_header = "Training set"
        run.__dict__["paper_comparison"] = comp
    return run.__dict__["paper_comparison"]


def size_labels(run: "RunData") -> dict[str, str]:
    labels = {}
    for m in run.size_models:
        if m in ("synthetic", "size_all"):
            n = run.n_synthetic_kept
            labels[m] = f"all ({n})" if n else "all"
        else:
            labels[m] = display_name(m)
    return labels


def size_comparison(run: "RunData") -> "Comparison | None":
    """Table 2's statistics over the size study's models (no reference markers, as the paper)."""
    if "size_comparison" not in run.__dict__:
        comp = None
        if run.size_models:
            from ..evaluation.stats import compare_models, results_table

            labels = size_labels(run)
            models = [labels[m] for m in run.size_models]
            data = run.results_for(run.size_models, labels)
            comp = compare_models(data, models=models)
            comp.table = results_table(data, models=models)  # no markers: the paper tests only Table 3
            comp.table.row_header = "Training set size"
        run.__dict__["size_comparison"] = comp
    return run.__dict__["size_comparison"]


def cases_note(run: "RunData", models: Sequence[str], labels: dict[str, str] | None = None) -> str:
    labels = labels or {m: display_name(m) for m in models}
    sub = run.results_for(models, {m: m for m in models})
    counts = sub.groupby("model").size()
    filled = sub.groupby("model")["worst_case_filled"].sum()
    n = {m: int(counts.get(m, 0)) for m in models}
    text = (f"{next(iter(n.values()))} real cases per model" if len(set(n.values())) == 1
            else "cases per model: " + ", ".join(f"{labels[m]} {n[m]}" for m in models))
    worst = {m: int(filled.get(m, 0)) for m in models if filled.get(m, 0)}
    if worst:
        text += ("; distances undefined (one mask empty) set to the worst case (the field-of-view diagonal) for "
                 + ", ".join(f"{labels[m]} {k}" for m, k in worst.items()) + " case(s)")
    return text + ". Distances in mm."


# =========================================================================== Tables 3, 2, 1
def table3_html(run: "RunData") -> str:
    comp = paper_comparison(run)
    if comp is None:
        return not_run("none of the paper's models (" + ", ".join(PAPER_MODELS.values()) + ") has been evaluated "
                       "(<code>evaluation/&lt;model&gt;/metrics.csv</code>, stage evaluate).")
    missing = [v for k, v in PAPER_MODELS.items() if k not in run.evaluated]
    note = cases_note(run, run.paper_models)
    if missing:
        note += " Not evaluated in this run: " + ", ".join(missing) + "."
    return comp.table.to_html() + f'<p class="tablenote">{esc(note)} Paper, same layout: Real 0.45 ± 0.33, ' \
        "Synthetic 0.59 ± 0.29, Synthetic+FT 0.62 ± 0.27, Diffusion 0.62 ± 0.27, Diffusion+FT 0.65 ± 0.24 (Dice).</p>"


def table2_html(run: "RunData") -> str:
    comp = size_comparison(run)
    if comp is None:
        return not_run("no size-study model evaluated (<code>evaluation/size_&lt;N&gt;/metrics.csv</code>).")
    note = cases_note(run, run.size_models, size_labels(run))
    if "synthetic" in run.size_models:
        note += " The full set is the Synthetic model of Table 3 (not trained twice)."
    return comp.table.to_html() + f'<p class="tablenote">{esc(note)}</p>'


TABLE1_GROUPS = (
    ("inter", "Inter-operator", (("novice/novice", "Novice/Novice"), ("novice/expert", "Novice/Expert"),
                                 ("expert/expert", "Expert/Expert"))),
    ("auto", "Automatic vs operators", (("vs novices", "vs Novices"), ("vs experts", "vs Expert(s)"))),
    ("intra", "Intra-operator", (("novices", "Novices"), ("experts", "Experts"))),
)


def variability_result(run: "RunData") -> "tuple[VariabilityResult | None, str | None, str]":
    """(result, automatic model, where it came from); computed from the cohort when not stored."""
    if "variability" not in run.__dict__:
        stored = run.variability_stored
        if stored is not None:
            out = (stored, run.variability_model(), "variability/ (variability stage)")
        elif run.has_operator_annotations():
            from ..evaluation.variability import operator_variability

            model = run.automatic_model()
            pred = run.layout.predictions(model) if model else None
            result = operator_variability(run.cohort, predictions=pred, allow_missing=True)  # type: ignore[arg-type]
            out = (result, model, "computed by the report from the cohort's annotations")
        else:
            out = (None, None, "")
        run.__dict__["variability"] = out
    return run.__dict__["variability"]


def table1_html(run: "RunData") -> str:
    result, model, source = variability_result(run)
    if result is None or result.pairs.empty:
        return not_run("no operator annotations: Table 1 needs cases with at least two operators' lesion masks "
                       "(expertise novice/expert in the manifest) or <code>variability/variability_pairs.csv</code>.")
    pairs = result.pairs
    columns = []  # (group title, sub title, comparison, group key)
    for comparison, group_title, subs in TABLE1_GROUPS:
        for key, sub in subs:
            sel = pairs[(pairs["comparison"] == comparison) & (pairs["group"] == key)]
            if len(sel):
                columns.append((group_title, sub, sel))
    head1, spans = [], Counter(c[0] for c in columns)
    for group_title in dict.fromkeys(c[0] for c in columns):
        head1.append(f'<th colspan="{spans[group_title]}" class="group">{esc(group_title)}</th>')
    head2 = "".join(f"<th>{esc(c[1])}</th>" for c in columns)
    body = []
    for metric in ("dice", "hd95", "assd"):
        if metric not in pairs:
            continue
        tds = []
        for _, _, sel in columns:
            v = sel[metric].to_numpy(dtype=float)
            v = v[~np.isnan(v)]
            d = DECIMALS[metric]
            if v.size:
                std = float(v.std(ddof=1)) if v.size > 1 else 0.0
                tds.append(f"<td>{fmt(v.mean(), d)} &plusmn; <small>{fmt(std, d)}</small></td>")
            else:
                tds.append("<td>-</td>")
        label = "Mean Dice" if metric == "dice" else f"Mean {METRIC_LABELS[metric]}"
        body.append(f"<tr><th>{esc(label)}</th>{''.join(tds)}</tr>")
    body.append("<tr><th>n (comparisons)</th>" + "".join(f"<td>{len(c[2])}</td>" for c in columns) + "</tr>")
    html = (f'<table class="metsynth-table"><thead><tr><th rowspan="2"></th>{"".join(head1)}</tr>'
            f"<tr>{head2}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")
    auto = f"Automatic: {esc(display_name(model))} predictions" if model else "Automatic: the variability stage's model"
    if not (pairs["comparison"] == "auto").any():
        auto = "No automatic comparison (no predictions for these cases)"
    notes = [f"mean ± std over (case, pair) comparisons; inter-operator: each operator's first round; intra-operator: "
             f"first round against later rounds. {auto}. Source: {esc(source)}. Paper: 0.73 ± 0.23, 0.72 ± 0.16, "
             "0.71 ± 0.18, 0.75 ± 0.14, 0.77 ± 0.18 (Dice, same column order without Expert/Expert)."]
    summary = result.summary()
    rng = summary.get("model_vs_inter_rater_range")
    if rng and rng.get("n_cases"):
        notes.append(f"Per case, the automatic segmentation's mean Dice against the operators lies within the "
                     f"inter-operator range in {rng['n_within_range']} of {rng['n_cases']} cases, and at or above its "
                     f"minimum in {rng['n_at_or_above_min']}.")
    html += "".join(f'<p class="tablenote">{n}</p>' for n in notes)
    staple = summary.get("staple")
    if staple:
        rows = [[rater, fmt(v.get("dice_vs_consensus_mean"), 2), fmt(v.get("sensitivity_mean"), 3),
                 fmt(v.get("specificity_mean"), 4), v.get("n")] for rater, v in staple.items()]
        html += data_table(["rater", "Dice vs STAPLE consensus", "sensitivity", "specificity", "cases"], rows,
                           caption="STAPLE consensus of the operators' first rounds")
    return html


# =========================================================================== statistics
def tests_html(run: "RunData", comp: "Comparison | None", pairwise: bool) -> str:
    if comp is None:
        return not_run("no models of this table were evaluated.")
    rows = []
    for t in comp.kruskal:
        counts = set(t.n.values())
        n = f"{counts.pop()} per model" if len(counts) == 1 else ", ".join(f"{k} {v}" for k, v in t.n.items())
        sig = "yes" if not math.isnan(t.pvalue) and t.pvalue < 0.05 else "no"
        rows.append([METRIC_LABELS.get(t.metric, t.metric), fmt(t.statistic, 2), fmt_p(t.pvalue), sig,
                     n + (f" ({t.note})" if t.note else "")])
    html = data_table(["metric", "H", "p", "p < 0.05", "cases"], rows,
                      caption=f"Kruskal-Wallis across {len(comp.kruskal[0].n) if comp.kruskal else 0} models")
    if pairwise and not comp.pairwise.empty:
        html += _pairwise_matrix(comp)
        html += f'<p class="tablenote">{esc(PAPER_ANALYSIS)} Δ: model mean minus {esc(comp.reference)} mean; ' \
                "MW: Mann-Whitney U p; W: Wilcoxon signed-rank p (paired by case); both Holm-adjusted; " \
                "bold: p &lt; 0.05. The results table gives each paired difference as a Hodges-Lehmann estimate " \
                "with its Wilcoxon signed-rank interval at the Bonferroni level that goes with Holm's " \
                "correction.</p>"
    return html


def _pairwise_matrix(comp: "Comparison") -> str:
    """Rows: models; per metric three columns: difference to the reference, MW p, W p."""
    pw = comp.pairwise
    metrics = [m for m in METRICS if (pw["metric"] == m).any()]
    head1 = "".join(f'<th colspan="3" class="group">{esc(METRIC_LABELS.get(m, m))}</th>' for m in metrics)
    head2 = "".join("<th>Δ</th><th>MW</th><th>W</th>" for _ in metrics)

    def p_cell(p: float) -> str:
        text = esc(fmt_p(p))
        return f"<td><b>{text}</b></td>" if not math.isnan(p) and p < 0.05 else f"<td>{text}</td>"

    body = []
    for model in dict.fromkeys(pw["model"]):
        cells = []
        for metric in metrics:
            sel = pw[(pw["model"] == model) & (pw["metric"] == metric)]
            if not len(sel):
                cells.append("<td>-</td><td>-</td><td>-</td>")
                continue
            r = sel.iloc[0]
            d = DECIMALS.get(metric, 2)
            diff = f"{'+' if r['mean_diff'] >= 0 else '−'}{fmt(abs(r['mean_diff']), d)}"
            cells.append(f"<td>{diff}</td>" + p_cell(float(r["mannwhitney_p_holm"]))
                         + p_cell(float(r["wilcoxon_p_holm"])))
        n = int(pw.loc[pw["model"] == model, "n_paired"].min())
        body.append(f"<tr><th>{esc(model)}</th>{''.join(cells)}<td>{n}</td></tr>")
    return (f'<table class="metsynth-table"><caption>Each model against {esc(comp.reference)}</caption>'
            f'<thead><tr><th rowspan="2">Model</th>{head1}<th rowspan="2">pairs</th></tr><tr>{head2}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def detection_html(run: "RunData") -> str:
    rows, bins = [], {}
    models = [m for m in run.evaluated if run.lesions(m) is not None]
    if not models:
        return not_run("no <code>evaluation/&lt;model&gt;/lesions.csv</code>.")
    results = run.results_for(models, {m: m for m in models})
    per_bin: dict[str, dict[str, tuple[int, int]]] = {}
    for m in models:
        les = run.lesions(m)
        n_cases = int((results["model"] == m).sum())
        if les is None or les.empty or "kind" not in les:
            rows.append([model_label(m), 0, "-", "-", "-", "-"])
            continue
        true = les[les["kind"] == "true"]
        pred = les[les["kind"] == "pred"]
        detected = true["detected"].astype(str).str.lower() == "true"
        fp = int((pred["detected"].astype(str).str.lower() != "true").sum())
        sens = detected.mean() if len(true) else math.nan
        rows.append([model_label(m), len(true), f"{int(detected.sum())}",
                     fmt(sens, 2), fmt(fp / n_cases if n_cases else math.nan, 2),
                     fmt(true["dice"].astype(float).mean() if len(true) else math.nan, 2)])
        for name, sub in true.groupby("size_bin", sort=False):
            det = (sub["detected"].astype(str).str.lower() == "true")
            per_bin.setdefault(m, {})[str(name)] = (int(det.sum()), len(sub))
            bins[str(name)] = _bin_lower(str(name))
    html = data_table(["model", "true lesions", "detected", "sensitivity", "false positives / case",
                       "mean lesion Dice"], rows, caption="Lesions as connected components, matched by overlap")
    if bins:
        order = sorted(bins, key=bins.get)
        brow = []
        for m in models:
            cells = []
            for b in order:
                tp, n = per_bin.get(m, {}).get(b, (0, 0))
                cells.append(f"{tp}/{n} ({tp / n:.2f})" if n else "-")
            brow.append([model_label(m), *cells])
        html += data_table(["model", *order], brow, caption="Detected / true lesions by lesion volume")
    return html


def _bin_lower(name: str) -> float:
    text = name.lstrip(">=").split("-")[0].split(" ")[0]
    try:
        return float(text)
    except ValueError:
        return math.inf
