"""What an export reads: the prepared cohort, splits.json and the synthetic/harmonized sets, from a run
directory or explicit paths."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError, InputError
from .config import parse_sources


@dataclass(frozen=True)
class ExportInputs:
    """The files an export reads (absolute paths)."""

    cohort: Path
    splits: Path
    synthetic: Path | None = None
    harmonized: Path | None = None


def run_seed(run_dir: str | os.PathLike) -> int:
    """The seed of the study in ``run_dir`` (its ``config.yaml``), 0 when it has none."""
    from ...config import read_yaml
    from ...layout import RunLayout

    path = RunLayout(Path(run_dir)).config
    if not path.is_file():
        return 0
    data = read_yaml(path) or {}
    return int(data.get("seed", 0)) if isinstance(data, dict) else 0


def resolve_inputs(
    run_dir: str | os.PathLike | None = None,
    *,
    cohort: str | os.PathLike | None = None,
    splits: str | os.PathLike | None = None,
    synthetic: str | os.PathLike | None = None,
    harmonized: str | os.PathLike | None = None,
    sources: Sequence[str] = ("real", "synthetic"),
) -> ExportInputs:
    """Find the prepared cohort, splits.json and the sets named in ``sources``.

    Explicit paths win; the rest comes from the run directory's layout (:mod:`metsynth.layout`).
    """
    from ...layout import RunLayout

    sources = parse_sources(sources)
    layout = None
    if run_dir is not None:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise InputError(f"{run_dir}: run directory not found; give the folder of `metsynth experiment run`, "
                             "or pass --cohort, --splits and --synthetic explicitly")
        layout = RunLayout(run_dir)
    how = "`metsynth experiment run CONFIG --run-dir RUN --until {stage}`"

    if cohort is None and layout is None:
        raise ConfigError("no input: give a RUN_DIR, or --cohort (prepared cohort.yaml) and --splits (splits.json)")
    manifest = Path(cohort) if cohort is not None else layout.prepared_manifest  # type: ignore[union-attr]
    if manifest.is_dir():
        manifest = manifest / "cohort.yaml"
    if not manifest.is_file():
        raise InputError(f"{manifest}: prepared cohort manifest not found; run the prepare stage "
                         f"({how.format(stage='prepare')}, or `metsynth prepare`) or pass --cohort")

    if splits is None and layout is None:
        raise ConfigError("no splits: pass --splits splits.json (or a RUN_DIR that has one)")
    splits_path = Path(splits) if splits is not None else layout.splits  # type: ignore[union-attr]
    if splits_path.is_dir():
        splits_path = splits_path / "splits.json"
    if not splits_path.is_file():
        raise InputError(f"{splits_path}: splits file not found; run the splits stage "
                         f"({how.format(stage='splits')}) or pass --splits")

    folders: dict[str, Path | None] = {}
    for source, given, stage in (("synthetic", synthetic, "synthesize"), ("harmonized", harmonized, "harmonize")):
        if source not in sources:
            if given is not None:
                raise ConfigError(f"--{source} {given} is given but --sources {','.join(sources)} does not include "
                                  f"'{source}'; add it to --sources or drop --{source}")
            folders[source] = None
            continue
        if given is None and layout is None:
            raise ConfigError(f"source '{source}' needs its folder: pass --{source} DIR (with index.csv)")
        folder = Path(given) if given is not None else getattr(layout, source)
        if not (folder / "index.csv").is_file():
            raise InputError(f"{folder / 'index.csv'}: no {source} set here; run the {stage} stage "
                             f"({how.format(stage=stage)}), pass --{source} DIR, or drop '{source}' from --sources")
        folders[source] = folder.resolve()
    return ExportInputs(manifest.resolve(), splits_path.resolve(), folders["synthetic"], folders["harmonized"])
