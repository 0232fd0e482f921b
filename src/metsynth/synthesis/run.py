"""The batch run (``metsynth synthesize``): every healthy femur x every bank lesion x repeats.

Output folder::

    OUT/config.yaml               resolved settings + fingerprints of the cohort and the bank
    OUT/images/<volume_id>.nii     synthetic CT on the healthy case's grid (kept volumes only;
                                  uncompressed float32 by default; SynthesisConfig.image_storage
                                  int16 stores one HU per step with NIfTI scl_slope/scl_inter, and
                                  image_compression_level gzips it to .nii.gz)
    OUT/labels/<volume_id>.nii.gz  its lesion label (uint8, gzip level 1)
    OUT/sidecars/<volume_id>.json  provenance of every attempt, kept or dropped
    OUT/index.csv                 one row per attempt (kept and dropped, with the reason)
    OUT/preview.png               with --preview K

``volume_id`` is ``<healthy>__<donor>-L<k>__r<repeat>``. Each attempt's generator is seeded
from ``SeedSequence([seed, stable_hash(healthy), stable_hash(lesion), repeat])`` (a hash from
hashlib, not Python's salted ``hash``), so the bytes of every file do not depend on the number
of workers, their kind or the order of the tasks. One attempt and the worker tasks:
:mod:`.attempts`; the size estimate and the free-space check: :mod:`.output_size`.

Resume and safety: files are written atomically (image, label, then the sidecar last), so a
sidecar means the attempt is finished; a rerun skips finished attempts (kept and dropped) and
does the rest; ``index.csv`` is rebuilt from the sidecars in a fixed order at the end, so an
interrupted-then-resumed run ends byte-identical to an uninterrupted one. A folder holding a run
of another configuration (settings, cohort manifest, healthy femurs' files or bank) is refused
unless ``force`` (or ``replace_other``, the study's), which removes that run's outputs first.

Before anything is written, the bank must fit the cohort (same intensity units, HU window and
spacing: :func:`~metsynth.synthesis.bank.check_bank_matches`) and the request must fit the disk:
the attempts still to do times the size of their files (every attempt kept; each healthy case's
image size from its header) must not exceed the free space of ``OUT``. A disk that fills up
anyway stops the run at the first failed write with one line naming the file
(:class:`~metsynth.fileio.DiskFullError`); nothing is left under a final name, and a rerun
resumes.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..errors import InputError
from ..fileio import DiskFullError, files_index, files_stamp, read_json, remove_stale_temps, write_text
from ..outdir import FILE_INDEX, OutputFolder, recorded_changes
from ..parallel import TaskFailure, map_tasks
from ..volume import storage_scale
from .attempts import (
    DiskFull,
    SynthesisTask,
    _run_task_or_disk_full,
    run_task,
    stable_hash,
    synthesize_volume,
    volume_id,
    volume_seed,
)
from .bank import LesionBank, check_bank_matches, cohort_intensity, load_bank
from .compose import SynthesisConfig, check_donor_contacts
from .output_size import _check_output_fits, estimate_output_bytes
from .sets import INDEX_COLUMNS, finished_sidecar

log = logging.getLogger(__name__)

__all__ = [
    "INDEX_COLUMNS",
    "RunSummary",
    "SynthesisTask",
    "build_index",
    "estimate_output_bytes",
    "run_synthesis",
    "run_task",
    "stable_hash",
    "synthesize_volume",
    "volume_id",
    "volume_seed",
]

OUTPUT_DIRS = ("images", "labels", "sidecars")
OUTPUT_FILES = ("index.csv", "preview.png", "config.yaml")


# ----------------------------------------------------------------------------- the run
@dataclass
class RunSummary:
    """What a run did (counts over all attempts of the run, including earlier sessions)."""

    out_dir: Path
    attempts: int
    kept: int
    dropped: dict[str, int]
    done_before: int
    done_now: int
    failures: list[TaskFailure] = field(default_factory=list)
    seconds: float = 0.0
    index: Path | None = None
    preview: Path | None = None

    def describe(self) -> str:
        dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items())) or "none"
        text = (f"{self.attempts} attempts: {self.kept} kept, {sum(self.dropped.values())} dropped ({dropped}); "
                f"{self.done_now} done now, {self.done_before} already done; {self.seconds:.1f} s")
        if self.failures:
            text += f"; {len(self.failures)} task(s) FAILED (rerun to retry)"
        return text


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _resolved(manifest: Path, bank: LesionBank, config: SynthesisConfig, healthy,
              intensity: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metsynth_version": __version__,
        "cohort": str(manifest.resolve()),
        "cohort_digest": _digest(manifest),
        # the healthy femurs' files as they are now: a preparation that wrote them again changes it
        "healthy_files": files_stamp(p for case in healthy for p in (case.image, case.femur_mask)),
        FILE_INDEX: {"healthy_files": files_index(p for case in healthy for p in (case.image, case.femur_mask))},
        "bank": str(bank.root),
        "bank_digest": bank.digest,
        "synthesis": config.model_dump(mode="json"),
        # units of the volumes (those of the cohort, which the bank was checked against)
        "intensity": intensity,
    }


IDENTITY_KEYS = ("cohort_digest", "healthy_files", "bank_digest", "synthesis")
# what runs recorded before these settings existed did: float32 whole volumes, the first valid position
RECORD_DEFAULTS = {"synthesis": {"image_storage": "float32", "image_layout": "whole",
                                 "placement": {"match_donor_contact": 0}}}


def _prepare_run_dir(out: Path, resolved: dict[str, Any], force: bool, replace_other: bool = False) -> None:
    identity = {k: resolved[k] for k in (*IDENTITY_KEYS, FILE_INDEX)}  # the index names changed files
    OutputFolder(out, "a synthesis run", "config.yaml", outputs=(*OUTPUT_DIRS, *OUTPUT_FILES)).claim(
        lambda record: recorded_changes(record, identity, RECORD_DEFAULTS), force=force, replace_other=replace_other)
    for name in OUTPUT_DIRS:
        (out / name).mkdir(exist_ok=True)
    remove_stale_temps(out)
    write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))


def run_synthesis(
    manifest: str | os.PathLike,
    bank: str | os.PathLike | LesionBank,
    out_dir: str | os.PathLike,
    config: SynthesisConfig | None = None,
    *,
    workers: int = 1,
    scheduler: Any = None,
    progress: bool = True,
    force: bool = False,
    preview: int = 0,
    allow_unprepared: bool = False,
    replace_other: bool = False,
) -> RunSummary:
    """Synthesize every healthy case x bank lesion x ``config.repeats`` into ``out_dir`` (resumable).

    ``manifest``: a prepared cohort (healthy cases with femur masks). ``bank``: a bank folder
    (``metsynth lesions extract``). ``workers``/``scheduler``: see :func:`metsynth.parallel.map_tasks`
    (a Dask cluster's workers must see the same paths). Task failures are reported in the
    summary (and raised as :class:`~metsynth.parallel.TasksFailed` after the index is written).
    The cohort must be prepared with the bank's units and spacing (``allow_unprepared``: a raw
    cohort with a bank of raw HU lesions), and the run must fit the free space of ``out_dir``;
    a disk that fills up stops the run with :class:`~metsynth.fileio.DiskFullError`. A folder
    holding another run is refused unless ``force`` or ``replace_other``
    (:class:`metsynth.outdir.OutputFolder`).
    """
    from ..cohort import load_cohort

    start = time.perf_counter()
    config = config or SynthesisConfig()
    manifest = Path(manifest)
    if manifest.is_dir():
        manifest = manifest / "cohort.yaml"
    cohort = load_cohort(manifest)
    bank = bank if isinstance(bank, LesionBank) else load_bank(bank)
    healthy = cohort.by_role("healthy")
    if not healthy:
        raise InputError(f"{manifest}: no case with role 'healthy'; synthesis pastes lesions into healthy femurs")
    missing = [c.id for c in healthy if c.femur_mask is None]
    if missing:
        raise InputError(f"{manifest}: healthy case(s) {', '.join(missing)} have no femur_mask; run "
                         "`metsynth prepare` on the cohort (it segments the femurs) and use the prepared manifest")
    check_bank_matches(bank, cohort, manifest, allow_unprepared=allow_unprepared)
    check_donor_contacts(bank.entries, config)  # once for the bank, before the folder is touched
    out = Path(out_dir)
    _check_output_fits(out, healthy, len(bank), config, force or replace_other, [e.bbox for e in bank.entries])
    # each healthy case's files are checked once here, before anything is written: a bad file is one
    # line, not one failure per attempt (and a refused run leaves the folder as it was)
    _check_healthy_cases(manifest, healthy, out, [e.id for e in bank.entries], config.repeats,
                         every=force or replace_other, progress=progress)
    intensity = cohort_intensity(cohort)
    # int16 storage: one HU per step of the window the cohort was prepared with (raw HU cohort: 1 HU)
    scale = storage_scale(config.image_storage, intensity["hu_window"])
    _prepare_run_dir(out, _resolved(manifest, bank, config, healthy, intensity), force, replace_other)

    expected: list[str] = []
    tasks: list[SynthesisTask] = []
    done_before = 0
    for case in healthy:
        for entry in bank.entries:
            todo = []
            for r in range(config.repeats):
                vid = volume_id(case.id, entry.id, r)
                expected.append(vid)
                if finished_sidecar(out, vid) is not None:
                    done_before += 1
                else:
                    todo.append(r)
            if todo:
                tasks.append(SynthesisTask(case, entry.id, str(bank.root), tuple(todo), str(out.resolve()), config,
                                           scale))
    log.info("synthesis: %d attempts (%d healthy x %d lesions x %d repeats), %d already done, %d tasks to run",
             len(expected), len(healthy), len(bank), config.repeats, done_before, len(tasks))

    done_now = 0
    results = map_tasks(_run_task_or_disk_full, tasks, workers=workers, scheduler=scheduler, progress=progress,
                        desc="synthesis", raise_on_failure=False)
    iterator = iter(results)
    try:
        for records in iterator:
            if isinstance(records, DiskFull):  # stop at once: every other write would fail too
                raise DiskFullError(errno.ENOSPC, records.message)
            done_now += len(records)
    finally:
        iterator.close()  # pending tasks are cancelled
    index = build_index(out, expected)
    summary = _summarize(out, index, done_before, done_now, results.failures, time.perf_counter() - start)
    if preview and summary.kept:
        from .qc import write_preview

        summary.preview = write_preview(out, preview, cohort=cohort)
    log.info("synthesis: %s", summary.describe())
    if results.failures:
        from ..parallel import TasksFailed

        raise TasksFailed(results.failures, len(tasks), "synthesis tasks")
    return summary


def _check_healthy_cases(manifest: Path, healthy: list, out: Path, lesion_ids: list[str], repeats: int,
                         every: bool, progress: bool = False) -> None:
    """Open the image and femur mask of each healthy case that has attempts left to do (every case
    when ``every``: a run with ``force`` redoes them all) with every content check (readable, 3D,
    finite, mask binary, on the image's grid, not empty); raise one InputError, one line per bad case.

    Reads only. An attempt counts as done when its sidecar exists (a cheap test: the run itself
    then checks each sidecar)."""
    from ..cohort import load_case

    sidecars = out / "sidecars"
    pending = [case for case in healthy if every or not all(
        (sidecars / f"{volume_id(case.id, lid, r)}.json").is_file() for lid in lesion_ids for r in range(repeats))]
    problems = []
    if progress and len(pending) > 1:
        from tqdm import tqdm

        pending = tqdm(pending, desc="checking healthy cases", unit="case", leave=False)  # gone once done
    for case in pending:
        try:
            load_case(case, lesion=False)
        except InputError as err:
            text = str(err)
            problems.append(text if text.startswith(f"case {case.id}") else f"healthy case {case.id}: {text}")
    if len(problems) == 1:
        raise InputError(problems[0])
    if problems:
        raise InputError(f"{manifest}: {len(problems)} healthy cases cannot be used (nothing was synthesized; fix "
                         "them, or remove them from the manifest):\n  " + "\n  ".join(problems))


def _summarize(out: Path, index: Path, done_before: int, done_now: int, failures: list[TaskFailure],
               seconds: float) -> RunSummary:
    kept, dropped, attempts = 0, Counter(), 0
    with open(index, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            attempts += 1
            if row["kept"] == "true":
                kept += 1
            else:
                dropped[row["reason"]] += 1
    return RunSummary(out, attempts, kept, dict(dropped), done_before, done_now, list(failures), seconds, index)


def build_index(out_dir: str | os.PathLike, expected: list[str]) -> Path:
    """Write ``index.csv`` from the sidecars of ``expected`` volume ids, in that order (deterministic).

    Attempts without a sidecar (failed or not yet run) are left out.
    """
    out = Path(out_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    for vid in expected:
        sidecar = out / "sidecars" / f"{vid}.json"
        if not sidecar.is_file():
            continue
        data = read_json(sidecar)
        lesion = data.get("lesion") or {}
        mm3 = lesion.get("mm3", data.get("transformed_mm3"))
        writer.writerow([
            data["volume_id"], data["healthy_case"], data["donor_case"], data["donor_lesion"], data["repeat"],
            data["seed"]["volume_seed"], "true" if data["kept"] else "false", data["reason"] or "",
            "" if mm3 is None else f"{mm3:.4f}", lesion.get("region", ""), data.get("image") or "",
            data.get("label") or "",
        ])
    return write_text(out / "index.csv", buffer.getvalue())
