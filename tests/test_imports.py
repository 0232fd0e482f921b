"""The package's imports point down: no import circle, and the library never imports the CLI.

The graph is read from the source with ``ast`` (nothing is imported), and it counts every import,
also those inside functions and under ``if TYPE_CHECKING:``: a lazy import hides a circle from
Python but not from the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "metsynth"
CLI = f"{PACKAGE}.cli"

# Edges left out of the circle check, each with the reason and the way out; this list only shrinks.
KNOWN_CIRCLES: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The metsynth modules that ``path`` imports, anywhere in the file."""
    name = module_name(path)
    package = name if is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from pkg import sub`` imports the module pkg.sub when there is one.
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                       for alias in node.names]
        else:
            continue
        for target in targets:
            # ``import metsynth.a.b`` (or a name inside b): the deepest metsynth module named.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted((SRC / PACKAGE).rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None when the graph is acyclic."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_stack:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in done:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for node in sorted(graph):
        if node not in done:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def is_cli_module(name: str) -> bool:
    """The command-line layer: cli.py, the ``commands`` modules and ``__main__``."""
    last = name.rpartition(".")[2]
    return name == CLI or last in ("commands", "__main__") or last.endswith("_commands")


def test_the_graph_sees_lazy_relative_and_absolute_imports():
    graph = import_graph()
    assert CLI in graph and f"{PACKAGE}.report.data" in graph
    # a lazy import inside a function, a relative one from a subpackage
    assert f"{PACKAGE}.parallel" in graph[f"{PACKAGE}.experiment.training"]
    assert f"{PACKAGE}.fileio" in graph[f"{PACKAGE}.report.data"]
    # the CLI registers the commands modules by name (importlib), which the graph does not see
    assert all(not is_cli_module(m) or m == CLI for m in graph[CLI])


def test_find_cycle_names_the_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circle():
    graph = import_graph()
    for source, target in KNOWN_CIRCLES:
        graph[source].discard(target)
    cycle = find_cycle(graph)
    if cycle:
        pytest.fail("import circle: " + " -> ".join(cycle)
                    + " (move what the lower module needs into a module below both)")


def test_the_known_circles_still_exist():
    """An entry of KNOWN_CIRCLES whose import is gone must leave the list."""
    graph = import_graph()
    gone = sorted(f"{a} -> {b}" for a, b in KNOWN_CIRCLES if b not in graph[a])
    assert not gone, f"no longer imported, remove from KNOWN_CIRCLES: {', '.join(gone)}"


def test_the_library_does_not_import_the_cli():
    offenders = sorted(name for name, targets in import_graph().items()
                       if CLI in targets and not is_cli_module(name))
    assert not offenders, (f"library modules import {CLI}: {', '.join(offenders)} "
                           "(progress and logging settings live in metsynth.progress and metsynth.logs)")


def test_the_stage_names_below_the_experiment_are_the_study_stages():
    """STAGE_NAMES lives in metsynth.stages (so the report need not import the experiment): it must
    still list the stages the experiment builds, in their order."""
    from metsynth.experiment import ExperimentConfig, build_stages
    from metsynth.stages import STAGE_NAMES

    config = ExperimentConfig.from_dict({"cohort": {"manifest": "cohort.csv"}})
    assert [stage.name for stage in build_stages(config)] == list(STAGE_NAMES)
