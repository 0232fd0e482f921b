"""The realism section: classifier two-sample tests of the generated lesions, the features that
give them away, and the start-timestep sweep of the harmonization (Figure 4).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .. import figures
from ..page import Section, data_table, figure, fmt, not_run
from .parts import _subpart

if TYPE_CHECKING:
    from ..data import RunData


def realism_section(run: "RunData") -> Section:
    """Can a classifier tell the generated lesions from the real ones (RUN/realism, stage realism)."""
    import json

    path = run.layout.realism / "realism.json"
    if not path.is_file():
        return Section("realism", "Realism of the generated lesions",
                       not_run("no <code>realism/realism.json</code> (stage realism, or "
                               "<code>metsynth realism RUN</code>)."),
                       False)
    report = json.loads(path.read_text(encoding="utf-8"))
    parts = [_subpart("Classifier two-sample tests", _realism_table, report),
             _subpart("What gives each set away", _realism_features, report)]
    if report.get("sweep"):
        parts.append(_subpart("Start timestep of the harmonization (Figure 4)", _figure4, run, report))
    return Section("realism", "Realism of the generated lesions", "\n".join(parts))


def _auc_cell(t: dict[str, Any] | None) -> str:
    """One cross-validated test: AUC [95% bootstrap interval]; '-' where it did not run, 'not meaningful'
    where its classifier learned nothing (too few lesions: realism.measure)."""
    if t and t.get("not_meaningful"):
        return "not meaningful"
    if not t or t.get("auc") is None:
        return "-"
    ci = t.get("ci95") or [None, None]
    return f"{fmt(t['auc'])}\u00a0[{fmt(ci[0])},\u00a0{fmt(ci[1])}]"  # no-break spaces: one line per value


def _null_features_cell(t: dict[str, Any] | None) -> str:
    """A feature null control: median over random splits with the range over them (not an interval)."""
    if t and t.get("not_meaningful"):
        return "not meaningful"
    if not t or t.get("auc") is None:
        return "-"
    ci = t.get("ci95") or [None, None]
    splits = t.get("splits")
    if splits == 1:
        return f"{fmt(t['auc'])} (1 split)"
    return f"{fmt(t['auc'])} (range {fmt(ci[0])}–{fmt(ci[1])}" + (f", {splits} splits)" if splits else ")")


def cnn_null_sentence(report: dict[str, Any]) -> str:
    """The sentence that reads a CNN AUC against the CNN's own null control."""
    cnn = (report.get("null_real") or {}).get("cnn")
    if not cnn:
        return ""
    return (f"A 3D CNN AUC is only meaningful relative to the CNN's own null control, not to 0.5: told to separate two "
            f"random halves of the real lesions, the same CNN already reaches {_auc_cell(cnn)} here, so a set's CNN "
            "AUC within that range is what chance and this small training give.")


