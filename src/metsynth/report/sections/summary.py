"""Section 1, the summary: headline numbers, the cohort, the data generated, the stages run."""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

from ...layout import display_name
from ..page import Section, data_table, esc, fmt, fmt_p, fmt_seconds, kv_table, not_run
from ..tables import _span, model_with_training, paper_comparison
from .parts import _code, _rel, _subpart

if TYPE_CHECKING:
    from ..data import RunData

ALPHA = 0.05


def summary_section(run: "RunData") -> Section:
    parts = [
        _subpart("Headline", _headline, run),
        '<div class="cols"><div>',
        _subpart("Cohort", _cohort, run),
        _subpart("Generated data", _generated, run),
        "</div><div>",
        _subpart("Stages run", _stages, run),
        "</div></div>",
    ]
    ran = bool(run.markers) or run.cohort_path is not None or bool(run.evaluated)
    return Section("summary", "Summary", "\n".join(parts), ran)


def _headline(run: "RunData") -> str:
    comp = paper_comparison(run)
    models = run.paper_models or run.evaluated
    best = run.best_model(models)
    if best is None or run.results is None:
        return not_run("no evaluation yet (<code>evaluation/&lt;model&gt;/metrics.csv</code>, stage evaluate).")
    res = run.results[run.results["model"] == best]
    name = display_name(best)
    dice_rows = None
    if comp is not None and not comp.pairwise.empty and best in run.paper_models and "real" in run.paper_models:
        dice_rows = comp.pairwise[comp.pairwise["metric"] == "dice"]
    best_row = None
    if dice_rows is not None:
        sel = dice_rows[dice_rows["model"] == name]
        best_row = sel.iloc[0] if len(sel) else None
    significant = [] if dice_rows is None else [
        str(r.model) for r in dice_rows.itertuples()
        if r.wilcoxon_p_holm < ALPHA or r.mannwhitney_p_holm < ALPHA]
    best_better = (best_row is not None and name in significant and float(best_row["diff_hl"]) > 0)
    if best_better:
        headline = ("Best model (mean Dice; differs from Real)", esc(name))
    elif best == "real":
        headline = ("Highest mean Dice", esc(name))
    else:
        headline = ("Highest mean Dice (not a significant win)" if dice_rows is not None else "Highest mean Dice",
                    esc(name))
    who = f" · {name}"
    cards = [headline,
             (f"Dice ↑{who}", f"{fmt(res['dice'].mean(), 2)} <small>± {fmt(res['dice'].std(ddof=1), 2)}</small>"),
             (f"HD95 ↓ (mean){who}", f"{fmt(res['hd95'].mean(), 1)} mm"),
             (f"ASSD ↓ (mean){who}", f"{fmt(res['assd'].mean(), 1)} mm"),
             (f"Cases evaluated{who}", str(len(res)))]
    sentence = ""
    if "real" in run.evaluated and best != "real":
        real = run.results[run.results["model"] == "real"]
        diff = res["dice"].mean() - real["dice"].mean()
        text = (f"{esc(name)} has the highest mean Dice, {fmt(res['dice'].mean(), 2)} against "
                f"{fmt(real['dice'].mean(), 2)} for the model trained on real cases only (Δ mean "
                f"{_signed(diff, 2)}")
        if best_row is not None and not math.isnan(float(best_row["diff_hl"])):
            hl = (f"{_signed(best_row['diff_hl'], 2)} [{_signed(best_row['diff_ci_low'], 2)}, "
                  f"{_signed(best_row['diff_ci_high'], 2)}]")
            level = f"{100 * float(best_row['diff_ci_confidence']):.4g}%"
            cards.append(("HL Δ Dice vs Real (paired, as Table 3)", f"{hl} <small>{esc(level)} CI</small>"))
            text += f"; paired Hodges-Lehmann estimate HL Δ {hl}, {level} interval, as in Table 3"
        else:
            cards.append(("Δ mean Dice vs Real", _signed(diff, 2)))
        text += ")"
        if dice_rows is not None and len(dice_rows):
            p_w = float(dice_rows["wilcoxon_p_holm"].min())
            p_mw = float(dice_rows["mannwhitney_p_holm"].min())
            n_pairs = int(dice_rows["n_paired"].min())
            if not significant:
                cards.append(("Against Real", "no significant difference"
                              f" <small>Holm p ≥ {esc(fmt_p(min(p_w, p_mw)))}</small>"))
                text += (f". No model differs significantly from Real in Dice: every Holm-adjusted p is at least "
                         f"{fmt_p(p_w)} (paired Wilcoxon, n = {n_pairs} pairs) and {fmt_p(p_mw)} (Mann-Whitney)")
            else:
                r = best_row
                tests = ("" if r is None else
                         f"paired Wilcoxon p = {fmt_p(r['wilcoxon_p_holm'])}, Mann-Whitney p = "
                         f"{fmt_p(r['mannwhitney_p_holm'])}, Holm-adjusted, n = {int(r['n_paired'])} pairs")
                if list(significant) == [name] and tests:
                    text += f". It differs significantly from Real in Dice ({tests})"
                else:
                    which = ", ".join(esc(m) for m in significant)
                    text += (f". The models that differ significantly from Real in Dice (Holm-adjusted p &lt; "
                             f"{ALPHA:g}): {which}")
                    if tests:
                        text += f"; {esc(name)}: {tests}"
        sentence = (f"<p>{text}. The paper reports 0.65 (Diffusion+FT) against 0.45 (Real) on 38 real cases.</p>")
    elif best == "real":
        sentence = ("<p>The model trained on real cases only has the best mean Dice in this run: the synthetic "
                    "training sets did not help here (the paper reports 0.65 for Diffusion+FT against 0.45 for "
                    "Real).</p>")
    html = '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{v}</div></div>' for k, v in cards) + "</div>"
    return html + sentence


