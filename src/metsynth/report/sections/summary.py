"""Section 1, the summary: headline numbers, the cohort, the data generated, the stages run."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from ...layout import display_name
from ..page import Section, data_table, esc, fmt, fmt_p, fmt_seconds, kv_table, not_run
from ..tables import model_label, paper_comparison
from .parts import _code, _rel, _subpart

if TYPE_CHECKING:
    from ..data import RunData


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
    cards = [("Best model (mean Dice)", esc(display_name(best))),
             ("Dice ↑", f"{fmt(res['dice'].mean(), 2)} <small>± {fmt(res['dice'].std(ddof=1), 2)}</small>"),
             ("HD95 ↓", f"{fmt(res['hd95'].mean(), 1)} mm"),
             ("ASSD ↓", f"{fmt(res['assd'].mean(), 1)} mm"),
             ("Cases evaluated", str(len(res)))]
    sentence = ""
    if "real" in run.evaluated and best != "real":
        real = run.results[run.results["model"] == "real"]
        diff = res["dice"].mean() - real["dice"].mean()
        cards.append(("Dice vs Real", f"{'+' if diff >= 0 else '−'}{abs(diff):.2f}"))
        p_text = ""
        if comp is not None and not comp.pairwise.empty:
            row = comp.pairwise[(comp.pairwise["metric"] == "dice") & (comp.pairwise["model"] == display_name(best))]
            if len(row):
                r = row.iloc[0]
                p_text = (f" (paired Wilcoxon p = {fmt_p(r['wilcoxon_p_holm'])}, Mann-Whitney p = "
                          f"{fmt_p(r['mannwhitney_p_holm'])}, Holm-corrected, n = {int(r['n_paired'])} pairs)")
        sentence = (f"<p>{esc(display_name(best))} reaches a mean Dice of {fmt(res['dice'].mean(), 2)} against "
                    f"{fmt(real['dice'].mean(), 2)} for the model trained on real cases only{p_text}. "
                    "The paper reports 0.65 (Diffusion+FT) against 0.45 (Real) on 38 real cases.</p>")
    elif best == "real":
        sentence = ("<p>The model trained on real cases only has the best mean Dice in this run: the synthetic "
                    "training sets did not help here (the paper reports 0.65 for Diffusion+FT against 0.45 for "
                    "Real).</p>")
    html = '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{v}</div></div>' for k, v in cards) + "</div>"
    return html + sentence


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
        rows.append(("Synthetic set", f"{kept} volumes kept of {len(syn)} attempts"
                     + (f" (dropped: {dropped})" if dropped else "")))
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
        sizes = "/".join(str(len(f)) for f in folds)
        rows.append(("Cross-validation",
                     f"{len(folds)} folds of real metastatic cases ({sizes}), "
                     f"{len(test_only)} test-only case(s), seed {esc(run.splits.get('seed', '?'))}"))
    if run.evaluated:
        rows.append(("Evaluated models", ", ".join(esc(model_label(m)) for m in run.evaluated)))
    if not rows:
        return not_run("no lesion bank, synthetic set, harmonized set, splits or evaluation in this run directory.")
    return kv_table(rows)


def _stages(run: "RunData") -> str:
    if not run.markers:
        return not_run("no stage markers (<code>stages/*.json</code>): this folder was not made by "
                       "<code>metsynth experiment run</code>, or nothing has finished yet.")
    rows = [[m["stage"], fmt_seconds(m.get("seconds")), str(m.get("finished", "-")).replace("T", " ")]
            for m in run.markers]
    total = sum(float(m.get("seconds") or 0) for m in run.markers)
    rows.append(["total", fmt_seconds(total), ""])
    return data_table(["stage", "duration", "finished"], rows)
