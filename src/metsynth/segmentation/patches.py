"""Training patches: their random parameters drawn first, then applied deterministically.

Each patch is described by :class:`PatchParams`, drawn from a generator seeded by ``(seed,
epoch, index)`` (:func:`patch_rng`: independent of the number of workers or processes) and then
applied deterministically by :func:`extract_patch`: centre (on a lesion voxel for the positive
share, on background otherwise), flips, rotation, isotropic scaling, Gaussian noise and a gamma
contrast change. Rotation and scaling sample the patch directly from the volume (no empty
corners).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..synthesis.transforms import rotation_matrix  # the lesion transforms' convention, one copy
from .cache import CachedVolume
from .presets import AugmentConfig

AIR = -1.0  # standardized intensity of the low end of the HU window: the padding value


@dataclass(frozen=True)
class PatchParams:
    """Everything random about one training patch (drawn first, then applied)."""

    center: tuple[int, int, int]
    positive: bool
    flips: tuple[bool, bool, bool] = (False, False, False)
    angles_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # about the z, y, x axes
    scale: float = 1.0
    noise_std: float = 0.0
    noise_seed: int = 0
    gamma: float = 1.0

    @property
    def is_spatially_plain(self) -> bool:
        return self.scale == 1.0 and not any(self.angles_deg)


def draw_center(shape: Sequence[int], patch_size: Sequence[int], label: np.ndarray, lesion_voxels: np.ndarray,
                positive: bool, rng: np.random.Generator, tries: int = 50) -> tuple[tuple[int, int, int], bool]:
    """A patch centre: a random lesion voxel if ``positive`` (and the volume has lesions), else a
    random background voxel; moved so that the patch lies inside the volume where it fits.
    Returns (centre, whether it is a lesion-centred patch)."""
    shape = np.asarray(shape)
    if positive and len(lesion_voxels):
        center = np.asarray(lesion_voxels[rng.integers(len(lesion_voxels))], dtype=int)
    else:
        positive = False
        center = None
        for _ in range(tries):
            cand = rng.integers(0, shape)
            if not label[tuple(cand)]:
                center = cand
                break
        if center is None:  # (almost) all lesion: any voxel
            center = rng.integers(0, shape)
    half = np.asarray(patch_size) // 2
    lo = half
    hi = shape - (np.asarray(patch_size) - half)
    fits = shape >= np.asarray(patch_size)
    center = np.where(fits, np.clip(center, lo, np.maximum(lo, hi)), shape // 2)
    return tuple(int(c) for c in center), bool(positive)  # type: ignore[return-value]


def draw_patch_params(cached: CachedVolume, patch_size: Sequence[int], positive: bool,
                      augment: AugmentConfig, rng: np.random.Generator) -> PatchParams:
    """Draw a patch's centre and augmentation from ``rng`` (nothing is applied here)."""
    center, positive = draw_center(cached.shape, patch_size, cached.label, cached.lesion_voxels, positive, rng)
    if not augment.enabled:
        return PatchParams(center=center, positive=positive)
    flips = tuple(bool(a in augment.flip_axes and rng.random() < augment.flip_prob) for a in range(3))
    angles = (0.0, 0.0, 0.0)
    if rng.random() < augment.rotate_prob:
        angles = tuple(float(a) for a in rng.uniform(-augment.rotate_deg, augment.rotate_deg, size=3))
    scale = 1.0
    if rng.random() < augment.scale_prob:
        scale = float(rng.uniform(*augment.scale_range))
    noise_std = 0.0
    if rng.random() < augment.noise_prob:
        noise_std = float(rng.uniform(*augment.noise_std))
    gamma = 1.0
    if rng.random() < augment.contrast_prob:
        gamma = float(rng.uniform(*augment.gamma_range))
    return PatchParams(center=center, positive=positive, flips=flips, angles_deg=angles,  # type: ignore[arg-type]
                       scale=scale, noise_std=noise_std, noise_seed=int(rng.integers(2**31)), gamma=gamma)