def _realism_table(report: dict[str, Any]) -> str:
    from ...realism.measure import (
        donor_reference_rows,
        donor_reference_text,
        paired_cell,
        paired_text,
        real_sample_text,
    )

    null = report.get("null_real", {})
    rows = [["real vs real (null)", report["n_real"], _null_features_cell(null.get("features")),
             _auc_cell(null.get("cnn")), "-", "-", "-"]]
    for name, s in report["sets"].items():
        n = s.get("null", {})
        rows.append([name, s["n_volumes"], _auc_cell(s.get("features")), _auc_cell(s.get("cnn")),
                     _null_features_cell(n.get("features")), _auc_cell(n.get("cnn")),
                     paired_cell(s.get("paired"), "\u00a0")])
    rows += [[what, n, auc, "-", "-", "-", "-"] for what, n, auc in donor_reference_rows(report)]
    donors = donor_reference_text(report)
    paired = paired_text(report)
    cfg = report.get("config", {})
    splits = cfg.get("null_splits", 1)
    first = next(iter(report["sets"]), "first set")
    return (data_table(["set", "lesions", "features AUC", "3D CNN AUC", "null, generated halves: features",
                        "null, generated halves: 3D CNN", f"features AUC − {first}'s, same lesions"],
                       rows,
                       caption=real_sample_text(report))
            + '<p class="tablenote">Cross-validated ROC AUC of a classifier trained to tell real lesions '
              "(reference masks "
              "of the cases the caption names) from the set's (0.5: cannot be told apart; 1: always told apart), "
              f"{cfg.get('folds', '?')} folds grouped so that no patient or donor is on both sides, repeated "
              f"{cfg.get('repeats', '?')} times. AUC [..]: the 95% bootstrap interval of one test (whole patients "
              "and donors resampled). Features: "
              "gradient-boosted trees on the lesion features below; 3D CNN: a small MONAI classifier on lesion-centred "
              f"patches ({fmt(cfg.get('patch_mm'), 0)} mm), trained from scratch. Null controls: the same test between "
              f"random halves of one set, the AUC chance alone gives with these sizes; features: median over "
              f"{splits} split(s) with the range over them (not a confidence interval); CNN: one split, with its "
              "95% bootstrap interval. -: not run; not meaningful: too few lesions for the classifier to learn "
              "anything (realism.json says how many it needs).</p>"
            + (f'<p class="tablenote"><b>{paired}</b></p>' if paired else "")
            + (f'<p class="tablenote"><b>{donors}</b></p>' if donors else "")
            + (f'<p class="tablenote"><b>{cnn_null_sentence(report)}</b></p>' if cnn_null_sentence(report) else ""))


def _realism_features(report: dict[str, Any], top: int = 5) -> str:
    from ...realism.features import FEATURES

    html = []
    for name, s in report["sets"].items():
        rows = [[r["feature"], FEATURES.get(r["feature"], ""), f"{r['real']:.4g}", f"{r['generated']:.4g}",
                 fmt(r["auc"])]
                for r in s["features_table"][:top]]
        html.append(data_table(["feature", "what it measures", "real (median)", f"{name} (median)", "AUC alone"], rows,
                               caption=f"{name}: the {top} features that separate it most"))
    return "\n".join(html)


def _figure4(run: "RunData", report: dict[str, Any]) -> str:
    from ...realism.figure import figure4

    chosen = report.get("chosen_timestep")
    dice = {t: d for t, d in ((0, _mean_dice(run, "synthetic")), (chosen, _mean_dice(run, "harmonized")))
            if t is not None and d is not None}
    real = _mean_dice(run, "real")
    png = figures.png_of(lambda p: figure4(report, report["sweep"], p, dice=dice or None, chosen=chosen,
                                           real_dice=None if real is None else real[0]))
    from ...realism.measure import paired_cell

    rows = [[r["timestep"], fmt(r.get("features_auc")), paired_cell(r.get("paired"), "\u00a0"),
             fmt(r.get("contrast_kept")), fmt(r.get("contrast_kept_p10")),
             r.get("collapsed", 0) if r["timestep"] else "-"] for r in report["sweep"]]
    caption = ("Realism (C2ST AUC with 95% bootstrap intervals; grey band: the features' real-vs-real null, range "
               "over its splits; red band and dashed red line: the 3D CNN's own real-vs-real null, AUC and 95% "
               "interval; hatched blue band: real lesions of as many random patients as the set has donors "
               "told from the other patients', 5th-95th percentile of the draws; dashed blue line: copies of "
               "the donors' own real lesions with their own position, what the donors' lesions give"
               + ("; the numbers above the harmonized points: their features AUC change against 0 on the same "
                  "lesions, * where its paired 95% interval excludes 0" if any(r.get("paired") for r in report["sweep"])
                  else "")
               + "), lesion contrast "
               "kept after / before "
               "harmonization, and the Dice of the models trained on the set where the study trained one, against "
               "the start timestep (0: not harmonized; dashed orange: the study's choice). "
               + cnn_null_sentence(report))
    html = figure(png, caption.strip(), "Figure 4", width=980)
    html += data_table(["start timestep", "features AUC", "change against 0, same lesions [95%]",
                        "contrast kept (median)", "10th percentile", "lesions collapsed"],
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
