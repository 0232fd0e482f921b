"""Osteolytic lesions: placement, lobulated shapes with an exact volume, rendering.

A lesion is the sub-level set of a random lobulated distance function (an ellipsoid whose
surface is displaced by low-frequency plane waves), intersected with the femur. Its level is
chosen so that the part inside the bone has the drawn volume; the 6-connected component around
its core is kept, so every lesion is one connected object in its mask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..errors import ConfigError
from ..seeds import PHANTOM_LESION
from .anatomy import REGION_CODES, AnatomyFields
from .config import REGIONS, PhantomConfig
from .fields import F32, Grid, coverage, eval_plane_waves, plane_waves, smin, smooth_noise, smoothstep

_CROSS = ndi.generate_binary_structure(3, 1)


@dataclass
class LesionParams:
    """Everything drawn about one lesion (world mm, HU)."""

    index: int
    region: str
    centre_world: tuple[float, float, float]
    target_mm3: float
    axes: tuple[float, float, float]
    rotation: list[list[float]]
    lobulation: float
    lobes: list[list[float]]  # extra lobes: offset from the centre (3, mm) and radius (mm)
    waves: dict[str, list]
    roughness: dict[str, list]
    hu: float
    heterogeneity_hu: float
    necrosis_hu: float
    rim_hu: float
    intended_break: bool
    extraosseous: bool
    seed: int

    @property
    def radius_mm(self) -> float:
        return float((3 * self.target_mm3 / (4 * np.pi)) ** (1 / 3))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class LesionShape:
    """One lesion realized on the image grid: its box, distance function and exact mask."""

    params: LesionParams
    box: tuple[slice, slice, slice]
    phi: np.ndarray  # lesion distance function in the box, shifted so that the surface is 0
    mask: np.ndarray  # bool, inside the femur, one 6-connected component
    volume_mm3: float = 0.0
    breaks_cortex: bool = False
    info: dict = field(default_factory=dict)


def draw_lesions(rng: np.random.Generator, config: PhantomConfig, coarse: Grid, cf: AnatomyFields,
                 fine: Grid, case_id: str = "case") -> list[LesionParams]:
    """Draw the number, sites, sizes, shapes and densities of a case's lesions."""
    lo, hi = config.lesion_count
    n = int(rng.integers(lo, hi + 1))
    vlo, vhi = config.lesion_volume_mm3
    z, y, x = coarse.axes()
    inside = cf.femur < 0
    fine_lo = np.asarray(fine.origin)
    fine_hi = fine_lo + (np.asarray(fine.shape) - 1) * np.asarray(fine.spacing)
    idx = np.argwhere(inside)
    if idx.size == 0:
        raise ConfigError(f"case {case_id}: the field of view (fov_mm={config.fov_mm}, fov_offset_mm="
                          f"{config.fov_offset_mm}) contains no femur to place lesions in; enlarge or move it")
    world = np.stack([z[idx[:, 0]], y[idx[:, 1]], x[idx[:, 2]]], axis=1)
    depth = -cf.femur[inside]
    cortex = cf.cortex[inside]
    region = cf.region[inside]
    placed: list[LesionParams] = []
    for i in range(n):
        volume = float(np.exp(rng.uniform(np.log(vlo), np.log(vhi))))
        r = (3 * volume / (4 * np.pi)) ** (1 / 3)
        margin = min(r + 2.0, 0.25 * float(np.min(fine_hi - fine_lo)))
        in_fov = np.all((world > fine_lo + margin) & (world < fine_hi - margin), axis=1)
        far = np.ones(len(world), dtype=bool)
        for other in placed:
            far &= np.linalg.norm(world - np.asarray(other.centre_world), axis=1) > 0.9 * (r + other.radius_mm)
        ok = in_fov & far
        available = [name for name in REGIONS if np.any(ok & (region == REGION_CODES[name]))]
        if not available:
            ok = in_fov
            available = [name for name in REGIONS if np.any(ok & (region == REGION_CODES[name]))]
        if not available:
            raise ConfigError(f"case {case_id}: no room for lesion {i + 1} inside the femur within the field of "
                              f"view; enlarge fov_mm ({config.fov_mm}) or lower lesion_volume_mm3 "
                              f"({config.lesion_volume_mm3})")
        weights = np.array([config.region_weights.get(name, 0.0) for name in available], dtype=np.float64)
        if weights.sum() <= 0:
            weights = np.ones(len(available))
        site = available[int(rng.choice(len(available), p=weights / weights.sum()))]
        in_site = ok & (region == REGION_CODES[site])
        want_break = bool(rng.random() < config.break_cortex_probability)
        if want_break:
            tiers = [in_site & (depth > 0.15 * r) & (depth < 0.7 * r), in_site & (depth < r)]
        else:
            tiers = [in_site & (depth > cortex + 0.8 * r), in_site & (depth > cortex + 0.4 * r),
                     in_site & (depth > cortex)]
        tiers.append(in_site)
        cand = next(np.flatnonzero(t) for t in tiers if t.any())
        j = int(rng.choice(cand))
        centre = world[j] + rng.uniform(-0.5, 0.5, 3) * np.asarray(coarse.spacing)
        axes = np.exp(rng.normal(0, 0.28, 3))
        axes /= np.prod(axes) ** (1 / 3)
        q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        lob = float(rng.uniform(0.12, 0.35))
        lobes = []
        for _ in range(int(rng.integers(0, 4))):
            direction = rng.standard_normal(3)
            direction /= np.linalg.norm(direction)
            lobes.append([*(direction * rng.uniform(0.45, 0.95) * r), float(rng.uniform(0.4, 0.75) * r)])
        large = volume > 1500
        placed.append(LesionParams(
            index=i + 1, region=site, centre_world=tuple(float(c) for c in centre), target_mm3=volume,
            axes=tuple(float(a) for a in axes), rotation=q.tolist(), lobulation=lob, lobes=lobes,
            waves={k: v.tolist() for k, v in plane_waves(rng, 10, (1.0 * r, 2.6 * r)).items()},
            roughness={k: v.tolist() for k, v in plane_waves(rng, 6, (0.35 * r + 1.0, 0.7 * r + 2.0)).items()},
            hu=float(rng.uniform(25, 60)), heterogeneity_hu=float(rng.uniform(3, 10)),
            necrosis_hu=float(rng.uniform(10, 25)) if large and rng.random() < 0.35 else 0.0,
            rim_hu=float(rng.uniform(120, 300)) if rng.random() < 0.25 else 0.0,
            intended_break=want_break, extraosseous=bool(want_break and rng.random() < 0.5),
            seed=int(rng.integers(0, 2**31 - 1)),
        ))
    return placed


