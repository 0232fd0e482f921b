"""Training sets, balanced patch sampling and seeded augmentation: the torch datasets, and the
public entry to the modules below.

* :mod:`.training_set`: which volumes a training uses (:func:`build_training_set`,
  :class:`TrainingSet`, ``training_set.json``);
* :mod:`.cache`: volumes unpacked once to ``.npy`` files in a cache folder and memory-mapped, so
  a patch reads only its own voxels (:func:`cache_volumes`, :func:`open_cached`);
* :mod:`.patches`: a patch's random parameters (:class:`PatchParams`) drawn from a generator
  seeded by ``(seed, epoch, index)``, then applied deterministically (:func:`extract_patch`);
* :mod:`.sampler`: the patch keys of each epoch, balanced between lesion and background
  (:class:`PatchSampler`);
* here: the fresh synthetic volumes of source ``online`` (:class:`OnlineSource`) and the torch
  datasets (:class:`PatchDataset`, :class:`VolumeDataset`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..recent import recently_used
from .cache import CachedVolume, cache_volume, cache_volumes, open_cached
from .patches import AIR, PatchParams, draw_center, draw_patch_params, extract_patch, patch_rng, rotation_matrix
from .presets import SegmentationConfig
from .sampler import PatchSampler, patch_sampler
from .training_set import TrainingSet, TrainingVolume, build_training_set, parse_sources


class OnlineSource:
    """Fresh synthetic volumes from :class:`metsynth.synthesis.dataset.SyntheticLesionDataset`:
    ``source(epoch, volume) -> (image, label)``, deterministic in ``(seed, volume, epoch)``.
    Picklable (the synthesis dataset starts each worker with empty caches)."""

    def __init__(self, settings: dict[str, Any], seed: int) -> None:
        try:
            from ..synthesis.compose import SynthesisConfig
            from ..synthesis.dataset import SyntheticLesionDataset
        except ImportError as err:  # pragma: no cover - depends on the installation
            raise ConfigError(f"source 'online' needs metsynth.synthesis.dataset ({err}); train on a synthesized "
                              "folder instead (--sources synthetic --synthetic DIR)") from None
        config = SynthesisConfig.from_dict(settings.get("synthesis") or {}, source="online synthesis settings")
        self.dataset = SyntheticLesionDataset(
            settings["manifest"], settings["bank"], config, length=1, seed=seed,
            healthy_cases=settings.get("healthy_cases"), donor_cases=settings.get("donor_cases"))

    def __call__(self, epoch: int, volume: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.dataset.sample(int(volume), int(epoch))
        return sample["image"], sample["label"]


OPEN_VOLUMES = 128  # memory-mapped volumes a dataset keeps open (opening one costs ~0.6 ms, a patch ~2 ms)


class PatchDataset:
    """Map-style dataset of training patches, indexed by :class:`PatchSampler` keys.

    Returns ``{"image": float32 [1, *patch], "label": uint8 [1, *patch], "positive": bool}``
    as torch tensors.
    """

    def __init__(self, stems: Sequence[str], config: SegmentationConfig, online_source=None) -> None:
        self.stems = list(stems)
        self.patch_size = tuple(config.patch_size)
        self.augment = config.augment
        self.seed = config.seed
        self.online_source = online_source
        self._open: dict[int, CachedVolume] = {}  # least recently used first
        self._online_cache: tuple[tuple[int, int], CachedVolume] | None = None

    def __len__(self) -> int:  # informative only; the sampler drives iteration
        return len(self.stems)

    def _volume(self, epoch: int, volume: int) -> CachedVolume:
        if self.online_source is not None and volume >= len(self.stems):  # fresh volume j = volume - listed
            key = (epoch, volume - len(self.stems))
            if self._online_cache is None or self._online_cache[0] != key:
                image, label = self.online_source(*key)
                lbl = (np.asarray(label) > 0).astype(np.uint8)
                self._online_cache = (key, CachedVolume(np.asarray(image, np.float32), lbl,
                                                        np.argwhere(lbl).astype(np.int32)))
            return self._online_cache[1]
        # two file handles each: keep them bounded
        return recently_used(self._open, volume, OPEN_VOLUMES, lambda: open_cached(self.stems[volume]))

    def __getitem__(self, key):
        import torch

        epoch, index, volume, positive = key
        cached = self._volume(epoch, volume)
        rng = patch_rng(self.seed, epoch, index)
        params = draw_patch_params(cached, self.patch_size, positive, self.augment, rng)
        img, lbl = extract_patch(cached.image, cached.label, params, self.patch_size)
        return {"image": torch.from_numpy(img[None]), "label": torch.from_numpy(lbl[None]),
                "positive": params.positive}


class VolumeDataset:
    """Whole volumes for validation: ``{"image": [1, z, y, x], "label": [1, z, y, x], "key": str}``."""

    def __init__(self, stems: Sequence[str], keys: Sequence[str]) -> None:
        self.stems = list(stems)
        self.keys = list(keys)

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int):
        import torch

        cached = open_cached(self.stems[index])
        return {"image": torch.from_numpy(np.array(cached.image, dtype=np.float32)[None]),
                "label": torch.from_numpy(np.array(cached.label, dtype=np.uint8)[None]),
                "key": self.keys[index]}


__all__ = [
    "AIR", "CachedVolume", "OnlineSource", "PatchDataset", "PatchParams", "PatchSampler", "TrainingSet",
    "TrainingVolume",
    "VolumeDataset", "build_training_set", "cache_volume", "cache_volumes", "draw_center", "draw_patch_params",
    "extract_patch", "open_cached", "parse_sources", "patch_rng", "patch_sampler", "rotation_matrix",
]
