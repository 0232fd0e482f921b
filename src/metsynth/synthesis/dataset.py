"""On-the-fly synthesis as a dataset: a fresh synthetic case per draw, nothing stored.

:class:`SyntheticLesionDataset` is map-style (``len`` and ``ds[i]``) and imports no torch, so it
works with a PyTorch ``DataLoader`` (any number of workers, any start method) as well as on
its own. Sample ``i`` of epoch ``e`` is seeded from ``SeedSequence([seed, i, e])``: it picks a
healthy case and a bank lesion, then runs exactly the batch run's recipe
(:func:`~metsynth.synthesis.compose.synthesize_one`); a dropped attempt (too small, no position)
is retried with the next seed drawn from the same generator, up to ``max_attempts``. Call
:meth:`set_epoch` at the start of each epoch for new samples (with a DataLoader using
persistent workers, recreate the loader or pass ``epoch`` explicitly).

Each sample is a dict: ``image`` (float32, ``[z, y, x]``), ``label`` (uint8), and
``provenance`` (healthy case, donor case and lesion, every drawn parameter, the seed that
replays the attempt, the patch offset), as in the batch run's sidecars. With ``patch_size``
the sample is cropped to a patch around the pasted lesion (randomly shifted by up to
``patch_size // 4``; padded with the image's edge values if needed), which is much cheaper to
train on. Restrict the donors with ``donor_cases`` (e.g. the training cases of a CV fold, to
avoid leakage) and the recipients with ``healthy_cases``. The ``cache_size`` most recently used
healthy femurs stay loaded (image, femur mask and region map, about 6 bytes a voxel: 17 MB for a
0.85 mm femur crop, so the paper's 26 fit in the default 32): loading one costs several times a
synthesis (64 vs 8 ms on the demo's 1.7 mm femurs). As in the batch run, the bank must
fit the cohort (intensity units, HU window, spacing: :func:`~metsynth.synthesis.bank.check_bank_matches`;
``allow_unprepared`` accepts a raw cohort with a bank of raw HU lesions).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from ..recent import recently_used
from .bank import LesionBank, check_bank_matches, load_bank
from .compose import HealthyFemur, SynthesisConfig, check_donor_contacts, synthesize_one

__all__ = ["SyntheticLesionDataset", "crop_patch"]


def crop_patch(array: np.ndarray, centre: np.ndarray, size: tuple[int, int, int], pad_mode: str = "edge"
               ) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A ``size`` crop of ``array`` whose centre is ``centre``; returns it and its corner index.

    Parts outside the array are padded (``edge`` for images, ``constant`` zero for labels).
    """
    size_a = np.asarray(size)
    corner = np.asarray(centre, dtype=int) - size_a // 2
    lo = np.maximum(corner, 0)
    hi = np.minimum(corner + size_a, array.shape)
    crop = array[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
    before = lo - corner
    after = size_a - before - np.asarray(crop.shape)
    if np.any(before) or np.any(after):
        crop = np.pad(crop, [(int(b), int(a)) for b, a in zip(before, after)], mode=pad_mode)  # type: ignore[call-overload]
    return np.ascontiguousarray(crop), tuple(int(c) for c in corner)  # type: ignore[return-value]


class SyntheticLesionDataset:
    """A synthetic femoral-metastasis case per index (see the module docstring)."""

    def __init__(
        self,
        manifest: str | os.PathLike,
        bank: str | os.PathLike | LesionBank,
        config: SynthesisConfig | None = None,
        *,
        length: int = 1000,
        seed: int = 0,
        epoch: int = 0,
        patch_size: tuple[int, int, int] | int | None = None,
        max_attempts: int = 20,
        healthy_cases: list[str] | None = None,
        donor_cases: list[str] | None = None,
        cache_size: int = 32,
        allow_unprepared: bool = False,
    ) -> None:
        from ..cohort import load_cohort

        if length < 1:
            raise ConfigError(f"length must be >= 1, got {length}")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
        if isinstance(patch_size, int):
            patch_size = (patch_size,) * 3
        if patch_size is not None and (len(patch_size) != 3 or min(patch_size) < 1):
            raise ConfigError(f"patch_size must be 3 positive sizes (z, y, x), got {patch_size}")
        self.config = config or SynthesisConfig()
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.patch_size = tuple(int(p) for p in patch_size) if patch_size is not None else None
        self.max_attempts = int(max_attempts)
        self.cache_size = max(1, int(cache_size))
        cohort = load_cohort(manifest)
        healthy = cohort.by_role("healthy")
        if healthy_cases is not None:
            known = {c.id for c in healthy}
            unknown = sorted(set(healthy_cases) - known)
            if unknown:
                raise ConfigError(f"healthy_cases: {', '.join(unknown)} are not healthy cases of {manifest}")
            healthy = [c for c in healthy if c.id in set(healthy_cases)]
        if not healthy:
            raise InputError(f"{manifest}: no healthy case to paste lesions into")
        self.healthy = healthy
        self.bank = bank if isinstance(bank, LesionBank) else load_bank(bank)
        check_bank_matches(self.bank, cohort, manifest, allow_unprepared=allow_unprepared)
        entries = self.bank.entries
        if donor_cases is not None:
            entries = [e for e in entries if e.case in set(donor_cases)]
            if not entries:
                raise ConfigError(f"donor_cases: no bank lesion comes from {', '.join(donor_cases)}")
        check_donor_contacts(entries, self.config)  # once here, as run_synthesis does, not mid-training
        self.entries = entries
        self._healthy_cache: dict[str, HealthyFemur] = {}
        self._lesion_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:  # workers start with empty caches
        state = dict(self.__dict__)
        state["_healthy_cache"] = {}
        state["_lesion_cache"] = {}
        return state

    # ------------------------------------------------------------------ loading
    def _get_healthy(self, case: Any) -> HealthyFemur:
        return recently_used(self._healthy_cache, case.id, self.cache_size, lambda: HealthyFemur.load(case))

    def _get_lesion(self, entry: Any) -> tuple[np.ndarray, np.ndarray]:
        if entry.id not in self._lesion_cache:
            self._lesion_cache[entry.id] = entry.arrays()
        return self._lesion_cache[entry.id]

    # ------------------------------------------------------------------ samples
    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= int(index) < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        return self.sample(int(index), self.epoch)

    def sample(self, index: int, epoch: int | None = None) -> dict[str, Any]:
        """Sample ``index`` of ``epoch`` (default: the current epoch). Deterministic."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), epoch]))
        reasons = []
        for attempt in range(self.max_attempts):
            case = self.healthy[int(rng.integers(len(self.healthy)))]
            entry = self.entries[int(rng.integers(len(self.entries)))]
            attempt_seed = int(rng.integers(0, 2**63 - 1))
            healthy = self._get_healthy(case)
            image, mask = self._get_lesion(entry)
            result = synthesize_one(healthy, entry, image, mask, self.config, np.random.default_rng(attempt_seed))
            if not result.kept:
                reasons.append(result.reason)
                continue
            provenance = {
                "index": int(index), "epoch": epoch, "attempt": attempt, "seed": attempt_seed,
                "healthy_case": case.id, "donor_case": entry.case, "donor_lesion": entry.id,
                "donor_annotator": entry.annotator, **result.provenance,
            }
            image_out, label_out = result.image, result.label
            if self.patch_size is not None:
                jitter = np.asarray(self.patch_size) // 4
                shift = np.asarray([int(rng.integers(-j, j + 1)) if j else 0 for j in jitter])
                centre = np.rint(result.provenance["lesion"]["centroid_index"]).astype(int) + shift
                image_out, corner = crop_patch(image_out, centre, self.patch_size, "edge")
                label_out, _ = crop_patch(label_out, centre, self.patch_size, "constant")
                provenance["patch_corner"] = list(corner)
                provenance["patch_size"] = list(self.patch_size)
            return {
                "image": np.asarray(image_out, dtype=np.float32),
                "label": np.asarray(label_out, dtype=np.uint8),
                "provenance": provenance,
            }
        raise InputError(
            f"synthetic sample {index} (epoch {epoch}): no kept result in {self.max_attempts} attempts "
            f"({', '.join(sorted(set(r for r in reasons if r)))}); the lesions may be too large for the femurs "
            "or min_lesion_mm3 too high")

    def __repr__(self) -> str:
        return (f"SyntheticLesionDataset({len(self.healthy)} healthy x {len(self.entries)} lesions, "
                f"length={self.length}, seed={self.seed}, epoch={self.epoch}, patch_size={self.patch_size})")
