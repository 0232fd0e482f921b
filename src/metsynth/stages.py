"""A chain of resumable stages in one run directory (the engine under ``metsynth experiment``).

Each stage has a name, the names of the stages it reads from, the part of the configuration it
depends on, and a function that does the work (and itself skips finished outputs, so a stage
interrupted half-way resumes). When a stage finishes, a marker ``stages/<name>.json`` records
the fingerprint of its configuration and of its inputs' markers. On the next run a stage is
skipped when its marker matches; a stage whose configuration changed runs again, and so does
everything downstream of it (its input fingerprint changed). Nothing else is re-run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .fileio import read_json, write_json

log = logging.getLogger(__name__)

# The study's stages (``metsynth experiment``), in pipeline order: built by
# :func:`metsynth.experiment.build_stages`, listed by ``metsynth experiment stages`` and used by
# the report to order the stage markers. Here, below both, so the report needs no experiment import.
STAGE_NAMES = ("cohort", "prepare", "bank", "synthesize", "diffusion", "harmonize", "sweep", "realism", "splits",
               "train", "size_study", "predict", "evaluate", "stats", "variability", "report")


@dataclass
class Stage:
    name: str
    run: Callable[["RunContext"], Any]
    needs: tuple[str, ...] = ()
    config: Callable[["RunContext"], Any] = field(default=lambda ctx: None)
    description: str = ""


@dataclass
class RunContext:
    run_dir: Path
    config: Any
    progress: bool = True
    force: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)


@dataclass
class StageResult:
    name: str
    status: str  # "done", "skipped", "not requested"
    seconds: float = 0.0


def fingerprint(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def marker_path(run_dir: Path, name: str) -> Path:
    return run_dir / "stages" / f"{name}.json"


def _check_graph(stages: Sequence[Stage]) -> None:
    seen: set[str] = set()
    for stage in stages:
        if stage.name in seen:
            raise ValueError(f"duplicate stage {stage.name}")
        missing = [n for n in stage.needs if n not in seen]
        if missing:
            raise ValueError(f"stage {stage.name} needs {missing}, which do not come before it")
        seen.add(stage.name)


def select(stages: Sequence[Stage], until: str | None = None, only: Sequence[str] | None = None) -> list[str]:
    """Names of the stages to run: everything, up to ``until`` (inclusive), or just ``only``."""
    names = [s.name for s in stages]
    for name in ([until] if until else []) + list(only or []):
        if name not in names:
            import difflib

            hint = difflib.get_close_matches(name, names, n=1)
            extra = f"; did you mean '{hint[0]}'?" if hint else ""
            raise ConfigError(f"unknown stage '{name}' (stages: {', '.join(names)}){extra}")
    if only:
        return [n for n in names if n in set(only)]
    if until:
        return names[: names.index(until) + 1]
    return names


def run_stages(stages: Sequence[Stage], ctx: RunContext, until: str | None = None,
               only: Sequence[str] | None = None) -> list[StageResult]:
    """Run the selected stages in order, skipping those whose marker is up to date."""
    _check_graph(stages)
    wanted = set(select(stages, until, only))
    prints: dict[str, str] = {}
    results = []
    for stage in stages:
        marker = marker_path(ctx.run_dir, stage.name)
        input_prints = {n: prints.get(n) or _marker_print(ctx.run_dir, n) for n in stage.needs}
        own = fingerprint({"config": stage.config(ctx), "inputs": input_prints})
        previous = read_json(marker) if marker.exists() else None
        if stage.name not in wanted:
            if previous is not None:
                prints[stage.name] = previous["fingerprint"]
            results.append(StageResult(stage.name, "not requested"))
            continue
        if previous is not None and previous.get("fingerprint") == own:
            prints[stage.name] = own
            log.info("stage %-12s up to date, skipped", stage.name)
            results.append(StageResult(stage.name, "skipped"))
            continue
        missing = [n for n, p in input_prints.items() if p is None]
        if missing:
            raise ConfigError(f"stage '{stage.name}' needs the outputs of {', '.join(missing)}, which "
                              f"have not run in {ctx.run_dir}; run them first (drop --only)")
        log.info("stage %-12s running%s", stage.name, f": {stage.description}" if stage.description else "")
        start = time.perf_counter()
        if marker.exists():
            marker.unlink()  # outdated: downstream markers no longer match either
        stage.run(ctx)
        seconds = time.perf_counter() - start
        write_json(marker, {"stage": stage.name, "fingerprint": own, "inputs": input_prints,
                            "seconds": round(seconds, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        prints[stage.name] = own
        results.append(StageResult(stage.name, "done", seconds))
    return results


def _marker_print(run_dir: Path, name: str) -> str | None:
    marker = marker_path(run_dir, name)
    return read_json(marker)["fingerprint"] if marker.exists() else None