def _padded_block(array: np.ndarray, lo: np.ndarray, hi: np.ndarray, fill: float) -> np.ndarray:
    """``array[lo:hi]`` (per axis), padded with ``fill`` where the box leaves the volume (a view
    when the box lies inside it)."""
    shape = np.asarray(array.shape)
    if np.all(lo >= 0) and np.all(hi <= shape):
        return array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    src_lo = np.clip(lo, 0, shape)
    src_hi = np.clip(hi, 0, shape)
    out = np.full(tuple(hi - lo), fill, dtype=array.dtype)
    if np.all(src_hi > src_lo):
        dst_lo = src_lo - lo
        dst_hi = dst_lo + (src_hi - src_lo)
        out[dst_lo[0]:dst_hi[0], dst_lo[1]:dst_hi[1], dst_lo[2]:dst_hi[2]] = \
            array[src_lo[0]:src_hi[0], src_lo[1]:src_hi[1], src_lo[2]:src_hi[2]]
    return out


def _reaching(block: np.ndarray, matrix: np.ndarray, offset: np.ndarray,
              size: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The output box (``lo``, ``hi``, within ``size``) whose samples ``matrix @ o + offset`` can fall
    within one voxel of a non-zero voxel of ``block`` (linear interpolation's reach); None if none."""
    where = np.argwhere(block)
    if where.size == 0:
        return None
    a, b = where.min(axis=0) - 1.0, where.max(axis=0) + 1.0
    corners = np.array([[z, y, x] for z in (a[0], b[0]) for y in (a[1], b[1]) for x in (a[2], b[2])])
    out = (corners - offset) @ np.linalg.inv(matrix).T
    lo = np.clip(np.floor(out.min(axis=0)).astype(int) - 1, 0, size)
    hi = np.clip(np.ceil(out.max(axis=0)).astype(int) + 2, 0, size)
    return (lo, hi) if np.all(hi > lo) else None


def extract_patch(image: np.ndarray, label: np.ndarray, params: PatchParams,
                  patch_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``params``: the (rotated, scaled, flipped) patch around the centre, then noise and
    contrast. Returns ``(image float32, label uint8)`` of shape ``patch_size``. Deterministic."""
    from scipy import ndimage

    size = np.asarray(patch_size, dtype=int)
    center = np.asarray(params.center, dtype=int)
    if params.is_spatially_plain:
        lo = center - size // 2
        img = _padded_block(image, lo, lo + size, AIR).astype(np.float32, copy=False)
        lbl = _padded_block(label, lo, lo + size, 0).astype(np.uint8, copy=False)
    else:
        # output offset o (voxels, from the patch centre) samples the volume at centre + M @ o
        matrix = rotation_matrix(params.angles_deg) / params.scale
        half_out = (size - 1) / 2.0
        reach = np.abs(matrix) @ half_out
        lo = np.floor(center - reach).astype(int) - 1
        hi = np.ceil(center + reach).astype(int) + 2
        block_img = _padded_block(image, lo, hi, AIR).astype(np.float32, copy=False)
        block_lbl = _padded_block(label, lo, hi, 0)
        offset = (center - lo) - matrix @ half_out
        img = ndimage.affine_transform(block_img, matrix, offset=offset, output_shape=tuple(size), order=1,
                                       mode="constant", cval=AIR, prefilter=False)
        lbl = np.zeros(tuple(size), dtype=np.uint8)
        sub = _reaching(block_lbl, matrix, offset, size)
        if sub is not None:  # outside the output box that the lesion voxels reach, the transform of zeros is 0
            s_lo, s_hi = sub
            part = ndimage.affine_transform(block_lbl.astype(np.float32), matrix, offset=offset + matrix @ s_lo,
                                            output_shape=tuple(s_hi - s_lo), order=1, mode="constant", cval=0.0,
                                            prefilter=False)
            lbl[s_lo[0]:s_hi[0], s_lo[1]:s_hi[1], s_lo[2]:s_hi[2]] = part >= 0.5
    flip_axes = tuple(a for a, f in enumerate(params.flips) if f)
    if flip_axes:
        img = np.flip(img, flip_axes)
        lbl = np.flip(lbl, flip_axes)
    img = np.array(img, dtype=np.float32, copy=True)
    if params.gamma != 1.0:  # gamma on [-1, 1] mapped to [0, 1]: a fixed range, no per-patch statistics
        unit = np.clip((img + 1.0) * 0.5, 0.0, 1.0)
        img = (unit ** np.float32(params.gamma)) * 2.0 - 1.0
    if params.noise_std > 0:
        noise = np.random.default_rng(params.noise_seed).standard_normal(img.shape, dtype=np.float32)
        img += noise * np.float32(params.noise_std)
    return img.astype(np.float32, copy=False), np.array(lbl, dtype=np.uint8, order="C")  # a copy, never the cache


def patch_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of patch ``index`` of ``epoch``: the same on 1 worker or 100."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))
