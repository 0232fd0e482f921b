"""The working grid (step 1 of the method, :mod:`metsynth.bone`).

The HU image is clipped (metal counts as dense bone, no more) and block-averaged to about
``work_spacing_mm`` (a 0.7 mm CT is processed at 1.4 mm, a 3 mm CT as it is), so a 512 x 512 x 300
CT takes seconds to tens of seconds. A mask found on the working grid is mapped back to the
image's grid by :meth:`_WorkGrid.to_native`: the working-grid mask decides where the structure is,
its surface is redrawn from the full-resolution voxels above ``surface_hu``, then closed and filled
again at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..boxes import index_box
from ..errors import InputError
from ..volume import Volume, check_finite
from .config import FemurSegConfig
from .morphology import _close, _Filler, _largest_component


@dataclass
class _WorkGrid:
    hu: np.ndarray  # float32 HU on the working grid (clipped)
    metal: np.ndarray  # bool: working voxels holding metal (any native voxel above metal_hu)
    vol: Volume  # geometry of the working grid (array = hu)
    factors: tuple[int, int, int]
    si_axis: int  # array axis closest to world z (head-foot)
    open_bone: np.ndarray | None = None  # bone mask before the closing (set by _bone_mask)

    @classmethod
    def build(cls, image: Volume, config: FemurSegConfig) -> "_WorkGrid":
        if not (np.issubdtype(image.array.dtype, np.number) and image.array.dtype != bool):
            raise InputError(f"{image.name}: expected a CT in HU (numbers), got dtype {image.array.dtype}")
        check_finite(image, "CT")
        raw = image.array
        hu = np.clip(raw.astype(np.float32), -1024.0, config.metal_clip_hu)
        metal = raw > config.metal_hu
        spacing = np.asarray(image.spacing)
        factors = tuple(int(max(1, round(config.work_spacing_mm / s))) for s in spacing)
        factors = tuple(min(f, n) for f, n in zip(factors, image.shape))
        if any(f > 1 for f in factors):
            hu = _block_mean(hu, factors)
            metal = _block_mean(metal.astype(np.float32), factors) > 0
        offset = (np.asarray(factors) - 1) / 2.0  # centre of block 0, in fine voxels
        origin = image.index_to_world(offset)
        vol = Volume(hu, tuple(spacing * factors), tuple(origin), image.direction.copy(), image.path)
        si_axis = int(np.argmax(np.abs(image.direction[0])))
        return cls(hu, metal, vol, factors, si_axis)

    def filler(self, config: FemurSegConfig) -> "_Filler":
        in_plane = [s for i, s in enumerate(self.vol.spacing) if i != self.si_axis]
        max_px = int(config.max_hole_area_mm2 / (in_plane[0] * in_plane[1]))
        return _Filler(self.si_axis, config.fill_2d, max_px)

    def world_coordinate(self, component: int) -> np.ndarray:
        """World coordinate (0: z, 1: y, 2: x; mm) of every voxel, as a broadcastable sum."""
        vol = self.vol
        out = np.float32(vol.origin[component])
        for axis in range(3):
            step = vol.spacing[axis] * vol.direction[component, axis]
            shape = [1, 1, 1]
            shape[axis] = vol.shape[axis]
            out = out + (np.arange(vol.shape[axis], dtype=np.float32) * np.float32(step)).reshape(shape)
        return np.broadcast_to(out, vol.shape)

    def to_native(self, mask: np.ndarray, image: Volume, config: FemurSegConfig,
                  exclude: np.ndarray | None = None, closing_mm: float = 0.0) -> np.ndarray:
        """A working-grid mask on the image's grid. The working mask says where the structure is;
        within one working voxel of its surface, the surface is redrawn from the full-resolution
        voxels above ``surface_hu`` (never where ``exclude`` dominates), then closed with filling
        by ``closing_mm`` (bridging cortical breaks) and hole-filled."""
        if all(f == 1 for f in self.factors):
            return mask.astype(bool)
        out = np.zeros(image.shape, bool)
        if not mask.any():
            return out
        f = np.asarray(self.factors)
        idx = np.argwhere(mask)
        lo_c, hi_c = index_box(idx, mask.shape, 2)
        lo, hi = lo_c * f, np.minimum(hi_c * f, image.shape)
        box_c = tuple(slice(a, b) for a, b in zip(lo_c, hi_c))
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        cube = np.ones((3, 3, 3), bool)

        def up(coarse: np.ndarray) -> np.ndarray:
            return _upsample_linear(coarse, self.factors, hi - lo)

        def up_nearest(coarse: np.ndarray) -> np.ndarray:
            index = np.ix_(*(np.arange(n) // k for n, k in zip(hi - lo, self.factors)))
            return coarse[index]

        sub = mask[box_c]
        core = up_nearest(ndi.binary_erosion(sub, cube))  # surely inside: marrow, lesions
        region = up_nearest(ndi.binary_dilation(sub, cube))  # where the surface may lie
        if exclude is not None:
            region &= ~(up(exclude[box_c]) > up(sub))
        fine = (image.array[box] > config.surface_hu) & region | core
        spacing = image.spacing
        in_plane = [s for i, s in enumerate(spacing) if i != self.si_axis]
        fill = _Filler(self.si_axis, config.fill_2d, int(config.max_hole_area_mm2 / np.prod(in_plane)))
        fine = (_close(fine, closing_mm, spacing, fill=fill) if closing_mm > 0 else fill(fine)) & region | core
        out[box] = _largest_component(fine) if exclude is not None else fine
        return out


def _block_mean(a: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    pads = [(0, (-n) % f) for n, f in zip(a.shape, factors)]
    if any(p[1] for p in pads):
        a = np.pad(a, pads, mode="edge")
    shape = []
    for n, f in zip(a.shape, factors):
        shape += [n // f, f]
    return a.reshape(shape).mean(axis=(1, 3, 5), dtype=np.float32)


def _upsample_linear(coarse: np.ndarray, factors, shape) -> np.ndarray:
    """Linear interpolation of a block-averaged array back onto its fine voxels (block ``i``
    covers fine voxels ``i * f .. i * f + f - 1``), cropped to ``shape``."""
    fine = ndi.zoom(coarse.astype(np.float32), factors, order=1, grid_mode=True, mode="nearest")
    return fine[tuple(slice(0, n) for n in shape)]

