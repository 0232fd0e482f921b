"""``metsynth splits``, ``evaluate``, ``stats`` and ``variability``: thin wrappers."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..outdir import force_help


def register(app: typer.Typer) -> None:
    from ..cli import command

    command(app, name="splits")(splits)
    command(app, name="evaluate")(evaluate)
    command(app, name="stats")(stats)
    command(app, name="variability")(variability)


def _worst(value: str) -> float | str | None:
    if value.lower() in ("none", "null", "skip"):
        return None
    return value


def splits(
    cohort: Path = typer.Argument(..., help="Cohort manifest (raw or prepared): its metastatic cases are split."),
    out: Path = typer.Option(..., "--out", "-o", help="splits.json to write (reloaded if it exists and matches)."),
    folds: int = typer.Option(5, "--folds", min=2, help="Number of folds (paper: 5)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment (saved in the file)."),
    group_by: str = typer.Option(
        "patient", "--group-by", help="Keep the cases of one 'patient' (the manifest's patient:; a case without "
                                      "one is its own patient) or one 'centre' in one fold, or 'none'."),
) -> None:
    """Make the cross-validation folds once (splits.json); every training and the nnU-Net export reuse them.

    Folds are over the metastatic cases; test-only cases are listed apart. An existing file made
    for other cases or settings is refused, never recomputed silently.
    """
    from ..config import look_up_option
    from .splits import CLI_NAMES, load_or_make_splits

    look_up_option(group_by, ["patient", "centre", "none"], "--group-by value")
    result = load_or_make_splits(out, cohort, n_folds=folds, seed=seed,  # errors name --folds, --group-by
                                 group_by=None if group_by == "none" else group_by,  # type: ignore[arg-type]
                                 names=CLI_NAMES)
    for fold in range(result.n_folds):
        typer.echo(f"fold {fold}: test {', '.join(result.test(fold))}")
    if result.test_only:
        typer.echo(f"test-only: {', '.join(result.test_only)}")
    typer.echo(f"splits: {out}")


def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Folder of predicted masks named <case_id>.nii.gz."),
    truth: Path = typer.Option(
        ..., "--truth", help="Cohort manifest (cohort.yaml) with the ground-truth lesion masks."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: metrics.csv, lesions.csv, summary.json."),
    fold: Optional[int] = typer.Option(
        None, "--fold", help="Score only CV fold k's held-out cases (test fold k plus the test-only cases; needs "
                             "--splits). Default: the fold recorded by `metsynth predict --fold` in --pred."),
    splits: Optional[Path] = typer.Option(
        None, "--splits", help="splits.json of the folds (default with a recorded fold: the one predict recorded)."),
    annotator: Optional[str] = typer.Option(
        None, "--annotator", help="Score against this annotator's masks (default: each case's reference mask)."),
    allow_missing: bool = typer.Option(
        False, "--allow-missing",
        help="Skip cases that have no prediction (listed in summary.json) instead of failing."),
    roles: str = typer.Option("metastatic,test", "--roles", help="Comma-separated roles of the cases to score."),
    worst_case: str = typer.Option(
        "diagonal", "--worst-case",
        help="Distance used in the summary for cases with an empty prediction or truth: 'diagonal' (field-of-view "
             "diagonal, mm), a number in mm, or 'none' to leave them out. The CSV keeps NaN."),
    connectivity: int = typer.Option(26, "--connectivity", help="Lesion connectivity: 6, 18 or 26."),
    min_lesion_mm3: float = typer.Option(0.0, "--min-lesion-mm3", help="Ignore components smaller than this."),
) -> None:
    """Score predicted lesion masks: Dice, HD, HD95, ASSD (mm) and lesion-wise detection per case.

    Writes metrics.csv (one row per case; distances are NaN when one mask is empty, flagged in the 'empty'
    column), lesions.csv (one row per true and predicted lesion) and summary.json (means, stds, detection
    rates and the worst-case rule used for empty masks).

    A fold's predictions (`metsynth predict --fold k -o DIR`) are scored on fold k's held-out cases only,
    so a fold's evaluation never scores its model's training cases.
    """
    import logging

    from ..cli import quiet
    from ..config import look_up_option
    from .evaluate import EvaluationConfig, evaluate_cohort

    role_list = [look_up_option(r.strip(), ["healthy", "metastatic", "test"], "role")
                 for r in roles.split(",") if r.strip()]
    config = EvaluationConfig.from_dict({
        "annotator": annotator, "roles": role_list, "worst_case": _worst(worst_case),
        "connectivity": connectivity, "min_lesion_mm3": min_lesion_mm3, "allow_missing": allow_missing,
    }, source="metsynth evaluate")
    result = evaluate_cohort(pred, truth, config, progress=not quiet(), fold=fold, splits=splits)
    paths = result.write(out)
    m = result.summary["metrics"]
    det = result.summary["detection"]
    scored = result.summary.get("fold")
    lines = [(f"fold {scored}" + (" (recorded by predict)" if fold is None else "") + ": "
              if scored is not None else "")
             + f"{result.summary['n_cases']} case(s) scored"
             + (f", {len(result.missing)} missing (skipped)" if result.missing else "")]
    for name in ("dice", "hd", "hd95", "assd"):
        if name in m:
            lines.append(f"  {name:5s} {m[name]['mean']:.3f} ± {m[name]['std']:.3f}")
    if m.get("n_worst_case"):
        lines.append(f"  ({m['n_worst_case']} case(s) with an empty mask: {m['worst_case']})")
    if det.get("n_true"):
        lines.append(f"  lesions: {det['tp']}/{det['n_true']} detected, {det['fp']} false positive(s)")
        for where, part in (det.get("by_location") or {}).items():  # with femur masks: cortical / medullary
            if part["n_true"]:
                lines.append(f"    {where}: {part['tp']}/{part['n_true']} detected, "
                             f"lesion Dice {part['mean_lesion_dice']:.3f}")
    lines.append(f"wrote {paths['cases']}, {paths['lesions']}, {paths['summary']}")
    typer.echo("\n".join(lines))
    logging.getLogger(__name__).debug("evaluation settings: %s", config.model_dump())


def stats(
    results: list[str] = typer.Argument(
        ..., help="Per-case CSVs from `metsynth evaluate`, one per model: PATH (model name = file name, or the "
                  "folder name for metrics.csv) or NAME=PATH."),
    reference: Optional[str] = typer.Option(
        None, "--reference", help="Model the others are tested against (default: the first)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for table.md/.html/.tex, tests.csv, stats.json."),
    metrics: str = typer.Option("dice,hd,hd95,assd", "--metrics", help="Comma-separated metric columns."),
    worst_case: str = typer.Option(
        "diagonal", "--worst-case", help="Fill for undefined distances: 'diagonal', mm, or 'none'."),
    marker_test: str = typer.Option(
        "wilcoxon", "--marker-test", help="Test behind the * marks: wilcoxon (paired) or mannwhitney."),
    alpha: float = typer.Option(
        0.05, "--alpha",
        help="Significance level for the * marks (after Holm correction) and the family-wise level of the "
             "difference intervals."),
    ci: bool = typer.Option(False, "--ci", help="Add bootstrap 95% confidence intervals of the means."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    title: str = typer.Option("", "--title", help="Table caption."),
) -> None:
    """Compare models as in the paper's Tables 2-3: Kruskal-Wallis, then each model against the reference
    with Mann-Whitney U and paired Wilcoxon (Holm-corrected); mean ± std, best in bold, and each model's
    paired difference to the reference (Hodges-Lehmann) with its signed-rank interval at the Bonferroni
    level alpha/m that goes with Holm's correction."""
    from ..fileio import write_json, write_text
    from .evaluate import _json_safe
    from .stats import compare_models, load_results

    data = load_results(results, worst_case=_worst(worst_case))
    metric_list = [m.strip() for m in metrics.split(",") if m.strip()]
    comparison = compare_models(data, metric_list, reference=reference, alpha=alpha, marker_test=marker_test,
                                ci=ci, rng=seed, title=title)
    typer.echo(comparison.report())
    if out is not None:
        write_text(out / "table.md", comparison.table.to_markdown())
        write_text(out / "table.html", comparison.table.to_html())
        write_text(out / "table.tex", comparison.table.to_latex())
        write_text(out / "tests.csv", comparison.pairwise.to_csv(index=False))
        write_json(out / "stats.json", _json_safe(comparison.to_dict()))
        typer.echo(f"wrote {out}/table.md, table.html, table.tex, tests.csv, stats.json")


