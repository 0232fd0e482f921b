"""Commands ``metsynth lesions extract`` and ``metsynth synthesize`` (thin over the library)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import typer

from ..config import read_section
from ..outdir import force_help

log = logging.getLogger("metsynth")

lesions_app = typer.Typer(
    help="The lesion bank: every lesion of the metastatic cases, as patches for synthesis.",
    no_args_is_help=True,
)




def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def extract(
    manifest: Path = typer.Argument(..., help="Prepared cohort manifest (cohort.yaml from `metsynth prepare`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder of the lesion bank (patches/ and bank.json)."),
    annotator: Optional[str] = typer.Option(
        None, "--annotator", help="Use this annotator's masks (first round); default: each case's reference mask."),
    min_mm3: Optional[float] = typer.Option(
        None, "--min-mm3", help="Skip (and list) lesions of at most this volume in mm^3 [default: 16]."),
    margin_mm: Optional[float] = typer.Option(
        None, "--margin-mm", help="Context kept around each lesion, mm [default: 4]."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with bank settings (or a 'bank:' section)."),
    force: bool = typer.Option(
        False, "--force", help=force_help("a lesion bank")),
) -> None:
    """Extract every connected lesion of the metastatic cases into a lesion bank.

    Each lesion becomes a patch (intensities + mask) with its source case, volume, centroid and
    femoral region; lesions of at most --min-mm3 are listed as skipped in bank.json.
    """
    from ..cli import quiet
    from .bank import BankConfig, extract_bank

    settings = BankConfig.from_dict(read_section(config, "bank"), source=str(config or "bank settings"))
    settings = settings.merged(annotator=annotator, min_lesion_mm3=min_mm3, margin_mm=margin_mm)
    bank = extract_bank(manifest, out, settings, force=force, progress=not quiet())
    cases = len({e.case for e in bank.entries})
    typer.echo(f"lesion bank: {len(bank.entries)} lesions from {cases} cases, {len(bank.skipped)} skipped "
               f"-> {bank.root / 'bank.json'}")


def synthesize(
    cohort: Path = typer.Option(..., "--cohort", help="Prepared cohort manifest (healthy cases with femur masks)."),
    bank: Path = typer.Option(..., "--bank", help="Lesion bank folder (`metsynth lesions extract`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: images/, labels/, sidecars/, index.csv."),
    repeats: Optional[int] = typer.Option(
        None, "--repeats", min=1, help="Attempts per healthy x lesion pair [default: 10]."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Run seed [default: 0]."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Local worker processes (1: in this process)."),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", help="Dask scheduler address (tcp://host:8786); workers must see the same files."),
    preview: int = typer.Option(0, "--preview", min=0, help="Write preview.png with K kept volumes (0: none)."),
    force: bool = typer.Option(
        False, "--force", help=force_help("a synthesis run")),
    config: Optional[Path] = typer.Option(
        None, "--config", help="YAML with synthesis settings (or a 'synthesis:' section)."),
    preset: str = typer.Option("paper", "--preset", help="Base settings: paper or tiny."),
    unprepared: bool = typer.Option(
        False, "--unprepared", help="Accept a raw (not prepared) cohort, with a bank extracted from raw scans "
                                    "(HU); by default the cohort must be prepared like the bank's."),
) -> None:
    """Paste bank lesions into healthy femurs: every healthy case x lesion x repeat (resumable).

    Rerun the same command to resume after an interruption; the outputs are byte-identical
    whatever --workers or --scheduler. Refused before anything is written: a bank whose
    intensity units, HU window or spacing differ from the cohort's, and a request whose
    estimated output does not fit the free space of --out.
    """
    from ..cli import quiet
    from .compose import SynthesisConfig
    from .run import run_synthesis

    data = _deep_merge(SynthesisConfig.preset(preset).model_dump(), read_section(config, "synthesis"))
    settings = SynthesisConfig.from_dict(data, source=str(config or f"preset {preset}"))
    settings = settings.merged(repeats=repeats, seed=seed)
    summary = run_synthesis(cohort, bank, out, settings, workers=workers, scheduler=scheduler,
                            progress=not quiet(), force=force, preview=preview, allow_unprepared=unprepared)
    typer.echo(f"synthesis: {summary.describe()}")
    typer.echo(f"index: {summary.index}")
    if summary.preview is not None:
        typer.echo(f"preview: {summary.preview}")


def register(app: typer.Typer) -> None:
    from ..cli import command

    command(lesions_app, name="extract")(extract)
    app.add_typer(lesions_app, name="lesions")
    command(app, name="synthesize")(synthesize)
