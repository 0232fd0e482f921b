"""Every command's --help renders, and keeps the placeholders its text names.

The CLI renders help as Markdown (typer's ``rich_markup_mode="markdown"``), where a word in angle
brackets such as ``<case>`` reads as an HTML tag and vanishes: "Folder for <case>.nii.gz masks"
printed as "Folder for .nii.gz masks". This walks every command, group and subcommand.
"""

from __future__ import annotations

import re

import pytest
import typer.main
import typer.rich_utils
from typer.testing import CliRunner

from metsynth.cli import app

PLACEHOLDER = re.compile(r"<[A-Za-z_][A-Za-z0-9_]*>")


def _commands(command, path: tuple[str, ...] = ()):
    yield path, command
    if getattr(command, "commands", None):  # a group (typer bundles its own click)
        for name, sub in sorted(command.commands.items()):
            yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def _texts(command) -> list[str]:
    texts = [command.help or ""]
    texts += [getattr(param, "help", None) or "" for param in command.params]
    return texts


def test_the_walk_finds_the_commands():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"predict", "harmonize-sweep", "evaluate", "experiment run", "export nnunet"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "metsynth" for p, _ in COMMANDS])
def test_help_renders_with_its_placeholders(path, command, monkeypatch):
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 400)  # read from TERMINAL_WIDTH once, at import
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    missing = sorted({p for text in _texts(command) for p in PLACEHOLDER.findall(text) if p not in output})
    assert not missing, f"`metsynth {' '.join(path)} --help` drops {missing} (Markdown reads them as HTML tags)"


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "metsynth" for p, _ in COMMANDS])
def test_no_option_name_is_cut_in_an_80_column_terminal(path, command, monkeypatch):
    """typer's tables cut what does not fit with "..." ("--min-lesion-m..."); the CLI folds it instead."""
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 80)
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert not re.search(r"-[\w-]*…", result.output), result.output
