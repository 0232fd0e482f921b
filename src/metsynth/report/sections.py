"""The report's sections, one builder each: ``builder(run: RunData) -> Section``.

A builder whose inputs are missing returns a section with a "not run" note naming the files it
looked for and the stage that writes them; it never raises for a missing file.
"""

from __future__ import annotations

import hashlib
import logging
import math
import platform
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..layout import PAPER_MODELS, display_name
from . import figures
from .page import Section, data_table, error_box, esc, figure, fmt, fmt_p, fmt_seconds, kv_table, not_run, part
from .tables import (
    detection_html,
    model_label,
    paper_comparison,
    size_comparison,
    size_labels,
    table1_html,
    table2_html,
    table3_html,
    tests_html,
)

if TYPE_CHECKING:
    from .data import RunData

log = logging.getLogger(__name__)


def _rel(run: "RunData", path: Path) -> str:
    try:
        return str(path.relative_to(run.root))
    except ValueError:
        return str(path)


def _code(text: str) -> str:
    return f"<code>{esc(text)}</code>"


def _subpart(title: str, build, *args: Any) -> str:
    """An ``<h3>`` part whose failure shows as an error box instead of sinking the report."""
    try:
        body = build(*args)
    except Exception as err:  # noqa: BLE001 - one broken input must not hide the rest of the report
        log.exception("report: %s failed", title)
        body = error_box(title, err)
    return part(title, body)


