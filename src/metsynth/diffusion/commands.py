"""Commands ``metsynth diffusion train``, ``metsynth diffusion config`` and ``metsynth harmonize``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import typer

from ..config import read_section
from ..outdir import force_help

log = logging.getLogger("metsynth")

diffusion_app = typer.Typer(
    help="The DDPM of the harmonization stage: train it on healthy femurs, show its presets.",
    no_args_is_help=True,
)


def train(
    cohort: Path = typer.Argument(..., help="Prepared cohort manifest (cohort.yaml from `metsynth prepare`); "
                                            "its healthy cases are the training data."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints/, loss.csv/png, model.pt + model.yaml."),
    preset: str = typer.Option(
        "cpu", "--preset",
        help="paper (GPU, section 2.3.2), cpu (300 steps of about 1-2 s on 2 cores, plus start-up) or tiny (tests)."),
    config: Optional[Path] = typer.Option(
        None, "--config", help="YAML overriding the preset (or its 'diffusion:' section)."),
    max_steps: Optional[int] = typer.Option(
        None, "--max-steps", help="Stop after this many optimizer steps (-1: none)."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", min=1, help="Stop after this many epochs."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of weights, patches, timesteps and noise."),
    accelerator: str = typer.Option("auto", "--accelerator", help="auto, cpu or gpu (passed to Lightning)."),
    devices: str = typer.Option("auto", "--devices", help="Number of devices, a list like 0,1, or auto."),
    precision: str = typer.Option("32", "--precision", help="32, 16-mixed or bf16-mixed."),
    strategy: str = typer.Option("auto", "--strategy", help="Lightning strategy: auto, ddp, ... (SLURM is detected)."),
    num_nodes: int = typer.Option(1, "--num-nodes", min=1, help="Nodes for multi-node DDP."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue from checkpoints/last.ckpt if present."),
    force: bool = typer.Option(False, "--force", help=force_help("a DDPM training")),
) -> None:
    """Train the 3D DDPM on patches of healthy femurs (resumable: rerun to continue).

    Writes model.pt (weights, EMA if enabled) and model.yaml (settings) for `metsynth harmonize`,
    plus loss.csv and loss.png.
    """
    from ..cli import quiet
    from .presets import diffusion_config
    from .train import train_diffusion

    train_changes = {k: v for k, v in {"max_steps": max_steps, "max_epochs": max_epochs, "seed": seed}.items()
                     if v is not None}
    settings = diffusion_config(preset, read_section(config, "diffusion"),
                                train=train_changes or None)
    result = train_diffusion(cohort, out, settings, accelerator=accelerator, devices=_devices(devices),
                             precision=precision, strategy=strategy, num_nodes=num_nodes, resume=resume,
                             force=force, progress=not quiet())
    loss = f", last loss {result.final_loss:.4f}" if result.final_loss is not None else ""
    typer.echo(f"DDPM ({settings.preset}): {result.steps} steps, {result.epochs} epochs in {result.seconds:.1f} s"
               f"{loss}")
    typer.echo(f"weights: {result.export} (+ {result.export_config.name}); "
               f"loss curve: {result.loss_csv.with_suffix('.png')}")


def show_config(
    preset: str = typer.Option("cpu", "--preset", help="paper, cpu or tiny."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML overriding the preset."),
) -> None:
    """Print the resolved diffusion settings as YAML (a starting point for --config files)."""
    import yaml

    from .presets import diffusion_config

    settings = diffusion_config(preset, read_section(config, "diffusion"))
    typer.echo(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False).rstrip())


def harmonize(
    synthetic: Path = typer.Argument(..., help="Synthetic set folder (images/, labels/, sidecars/, index.csv)."),
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", "-c",
        help="model.pt from `metsynth diffusion train` (model.yaml beside it), its run folder, or a .ckpt."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder, same layout as the synthetic set."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Take the harmonization settings of this preset "
                                                                "(default: those stored with the checkpoint)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with harmonization settings (flat, or a "
                                                                 "'harmonize:' or 'diffusion: {harmonize:}' section)."),
    start_timestep: Optional[int] = typer.Option(
        None, "--start-timestep", min=0, help="Training timestep the volume is noised to (paper preset: 40 = "
                                              "lambda 10 DDIM steps of stride 4; 10 = the other reading)."),
    ddim_steps: Optional[int] = typer.Option(None, "--ddim-steps", min=1, help="DDIM steps over 0..T (paper: 50)."),
    region: Optional[str] = typer.Option(None, "--region", help="lesion (boxes around lesions) or volume (all)."),
    draws: Optional[int] = typer.Option(
        None, "--draws", min=1, help="SDEdit runs averaged, their noise in antithetic pairs (1: the paper's single "
                                     "run; 2: cancels the noise the DDPM leaves inside the lesion)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Run seed (each volume: seed + its id)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Local worker processes (1: in this process)."),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", help="Dask scheduler address (tcp://host:8786); workers must see the same files."),
    device: str = typer.Option("auto", "--device", help="auto (cuda if available), cpu or gpu."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="CPU threads per worker (default 1, so that --workers never changes the "
                                       "bytes; use --workers for speed); outputs are byte-identical for the same "
                                       "threads whatever --workers or --scheduler."),
    precision: str = typer.Option("32", "--precision", help="32, 16-mixed or bf16-mixed (autocast, GPU only)."),
    preview: int = typer.Option(
        0, "--preview", min=0, help="Write preview.png: K lesions, synthetic | harmonized | difference."),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, help="Harmonize only the first N kept volumes (a trial)."),
    force: bool = typer.Option(False, "--force", help=force_help("a harmonization")),
) -> None:
    """Refine synthetic volumes with the DDPM: noise to --start-timestep, denoise with DDIM (SDEdit).

    Resumable (rerun the same command), byte-identical on CPU for the same --threads. Each output
    sidecar records the source volume, checkpoint sha256, start timestep, steps and seed, and
    the lesion-contrast consistency check (consistency.csv lists it per lesion).
    """
    from ..cli import quiet
    from ..config import read_yaml
    from .harmonize import checkpoint_settings, harmonize_set
    from .presets import PRESETS, HarmonizeConfig, deep_merge

    if preset is not None:
        from ..config import look_up_option

        base = deep_merge(HarmonizeConfig().model_dump(), look_up_option(preset, PRESETS, "diffusion preset")
                          .get("harmonize", {}))
    else:
        base = checkpoint_settings(checkpoint).harmonize.model_dump()
    if config is not None:
        data = read_yaml(config)
        if isinstance(data.get("diffusion"), dict):
            data = data["diffusion"]
        if isinstance(data.get("harmonize"), dict):
            data = data["harmonize"]
        base = deep_merge(base, data)
    flags = {"start_timestep": start_timestep, "ddim_steps": ddim_steps, "region": region, "draws": draws,
             "seed": seed}
    base = deep_merge(base, {k: v for k, v in flags.items() if v is not None})
    settings = HarmonizeConfig.from_dict(base, source=str(config or "harmonize settings"))
    summary = harmonize_set(synthetic, out, checkpoint, settings, workers=workers, scheduler=scheduler,
                            device=device, precision=precision, progress=not quiet(), force=force,
                            preview=preview, limit=limit, threads=threads)
    typer.echo(f"harmonize: {summary.describe()}")
    typer.echo(f"index: {summary.index}; consistency: {summary.consistency}")
    if summary.flagged:
        shown = ", ".join(summary.flagged[:5]) + (" ..." if len(summary.flagged) > 5 else "")
        typer.echo(f"flagged (lesion contrast collapsed): {shown}")
    if summary.preview is not None:
        typer.echo(f"preview: {summary.preview}")


def harmonize_sweep(
    synthetic: Path = typer.Argument(..., help="Synthetic set folder (index.csv from `metsynth synthesize`)."),
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", "-c", help="model.pt from `metsynth diffusion train` (or its folder)."),
    cohort: Path = typer.Option(..., "--cohort", help="Prepared cohort manifest: its metastatic and test cases' "
                                                      "reference lesions are the real sample of the realism measure "
                                                      "(see --config)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: one set per start timestep (t5/, t10/, "
                                                      "...), realism/ (tables, figure4.png)."),
    timesteps: str = typer.Option(
        "0,5,10,20", "--timesteps", help="Comma-separated start timesteps (0: not harmonized)."),
    volumes: Optional[int] = typer.Option(None, "--volumes", min=4, help="Volumes per timestep (default: as many "
                                                                        "as there are real lesions)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Seed of the volume sample and the realism "
                                                                   "classifiers [default: --config's, else 0]."),
    cnn: Optional[bool] = typer.Option(None, "--cnn/--no-cnn", help="Also run the 3D CNN discriminator on every "
                                                                    "timestep [default: --config's, else no]."),
    config: Optional[Path] = typer.Option(
        None, "--config", help="YAML with realism settings (flat, or the 'realism:' section of a study config, "
        "e.g. RUN/config.yaml): the real sample (realism.roles, realism.max_real_cases), how many volumes "
        "(realism.max_per_set) and the classifiers' settings, as the study measured them (the volumes are "
        "harmonized with the checkpoint's settings); --seed and --cnn override it."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Local worker processes for the harmonization."),
    device: str = typer.Option("auto", "--device", help="auto (cuda if available), cpu or gpu."),
    force: bool = typer.Option(False, "--force", help=force_help("sweep sets")),
) -> None:
    """The paper's Figure 4, measured: harmonize the same volumes from several start timesteps.

    Each timestep's set goes to its own folder, OUT/t5/, OUT/t10/, ... (resumable); then the realism
    measure (metsynth realism) runs on every one against the real lesions, and
    OUT/realism/figure4.png plots realism AUC and the lesion contrast kept against the start
    timestep, with the lesions themselves in figure4_lesions.png.
    """
    from ..cli import quiet
    from ..errors import InputError
    from ..realism.measure import RealismConfig, format_report, measure_realism, realism_sample_size, sample_volume_ids
    from .sweep import SweepConfig, sweep_start_timesteps

    try:
        steps = tuple(int(v) for v in timesteps.split(",") if v.strip())
    except ValueError:
        raise InputError(f"--timesteps {timesteps!r}: expected comma-separated integers, e.g. 0,5,10,20") from None
    sweep = SweepConfig(timesteps=steps, volumes=volumes)
    realism = RealismConfig.from_dict(read_section(config, "realism"), source=str(config or "defaults"))
    realism = realism.model_copy(update={"seed": realism.seed if seed is None else seed,
                                         "cnn": (realism.cnn and config is not None) if cnn is None else cnn,
                                         "cnn_sets": None})
    n = sweep.volumes or realism_sample_size(cohort, realism)
    ids = sample_volume_ids(synthetic, n, realism.seed)
    sets = sweep_start_timesteps(synthetic, checkpoint, out, ids, sweep.timesteps, device=device, workers=workers,
                                 progress=not quiet(), force=force)
    named = {("synthetic" if t == 0 else f"t{t}"): folder for t, folder in sets.items()}
    report = measure_realism(cohort, named, out / "realism", realism.model_copy(update={"max_per_set": n}),
                             progress=not quiet())
    typer.echo(format_report(report).rstrip())
    typer.echo(f"\nFigure 4: {out / 'realism' / 'figure4.png'} (lesions: {out / 'realism' / 'figure4_lesions.png'})")


def _devices(value: str) -> Any:
    value = value.strip()
    if value.isdigit():
        return int(value)
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    return value


def register(app: typer.Typer) -> None:
    from ..cli import command

    command(diffusion_app, name="train")(train)
    command(diffusion_app, name="config")(show_config)
    app.add_typer(diffusion_app, name="diffusion")
    command(app, name="harmonize")(harmonize)
    command(app, name="harmonize-sweep")(harmonize_sweep)