def realize_lesion(lp: LesionParams, grid: Grid, femur: np.ndarray, occupied: np.ndarray) -> LesionShape:
    """The exact mask of a lesion on ``grid`` (``femur``: femur SDF on the grid; ``occupied``:
    voxels taken by earlier lesions)."""
    r = lp.radius_mm
    h = float(np.mean(grid.spacing))
    reach = max([r * max(lp.axes)] + [float(np.linalg.norm(lobe[:3])) + lobe[3] for lobe in lp.lobes])
    half = reach * (1 + 2 * lp.lobulation) * 1.4 + 2 * h + 2.0
    lo, hi = grid.box_around(np.asarray(lp.centre_world), half)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub = grid.crop(lo, hi)
    z, y, x = sub.axes()
    c = lp.centre_world
    d = tuple(np.asarray(a, dtype=F32)
              for a in (z[:, None, None] - c[0], y[None, :, None] - c[1], x[None, None, :] - c[2]))
    rot = np.asarray(lp.rotation)
    q = [(d[0] * rot[0, j] + d[1] * rot[1, j] + d[2] * rot[2, j]).astype(F32) for j in range(3)]
    q = [np.broadcast_to(a, sub.shape) for a in q]
    ell = (np.sqrt(sum((q[j] / F32(lp.axes[j])) ** 2 for j in range(3))) - 1.0) * F32(r)
    for lobe in lp.lobes:  # a multi-lobed ("geographic") outline
        off, radius = lobe[:3], lobe[3]
        ell = smin(ell, np.sqrt(sum((d[j] - F32(off[j])) ** 2 for j in range(3))) - F32(radius), 0.35 * r)
    waves = {k: np.asarray(v) for k, v in lp.waves.items()}
    rough = {k: np.asarray(v) for k, v in lp.roughness.items()}
    phi = ell - F32(r * lp.lobulation) * eval_plane_waves(waves, q) \
        - F32(r * 0.1 + 0.25) * eval_plane_waves(rough, q)
    allowed = (femur[box] < 0) & ~occupied[box]
    values = phi[allowed]
    voxel = float(np.prod(grid.spacing))
    target = max(int(round(lp.target_mm3 / voxel)), 1)
    mask = np.zeros(sub.shape, dtype=bool)
    if values.size:
        core = np.unravel_index(np.argmin(np.where(allowed, phi, np.inf)), sub.shape)
        k = min(target, values.size)
        for _ in range(5):
            level = np.partition(values, k - 1)[k - 1]
            candidate = allowed & (phi <= level)
            lab, _ = ndi.label(candidate, structure=_CROSS)
            mask = lab == lab[core]
            got = int(mask.sum())
            if got >= 0.93 * target or k >= values.size:
                break
            k = min(values.size, k + (target - got))
        phi = phi - F32(level)
    outside = femur[box] >= 0
    breaks = bool((mask & ndi.binary_dilation(outside, structure=_CROSS)).sum() >= 2)
    vol = float(mask.sum()) * voxel
    com = np.argwhere(mask).mean(axis=0) + np.asarray(lo) if mask.any() else np.asarray(lo, dtype=float)
    centre_world = np.asarray(grid.origin) + com * np.asarray(grid.spacing)
    info = {"index": lp.index, "region": lp.region, "centre_world": [float(v) for v in centre_world],
            "volume_mm3": vol, "target_mm3": float(lp.target_mm3), "breaks_cortex": breaks,
            "voxels": int(mask.sum())}
    return LesionShape(lp, box, phi.astype(F32), mask, vol, breaks, info)


