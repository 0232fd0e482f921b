"""Balanced patch sampling: the patch keys of each epoch (:class:`PatchSampler`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..seeds import EPOCH_ORDER
from .presets import SegmentationConfig
from .training_set import TrainingSet


class PatchSampler:
    """Yields the patch keys of one epoch: ``(epoch, index, volume, positive)``.

    Each training volume appears ``patches_per_volume`` times in a seeded random order (or, with
    ``patches_per_epoch``, the epoch has that many keys, drawn by whole shuffled passes over the
    volumes so that every volume appears as evenly as the length allows); exactly
    ``round(n * pos_fraction)`` keys ask for a lesion-centred patch (balanced sampling). Under
    DDP each rank takes every ``world``-th key (and all ranks the same count), so Lightning's
    own distributed sampler is not needed (``use_distributed_sampler=False``). Lightning calls
    :meth:`set_epoch` at the start of each epoch, also after a resume.

    Online volumes (``online``): volume ``n_volumes + j`` is the j-th fresh synthetic volume of
    the epoch (``online_volumes`` of them); its patches stay together (one synthesis each).
    Alone (``n_volumes == 0``) the epoch is ``patches_per_epoch`` patches, spread as evenly as
    they go over the ``online_volumes`` fresh volumes (without it, ``online_volumes x
    patches_per_volume``), so an online model trains as many steps as an offline one.
    Mixed with ``n_volumes`` listed volumes (real, synthetic, harmonized), the epoch draws from
    both, see :meth:`split`: ``online_share`` of its patches from the fresh volumes, the rest by
    whole shuffled passes over the listed volumes; ``online_share=None`` is the proportion of an
    offline mix (the fresh volumes count like as many listed volumes, every volume gives
    ``patches_per_volume`` patches). Listed patches and blocks of online patches are shuffled
    together, from the same seeded generator.
    """

    def __init__(self, n_volumes: int, patches_per_volume: int, pos_fraction: float, seed: int,
                 online: bool = False, online_volumes: int = 0, patches_per_epoch: int | None = None,
                 online_share: float | None = None) -> None:
        self.n_volumes = n_volumes
        self.patches_per_epoch = patches_per_epoch
        self.patches_per_volume = patches_per_volume
        self.pos_fraction = pos_fraction
        self.seed = seed
        self.online = online
        self.online_volumes = online_volumes
        if online_share is not None and not 0 < online_share < 1:
            raise ConfigError(f"online_share must be between 0 and 1 (exclusive), got {online_share}")
        self.online_share = online_share
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def mixed(self) -> bool:
        """Online volumes mixed with listed ones."""
        return self.online and self.n_volumes > 0

    def split(self) -> tuple[int, int]:
        """``(listed patches, online patches)`` of every epoch.

        Without ``patches_per_epoch`` the online part is ``online_volumes x patches_per_volume``
        and the listed part follows from the share (proportional: ``n_volumes x
        patches_per_volume``); with it, that many patches are split by the share. Each part has
        at least one patch in a mix."""
        ppv, n_on, n_off = self.patches_per_volume, self.online_volumes, self.n_volumes
        if not self.online:
            return self.patches_per_epoch if self.patches_per_epoch is not None else n_off * ppv, 0
        if not self.mixed:  # online alone: the epoch's length as for any other source
            return 0, self.patches_per_epoch if self.patches_per_epoch is not None else n_on * ppv
        share = self.online_share if self.online_share is not None else n_on / (n_on + n_off)
        if self.patches_per_epoch is not None:
            total = max(2, self.patches_per_epoch)
            online = min(total - 1, max(1, int(round(total * share))))
            return total - online, online
        online = n_on * ppv
        listed = n_off * ppv if self.online_share is None else max(1, int(round(online * (1 - share) / share)))
        return listed, online

    @property
    def total(self) -> int:
        return sum(self.split())

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def epoch_keys(self) -> list[tuple[int, int, int, bool]]:
        """Every key of the epoch (all ranks together)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, EPOCH_ORDER]))
        n = self.total
        if self.mixed:
            volumes = self._mixed_volumes(rng)
        elif self.online:  # volume v = a fresh synthetic volume; its patches stay together
            base, extra = divmod(n, self.online_volumes)  # spread over the fresh volumes, as in a mix
            counts = [base + (j < extra) for j in range(self.online_volumes)]
            volumes = np.repeat(np.arange(self.online_volumes), counts)
        elif self.patches_per_epoch is not None:  # fixed epoch length: whole shuffled passes, then part of one
            passes = -(-n // self.n_volumes)
            volumes = np.concatenate([rng.permutation(self.n_volumes) for _ in range(passes)])[:n]
        else:
            volumes = rng.permutation(np.repeat(np.arange(self.n_volumes), self.patches_per_volume))
        positive = np.zeros(n, dtype=bool)
        positive[rng.permutation(n)[: int(round(n * self.pos_fraction))]] = True
        return [(self.epoch, i, int(v), bool(p)) for i, (v, p) in enumerate(zip(volumes, positive))]

    def _mixed_volumes(self, rng: np.random.Generator) -> np.ndarray:
        listed, online = self.split()
        passes = -(-listed // self.n_volumes)
        units = [[int(v)] for v in np.concatenate([rng.permutation(self.n_volumes) for _ in range(passes)])[:listed]]
        base, extra = divmod(online, self.online_volumes)  # online patches spread over the fresh volumes
        units += [[self.n_volumes + j] * (base + (j < extra)) for j in range(self.online_volumes) if base + (j < extra)]
        return np.asarray([v for k in rng.permutation(len(units)) for v in units[k]], dtype=int)

    def keys(self) -> list[tuple[int, int, int, bool]]:
        keys = self.epoch_keys()
        rank, world = self._rank_world()
        per_rank = len(keys) // world if world > 1 else len(keys)
        return keys[rank::world][:per_rank]

    def source_counts(self, sources: Sequence[str]) -> dict[str, int]:
        """Patches of the current epoch per source; ``sources[v]`` is the source of listed volume v."""
        counts: dict[str, int] = {}
        for _, _, volume, _ in self.epoch_keys():
            source = sources[volume] if volume < self.n_volumes else "online"
            counts[source] = counts.get(source, 0) + 1
        return counts

    def describe(self, sources: Sequence[str]) -> dict[str, Any]:
        """What a training records of its sampling (``result.json``): patches per epoch and source,
        and with online volumes the share of online patches and the setting it came from."""
        counts = self.source_counts(sources)
        out: dict[str, Any] = {"patches_per_epoch": counts}
        if self.online:
            out["online_volumes_per_epoch"] = self.online_volumes
            out["online_share"] = counts.get("online", 0) / max(1, sum(counts.values()))
            out["online_share_setting"] = (self.online_share if self.online_share is not None
                                           else "proportional" if self.mixed else "online only")
        return out

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        rank, world = self._rank_world()
        return self.total // world if world > 1 else self.total


def patch_sampler(training_set: TrainingSet, config: SegmentationConfig) -> PatchSampler:
    """The :class:`PatchSampler` of a training on ``training_set`` with ``config`` (the one
    :func:`~metsynth.segmentation.train.train_segmentation` uses)."""
    return PatchSampler(len(training_set.train), config.patches_per_volume, config.pos_fraction, config.seed,
                        online="online" in training_set.sources, online_volumes=config.online_volumes_per_epoch,
                        patches_per_epoch=config.patches_per_epoch, online_share=config.online_share)
