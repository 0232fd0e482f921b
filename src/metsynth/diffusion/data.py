"""Training patches: healthy femurs of a prepared cohort, patches centred within the femur mask.

Each training sample is drawn from its own generator,
``np.random.default_rng(SeedSequence([seed, epoch, index]))``: the patch position, the timestep
and the noise that the network must predict. The same seed therefore gives the same samples
whatever the number of DataLoader workers or devices, and a run resumed at an epoch boundary
sees exactly the samples the uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import DataLoader, Dataset, Sampler

from ..cohort import Cohort, load_cohort
from ..errors import InputError
from ..volume import Volume, as_mask, check_finite

log = logging.getLogger(__name__)

# Prepared images are in [-1, 1]; interpolation may overshoot by a hair.
RANGE_TOLERANCE = 1e-3
# Stream id of the per-epoch sample order (sample indices are 0..n-1, so this never collides).
ORDER_STREAM = 2**32 - 1


@dataclass
class TrainingCase:
    """One healthy femur in memory: its image and the voxels a patch centre may fall on."""

    id: str
    image: np.ndarray  # float32 [z, y, x] in [-1, 1]
    centres: np.ndarray  # flat indices into image


def centre_candidates(mask: np.ndarray, spacing, margin_mm: float) -> np.ndarray:
    """Flat indices of voxels within ``margin_mm`` of the mask (the mask included)."""
    mask = np.asarray(mask, dtype=bool)
    if margin_mm > 0:
        distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
        mask = distance <= margin_mm
    return np.flatnonzero(mask)


def load_training_cases(cohort: Cohort | str | Path, margin_mm: float,
                        roles: tuple[str, ...] = ("healthy",)) -> list[TrainingCase]:
    """Read the healthy cases of a prepared cohort, checking what training needs."""
    if not isinstance(cohort, Cohort):
        cohort = load_cohort(cohort)
    cases = cohort.by_role(*roles)
    if not cases:
        raise InputError(
            f"cohort {cohort.name!r}: no case with role {' or '.join(roles)}; the DDPM learns healthy "
            "femurs, so the manifest needs at least one case with 'role: healthy'")
    if cohort.prepared is None:
        log.warning("cohort %r is not marked as prepared: images must already be in [-1, 1] at the "
                    "target spacing (run `metsynth prepare` to make sure)", cohort.name)
    out = []
    for case in cases:
        image = Volume.read(case.image)
        check_finite(image)
        lo, hi = float(image.array.min()), float(image.array.max())
        if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise InputError(
                f"case {case.id}: image {case.image} has intensities in [{lo:g}, {hi:g}], not [-1, 1]; "
                "train on a prepared cohort (`metsynth prepare`), whose images are standardized")
        if case.femur_mask is None:
            raise InputError(
                f"case {case.id}: no femur_mask in the manifest; patches are drawn within the femur, "
                "so run `metsynth prepare` (it segments the femur) or add femur_mask to the case")
        mask = as_mask(Volume.read(case.femur_mask), image, what="femur mask")
        if not mask.array.any():
            raise InputError(f"case {case.id}: femur mask {case.femur_mask} is empty")
        centres = centre_candidates(mask.array, image.spacing, margin_mm)
        out.append(TrainingCase(case.id, np.clip(image.array.astype(np.float32), -1, 1), centres))
    return out


def patch_corner(centre: np.ndarray, patch_size, shape) -> np.ndarray:
    """Corner of a patch centred at ``centre``, shifted to lie inside the volume where it fits."""
    patch = np.asarray(patch_size)
    corner = np.asarray(centre) - patch // 2
    upper = np.maximum(np.asarray(shape) - patch, 0)
    return np.clip(corner, 0, upper)


def extract_patch(image: np.ndarray, corner, patch_size) -> np.ndarray:
    """``image[corner : corner + patch_size]``, edge-padded where the volume is smaller."""
    sl = tuple(slice(int(c), int(c) + int(p)) for c, p in zip(corner, patch_size))
    patch = image[sl]
    pad = [(0, int(p) - s) for p, s in zip(patch_size, patch.shape)]
    if any(after for _, after in pad):
        patch = np.pad(patch, pad, mode="edge")
    return np.ascontiguousarray(patch, dtype=np.float32)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


class PatchDataset(Dataset):
    """Map-style dataset of training samples, indexed by ``epoch * len(self) + i``.

    Item: ``{"image": (1, *patch), "noise": (1, *patch), "timestep": int64, "case": str}``.
    Sample ``i`` of an epoch comes from case ``i % n_cases``, so each epoch holds
    ``patches_per_case`` patches of every case.
    """

    def __init__(self, cases: list[TrainingCase], patch_size, patches_per_case: int,
                 num_train_timesteps: int, seed: int = 0, max_timestep: int | None = None) -> None:
        if not cases:
            raise InputError("no training cases")
        self.cases = cases
        self.patch_size = tuple(int(p) for p in patch_size)
        self.patches_per_case = int(patches_per_case)
        self.num_train_timesteps = int(num_train_timesteps)
        # timesteps are drawn in 0..max_timestep (TrainConfig.max_timestep), by default all of 0..T-1
        self.timestep_high = self.num_train_timesteps if max_timestep is None else min(int(max_timestep) + 1,
                                                                                         self.num_train_timesteps)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.cases) * self.patches_per_case

    def draw(self, epoch: int, i: int) -> dict:
        rng = sample_rng(self.seed, epoch, i)
        case = self.cases[i % len(self.cases)]
        flat = case.centres[rng.integers(len(case.centres))]
        centre = np.array(np.unravel_index(flat, case.image.shape))
        corner = patch_corner(centre, self.patch_size, case.image.shape)
        patch = extract_patch(case.image, corner, self.patch_size)
        timestep = int(rng.integers(self.timestep_high))
        noise = rng.standard_normal(self.patch_size, dtype=np.float32)
        return {
            "image": torch.from_numpy(patch[None]),
            "noise": torch.from_numpy(noise[None]),
            "timestep": torch.tensor(timestep, dtype=torch.long),
            "case": case.id,
        }

    def __getitem__(self, index: int) -> dict:
        epoch, i = divmod(int(index), len(self))
        return self.draw(epoch, i)


class EpochSampler(Sampler):
    """Yields ``epoch * n + i`` for a seeded permutation of ``i``; Lightning calls ``set_epoch``."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0
        self.skip = 0  # samples of this epoch already consumed (set by ResumableLoader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = sample_rng(self.seed, self.epoch, ORDER_STREAM).permutation(self.n)
        base = self.epoch * self.n
        skip, self.skip = self.skip, 0
        return iter([base + int(i) for i in order[skip:]])


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning can checkpoint mid-epoch (``state_dict``/``load_state_dict``).

    It counts the batches it has yielded in the current epoch; after a restore, the next epoch
    iteration skips that many batches, so a resumed run sees exactly the remaining samples.
    The skip applies when the sampler is an :class:`EpochSampler` (single process); under a
    distributed sampler Lightning restarts the interrupted epoch instead.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._yielded = 0
        self._skip = 0

    def __iter__(self):
        skip, self._skip = self._skip, 0
        if skip and isinstance(self.sampler, EpochSampler):
            self.sampler.skip = skip * int(self.batch_size)
        else:
            skip = 0
        self._yielded = skip
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict:
        return {"batches": int(self._yielded)}

    def load_state_dict(self, state: dict) -> None:
        self._skip = int(state.get("batches", 0))


__all__ = [
    "EpochSampler", "PatchDataset", "ResumableLoader", "TrainingCase", "centre_candidates", "extract_patch",
    "load_training_cases", "patch_corner",
]