def render_lesion(hu: np.ndarray, labels: np.ndarray, shape: LesionShape, femur: np.ndarray, grid: Grid,
                  tissues: dict[str, int]) -> None:
    """Replace bone by soft-tissue density inside the lesion (in place), with its margin effects."""
    if not shape.mask.any():
        return
    lp = shape.params
    box, phi, mask = shape.box, shape.phi, shape.mask
    h = float(np.mean(grid.spacing))
    rng = np.random.default_rng(np.random.SeedSequence([lp.seed, PHANTOM_LESION]))
    fem = femur[box]
    sub = hu[box]
    value = F32(lp.hu) + F32(lp.heterogeneity_hu) * smooth_noise(rng, phi.shape, 2.0 / h)
    if lp.necrosis_hu:
        value -= F32(lp.necrosis_hu) * smoothstep(-0.15 * lp.radius_mm, -0.6 * lp.radius_mm, phi)
    near = ndi.binary_dilation(mask, structure=_CROSS)
    weight = coverage(phi, h) * near * coverage(fem, h)
    if lp.rim_hu:  # a thin sclerotic rim in the surrounding cancellous bone
        rim = (phi > 0) & (phi < 2.0) & (fem < -2.0)
        sub += np.where(rim, F32(lp.rim_hu) * (1 - phi / F32(2.0)), F32(0))
    if lp.extraosseous and shape.breaks_cortex:  # a soft-tissue mass through the breach
        reach = int(np.ceil(0.35 * lp.radius_mm / h)) + 1
        grown = ndi.binary_dilation(mask, structure=_CROSS, iterations=reach)
        extra = grown & (fem >= 0) & (phi < 0.3 * lp.radius_mm) & (fem < 0.35 * lp.radius_mm + 1.0)
        ext_weight = np.where(extra, coverage(phi - F32(0.3 * lp.radius_mm), h), F32(0))
        weight = np.maximum(weight, ext_weight)
        labels[box][extra & (labels[box] != tissues["lesion"])] = tissues["lesion_extraosseous"]
    sub += weight * (value - sub)
    hu[box] = sub
    lab = labels[box]
    lab[mask] = tissues["lesion"]
    labels[box] = lab
