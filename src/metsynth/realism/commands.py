"""Command ``metsynth realism``: can a classifier tell the generated lesions from the real ones?"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from ..config import read_section

log = logging.getLogger(__name__)


def realism(
    run: Optional[Path] = typer.Argument(
        None, help="A study's run folder (metsynth experiment run): its prepared cohort gives the real sample "
                   "(the reference lesions of realism.roles's cases, cut by realism.max_real_cases) and its "
                   "synthetic/, harmonized/ and sweep sets are measured, with the study's realism settings. Or give "
                   "--cohort and --set."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", help="Prepared cohort manifest (instead of RUN)."),
    sets: list[str] = typer.Option(
        [], "--set", help="NAME=FOLDER of a synthetic or harmonized set (repeatable; with RUN, added to its sets). "
        "Sets holding the first set's sampled volumes are compared on them, lesion for lesion; a set of other "
        "volumes is sampled on its own, and one of another donor count is read against its own chance band."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: RUN/realism)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with realism settings (flat, or a "
                                                                 "'realism:' section of a study config); it "
                                                                 "replaces a RUN's own settings, all of them."),
    cnn: Optional[bool] = typer.Option(None, "--cnn/--no-cnn", help="Also run the 3D CNN discriminator."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Seed of the sampling, folds and classifiers."),
    force: bool = typer.Option(False, "--force", help="Replace a study's realism results (RUN/realism) made with "
                                                      "other settings or sets."),
) -> None:
    """Classifier two-sample tests between real lesions and each generated set (AUC 0.5: not told apart).

    Two discriminators, gradient-boosted trees on lesion features (it prints which features give a
    set away) and a small 3D CNN on lesion-centred patches; grouped cross-validation (no patient or
    donor on both sides), bootstrap 95% intervals, and the null controls (real vs real, generated vs
    generated) beside every number. Writes realism.json, realism.md and features.csv.

    A set cut from few donor patients differs from the real lesions of many by who the donors are:
    beside the sets, copies of the donors' own real lesions against the real ones (what perfect
    copies would score) and the chance band of as many random real patients (realism.donor_null_splits
    draws); read a set's AUC against that band, not against 0.5.

    A set made from the first set's volumes (the harmonized set, each start timestep; or a synthesis
    of other settings with the same seed, bank and femurs, whose volume ids are the same) is also
    compared with the first set lesion for lesion: its AUC change with a paired 95% interval, about
    half as wide as either AUC's own, which says whether it is easier, harder or level.

    A set in other intensity units than the cohort (e.g. synthesized from the prepared cohort, measured
    against the raw one) is refused. With too few lesions for the classifier to learn anything (a few
    patients), a test is reported as "not meaningful" with what it needs, not as an AUC of 0.5.

    On a study's run folder the study's own realism settings are the defaults, so the command
    gives the study's numbers; its results (RUN/realism) are never replaced by a measure with
    other settings or sets unless --force (give --out for another folder).
    """
    from ..errors import InputError
    from .measure import RealismConfig, format_report, measure_realism, run_sets

    source = config
    if config is None and run is not None and (run / "config.yaml").is_file():
        source = run / "config.yaml"  # the study's realism settings
    settings = RealismConfig.from_dict(read_section(source, "realism") or {}, source=str(source or "defaults"))
    changes = {k: v for k, v in {"cnn": cnn, "seed": seed}.items() if v is not None}
    if changes:
        settings = settings.model_copy(update=changes)
    named: dict[str, Path] = {}
    if run is not None:
        if cohort is not None:
            raise InputError("give a run folder or --cohort, not both")
        manifest, named = run_sets(run)
    elif cohort is not None:
        manifest = cohort
    else:
        raise InputError("give a run folder (metsynth realism RUN) or --cohort with --set NAME=FOLDER")
    for item in sets:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise InputError(f"--set {item!r}: expected NAME=FOLDER, e.g. --set synthetic=runs/demo/synthetic")
        named[name] = Path(folder)
    if out is None:
        if run is None:
            raise InputError("--out is needed with --cohort (there is no run folder to write into)")
        out = run / "realism"
        _check_study_results(out, settings, named, force)
    from ..cli import quiet

    chosen = study_start_timestep(run, named) if run is not None else None

    report = measure_realism(manifest, named, out, settings, progress=not quiet(), chosen=chosen)
    typer.echo(format_report(report).rstrip())
    typer.echo(f"\nwritten: {out / 'realism.json'}, {out / 'realism.md'}, {out / 'features.csv'}")


def study_start_timestep(run: Path, named: dict[str, Path]) -> int | None:
    """The start timestep of a study's harmonized set (Figure 4 marks it, the sweep lists it), as the study's
    own realism stage gives it; None without a harmonized set or a study config."""
    if "harmonized" not in named or not (run / "config.yaml").is_file():
        return None
    from ..errors import MetsynthError
    from ..experiment import ExperimentConfig
    from ..experiment.config import diffusion_settings

    try:
        return diffusion_settings(ExperimentConfig.from_yaml(run / "config.yaml")).harmonize.start_timestep
    except MetsynthError as err:  # a config this version cannot read: the figure goes without the mark
        log.warning("%s: no start timestep to mark in Figure 4 (%s)", run / "config.yaml", err)
        return None


def _check_study_results(out: Path, settings, named: dict[str, Path], force: bool) -> None:
    """Refuse to replace a study's realism results made with other settings or sets (unless
    ``force``; :class:`metsynth.outdir.OutputFolder`). A setting the results predate (a newer
    metsynth's) counts as its default."""
    from ..fileio import read_json
    from ..outdir import OutputFolder, differences
    from .measure import RealismConfig

    folder = OutputFolder(out, "the study's realism results", "realism.json", place="--out DIR")
    if not folder.record_file.is_file():
        return None

    def changes(record: Path) -> list[str]:
        previous = read_json(record)
        old_config = {**RealismConfig().model_dump(mode="json"), **(previous.get("config") or {})}
        found = [f"config.{line}" for line in differences(old_config, settings.model_dump(mode="json"))]
        old_sets = sorted((previous.get("sets") or {}).keys())
        if old_sets != sorted(named):
            found.append(f"sets {', '.join(old_sets)} -> {', '.join(sorted(named))}")
        return found

    folder.claim(changes, force=force)  # nothing removed: measure_realism writes every file again


def register(app: typer.Typer) -> None:
    from ..cli import command

    command(app, name="realism")(realism)