# =========================================================================== 1. summary
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
    return table + "<p class=\"note\">" + "; ".join(esc(i) for i in info) + f". Manifest: {_code(_rel(run, run.cohort_path))}.</p>"


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
        rows.append(("Synthetic set", f"{kept} volumes kept of {len(syn)} attempts" + (f" (dropped: {dropped})" if dropped else "")))
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
        rows.append(("Cross-validation", f"{len(folds)} folds of real metastatic cases ({sizes}), "
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


# =========================================================================== 2. tables
def tables_section(run: "RunData") -> Section:
    parts = [
        _subpart("Table 3 · Segmentation of the real cases by training set", table3_html, run),
        _subpart("Table 2 · Segmentation by size of the synthetic training set", table2_html, run),
        _subpart("Table 1 · Operator variability and the automatic segmentation", table1_html, run),
    ]
    ran = bool(run.evaluated) or run.variability_stored is not None or run.has_operator_annotations()
    return Section("tables", "Results tables", "\n".join(parts), ran)


# =========================================================================== 3. box plots
def boxplots_section(run: "RunData") -> Section:
    if not run.evaluated:
        return Section("boxplots", "Metric distributions",
                       not_run("no evaluation yet (<code>evaluation/&lt;model&gt;/metrics.csv</code>)."), False)
    parts = []
    caption = ("Boxes: median and quartiles, whiskers 1.5 × IQR; dots: cases; red crosses: distance undefined "
               "(one mask empty), set to the worst case. HD, HD95 and ASSD in mm.")
    if run.paper_models:
        models = run.paper_models
        png = figures.metric_boxplots(run.results, models, [display_name(m) for m in models],  # type: ignore[arg-type]
                                      [figures.MODEL_COLOURS.get(m, "#555555") for m in models])
        parts.append(part("The five training sets (Table 3)", figure(png, esc(caption), "box plots, Table 3 models")))
    if run.size_models:
        labels = size_labels(run)
        models = run.size_models
        shades = [str(0.75 - 0.55 * i / max(len(models) - 1, 1)) for i in range(len(models))]
        png = figures.metric_boxplots(run.results, models, [labels[m] for m in models], shades)  # type: ignore[arg-type]
        parts.append(part("Size of the synthetic training set (Table 2)",
                          figure(png, esc(caption), "box plots, size study")))
    others = [m for m in run.evaluated if m not in run.paper_models and m not in run.size_models]
    if others:
        png = figures.metric_boxplots(run.results, others, others, ["#555555"] * len(others))  # type: ignore[arg-type]
        parts.append(part("Other models", figure(png, esc(caption), "box plots, other models")))
    return Section("boxplots", "Metric distributions", "\n".join(parts))


# =========================================================================== 4. Figure 5
def examples_section(run: "RunData", n_cases: int = 3) -> Section:
    title = "Segmentation examples (Figure 5)"
    models = [m for m in PAPER_MODELS if run.layout.predictions(m).is_dir()]
    if not models:
        models = sorted(p.name for p in (run.root / "predictions").glob("*") if p.is_dir()
                        and not p.name.startswith("size_"))
    if not run.prepared or not models:
        what = "prepared cohort (<code>prepared/cohort.yaml</code>)" if not run.prepared else \
            "predictions (<code>predictions/&lt;model&gt;/&lt;case&gt;.nii.gz</code>, stage predict)"
        return Section("examples", title, not_run(f"no {what}."), False)
    examples = pick_examples(run, models, n_cases)
    if not examples:
        return Section("examples", title, not_run("no real case with a lesion mask and a prediction."), False)
    labels = [display_name(m) for m in models]
    png = figures.segmentation_examples(examples, models, labels, run.cohort)
    caption = (f'Ground truth <span class="swatch" style="border-color:{figures.TRUTH_COLOUR}"></span> red, '
               f'automatic segmentation <span class="swatch" style="border-color:{figures.PRED_COLOUR}"></span> '
               "green. Per case: a coronal slice of the prepared field of view and an axial close-up, both through "
               "the largest true lesion. Cases chosen without looking at the pictures: sorted by the mean Dice of "
               "the shown models, then taken evenly from best to worst: " +
               ", ".join(esc(e.label) for e in examples) + ". Each title gives the model's Dice on that case.")
    return Section("examples", title, figure(png, caption, "segmentation examples"))


def pick_examples(run: "RunData", models: Sequence[str], n_cases: int) -> list[figures.ExampleCase]:
    from ..evaluation.evaluate import find_prediction

    cohort = run.cohort
    if cohort is None:
        return []
    dice: dict[tuple[str, str], float] = {}
    if run.results is not None:
        for r in run.results[["model", "case_id", "dice"]].itertuples(index=False):
            dice[(str(r.model), str(r.case_id))] = float(r.dice)
    candidates = []
    for case in cohort.by_role("test", "metastatic"):
        ann = case.reference_lesion()
        if ann is None:
            continue
        preds = {m: p for m in models if (p := find_prediction(run.layout.predictions(m), case.id)) is not None}
        if not preds:
            continue
        d = {m: dice[(m, case.id)] for m in models if (m, case.id) in dice}
        mean = float(np.nanmean(list(d.values()))) if d and not all(math.isnan(v) for v in d.values()) else -1.0
        label = f"{case.id} ({case.role}, centre {case.centre})"
        candidates.append((mean, case.id, figures.ExampleCase(case.id, label, case.image, ann.path, preds, d)))

    if not candidates:
        return []
    candidates.sort(key=lambda t: (-t[0], t[1]))
    picks = sorted({int(i) for i in np.linspace(0, len(candidates) - 1, min(n_cases, len(candidates))).round()})
    return [candidates[i][2] for i in picks]


# =========================================================================== 5. QC
def qc_section(run: "RunData") -> Section:
    parts = [
        _subpart("Synthesis (ad-hoc lesion pasting)", _synthesis_qc, run),
        _subpart("Harmonization (DDPM, SDEdit with DDIM)", _harmonization_qc, run),
        _subpart("Training curves", _training_curves, run),
    ]
    ran = run.synthetic_index is not None or run.layout.harmonized.is_dir()
    return Section("qc", "Synthesis and harmonization QC", "\n".join(parts), ran)


def _preview(folder: Path, fallback) -> tuple[bytes | None, str]:
    stored = folder / "preview.png"
    if stored.is_file():
        return stored.read_bytes(), f"{folder.name}/preview.png, written by the stage"
    try:
        png = fallback()
    except Exception as err:  # noqa: BLE001 - a preview is optional; say why it is missing
        log.warning("report: no QC montage for %s (%s)", folder, err)
        return None, ""
    return png, "drawn by the report (the stage wrote no preview.png)"


def _synthesis_qc(run: "RunData") -> str:
    folder = run.layout.synthetic
    rows = run.synthetic_index
    if rows is None:
        return not_run("no synthetic set (<code>synthetic/index.csv</code>, stage synthesize).")
    kept = [r for r in rows if r.get("kept") == "true"]
    facts = [f"{len(kept)} of {len(rows)} attempts kept"]
    regions = Counter(r.get("region") for r in kept if r.get("region"))
    if regions:
        facts.append("lesion sites: " + ", ".join(f"{k} {n}" for k, n in regions.most_common()))
    vols = [float(r["lesion_mm3"]) for r in kept if r.get("lesion_mm3")]
    if vols:
        facts.append(f"pasted lesion volume {min(vols):.0f}–{max(vols):.0f} mm³ (median {np.median(vols):.0f})")

    def fallback() -> bytes | None:
        try:
            from ..synthesis.qc import write_preview

            return figures.png_of(lambda p: write_preview(folder, 3, cohort=run.cohort, out_png=p))
        except Exception as err:  # noqa: BLE001 - fall back to the plain montage below
            log.info("report: synthesis preview unavailable (%s); plain montage instead", err)
            return figures.set_montage(folder, rows, title="synthetic volumes with their labels")

    png, source = _preview(folder, fallback)
    html = f'<p class="note">{esc("; ".join(facts))}.</p>'
    if png is None:
        return html + not_run("no preview could be drawn (no readable kept volume).")
    return html + figure(png, f"Synthetic volumes: healthy femur before and after pasting, label outlined. "
                              f"Source: {esc(source)}.", "synthesis QC")


def _harmonization_qc(run: "RunData") -> str:
    folder = run.layout.harmonized
    if not folder.is_dir():
        return not_run("no harmonized set (<code>harmonized/</code>, stage harmonize).")
    facts = []
    for ck in run.checkpoints():
        facts.append(f"checkpoint {ck['sha256'][:12] or '?'} on {ck['volumes']} volumes, start timestep "
                     f"{ck['start_timestep']}, {ck['ddim_steps']} DDIM steps, region {ck['region']}")
    rows = run.harmonized_index
    if rows is not None:
        flagged = [r.get("volume_id", "?") for r in rows if r.get("consistent") == "false"]
        facts.append(f"{len(flagged)} volume(s) flagged: lesion contrast collapsed" if flagged
                     else "no volume flagged by the lesion-contrast check")

    def fallback() -> bytes | None:
        try:
            from ..diffusion.preview import write_before_after

            png = figures.png_of(lambda p: _must(write_before_after(run.layout.synthetic, folder, 3, p)))
            return png
        except Exception as err:  # noqa: BLE001 - fall back to the plain montage below
            log.info("report: harmonization before/after unavailable (%s); plain montage instead", err)
            return figures.set_montage(folder, rows, title="harmonized volumes with their labels")

    png, source = _preview(folder, fallback)
    html = f'<p class="note">{esc("; ".join(facts))}.</p>' if facts else ""
    if png is None:
        return html + not_run("no harmonized volume to show (<code>harmonized/images</code> is empty).")
    return html + figure(png, f"Harmonization: the same slice before (synthetic) and after the diffusion model, label "
                              f"outlined. Source: {esc(source)}.", "harmonization QC", width=760)


def _must(path: Path | None) -> Path:
    if path is None:
        raise FileNotFoundError("nothing to draw")
    return path


def _training_curves(run: "RunData") -> str:
    items = []
    loss = run.layout.diffusion / "loss.png"
    if loss.is_file():
        items.append(figure(loss.read_bytes(), "DDPM training loss (diffusion/loss.png)", "DDPM loss"))
    for model in [*PAPER_MODELS, *[m for m in run.evaluated if m.startswith("size_")]]:
        curves = sorted((run.root / "models" / model).glob("fold*/curves.png"))
        if curves:
            items.append(figure(curves[0].read_bytes(), f"{esc(display_name(model))}: loss and validation Dice "
                                f"({esc(_rel(run, curves[0]))}; {len(curves)} fold(s) in all)", f"curves {model}"))
    if not items:
        return not_run("no training curves (<code>diffusion/loss.png</code>, "
                       "<code>models/&lt;model&gt;/fold&lt;k&gt;/curves.png</code>).")
    return '<div class="grid">' + "".join(items) + "</div>"


# =========================================================================== 6. statistics
# =========================================================================== 6. statistics
def statistics_section(run: "RunData") -> Section:
    if not run.evaluated:
        return Section("statistics", "Statistics",
                       not_run("no evaluation yet (<code>evaluation/&lt;model&gt;/metrics.csv</code>)."), False)
    parts = [
        _subpart("Tests: the five training sets", tests_html, run, paper_comparison(run), True),
        _subpart("Tests: size of the synthetic set", tests_html, run, size_comparison(run), False),
        _subpart("What difference this run could detect", _detectable, run),
        _subpart("Lesion-wise detection", detection_html, run),
    ]
    return Section("statistics", "Statistics", "\n".join(parts))


def _detectable(run: "RunData") -> str:
    """What difference in Dice this run's paired tests could see (80% power, Holm's level)."""
    from ..evaluation.stats import detectable_difference

    models = run.paper_models
    if "real" not in models or len(models) < 2:
        return not_run("needs Real and at least one other model of Table 3 evaluated.")
    labels = [display_name(m) for m in models]
    table = detectable_difference(run.results_for(models), "dice", display_name("real"), labels)
    rows = [[r.model, r.n_paired, fmt(r.sd_diff, 3), fmt(r.detectable, 3)] for r in table.itertuples()]
    n = int(table["n_paired"].min()) if len(table) else 0
    need = ""
    ok = table.dropna(subset=["detectable"])
    if len(ok) and n > 1:
        # the detectable difference shrinks as 1 / sqrt(n): the cases a 0.05 difference would need
        cases = int(math.ceil(n * (float(ok["detectable"].median()) / 0.05) ** 2))
        need = f" Detecting a 0.05 difference with this spread would take about {cases} cases per model."
    return (data_table(["model vs Real", "paired cases", "sd of the Dice differences", "detectable Dice difference"],
                       rows, caption="Smallest mean Dice difference to Real each paired test could detect")
            + f'<p class="tablenote">80% power at Holm\'s strictest level (0.05 / {len(table)}), normal approximation '
              f"of the paired test over the {n} cases scored per model, with the spread of per-case differences this "
              f"run shows. A difference smaller than this can be real and still not reach p &lt; 0.05 here.{need}</p>")


# =========================================================================== realism
def realism_section(run: "RunData") -> Section:
    """Can a classifier tell the generated lesions from the real ones (RUN/realism, stage realism)."""
    import json

    path = run.layout.realism / "realism.json"
    if not path.is_file():
        return Section("realism", "Realism of the generated lesions",
                       not_run("no <code>realism/realism.json</code> (stage realism, or <code>metsynth realism RUN</code>)."),
                       False)
    report = json.loads(path.read_text(encoding="utf-8"))
    parts = [_subpart("Classifier two-sample tests", _realism_table, report),
             _subpart("What gives each set away", _realism_features, report)]
    if report.get("sweep"):
        parts.append(_subpart("Start timestep of the harmonization (Figure 4)", _figure4, run, report))
    return Section("realism", "Realism of the generated lesions", "\n".join(parts))


def _auc_cell(t: dict[str, Any] | None) -> str:
    if not t:
        return "-"
    return f"{fmt(t['auc'])} [{fmt(t['ci95'][0])}, {fmt(t['ci95'][1])}]"


def _realism_table(report: dict[str, Any]) -> str:
    null = report.get("null_real", {})
    rows = [["real vs real (null)", report["n_real"], _auc_cell(null.get("features")), _auc_cell(null.get("cnn")), ""]]
    for name, s in report["sets"].items():
        n = s.get("null", {})
        rows.append([name, s["n_volumes"], _auc_cell(s.get("features")), _auc_cell(s.get("cnn")),
                     f"{_auc_cell(n.get('features'))} / {_auc_cell(n.get('cnn'))}"])
    cfg = report.get("config", {})
    return (data_table(["set", "lesions", "features AUC", "3D CNN AUC", "null: generated halves (features / CNN)"], rows,
                       caption=f"Real lesions: {report['n_real']} from {report['real_groups']} patients")
            + '<p class="tablenote">Cross-validated ROC AUC of a classifier trained to tell real lesions (reference masks '
              "of the metastatic and test cases) from the set's (0.5: cannot be told apart; 1: always told apart), "
              f"{cfg.get('folds', '?')} folds grouped so that no patient or donor is on both sides, repeated "
              f"{cfg.get('repeats', '?')} times; [95% bootstrap interval, whole patients and donors resampled]. Features: "
              "gradient-boosted trees on the lesion features below; 3D CNN: a small MONAI classifier on lesion-centred "
              f"patches ({fmt(cfg.get('patch_mm'), 0)} mm), trained from scratch. Null controls: the same test between "
              f"random halves of one set (features: median [range] over {cfg.get('null_splits', 1)} splits; CNN: one "
              "split): the AUC chance alone gives with these sizes.</p>")


def _realism_features(report: dict[str, Any], top: int = 5) -> str:
    from ..realism.features import FEATURES

    html = []
    for name, s in report["sets"].items():
        rows = [[r["feature"], FEATURES.get(r["feature"], ""), f"{r['real']:.4g}", f"{r['generated']:.4g}", fmt(r["auc"])]
                for r in s["features_table"][:top]]
        html.append(data_table(["feature", "what it measures", "real (median)", f"{name} (median)", "AUC alone"], rows,
                               caption=f"{name}: the {top} features that separate it most"))
    return "\n".join(html)


def _figure4(run: "RunData", report: dict[str, Any]) -> str:
    from ..realism.figure import figure4

    chosen = report.get("chosen_timestep")
    dice = {t: d for t, d in ((0, _mean_dice(run, "synthetic")), (chosen, _mean_dice(run, "harmonized")))
            if t is not None and d is not None}
    real = _mean_dice(run, "real")
    png = figures.png_of(lambda p: figure4(report, report["sweep"], p, dice=dice or None, chosen=chosen,
                                           real_dice=None if real is None else real[0]))
    rows = [[r["timestep"], fmt(r.get("features_auc")), fmt(r.get("contrast_kept")), fmt(r.get("contrast_kept_p10")),
             r.get("collapsed", 0) if r["timestep"] else "-"] for r in report["sweep"]]
    html = figure(png, "Realism (C2ST AUC; grey band: real vs real null), lesion contrast kept after / before "
                       "harmonization, and the Dice of the models trained on the set where the study trained one, "
                       "against the start timestep (0: not harmonized; dashed: the study's choice).", "Figure 4", width=980)
    html += data_table(["start timestep", "features AUC", "contrast kept (median)", "10th percentile", "lesions collapsed"],
                       rows, caption="The sweep")
    lesions = run.layout.realism / "figure4_lesions.png"
    if lesions.is_file():
        html += figure(lesions.read_bytes(), "The same synthetic lesions harmonized from each start timestep (the "
                                             "paper's Figure 4), one axial slice, label outlined.", "Figure 4 lesions",
                       width=980)
    return html


def _mean_dice(run: "RunData", model: str) -> tuple[float, float, float] | None:
    """A model's mean Dice over its cases with a normal 95% interval, or None where it was not evaluated."""
    if run.results is None or model not in run.evaluated:
        return None
    values = run.results.loc[run.results["model"] == model, "dice"].dropna().to_numpy(dtype=float)
    if not values.size:
        return None
    half = 1.96 * float(values.std(ddof=1)) / math.sqrt(values.size) if values.size > 1 else 0.0
    return float(values.mean()), float(values.mean()) - half, float(values.mean()) + half


# =========================================================================== 7. config & provenance
def config_section(run: "RunData") -> Section:
    parts = [_subpart("Configuration (config.yaml)", _config, run), _subpart("Provenance", _provenance, run)]
    return Section("config", "Configuration and provenance", "\n".join(parts), run.config_text is not None)


def _config(run: "RunData") -> str:
    if run.config_text is None:
        return not_run("no <code>config.yaml</code> in the run directory.")
    return f"<pre>{esc(run.config_text.rstrip())}</pre>"


def _provenance(run: "RunData") -> str:
    from importlib import metadata

    versions = [("metsynth (this report)", __version__), ("Python", platform.python_version())]
    for pkg in ("numpy", "scipy", "SimpleITK", "torch", "monai", "lightning", "matplotlib", "pandas"):
        try:
            versions.append((pkg, metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            continue
    recorded = []
    if run.bank is not None:
        recorded.append(("lesion bank", run.bank.get("metsynth_version"), run.bank.get("cohort_digest")))
    syn_cfg = run.layout.synthetic / "config.yaml"
    if syn_cfg.is_file():
        import yaml

        try:
            data = yaml.safe_load(syn_cfg.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            data = {}
        if isinstance(data, dict):
            recorded.append(("synthetic set", data.get("metsynth_version"), data.get("cohort_digest")))
    html = data_table([k for k, _ in versions], [[v for _, v in versions]], left=0,
                      caption="Software (the environment that wrote this report)")
    if recorded:
        html += data_table(["output", "metsynth version", "cohort digest"],
                           [[a, b or "-", c or "-"] for a, b, c in recorded], caption="Versions recorded by the stages")
    if run.cohort_path is not None:
        digest = hashlib.sha256(run.cohort_path.read_bytes()).hexdigest()[:16]
        html += f'<p class="note">Cohort manifest {_code(_rel(run, run.cohort_path))}, sha256 {_code(digest)}.</p>'
    if run.markers:
        rows = [[m["stage"], _code(str(m.get("fingerprint", "-"))),
                 ", ".join(f"{esc(k)} {_code(str(v))}" for k, v in (m.get("inputs") or {}).items()) or "-"]
                for m in run.markers]
        html += data_table(["stage", "fingerprint (its config + inputs)", "inputs (their fingerprints)"], rows,
                           caption="Stage markers (stages/*.json)", raw=True)
    cks = run.checkpoints()
    if cks:
        html += data_table(["DDPM checkpoint", "sha256", "volumes", "start timestep", "DDIM steps"],
                           [[_rel(run, Path(c["checkpoint"])) if c["checkpoint"] else "-", c["sha256"], c["volumes"],
                             c["start_timestep"], c["ddim_steps"]] for c in cks],
                           caption="Checkpoints named in the harmonized sidecars")
    return html


SECTIONS = (summary_section, tables_section, boxplots_section, examples_section, qc_section, realism_section,
            statistics_section, config_section)
