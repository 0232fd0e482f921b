"""``metsynth train`` and ``metsynth predict`` (thin wrappers over the segmentation library)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..outdir import force_help


def train(
    cohort: Path = typer.Argument(..., help="Prepared cohort manifest (output of `metsynth prepare`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (checkpoints, logs, curves.png, model.pt)."),
    preset: Optional[str] = typer.Option(
        None, "--preset",
        help="paper (GPU, the paper's settings), cpu (laptop) or tiny (tests); default: cpu, or the --config file's "
             "own preset."),
    config: Optional[Path] = typer.Option(
        None, "--config", help="YAML with SegmentationConfig settings, merged into the preset."),
    sources: str = typer.Option(
        "real", "--sources",
        help="Training data, comma-separated: real, synthetic, harmonized, online (e.g. 'synthetic,real')."),
    fold: Optional[int] = typer.Option(
        None, "--fold",
        help="CV fold k: its test cases are excluded, and synthetic volumes made from their lesions are filtered out."),
    splits: Optional[Path] = typer.Option(None, "--splits", help="splits.json with the CV folds (needed with --fold)."),
    synthetic: Optional[Path] = typer.Option(
        None, "--synthetic", help="Synthetic set folder (index.csv, images/, labels/)."),
    harmonized: Optional[Path] = typer.Option(None, "--harmonized", help="Harmonized (diffusion) set folder."),
    bank: Optional[Path] = typer.Option(
        None, "--bank", help="Lesion bank folder, for --sources online (fresh synthetic volumes each epoch)."),
    synthesis_config: Optional[Path] = typer.Option(
        None, "--synthesis-config", help="YAML with synthesis settings for --sources online."),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, help="Use N synthetic/harmonized volumes (size study: 100, 500, 2000); default all."),
    init: Optional[Path] = typer.Option(
        None, "--init",
        help="Fine-tune from these weights (model.pt or .ckpt) with the fine-tuning lr, decay and patience."),
    resume: bool = typer.Option(
        True, "--resume/--restart",
        help="Continue an interrupted training (or one whose --max-epochs was raised) from checkpoints/last.ckpt, or "
             "start over."),
    force: bool = typer.Option(False, "--force", help=force_help("a segmentation training")),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="Seed (weights, patches, augmentation, validation hold-out)."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", min=1, help="Upper bound on epochs."),
    val_cases: Optional[int] = typer.Option(
        None, "--val-cases", min=0, help="Real cases held out for validation Dice."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="DataLoader worker processes."),
    accelerator: Optional[str] = typer.Option(None, "--accelerator", help="Lightning accelerator: cpu, gpu, auto..."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Lightning devices: a number, '0,1', or auto."),
    strategy: Optional[str] = typer.Option(
        None, "--strategy", help="Lightning strategy: auto, ddp, ... (multi-GPU / SLURM)."),
    num_nodes: Optional[int] = typer.Option(None, "--num-nodes", min=1, help="Nodes for multi-node DDP."),
    precision: Optional[str] = typer.Option(
        None, "--precision", help="Lightning precision: 32-true, 16-mixed, bf16-mixed."),
) -> None:
    """Train a 3D U-Net on real, synthetic, harmonized or online data (or fine-tune one with --init)."""
    from ..cli import quiet
    from .datasets import build_training_set
    from .presets import segmentation_config
    from .train import train_segmentation

    trainer: dict = {}
    if devices is not None:
        trainer["devices"] = int(devices) if devices.isdigit() else devices
    for key, value in (("accelerator", accelerator), ("strategy", strategy), ("num_nodes", num_nodes),
                       ("precision", precision)):
        if value is not None:
            trainer[key] = value
    settings = segmentation_config(preset, config, seed=seed, max_epochs=max_epochs, val_cases=val_cases,
                                   num_workers=workers, trainer=trainer or None)
    from ..devices import check_trainer

    t = settings.trainer
    check_trainer(t.accelerator, t.devices, t.strategy, t.num_nodes, t.precision)  # before the cache is written
    training_set = build_training_set(cohort, sources, fold=fold, splits=splits, synthetic=synthetic,
                                      harmonized=harmonized, limit=limit, val_cases=settings.val_cases,
                                      seed=settings.seed, bank=bank, synthesis=synthesis_config)
    counts = ", ".join(f"{n} {s}" for s, n in training_set.counts().items())
    if "online" in training_set.sources:
        share = "online only" if not counts else (f"online share {settings.online_share:g}"
                                                 if settings.online_share is not None else "online share proportional")
        counts = " + ".join(filter(None, [counts, f"online ({settings.online_volumes_per_epoch} fresh volumes per "
                                                  f"epoch, {share})"]))
    typer.echo(f"training set: {counts}; {len(training_set.val)} validation case(s)"
               + (f"; fold {fold}: {training_set.dropped_leaking} leaking volume(s) dropped"
                  if fold is not None else ""))
    result = train_segmentation(training_set, out, settings, init=init, resume=resume, force=force,
                                progress=not quiet())
    dice = "n/a" if result.best_val_dice is None else f"{result.best_val_dice:.3f}"
    typer.echo(f"model: {result.model} (best val Dice {dice}, {result.epochs} epochs, "
               f"data-wait share {100 * result.timing.get('data_wait_share', float('nan')):.0f}%)")
    typer.echo(f"curves: {Path(result.out_dir) / 'curves.png'}")


def predict(
    model: Path = typer.Argument(..., help="model.pt from a training folder (or the folder, or a .ckpt)."),
    inputs: list[Path] = typer.Argument(..., help="A cohort manifest (raw or prepared) or image file(s) in HU."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the masks (<case_id>.nii.gz) and predictions.csv."),
    fold: Optional[int] = typer.Option(
        None, "--fold",
        help="CV fold k of the model (with --splits and a cohort manifest): predict only the cases it held out, test "
             "fold k plus the test-only cases. Default with --splits: the model's own fold. With -o MODEL_DIR/foldK "
             "for every fold K and the folds' --ensemble in MODEL_DIR/test_only, MODEL_DIR/<case_id>.nii.gz gets each "
             "case from the fold that held it out and each test-only case from the ensemble, as `metsynth "
             "experiment` does."),
    ensemble: Optional[list[Path]] = typer.Option(
        None, "--ensemble",
        help="Another model to average with MODEL (repeat for more): the mean lesion probability is thresholded "
             "and post-processed once, as nnU-Net ensembles folds. Only cases none of the models trained on are "
             "predicted: with --splits, the test-only cases (e.g. fold0/model.pt --ensemble fold1/model.pt "
             "--splits splits.json -o MODEL_DIR/test_only)."),
    splits: Optional[Path] = typer.Option(
        None, "--splits", help="splits.json the model was trained with (needed with --fold)."),
    femur: Optional[Path] = typer.Option(
        None, "--femur",
        help="Femur mask of a single input image, or 'auto': each scan's femur found by metsynth (as `metsynth "
             "femur`; images in HU, and a manifest's cases without femur_mask). It crops inference and enables the "
             "femur filter; without it a raw scan is searched whole."),
    grid: str = typer.Option(
        "input", "--grid",
        help="input: masks on each input image's grid; source: prepared cases mapped back onto their original scans."),
    standardized: Optional[bool] = typer.Option(
        None, "--standardized/--hu",
        help="Inputs are already standardized to [-1, 1] (default: yes for prepared manifests, else HU)."),
    min_lesion_mm3: Optional[float] = typer.Option(
        None, "--min-lesion-mm3", min=0, help="Remove predicted components smaller than this (mm^3; 0 = off)."),
    femur_filter: Optional[bool] = typer.Option(
        None, "--femur-filter/--no-femur-filter", help="Keep only lesions overlapping the femur mask."),
    fill_holes: Optional[bool] = typer.Option(
        None, "--fill-holes/--no-fill-holes", help="Fill cavities inside predicted lesions."),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="Lesion probability threshold (default: the model's, 0.5)."),
    overlap: Optional[float] = typer.Option(None, "--overlap", help="Sliding-window overlap (0..1)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1, auto."),
    workers: int = typer.Option(1, "--workers", min=1, help="Volumes segmented in parallel (processes)."),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", help="Dask scheduler address (tcp://host:8786) to spread volumes over a cluster."),
    force: bool = typer.Option(
        False, "--force", help=force_help("predictions (of another model, settings or images)")),
) -> None:
    """Segment lesions with sliding-window inference and post-processing; masks keep the input's grid.

    With --fold k --splits splits.json only fold k's held-out cases are predicted (a model trained
    for another fold is refused); a model trained with --fold predicting a manifest that holds its
    training cases without --splits is refused.
    """
    from ..cli import quiet
    from ..config import look_up_option
    from ..fileio import read_json
    from .inference import (
        TEST_ONLY_DIR,
        SegmentationModel,
        gather_fold_predictions,
        missing_fold_predictions,
        predict_cohort,
    )

    look_up_option(grid, ["input", "source"], "grid")
    loaded = SegmentationModel.load(model, "cpu")
    models = [model, *(ensemble or [])]
    post = loaded.config.postprocess.merged(min_lesion_mm3=min_lesion_mm3, keep_in_femur=femur_filter,
                                            fill_holes=fill_holes)
    inference = loaded.config.inference.merged(threshold=threshold, overlap=overlap)
    inputs_arg = [str(p) for p in inputs] if len(inputs) > 1 else inputs[0]
    result = predict_cohort(models if len(models) > 1 else model, inputs_arg, out, fold=fold,
                            splits=splits, femur=femur, grid=grid, standardized=standardized, postprocess_config=post,
                            inference=inference, device=device, workers=workers, scheduler=scheduler,  # type: ignore[arg-type]
                            force=force, progress=not quiet())
    record = read_json(result / "predict.json")
    done = record.get("fold")
    if done is not None:
        typer.echo(f"fold {done}" + (" (the model's)" if fold is None else "")
                   + f": test fold {done}'s cases and the test-only cases, never trained on by this model")
    elif record.get("test_only"):
        typer.echo(f"the test-only cases, by the mean probability of {len(models)} models")
    typer.echo(f"predictions: {result} (table: {result / 'predictions.csv'})")
    part = result.name == f"fold{done}" if done is not None else bool(record.get("test_only")) and \
        result.name == TEST_ONLY_DIR
    if part:
        gathered = gather_fold_predictions(result.parent)
        if gathered:
            typer.echo(f"every fold predicted: {result.parent}/<case>.nii.gz ({len(gathered)} cases, each from the "
                       "fold that held it out; test-only cases from the folds' ensemble)")
        else:
            state = missing_fold_predictions(result.parent)
            if state is not None and state[1]:
                typer.echo(f"{result.parent}/<case>.nii.gz is written once these are predicted too: "
                           + ", ".join(state[1]) + (f" (the folds' models with --ensemble, --splits, -o "
                                                     f"{result.parent / TEST_ONLY_DIR})" if TEST_ONLY_DIR in state[1]
                                                    else ""))


def register(app: typer.Typer) -> None:
    from ..cli import command

    command(app, name="train")(train)
    command(app, name="predict")(predict)
