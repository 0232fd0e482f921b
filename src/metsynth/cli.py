"""The ``metsynth`` command: one thin command per pipeline stage.

Each command parses its options, calls one library function and prints where the outputs are.
Errors the user can fix (:class:`~metsynth.errors.MetsynthError`) print as one line and exit
with status 2; the full traceback goes to a log file named in that line. So do, as a last
resort, the operating system's refusals a user can fix (a file where a folder is needed, no
permission, a read-only or full disk: :func:`~metsynth.errors.os_error_message`), and an output
path (``--out``, ``--run-dir``) that cannot be written is refused before the command starts
(:func:`~metsynth.fileio.check_output_path`). Heavy imports (torch, MONAI) happen inside the
commands, so ``metsynth --help`` stays fast.

Stage packages add their commands through a ``register(app)`` function in a ``commands``
module listed in ``COMMAND_MODULES``. The library sits below this module: ``--quiet`` and the
log level are set through :mod:`metsynth.progress` and :mod:`metsynth.logs`, which it reads.
"""

from __future__ import annotations

import functools
import importlib
import logging
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from .errors import MetsynthError, os_error_message
from .logs import configure_logging
from .progress import quiet, set_quiet  # noqa: F401 - quiet: read by the commands modules

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
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)



def _fold_long_words_in_help() -> None:
    """In an 80-column terminal typer's option tables cut what does not fit with "..." (an option's
    own name, "--min-lesion-m..."); folding it onto the next line keeps every character. typer
    builds those tables with ``rich.table.Table`` and lets ``add_row`` create the columns, whose
    default is to cut: this gives such columns ``overflow="fold"``. Left as it is where a typer
    version builds its help otherwise (tests/test_cli_help.py checks the result at 80 columns)."""
    try:
        import typer.rich_utils as rich_utils
        from rich.table import Table
    except ImportError:  # pragma: no cover - typer without rich: click's own help, which wraps
        return
    if getattr(rich_utils, "Table", None) is not Table:
        return

    class FoldingTable(Table):
        def add_row(self, *renderables: Any, **kwargs: Any) -> None:
            while len(self.columns) < len(renderables):
                self.add_column(overflow="fold")
            super().add_row(*renderables, **kwargs)

    rich_utils.Table = FoldingTable  # type: ignore[misc]


_fold_long_words_in_help()

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

@app.callback()
def main(
    quiet_: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or info messages."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """metsynth: synthetic femoral metastasis CT, diffusion harmonization, 3D U-Net segmentation."""
    set_quiet(quiet_)
    level = logging.DEBUG if verbose else (logging.WARNING if quiet_ else logging.INFO)
    configure_logging(level)


# Options that name what a command writes; checked before the command runs.
OUTPUT_OPTIONS = ("--out", "--run-dir")


def handle_errors(fn: F, outputs: dict[str, tuple[str, str | None]] | None = None) -> F:
    """Turn user errors into one line on stderr and exit code 2; keep the traceback in a log.

    ``outputs`` maps parameter names to (option, kind) of the paths the command writes ("folder",
    "file" or None for either): each given one is checked before the command starts
    (:func:`~metsynth.fileio.check_output_path`), so an output that cannot be written is refused
    with nothing written; so is an output file that is one of the command's inputs
    (:func:`~metsynth.fileio.check_not_an_input`: ``metsynth femur CT -o CT``).
    """
    outputs = outputs or {}
    option = next(iter(outputs.values()))[0] if len(outputs) == 1 else "--out"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if outputs:
                from .fileio import check_not_an_input, check_output_path

                inputs = [value for key, value in kwargs.items() if key not in outputs]
                for name, (opt, kind) in outputs.items():
                    if kwargs.get(name) is not None:
                        check_output_path(kwargs[name], kind, opt)
                        if kind != "folder":  # a file to write: never one the command reads
                            check_not_an_input(kwargs[name], inputs, opt)
            return fn(*args, **kwargs)
        except MetsynthError as err:
            _fail(str(err))
        except KeyboardInterrupt:
            typer.echo("interrupted: finished outputs are kept; rerun the same command to resume", err=True)
            raise typer.Exit(130) from None
        except OSError as err:
            message = os_error_message(err, option)
            if message is None:
                raise
            _fail(message)
        except Exception as err:
            if not _is_trainer_configuration_error(err):
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            _fail(f"the trainer settings do not fit this machine: {first} (check --accelerator, --devices, "
                  "--strategy, --precision; `--accelerator auto` picks what is there)")

    return wrapper  # type: ignore[return-value]


def _fail(message: str) -> None:
    """Print ``error: message`` (one line) and where the traceback is kept; exit with status 2."""
    log_path = _write_error_log()
    typer.echo(f"error: {message}", err=True)
    typer.echo(f"(details: {log_path})", err=True)
    raise typer.Exit(2) from None


def _is_trainer_configuration_error(err: BaseException) -> bool:
    """Lightning's own "this configuration cannot run here" errors (no GPU, bad devices or strategy)."""
    return type(err).__name__ == "MisconfigurationException" and type(err).__module__.startswith(
        ("lightning", "pytorch_lightning", "lightning_fabric"))


def command(target: typer.Typer | None = None, outputs: dict[str, str | None] | None = None,
            **kwargs: Any) -> Callable[[F], F]:
    """``command(app, name=...)(fn)`` registers ``fn`` on ``target`` with one-line error handling.

    The command's ``--out``/``--run-dir`` option is checked before it runs: a folder if its help
    says "folder" or "directory", else a file if it says "file" or "to write", else either.
    ``outputs`` ({parameter name: "folder", "file" or None}) says so explicitly instead.
    """

    def decorate(fn: F) -> F:
        (target if target is not None else app).command(**kwargs)(handle_errors(fn, output_options(fn, outputs)))
        return fn

    return decorate


def output_options(fn: Callable[..., Any], explicit: dict[str, str | None] | None = None
                   ) -> dict[str, tuple[str, str | None]]:
    """{parameter: (option, kind)} of the output paths of a command function (see :func:`command`)."""
    import inspect
    import re

    found: dict[str, tuple[str, str | None]] = {}
    for name, param in inspect.signature(fn).parameters.items():
        info = param.default
        decls = getattr(info, "param_decls", None) or ()
        option = next((d for d in decls if d in OUTPUT_OPTIONS), None)
        if option is None and (explicit is None or name not in explicit):
            continue
        if explicit is not None and name in explicit:
            kind = explicit[name]
        else:
            text = (getattr(info, "help", None) or "").lower()
            kind = ("folder" if re.search(r"\b(folder|directory)\b", text)
                    else "file" if re.search(r"\bfile\b|\bto write\b", text) else None)
        found[name] = (option or f"--{name.replace('_', '-')}", kind)
    return found


def error_log_path() -> Path:
    """Where the last error's traceback is kept: one file per user in the temporary folder, replaced by
    the next error (one file each error piled up thousands in /tmp)."""
    import getpass

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name (some containers): one file for all
        user = "user"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
    return Path(tempfile.gettempdir()) / f"metsynth-last-error-{safe}.log"


def _write_error_log() -> Path:
    text = traceback.format_exc()
    path = error_log_path()
    try:
        from .fileio import atomic_path

        with atomic_path(path) as tmp:
            Path(tmp).write_text(text)
        return path
    except OSError:  # e.g. the file belongs to another user: a file of its own
        handle = tempfile.NamedTemporaryFile("w", prefix="metsynth-error-", suffix=".log", delete=False)
        with handle:
            handle.write(text)
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
