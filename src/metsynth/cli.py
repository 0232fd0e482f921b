"""The ``metsynth`` command: one thin command per pipeline stage.

Each command parses its options, calls one library function and prints where the outputs are.
Errors the user can fix (:class:`~metsynth.errors.MetsynthError`) print as one line and exit
with status 2; the full traceback goes to a log file named in that line. Heavy imports (torch,
MONAI) happen inside the commands, so ``metsynth --help`` stays fast.

Stage packages add their commands through a ``register(app)`` function in a ``commands``
module listed in ``COMMAND_MODULES``.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from .errors import MetsynthError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("metsynth")

app = typer.Typer(
    name="metsynth",
    help=(
        "Synthetic femoral bone-metastasis CT for segmentation training "
        "(after Saillard et al.). Stages: phantom -> cohort check -> prepare -> lesions extract "
        "-> synthesize -> diffusion train -> harmonize -> train -> predict -> evaluate -> report."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Packages that contribute commands: module path -> "register(app)" is called if it exists.
COMMAND_MODULES = (
    "metsynth.commands",
    "metsynth.synthesis.commands",
    "metsynth.diffusion.commands",
    "metsynth.segmentation.commands",
    "metsynth.evaluation.commands",
    "metsynth.realism.commands",
    "metsynth.export.commands",
    "metsynth.experiment_commands",
)

_state: dict[str, Any] = {"quiet": False}


def quiet() -> bool:
    """Whether progress bars and chatter are switched off (``metsynth --quiet``)."""
    return bool(_state["quiet"])


@app.callback()
def main(
    quiet_: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or info messages."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """metsynth: synthetic femoral metastasis CT, diffusion harmonization, 3D U-Net segmentation."""
    _state["quiet"] = quiet_
    level = logging.DEBUG if verbose else (logging.WARNING if quiet_ else logging.INFO)
    configure_logging(level)


def configure_logging(level: int) -> None:
    """metsynth's messages at ``level`` on stderr (also in worker processes, which start bare)."""
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    # Lightning logs through its own handlers (and advertises services at INFO): keep its
    # messages once, at WARNING unless --verbose.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
        logger.propagate = False


def handle_errors(fn: F) -> F:
    """Turn user errors into one line on stderr and exit code 2; keep the traceback in a log."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MetsynthError as err:
            log_path = _write_error_log()
            typer.echo(f"error: {err}", err=True)
            typer.echo(f"(details: {log_path})", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: finished outputs are kept; rerun the same command to resume", err=True)
            raise typer.Exit(130) from None
        except Exception as err:
            if not _is_trainer_configuration_error(err):
                raise
            log_path = _write_error_log()
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            typer.echo(f"error: the trainer settings do not fit this machine: {first} "
                       "(check --accelerator, --devices, --strategy, --precision; `--accelerator auto` picks "
                       "what is there)", err=True)
            typer.echo(f"(details: {log_path})", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _is_trainer_configuration_error(err: BaseException) -> bool:
    """Lightning's own "this configuration cannot run here" errors (no GPU, bad devices or strategy)."""
    return type(err).__name__ == "MisconfigurationException" and type(err).__module__.startswith(
        ("lightning", "pytorch_lightning", "lightning_fabric"))


def command(target: typer.Typer | None = None, **kwargs: Any) -> Callable[[F], F]:
    """``command(app, name=...)(fn)`` registers ``fn`` on ``target`` with one-line error handling."""

    def decorate(fn: F) -> F:
        (target if target is not None else app).command(**kwargs)(handle_errors(fn))
        return fn

    return decorate


def _write_error_log() -> Path:
    handle = tempfile.NamedTemporaryFile("w", prefix="metsynth-error-", suffix=".log", delete=False)
    with handle:
        handle.write(traceback.format_exc())
    return Path(handle.name)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):  # the commands module itself is absent
                continue
            raise
        module.register(app)


_register_all()


if __name__ == "__main__":  # python -m metsynth.cli
    app()
