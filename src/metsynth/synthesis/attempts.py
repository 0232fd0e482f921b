"""One synthesis attempt: its id and seed, :func:`synthesize_volume` (no IO), and the worker task
that does a (healthy case, bank lesion) pair's repeats and writes their files.

``volume_id`` is ``<healthy>__<donor>-L<k>__r<repeat>``. Each attempt's generator is seeded
from ``SeedSequence([seed, stable_hash(healthy), stable_hash(lesion), repeat])`` (a hash from
hashlib, not Python's salted ``hash``), so the bytes of every file do not depend on the number
of workers, their kind or the order of the tasks. A task writes the image, the label, then the
sidecar last (atomically), so a sidecar means the attempt is finished. Tasks are small and
picklable; each worker process keeps its last healthy cases and bank lesions in memory.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..boxed import write_image
from ..fileio import DiskFullError, write_json
from ..volume import IntensityScale
from .bank import BankEntry, LesionBank, load_bank
from .compose import HealthyFemur, SynthesisConfig, SynthesisResult, synthesize_one

__all__ = ["DiskFull", "SynthesisTask", "run_task", "seed_entropy", "stable_hash", "synthesize_volume", "volume_id",
           "volume_seed"]


# ----------------------------------------------------------------------------- ids and seeds
def volume_id(healthy_id: str, lesion_id: str, repeat: int) -> str:
    return f"{healthy_id}__{lesion_id}__r{repeat}"


def stable_hash(text: str) -> int:
    """A 64-bit hash of a string that is the same in every process and Python version."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def seed_entropy(run_seed: int, healthy_id: str, lesion_id: str, repeat: int) -> list[int]:
    return [int(run_seed), stable_hash(healthy_id), stable_hash(lesion_id), int(repeat)]


def volume_seed(run_seed: int, healthy_id: str, lesion_id: str, repeat: int) -> int:
    """The integer seed of one attempt: ``numpy.random.default_rng(seed)`` replays it."""
    seq = np.random.SeedSequence(seed_entropy(run_seed, healthy_id, lesion_id, repeat))
    return int(seq.generate_state(1, dtype=np.uint64)[0])


# ----------------------------------------------------------------------------- one volume
def synthesize_volume(healthy: HealthyFemur, entry: BankEntry, arrays: tuple[np.ndarray, np.ndarray],
                      config: SynthesisConfig, repeat: int) -> tuple[SynthesisResult, dict[str, Any]]:
    """One attempt with its seed; returns the result and its sidecar (without file names). No IO."""
    seed = volume_seed(config.seed, healthy.id, entry.id, repeat)
    result = synthesize_one(healthy, entry, arrays[0], arrays[1], config, np.random.default_rng(seed))
    vid = volume_id(healthy.id, entry.id, repeat)
    sidecar: dict[str, Any] = {
        "volume_id": vid,
        "kept": result.kept,
        "reason": result.reason,
        "healthy_case": healthy.id,
        "donor_case": entry.case,
        "donor_lesion": entry.id,
        "donor_annotator": entry.annotator,
        "donor_region": entry.region,
        "repeat": int(repeat),
        "seed": {"run_seed": config.seed, "entropy": seed_entropy(config.seed, healthy.id, entry.id, repeat),
                 "volume_seed": seed},
        **result.provenance,
        "image": None,
        "label": None,
        "metsynth_version": __version__,
    }
    return result, sidecar


# ----------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class SynthesisTask:
    """All repeats still to do for one (healthy case, bank lesion) pair. Small and picklable."""

    healthy: Any  # metsynth.cohort.Case
    lesion_id: str
    bank_root: str
    repeats: tuple[int, ...]
    run_dir: str
    config: SynthesisConfig
    image_scale: IntensityScale | None = None  # int16 storage (SynthesisConfig.image_storage), else None

    @property
    def key(self) -> str:
        return f"{self.healthy.id}__{self.lesion_id}"


_HEALTHY_CACHE: dict[tuple[Any, ...], HealthyFemur] = {}
_BANK_CACHE: dict[str, tuple[int, LesionBank]] = {}
_LESION_CACHE: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
_CACHE_LOCK = threading.Lock()  # Dask workers run several tasks in threads of one process


def _cached_healthy(case: Any) -> HealthyFemur:
    """The worker's copy of a healthy case (a worker mostly gets one healthy case after another)."""
    stamps = tuple(Path(p).stat().st_mtime_ns for p in (case.image, case.femur_mask)
                   if p is not None and Path(p).exists())
    key = (case.id, str(case.image), str(case.femur_mask), stamps)
    with _CACHE_LOCK:
        if key not in _HEALTHY_CACHE:
            while len(_HEALTHY_CACHE) >= 2:
                _HEALTHY_CACHE.pop(next(iter(_HEALTHY_CACHE)))
            _HEALTHY_CACHE[key] = HealthyFemur.load(case)
        return _HEALTHY_CACHE[key]


def _cached_lesion(bank_root: str, lesion_id: str) -> tuple[BankEntry, tuple[np.ndarray, np.ndarray]]:
    with _CACHE_LOCK:
        digest = (Path(bank_root) / "bank.json").stat().st_mtime_ns
        if _BANK_CACHE.get(bank_root, (None,))[0] != digest:  # re-extracted banks are reloaded
            _BANK_CACHE[bank_root] = (digest, load_bank(bank_root))
            for key in [k for k in _LESION_CACHE if k[0] == bank_root]:
                del _LESION_CACHE[key]
        entry = _BANK_CACHE[bank_root][1].entry(lesion_id)
        key = (bank_root, lesion_id)
        if key not in _LESION_CACHE:
            while len(_LESION_CACHE) >= 256:
                _LESION_CACHE.pop(next(iter(_LESION_CACHE)))
            _LESION_CACHE[key] = entry.arrays()
        return entry, _LESION_CACHE[key]


def _suffix(level: int | None) -> str:
    return ".nii" if level is None else ".nii.gz"


def run_task(task: SynthesisTask) -> list[dict[str, Any]]:
    """Do the task's attempts and write their files; returns one small record per attempt."""
    healthy = _cached_healthy(task.healthy)
    entry, arrays = _cached_lesion(task.bank_root, task.lesion_id)
    out = Path(task.run_dir)
    records = []
    for repeat in task.repeats:
        result, sidecar = synthesize_volume(healthy, entry, arrays, task.config, repeat)
        vid = sidecar["volume_id"]
        if result.kept:
            image_level, label_level = task.config.image_compression_level, task.config.label_compression_level
            sidecar["image"] = f"images/{vid}{_suffix(image_level)}"
            sidecar["label"] = f"labels/{vid}{_suffix(label_level)}"
            image = healthy.image.with_array(result.image)
            base = task.healthy.image if task.config.image_layout == "changed_box" else None
            write_image(image, out / sidecar["image"], base, compression_level=image_level, scale=task.image_scale)
            healthy.image.with_array(result.label).write(out / sidecar["label"], compression_level=label_level)
        write_json(out / "sidecars" / f"{vid}.json", sidecar)  # last: marks the attempt as finished
        records.append({"volume_id": vid, "kept": result.kept, "reason": result.reason})
    return records


@dataclass(frozen=True)
class DiskFull:
    """What a task returns instead of raising when the disk filled up (so the run stops at once)."""

    message: str


def _run_task_or_disk_full(task: SynthesisTask) -> list[dict[str, Any]] | DiskFull:
    try:
        return run_task(task)
    except DiskFullError as err:
        return DiskFull(str(err))
