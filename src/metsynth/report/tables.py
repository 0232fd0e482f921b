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
from .page import data_table, esc, fmt, fmt_p, not_run, scroll

if TYPE_CHECKING:
    from ..evaluation.stats import Comparison, Table
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


def _span(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def per_fold(run: "RunData", model: str) -> str | None:
    """How many volumes each fold of ``model`` trained on, from its ``training_set.json`` files
    (e.g. "120 per fold"); None where the run has none."""
    sizes = run.train_sizes(model)
    return f"{_span(sizes)} per fold" if sizes else None


def trained_on(run: "RunData", model: str) -> str | None:
    """What each fold of ``model`` trained on, by source ("120 synthetic per fold",
    "3 real + 40 synthetic per fold"), from its ``training_set.json`` files; None where absent."""
    sets = run.training_sets(model)
    if not sets:
        return None
    by_source: dict[str, list[int]] = {}
    for data in sets:
        counts = Counter(str(v.get("source", "?")) if isinstance(v, dict) else "?" for v in data["train"])
        for source in counts:
            by_source.setdefault(source, [])
        for source, values in by_source.items():
            values.append(counts.get(source, 0))
    online = [data["online"] for data in sets if isinstance(data.get("online"), dict)]
    if online:  # drawn during training: no stored volume, but the donors' lesions and the femurs they go into
        donors = [len(o.get("donor_cases") or []) for o in online]
        femurs = [len(o.get("healthy_cases") or []) for o in online]
        by_source[f"real cases' lesions pasted on the fly into {_span(femurs)} healthy femurs"] = donors
    if not by_source:
        return "nothing per fold"
    return " + ".join(f"{_span(v)} {k}" for k, v in by_source.items()) + " per fold"


def model_with_training(run: "RunData", model: str) -> str:
    """``model_label`` followed by what each fold trained on, where the run recorded it."""
    what = trained_on(run, model)
    return f"{model_label(model)} ({what})" if what else model_label(model)


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
    """Table 2's row labels: the size asked for, and for the full set what each fold actually
    trained on (the leakage filter drops volumes per fold), read from ``training_set.json``."""
    labels = {}
    for m in run.size_models:
        folds = per_fold(run, m)
        if m in ("synthetic", "size_all"):
            labels[m] = f"all ({folds})" if folds else "all"
        else:
            n = display_name(m)
            sizes = run.train_sizes(m)
            labels[m] = f"{n} ({folds})" if sizes and {str(v) for v in sizes} != {n} else n
    return labels


def size_sentence_labels(run: "RunData") -> dict[str, str]:
    """The size-study models as they read in a sentence ("40 synthetic", "all synthetic (120 per fold)")."""
    out = {}
    for m, label in size_labels(run).items():
        head, _, tail = label.partition(" ")
        out[m] = f"{head} synthetic" + (f" {tail}" if tail else "")
    return out


def size_comparison(run: "RunData") -> "Comparison | None":
    """Table 2's statistics over the size study's models: Kruskal-Wallis, and each size against the
    smallest, paired by case (as ``metsynth stats`` writes ``stats/table2.*``)."""
    if "size_comparison" not in run.__dict__:
        comp = None
        if run.size_models:
            from ..evaluation.stats import compare_models

            labels = size_labels(run)
            models = [labels[m] for m in run.size_models]
            data = run.results_for(run.size_models, labels)
            comp = compare_models(data, models=models)
            comp.table.row_header = "Training set size"
        run.__dict__["size_comparison"] = comp
    return run.__dict__["size_comparison"]


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cases(k: int) -> str:
    return f"{k} case" if k == 1 else f"{k} cases"


def cases_note(run: "RunData", models: Sequence[str], labels: dict[str, str] | None = None) -> str:
    """How many real cases each model was scored on and where undefined distances were filled, as
    sentences (``labels``: how each model reads in a sentence)."""
    labels = labels or {m: display_name(m) for m in models}
    sub = run.results_for(models, {m: m for m in models})
    counts = sub.groupby("model").size()
    filled = sub.groupby("model")["worst_case_filled"].sum()
    n = {m: int(counts.get(m, 0)) for m in models}
    text = (f"{next(iter(n.values()))} real cases per model." if len(set(n.values())) == 1
            else "Real cases per model: " + _and([f"{_cases(n[m])} for {labels[m]}" for m in models]) + ".")
    worst = {m: int(filled.get(m, 0)) for m in models if filled.get(m, 0)}
    if worst:
        text += (" Distances that are undefined (one mask empty) were set to the worst case, the field-of-view "
                 "diagonal: " + _and([f"{_cases(k)} of {labels[m]}" for m, k in worst.items()]) + ".")
    return text + " Distances in mm."


BOLD_NOTE = ("Bold: the best mean of each metric (highest Dice, lowest distances), only the best value, not a "
             "test result; a difference to the reference is significant only where * marks it.")
HL_NOTE = ("HL Δ is a median-type estimate of the per-case paired difference, not the difference of the means "
           "(Δ mean, in the Statistics section); the two can differ, even in sign.")


def results_table_html(table: "Table", extra_notes: Sequence[str] = (),
                       reference: tuple[str, str] | None = None) -> str:
    """A Table 2/3 (:func:`metsynth.evaluation.stats.results_table`) as the report shows it: the
    paired Hodges-Lehmann difference named "HL Δ" (apart from Section 7's "Δ mean"), bold
    explained as the best value only, in a box that scrolls on narrow pages. ``reference``: (its
    row label, how it reads in the notes), e.g. ("40", "40 synthetic")."""
    rows = []
    for label, cells in table.rows:
        tds = "".join(f"<td>{c.to_html('HL Δ')}</td>" for c in cells)
        rows.append(f"<tr><th>{esc(label)}</th>{tds}</tr>")
    head = "".join(f"<th>{esc(h)}</th>" for h in [table.row_header, *table.columns])
    html = scroll(f'<table class="metsynth-table"><thead><tr>{head}</tr></thead>'
                  f"<tbody>{''.join(rows)}</tbody></table>")
    notes = []
    has_diff = any(c.diff_parts() for _, cells in table.rows for c in cells)
    has_marker = any(c.marker for _, cells in table.rows for c in cells)
    for note in table.notes:
        if note.startswith("mean ± std over cases"):
            notes.append("Mean ± std over cases. " + BOLD_NOTE)
        elif note.startswith("Δ [..]"):
            notes.append("HL " + note + ". " + HL_NOTE)
        elif note.startswith("*:"):
            notes.append(note + ("." if has_marker else "; no model reaches it here."))
        else:
            notes.append(note)
    if not has_diff:
        notes = [n for n in notes if not n.startswith("HL Δ")]
    if reference is not None:
        ref, text = reference
        notes = [n.replace(f"against {ref},", f"against {text},").replace(f"model − {ref},", f"model − {text},")
                 for n in notes]
    notes += list(extra_notes)
    return html + "".join(f'<p class="tablenote">{esc(n)}</p>' for n in notes)


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
    note += (" Paper, same layout: Real 0.45 ± 0.33, Synthetic 0.59 ± 0.29, Synthetic+FT 0.62 ± 0.27, "
             "Diffusion 0.62 ± 0.27, Diffusion+FT 0.65 ± 0.24 (Dice).")
    return results_table_html(comp.table, [note])


def table2_html(run: "RunData") -> str:
    comp = size_comparison(run)
    if comp is None:
        return not_run("no size-study model evaluated (<code>evaluation/size_&lt;N&gt;/metrics.csv</code>).")
    notes = [cases_note(run, run.size_models, size_sentence_labels(run))]
    full = next((m for m in run.size_models if m in ("synthetic", "size_all")), None)
    if full is not None:
        text = ("The full set is the Synthetic model of Table 3 (not trained twice)." if full == "synthetic"
                else "The full set is the model size_all.")
        sets = run.training_sets(full)
        if sets:
            sizes = [len(d["train"]) for d in sets]
            dropped = [int(d.get("dropped_leaking") or 0) for d in sets]
            text += (f" Each of its {len(sets)} fold(s) trained on {_span(sizes)} volumes"
                     + (f" of the {run.n_synthetic_kept} generated" if run.n_synthetic_kept else "")
                     + (f"; {_span(dropped)} per fold were dropped by the leakage filter" if any(dropped) else "")
                     + f" (<code>models/{full}/fold*/training_set.json</code>).")
        notes.append(text)
    stored = " (as in <code>stats/table2.txt</code>, stage stats)" if (run.root / "stats" / "table2.txt").is_file() \
        else ""
    notes.append(f"* and HL Δ: the paired test against the smallest set{stored}; the unpaired Kruskal-Wallis test "
                 "across the sizes and both pairwise tests are in the Statistics section.")
    ref = run.size_models[0]
    reference = (comp.reference, size_sentence_labels(run)[ref])
    return (results_table_html(comp.table, [], reference)
            + "".join(f'<p class="tablenote">{_note_html(n)}</p>' for n in notes))


def _note_html(text: str) -> str:
    """A note that may hold ``<code>`` (added here) but is otherwise plain text."""
    parts = text.replace("</code>", "<code>").split("<code>")
    return "".join(f"<code>{esc(p)}</code>" if i % 2 else esc(p) for i, p in enumerate(parts))


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
    html = scroll(f'<table class="metsynth-table"><thead><tr><th rowspan="2"></th>{"".join(head1)}</tr>'
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
def tests_html(run: "RunData", comp: "Comparison | None", pairwise: bool, reference: str | None = None) -> str:
    """Kruskal-Wallis per metric and, with ``pairwise``, each model against the reference
    (``reference``: how the reference reads in a sentence; default its label)."""
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
        ref = reference or comp.reference
        html += _pairwise_matrix(comp, ref)
        lead = esc(PAPER_ANALYSIS) + " " if comp.reference == display_name("real") else ""
        html += f'<p class="tablenote">{lead}Δ mean: the model\'s mean minus the mean of ' \
                f"{esc(ref)} (difference of the means); MW: Mann-Whitney U p; W: " \
                "Wilcoxon signed-rank p (paired by case); both Holm-adjusted; bold: p &lt; 0.05. The results table " \
                "gives each paired difference as HL Δ, the Hodges-Lehmann estimate with its Wilcoxon signed-rank " \
                "interval at the Bonferroni level that goes with Holm's correction; HL Δ and Δ mean measure " \
                "different things and can differ, even in sign.</p>"
    return html


def _pairwise_matrix(comp: "Comparison", reference: str) -> str:
    """Rows: models; per metric three columns: difference to the reference, MW p, W p."""
    pw = comp.pairwise
    metrics = [m for m in METRICS if (pw["metric"] == m).any()]
    head1 = "".join(f'<th colspan="3" class="group">{esc(METRIC_LABELS.get(m, m))}</th>' for m in metrics)
    head2 = "".join("<th>Δ&nbsp;mean</th><th>MW&nbsp;p</th><th>W&nbsp;p</th>" for _ in metrics)

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
    return scroll(f'<table class="metsynth-table"><caption>Each model against {esc(reference)}</caption>'
                  f'<thead><tr><th rowspan="2">Model</th>{head1}<th rowspan="2">pairs</th></tr><tr>{head2}</tr>'
                  f"</thead><tbody>{''.join(body)}</tbody></table>")


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
    return html + _by_location_html(run, models)


def _by_location_html(run: "RunData", models: list[str]) -> str:
    """Detection and lesion Dice of cortical lesions (against or through the cortex, where a femur
    fractures) and medullary ones, per model: lesions.csv's ``location`` (with femur masks)."""
    from ..bone.contact import CORTICAL_CONTACT
    from ..evaluation.detection import LOCATIONS

    rows = []
    for m in models:
        les = run.lesions(m)
        if les is None or "location" not in les:
            continue
        true = les[(les["kind"] == "true") & les["location"].isin(LOCATIONS)]
        if true.empty:
            continue
        cells = []
        for name in LOCATIONS:
            sub = true[true["location"] == name]
            tp = int((sub["detected"].astype(str).str.lower() == "true").sum())
            cells += [f"{tp}/{len(sub)} ({tp / len(sub):.2f})" if len(sub) else "-",
                      fmt(sub["dice"].astype(float).mean() if len(sub) else math.nan, 2)]
        rows.append([model_label(m), *cells])
    if not rows:
        return ""
    return data_table(
        ["model", "cortical: detected", "cortical: lesion Dice", "medullary: detected", "medullary: lesion Dice"],
        rows, caption=f"By location: cortical lesions touch the femur's surface (more than {CORTICAL_CONTACT:.0%} "
                      "of the voxels around them lie outside the femur mask: against or through the cortex), "
                      "medullary ones lie inside the bone")


def _bin_lower(name: str) -> float:
    text = name.lstrip(">=").split("-")[0].split(" ")[0]
    try:
        return float(text)
    except ValueError:
        return math.inf