def _signed(value: float, decimals: int) -> str:
    """``+0.07`` / ``−0.04`` / ``+∞``: a difference with its sign."""
    v = float(value)
    if math.isinf(v):
        return "+∞" if v > 0 else "−∞"
    text = f"{abs(v):.{decimals}f}"
    if float(text) == 0:
        return text
    return ("+" if v > 0 else "−") + text


def _cohort(run: "RunData") -> str:
    cohort = run.cohort
    if cohort is None:
        return not_run("no cohort manifest (<code>prepared/cohort.yaml</code>, stage prepare).")
    roles = ["healthy", "metastatic", "test"]
    centres = sorted({c.centre for c in cohort.cases})
    counts = Counter((c.role, c.centre) for c in cohort.cases)
    rows = []
    for role in roles + sorted({c.role for c in cohort.cases} - set(roles)):
        n = [counts.get((role, k), 0) for k in centres]
        rows.append([role, *n, sum(n)])
    rows.append(["total", *[sum(counts.get((r, k), 0) for r in roles) for k in centres], len(cohort.cases)])
    table = data_table(["role", *[f"centre {k}" for k in centres], "total"], rows,
                       caption=f"Cases by role and centre ({cohort.name})")
    info = []
    if cohort.prepared is not None:
        sp = " × ".join(f"{s:g}" for s in cohort.prepared.spacing)
        lo, hi = cohort.prepared.hu_window
        info.append(f"prepared at {sp} mm, intensities [{lo:g}, {hi:g}] HU mapped to [−1, 1], cropped to the femur")
    annotators: dict[str, str] = {}
    n_multi = 0
    n_lesions = 0
    for case in cohort.cases:
        ops = [a for a in case.lesion_masks if a.expertise in ("novice", "expert")]
        if len(ops) >= 2:
            n_multi += 1
        for a in ops:
            annotators[a.annotator] = a.expertise
        n_lesions += bool(case.lesion_masks)
    if n_multi:
        who = ", ".join(f"{k} ({v})" for k, v in sorted(annotators.items()))
        info.append(f"{n_multi} case(s) annotated by several operators: {who}")
    info.append(f"{n_lesions} case(s) with a reference lesion mask")
    return (table + "<p class=\"note\">" + "; ".join(esc(i) for i in info)
            + f". Manifest: {_code(_rel(run, run.cohort_path))}.</p>")


def _generated(run: "RunData") -> str:
    rows = []
    if run.bank is not None:
        entries = run.bank.get("entries")
        rows.append(("Lesion bank", f"{len(entries) if isinstance(entries, list) else '?'} lesions from the "
                                    "metastatic cases"))
    syn = run.synthetic_index
    if syn is not None:
        kept = sum(1 for r in syn if r.get("kept") == "true")
        reasons = Counter(r.get("reason") or "?" for r in syn if r.get("kept") != "true")
        dropped = "; ".join(f"{n} {esc(k)}" for k, n in reasons.most_common())
        used = ""
        sets = run.training_sets("synthetic")
        if sets:
            sizes = [len(d["train"]) for d in sets]
            leak = [int(d.get("dropped_leaking") or 0) for d in sets]
            used = (f"; each fold of the Synthetic model trained on {_span(sizes)} of them"
                    + (f" ({_span(leak)} dropped by the leakage filter)" if any(leak) else ""))
        rows.append(("Synthetic set", f"{kept} volumes kept of {len(syn)} attempts"
                     + (f" (dropped: {dropped})" if dropped else "") + used))
    har = run.harmonized_index
    n_har = (sum(1 for r in har if r.get("kept", "true") == "true") if har is not None
             else len(run.harmonized_sidecars) or None)
    if n_har is not None:
        flagged = sum(1 for r in har or [] if r.get("consistent") == "false")
        rows.append(("Harmonized set", f"{n_har} volumes" + (f", {flagged} flagged: lesion contrast collapsed"
                                                            if flagged else "")))
    if run.splits is not None:
        folds = run.splits.get("folds") or []
        test_only = run.splits.get("test_only") or []
        sizes = fold_sizes(folds)
        rows.append(("Cross-validation",
                     f"{len(folds)} folds of real metastatic cases ({sizes}), "
                     f"{len(test_only)} test-only case(s), seed {esc(run.splits.get('seed', '?'))}"))
    if run.evaluated:
        rows.append(("Evaluated models (what each fold trained on)",
                     ", ".join(esc(model_with_training(run, m)) for m in run.evaluated)))
    if not rows:
        return not_run("no lesion bank, synthetic set, harmonized set, splits or evaluation in this run directory.")
    return kv_table(rows)


def fold_sizes(folds: list) -> str:
    """"2/2/1": how many cases each fold tests (a fold of splits.json is {fold, test, train})."""
    return "/".join(str(len(f.get("test") or [])) if isinstance(f, dict) else str(len(f)) for f in folds)


def _stages(run: "RunData") -> str:
    if not run.markers:
        return not_run("no stage markers (<code>stages/*.json</code>): this folder was not made by "
                       "<code>metsynth experiment run</code>, or nothing has finished yet.")
    rows = [[m["stage"], fmt_seconds(m.get("seconds")), str(m.get("finished", "-")).replace("T", " ")]
            for m in run.markers]
    total = sum(float(m.get("seconds") or 0) for m in run.markers)
    rows.append(["total", fmt_seconds(total), ""])
    return data_table(["stage", "duration", "finished"], rows)