def variability(
    manifest: Path = typer.Argument(
        ..., help="Cohort manifest whose cases carry several annotations (annotator, round, expertise)."),
    pred: Optional[Path] = typer.Option(
        None, "--pred", help="Folder of the model's masks (<case_id>.nii.gz) for 'automatic vs operators'."),
    out: Optional[Path] = typer.Option(
        None, "--out",
        help="Folder for Table 1 (md/html/tex), the pair/case/STAPLE CSVs, a JSON summary and the STAPLE "
             "consensus masks (default: variability/ beside the manifest)."),
    include_reference: bool = typer.Option(
        False, "--include-reference", help="Count the 'reference' annotation as an expert operator."),
    staple: bool = typer.Option(True, "--staple/--no-staple", help="Compute the STAPLE consensus of the operators."),
    allow_missing: bool = typer.Option(
        False, "--allow-missing", help="Cases without a prediction are left out of the automatic comparison."),
    force: bool = typer.Option(
        False, "--force", help=force_help("a variability study")),
) -> None:
    """Operator variability (paper Table 1): inter-operator Dice (novice/novice, novice/expert), intra-operator
    Dice (same annotator, later round), automatic vs operators, STAPLE consensus, and whether the model's Dice
    lies within the inter-rater range.

    Writes Table 1, the CSVs, variability.json and the STAPLE consensus masks (staple/<case_id>.nii.gz) to
    --out, by default variability/ beside the manifest. A folder holding a study of other inputs is refused
    (--force replaces it).
    """
    from ..cli import quiet
    from ..cohort import load_cohort
    from ..errors import InputError
    from .variability import (
        claim_variability_dir,
        default_variability_dir,
        operator_variability,
        variability_inputs,
        write_variability,
    )

    cohort = load_cohort(manifest)  # inputs checked before the output folder is touched
    if pred is not None and not pred.is_dir():
        raise InputError(f"{pred}: predictions folder not found (expected files <case_id>.nii.gz)")
    if out is None:
        out = default_variability_dir(manifest)
        typer.echo(f"output folder: {out} (default: beside the manifest; --out to choose another)")
    inputs = variability_inputs(manifest, pred, include_reference=include_reference, staple=staple,
                                allow_missing=allow_missing)
    claim_variability_dir(out, inputs, force=force)
    result = operator_variability(cohort, pred, include_reference=include_reference, run_staple=staple,
                                  staple_dir=(out / "staple") if staple else None,
                                  allow_missing=allow_missing, progress=not quiet())
    typer.echo(result.table().to_markdown())
    summary = result.summary()
    rng = summary.get("model_vs_inter_rater_range")
    if rng:
        typer.echo(f"model within the inter-rater Dice range on {rng['n_within_range']}/{rng['n_cases']} case(s); "
                   f"at or above the lowest inter-rater Dice on {rng['n_at_or_above_min']}/{rng['n_cases']}")
    write_variability(result, out, inputs=inputs)
    masks = len(list((out / "staple").glob("*.nii.gz"))) if staple else 0
    typer.echo(f"wrote {out}/table1.md, table1.html, table1.tex, variability_pairs.csv, variability_cases.csv, "
               f"staple.csv, variability.json" + (f", staple/ ({masks} consensus mask(s))" if masks else ""))
