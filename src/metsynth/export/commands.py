"""``metsynth export nnunet``: a run's data as an nnU-Net v2 raw dataset; ``metsynth export whole``: a set
with every image as a whole volume (thin over the library)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..outdir import force_help

export_app = typer.Typer(help="Export a run's data to other tools (nnU-Net v2; a set as whole NIfTI volumes).",
                         no_args_is_help=True)


def nnunet(
    run_dir: Optional[Path] = typer.Argument(
        None, help="Run folder of `metsynth experiment run` (prepared/cohort.yaml, splits.json, synthetic/, "
        "harmonized/). Optional when --cohort and --splits are given."),
    dataset_id: int = typer.Option(..., "--dataset-id", min=1, max=999, help="nnU-Net dataset id (DatasetNNN_Name)."),
    name: str = typer.Option("Femur", "--name", help="Dataset name: letters, digits, '-' and '_'."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", envvar="nnUNet_raw",
                                       help="nnU-Net raw folder to write DatasetNNN_Name into (default: "
                                            "$nnUNet_raw; one of the two is required)."),
    sources: str = typer.Option(
        "real,synthetic", "--sources",
        help="What the folds train on, comma-separated: real, synthetic, harmonized. Real cases are always "
        "exported (they are the validation cases)."),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, help="Keep N synthetic/harmonized volumes per fold (seeded, as the size study)."),
    seed: Optional[int] = typer.Option(
        None, "--seed",
        help="Seed of the --limit selection; fold k draws with seed + k, as the study trains fold k (default: the "
        "run's seed with a RUN_DIR, else 0)."),
    link: bool = typer.Option(
        False, "--link/--copy",
        help="Hard-link (else symlink) files usable unchanged (labels; images with --intensity standardized) "
        "instead of writing copies."),
    intensity: str = typer.Option(
        "hu", "--intensity",
        help="hu: map the prepared [-1, 1] images back to HU with the cohort's window (for nnU-Net's CT "
        "normalization); standardized: keep [-1, 1]."),
    test_cases: bool = typer.Option(True, "--test-cases/--no-test-cases",
                                    help="Export test-only cases to imagesTs/labelsTs."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", help="Prepared cohort.yaml (default: RUN/prepared)."),
    splits: Optional[Path] = typer.Option(None, "--splits", help="splits.json (default: RUN/splits.json)."),
    synthetic: Optional[Path] = typer.Option(
        None, "--synthetic", help="Synthetic set folder (default: RUN/synthetic)."),
    harmonized: Optional[Path] = typer.Option(
        None, "--harmonized", help="Harmonized set folder (default: RUN/harmonized)."),
    annotator: Optional[str] = typer.Option(None, "--annotator", help="Label real cases with this annotator's masks."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Local worker processes (1: in this process)."),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", help="Dask scheduler address (tcp://host:8786); workers must see the same files."),
    force: bool = typer.Option(False, "--force", help=force_help("an nnU-Net dataset")),
) -> None:
    """Write an nnU-Net v2 raw dataset and a leak-free splits_final.json.

    imagesTr/labelsTr hold the real metastatic cases and the synthetic/harmonized volumes some fold
    trains on; imagesTs the test-only cases. Fold k of splits_final.json validates on test fold k of
    splits.json and trains on the other real cases plus the volumes whose donor lesion (and healthy
    femur) are outside test fold k and the test-only cases. nnUNetv2_plan_and_preprocess copies
    splits_final.json into nnUNet_preprocessed. See docs/nnunet_export.md.
    """
    from ..cli import quiet
    from ..errors import InputError
    from .nnunet import NnunetExportConfig, export_nnunet, run_seed

    if out is None:  # never a folder of the working directory the user did not name
        raise InputError("no output folder: give --out DIR (your nnUNet_raw folder) or set the nnUNet_raw "
                         "environment variable, as nnU-Net itself expects")

    if seed is None:
        seed = run_seed(run_dir) if run_dir is not None else 0
    config = NnunetExportConfig.from_dict(
        {"dataset_id": dataset_id, "name": name, "sources": sources, "limit": limit, "seed": seed, "link": link,
         "intensity": intensity, "test_cases": test_cases, "annotator": annotator}, source="export options")
    summary = export_nnunet(out, config, run_dir, cohort=cohort, splits=splits, synthetic=synthetic,
                            harmonized=harmonized, force=force, workers=workers, scheduler=scheduler,
                            progress=not quiet())
    typer.echo(f"nnU-Net export: {summary.describe()}")
    typer.echo(f"dataset: {summary.dataset_dir}")


def whole(
    set_dir: Path = typer.Argument(..., help="A synthetic or harmonized set folder (index.csv, images/, labels/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the set into, whole (not the set itself)."),
    storage: str = typer.Option(
        "float32", "--storage",
        help="float32: the values as read. int16: one HU of the set's HU window per step, with NIfTI "
        "scl_slope/scl_inter (at most 0.5 HU off, about a third of the bytes with gzip)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Local worker processes (1: in this process)."),
    force: bool = typer.Option(False, "--force", help=force_help("a set written whole")),
) -> None:
    """Write a set with every image as a whole volume, for tools other than metsynth.

    A set stored as changed boxes (synthesis.image_layout: changed_box, the study's paper preset)
    holds only the box where each image differs from its healthy femur; metsynth reads it whole,
    other tools see the box. This writes every kept image whole (labels, sidecars and index.csv
    copied beside), resumably: rerun the same command after an interruption.
    """
    from ..cli import quiet
    from .whole import export_whole

    summary = export_whole(set_dir, out, storage, force=force, workers=workers, progress=not quiet())
    typer.echo(f"export whole: {summary.describe()}")


def register(app: typer.Typer) -> None:
    from ..cli import command

    command(export_app, name="nnunet")(nnunet)
    command(export_app, name="whole")(whole)
    app.add_typer(export_app, name="export")
