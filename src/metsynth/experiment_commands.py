"""``metsynth experiment ...``: the whole study from one config, and its presets."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

experiment_app = typer.Typer(help="The paper's study from one YAML config, as resumable stages.",
                             no_args_is_help=True)


def run(
    config: Path = typer.Argument(..., help="Experiment YAML (see `metsynth experiment init`)."),
    run_dir: Path = typer.Option(..., "--run-dir", "-o", help="Run folder: every output of the study goes here."),
    until: Optional[str] = typer.Option(None, "--until", help="Stop after this stage."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Run only this stage (repeatable)."),
    force: bool = typer.Option(False, "--force", help=(
        "Write into stage folders of other files, and accept a run folder of another cohort. Not needed when "
        "settings change: the study replaces its own outputs of other settings.")),
) -> None:
    """Run or resume a study: finished stages are skipped, changed ones (and what follows) rerun."""
    from .cli import quiet
    from .experiment import load_experiment_config, run_experiment

    results = run_experiment(load_experiment_config(config), run_dir, until=until, only=only,
                             progress=not quiet(), force=force)
    if results:  # none on ranks > 0 of a DDP study: rank 0 reports
        print_results(results, run_dir)


def init(
    preset: str = typer.Option(
        "demo", "--preset", help="paper (GPU, the paper's settings), demo (laptop CPU) or tiny."),
    out: Path = typer.Option(..., "--out", "-o", help="YAML file to write."),
    manifest: Optional[Path] = typer.Option(
        None, "--manifest", "-m",
        help="Your cohort manifest: the study reads it instead of generating the phantom (written relative to "
             "the YAML file's folder; checked to exist)."),
) -> None:
    """Write a preset's full config to a YAML file, to edit and version."""
    import os

    from .errors import ConfigError
    from .experiment import experiment_preset

    if out.exists():
        raise ConfigError(f"{out}: exists; choose another file name (metsynth never overwrites your files)")
    config = experiment_preset(preset)
    if manifest is not None:
        from .cohort import load_cohort

        load_cohort(manifest)  # a typo said now, not when the study starts
        where = Path(os.path.relpath(manifest.resolve(), out.resolve().parent))
        config = config.model_copy(update={"cohort": config.cohort.model_copy(
            update={"manifest": where, "phantom": None})})
    config.to_yaml(out)
    typer.echo(f"wrote {out} (preset {preset}" + (f", cohort {manifest})" if manifest else ")"))


def reference(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Markdown file to write (default: print it)."),
) -> None:
    """Every setting with its value in each preset and what it means (markdown; docs/config.md)."""
    from .experiment import config_reference
    from .fileio import write_text

    text = config_reference()
    if out is None:
        typer.echo(text)
    else:
        write_text(out, text)
        typer.echo(f"wrote {out}")


def stages() -> None:
    """List the stages in order."""
    from .stages import STAGE_NAMES

    typer.echo("\n".join(STAGE_NAMES))


def print_results(results, run_dir: Path) -> None:
    for r in results:
        seconds = f" ({r.seconds:.0f} s)" if r.status == "done" else ""
        typer.echo(f"  {r.name:12s} {r.status}{seconds}")
    report = Path(run_dir) / "report" / "index.html"
    if report.exists():
        typer.echo(f"report: {report}")


def register(app: typer.Typer) -> None:
    from .cli import command

    command(experiment_app, name="run")(run)
    command(experiment_app, name="init")(init)
    command(experiment_app, name="stages")(stages)
    command(experiment_app, name="reference")(reference)
    app.add_typer(experiment_app, name="experiment")
