"""Top-level commands: phantom, cohort check, prepare, demo (thin wrappers over the library)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import typer

from .outdir import force_help

log = logging.getLogger("metsynth")

cohort_app = typer.Typer(help="Inspect and validate cohort manifests.", no_args_is_help=True)


def phantom(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the phantom cohort into."),
    healthy: int = typer.Option(4, "--healthy", min=0, help="Number of healthy femurs."),
    metastatic: int = typer.Option(4, "--metastatic", min=0, help="Number of femurs with osteolytic lesions."),
    test: int = typer.Option(0, "--test", min=0,
                             help="Number of test-only metastatic femurs with several annotators' masks "
                                  "(for the operator-variability study)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same bytes."),
    preview: bool = typer.Option(False, "--preview", help="Also write PNG slices with mask outlines per case."),
    size: str = typer.Option(
        "default", "--size",
        help="Phantom preset: default (realistic, ~0.7-1.25 mm), small (1.5 mm, the laptop demo) or tiny (2 mm, "
             "tests)."),
    force: bool = typer.Option(False, "--force", help=force_help("a phantom cohort")),
) -> None:
    """Generate the built-in procedural femur CT cohort (NIfTI + cohort.yaml)."""
    from .cli import quiet
    from .phantom import PhantomConfig, generate_cohort

    config = PhantomConfig.preset(size)
    start = time.perf_counter()
    manifest = generate_cohort(out, n_healthy=healthy, n_metastatic=metastatic, n_test=test, seed=seed,
                               config=config, preview=preview, force=force, progress=not quiet())
    typer.echo(f"phantom cohort: {manifest} ({healthy} healthy, {metastatic} metastatic, {test} test; "
               f"{time.perf_counter() - start:.1f} s)")
    if preview:
        typer.echo(f"previews: {Path(out) / 'previews'}")


def cohort_check(
    manifest: Path = typer.Argument(..., help="cohort.yaml (or the folder holding it)."),
) -> None:
    """Open every file of a manifest, check it, and print a table of cases. Writes nothing."""
    from .cli import quiet
    from .cohort import check_cohort, format_reports, load_cohort, summarize_roles

    cohort = load_cohort(manifest)
    reports = check_cohort(cohort, progress=not quiet())
    typer.echo(format_reports(reports))
    roles = ", ".join(f"{n} {role}" for role, n in sorted(summarize_roles(cohort).items()))
    typer.echo(f"\n{cohort.name}: {len(reports)} cases OK ({roles})")


def prepare(
    manifest: Path = typer.Argument(..., help="Raw cohort manifest (cohort.yaml or its folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the prepared cohort."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Isotropic voxel size in mm [default: 0.85]."),
    hu_min: Optional[float] = typer.Option(
        None, "--hu-min", help="Lower end of the HU window mapped to -1 [default: -1000]."),
    hu_max: Optional[float] = typer.Option(
        None, "--hu-max", help="Upper end of the HU window mapped to +1 [default: 2000]."),
    interpolation: Optional[str] = typer.Option(
        None, "--interpolation", help="Image interpolation: linear or bspline."),
    margin: Optional[float] = typer.Option(None, "--margin", help="Crop margin around the femur in mm [default: 10]."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file with PrepareConfig settings."),
    force: bool = typer.Option(False, "--force", help=force_help("a preparation")),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Cases prepared in parallel (local processes)."),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", help="Dask scheduler address (tcp://host:port) instead of local processes."),
) -> None:
    """Resample to 0.85 mm, segment and crop the femur, standardize intensities to [-1, 1]."""
    from .cli import quiet
    from .cohort import load_cohort
    from .prepare import PrepareConfig, prepare_cohort

    settings = PrepareConfig.from_yaml(config) if config else PrepareConfig()
    window = None
    if hu_min is not None or hu_max is not None:
        window = (hu_min if hu_min is not None else settings.hu_window[0],
                  hu_max if hu_max is not None else settings.hu_window[1])
    settings = settings.merged(spacing=spacing, hu_window=window, interpolation=interpolation,
                               crop_margin_mm=margin)
    result = prepare_cohort(load_cohort(manifest), out, settings, force=force, progress=not quiet(),
                            workers=workers, scheduler=scheduler)
    typer.echo(f"prepared cohort: {result}")


def femur(
    image: Path = typer.Argument(..., help="CT image in HU (NIfTI, NRRD, MHA or a DICOM series folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Femur mask to write (.nii.gz), on the image's grid."),
    side: Optional[str] = typer.Option(None, "--side", help="left, right or both [default: every femur found]."),
    bone: bool = typer.Option(False, "--all-bone", help="Write the mask of all bone instead of the femur."),
    config: Optional[Path] = typer.Option(
        None, "--config", help="YAML file with femur segmentation settings (FemurSegConfig), e.g. the limits of "
                               "the femur-presence check (femur_min_volume_cm3, ...) or check_femur: false."),
) -> None:
    """Segment the femur (or all bone) of one CT automatically; lesions inside stay inside.

    A CT without a proximal femur in view (a thorax, a slab of shaft) is an error naming the
    image and what was measured; a doubtful femur (e.g. a scan ending above the lesser
    trochanter) is written with a warning.
    """
    from .bone import FemurSegConfig, segment_bone, segment_femur
    from .volume import Volume, check_finite

    settings = FemurSegConfig.from_yaml(config) if config else FemurSegConfig()
    ct = Volume.read(image)
    check_finite(ct)
    mask = segment_bone(ct, settings) if bone else segment_femur(ct, side=side, config=settings)
    mask.write(out)
    cm3 = int(mask.array.sum()) * ct.voxel_volume_mm3 / 1000
    typer.echo(f"{'bone' if bone else 'femur'} mask: {out} ({cm3:.1f} cm3)")


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder (a rerun resumes it)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the phantom, synthesis and trainings."),
    workers: int = typer.Option(2, "--workers", "-j", min=1, help="Local processes for the batch stages."),
    online: bool = typer.Option(
        True, "--online/--no-online", help="The two on-the-fly models of Table 3 beside the offline ones: online "
        "and online_ft (fresh synthetic volumes drawn during training from the training folds' lesions, seeded). "
        "--no-online leaves them out (about 75 s less); on a folder of a demo made without them at the "
        "same settings, --online trains only them."),
    force: bool = typer.Option(
        False, "--force", help="Accept a run folder of another cohort (a demo made before an update that changed "
        "the demo's cohort): the study replaces its outputs there. Without it such a folder is refused."),
) -> None:
    """The whole study on a freshly generated phantom cohort, on a laptop CPU (6.5-9 minutes on 2
    cores, depending on the machine; `make demo` with its setup 7-10).

    phantom -> prepare -> lesion bank -> ad-hoc synthesis -> DDPM -> harmonization -> start-timestep
    sweep -> realism (can a classifier tell the generated lesions from real ones) -> 2-fold
    cross-validation of the paper's five models of Table 3, the two on-the-fly ones and a size-study
    model -> evaluation on 66 held-out cases -> statistics -> operator variability -> HTML report.
    The settings are the `demo` preset (`configs/demo.yaml`; `metsynth experiment run
    configs/demo.yaml -o DIR` is the same study).
    """
    from .cli import quiet
    from .experiment import run_experiment
    from .experiment_commands import print_results
    from .layout import RunLayout

    start = time.perf_counter()
    config = demo_config(seed, workers, online)
    results = run_experiment(config, out, progress=not quiet(), force=force)
    print_results(results, out)
    layout = RunLayout(Path(out))
    typer.echo(f"\ndemo done in {time.perf_counter() - start:.0f} s")
    table = layout.stats / "table3.md"
    if table.exists():
        typer.echo(f"\nheld-out cases, {table}:\n{table.read_text()}")
    typer.echo(f"synthesis QC:      {layout.synthetic / 'preview.png'}")
    typer.echo(f"report:            {layout.report / 'index.html'}")


def demo_config(seed: int = 0, workers: int = 2, online: bool = True):
    """The study ``metsynth demo`` runs: the ``demo`` preset with this seed and workers; without
    ``online`` the on-the-fly models left out of its models."""
    from .experiment import experiment_preset

    config = experiment_preset("demo").merged(seed=seed)
    if not online:
        config = config.merged(models=[m for m in config.models if m not in ONLINE_MODELS])
    return config.model_copy(update={"parallel": config.parallel.merged(workers=workers)})


ONLINE_MODELS = ("online", "online_ft")


def report(
    run_dir: Path = typer.Argument(..., help="Run directory of `metsynth experiment run`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file [default: RUN_DIR/report/index.html]."),
) -> None:
    """Write the self-contained HTML report of a run: Tables 1-3, box plots, Figure-5 montages, QC, statistics,
    config."""
    from .report import write_report

    typer.echo(f"report: {write_report(run_dir, out)}")


def register(app: typer.Typer) -> None:
    from .cli import command

    command(app, name="phantom")(phantom)
    command(cohort_app, name="check")(cohort_check)
    app.add_typer(cohort_app, name="cohort")
    command(app, name="prepare")(prepare)
    command(app, name="femur")(femur)
    command(app, name="demo")(demo)
    command(app, name="report")(report)
