"""From anatomical fields to CT numbers: tissue HU with partial volume, then the scanner.

``render_anatomy`` composites tissues from the outside in (air, skin, fat, muscle with fat
planes, vessels, cartilage, pelvis, femur), each weighted by its voxel coverage so that thin
structures (a 1 mm cortex) keep their integrated density. It also returns the tissue label map
(``TISSUES``) used by tests and previews. ``apply_scanner`` adds the site's calibration and
noise, blurs with its point-spread function (which also gives the noise its grain), and rounds
to int16 HU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from ..seeds import PHANTOM_NOISE
from .anatomy import AnatomyFields, AnatomyParams
from .config import CentreProfile
from .fields import F32, Grid, bandpass_noise, chunks, coverage, smoothstep, upsample

TISSUES: dict[str, int] = {
    "air": 0, "skin": 1, "fat": 2, "muscle": 3, "vessel": 4, "cartilage": 5,
    "femur_cortical": 6, "femur_trabecular": 7, "femur_marrow": 8,
    "pelvis_cortical": 9, "pelvis_trabecular": 10, "lesion": 11, "lesion_extraosseous": 12,
}

# Plausible CT numbers (HU) of each tissue, as the tests check them (medians, clinical scanners).
HU_RANGES: dict[str, tuple[float, float]] = {
    "air": (-1024, -950), "fat": (-120, -60), "muscle": (30, 70), "femur_marrow": (-50, 50),
    "femur_trabecular": (150, 450), "femur_cortical": (1000, 1900), "lesion": (0, 90),
}

TRABECULAR_WAVELENGTH_MM = 3.2
TRABECULAR_CONTRAST = 0.8  # relative modulation of the bone fraction by the texture


@dataclass
class ScannerParams:
    """The scanner effects of one case (drawn from its centre's profile)."""

    centre: str
    spacing: tuple[float, float, float]
    noise_hu: float
    psf_fwhm_mm: tuple[float, float, float]
    hu_slope: float
    hu_offset: float
    cupping_hu: float
    noise_seed: int

    def as_dict(self) -> dict:
        return asdict(self)


def draw_scanner(rng: np.random.Generator, centre: str, profile: CentreProfile,
                 spacing: tuple[float, float, float]) -> ScannerParams:
    return ScannerParams(
        centre=centre,
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        noise_hu=float(profile.noise_hu * rng.uniform(0.85, 1.15)),
        psf_fwhm_mm=tuple(float(f * rng.uniform(0.95, 1.05)) for f in profile.psf_fwhm_mm),  # type: ignore[arg-type]
        hu_slope=float(profile.hu_slope * rng.uniform(0.99, 1.01)),
        hu_offset=float(profile.hu_offset + rng.normal(0, 3)),
        cupping_hu=float(rng.uniform(0, 8)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _lerp_into(out: np.ndarray, value, weight: np.ndarray) -> None:
    """out += weight * (value - out), in place."""
    delta = np.subtract(value, out, dtype=F32)
    delta *= weight
    out += delta


CHUNK_SLICES = 12  # slabs processed at a time: keeps temporaries in cache
TEXTURE_TILE = (112, 104, 96)  # voxels; periodic texture tiles (about 7-10 cm at 0.7-0.9 mm)


def bone_box(coarse: Grid, cf: AnatomyFields, grid: Grid) -> tuple[slice, slice, slice] | None:
    """Index box of ``grid`` holding the femur and pelvis (from the coarse fields), or None."""
    near = (cf.femur < 3.0) | (cf.pelvis < 3.0)
    if not near.any():
        return None
    idx = np.argwhere(near)
    axes = coarse.axes()
    step = np.asarray(coarse.spacing)
    lo_w = np.array([axes[k][idx[:, k].min()] for k in range(3)]) - step
    hi_w = np.array([axes[k][idx[:, k].max()] for k in range(3)]) + step
    lo = np.floor((lo_w - np.asarray(grid.origin)) / np.asarray(grid.spacing)).astype(int) - 2
    hi = np.ceil((hi_w - np.asarray(grid.origin)) / np.asarray(grid.spacing)).astype(int) + 3
    lo = np.clip(lo, 0, np.asarray(grid.shape))
    hi = np.clip(hi, 0, np.asarray(grid.shape))
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


@dataclass
class Rendered:
    """The ideal image and what later steps need from the anatomy."""

    hu: np.ndarray  # float32 ideal HU (no blur, no noise)
    labels: np.ndarray  # uint8 TISSUES
    femur: np.ndarray  # femur SDF in mm on the full grid (large outside the bone box)
    box: tuple[slice, slice, slice] | None


def render_anatomy(p: AnatomyParams, cf: AnatomyFields, coarse: Grid, grid: Grid, rng: np.random.Generator,
                   outside_mm: float = 1.0e3) -> Rendered:
    """Ideal (noise-free, unblurred) HU and the tissue label map on ``grid``.

    ``cf`` holds the anatomical fields on ``coarse``; they are upsampled slab by slab (soft
    tissue everywhere, bone fields only in the box around the bones).
    """
    hu = np.empty(grid.shape, dtype=F32)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    for zs, g in chunks(grid, CHUNK_SLICES):
        fields = {k: upsample(getattr(cf, k), coarse, g) for k in AnatomyFields.SOFT}
        hu[zs] = _soft_tissue(p, fields, labels[zs], float(np.mean(grid.spacing)))
    femur = np.full(grid.shape, F32(outside_mm), dtype=F32)
    box = bone_box(coarse, cf, grid)
    if box is None:
        return Rendered(hu, labels, femur, None)
    bgrid = grid.crop(tuple(b.start for b in box), tuple(b.stop for b in box))  # type: ignore[arg-type]
    # Trabecular texture: two periodic tiles of band-passed noise (grain along the shaft's
    # compressive lines and along the neck), repeated over the bone box with a random phase.
    wavelength = max(TRABECULAR_WAVELENGTH_MM, 2.4 * max(grid.spacing))
    compressive = p.to_world_vector(np.array([0.35, 0.05, 1.0]))
    neck = p.to_world_vector(p.landmarks()["neck_dir"])
    tile_shape = tuple(min(n, t) for n, t in zip(bgrid.shape, TEXTURE_TILE))
    tiles = bandpass_noise(rng, tile_shape, grid.spacing, wavelength, [compressive, neck], stretch=2.2)
    phase = [int(rng.integers(0, t)) for t in tile_shape]
    iy = (np.arange(bgrid.shape[1]) + phase[1]) % tile_shape[1]
    ix = (np.arange(bgrid.shape[2]) + phase[2]) % tile_shape[2]
    hub, lab, fem = hu[box], labels[box], femur[box]
    for zs, g in chunks(bgrid, CHUNK_SLICES):
        fields = {k: upsample(getattr(cf, k), coarse, g) for k in AnatomyFields.BONE}
        iz = (np.arange(zs.start, zs.stop) + phase[0]) % tile_shape[0]
        n_vert, n_neck = (t[np.ix_(iz, iy, ix)] for t in tiles)
        _bone(p, fields, n_vert, n_neck, hub[zs], lab[zs], float(np.mean(grid.spacing)))
        fem[zs] = fields["femur"]
    return Rendered(hu, labels, femur, box)


def _soft_tissue(p: AnatomyParams, f: dict[str, np.ndarray], labels: np.ndarray, h: float) -> np.ndarray:
    hu_t = p.hu
    hu = np.full(f["body"].shape, -1000.0, dtype=F32)
    _lerp_into(hu, F32(hu_t["skin"]), coverage(f["body"], h))
    labels[f["body"] < 0] = TISSUES["skin"]
    sub = f["body"] + F32(p.body["skin_mm"])
    fat_hu = F32(hu_t["fat"]) + F32(4.0) * np.tanh(f["muscle_offset"] / F32(6.0))  # slight variation
    _lerp_into(hu, fat_hu, coverage(sub, h))
    labels[sub < 0] = TISSUES["fat"]
    # muscles separated by fat planes; vessels and nerve in fat
    muscle = F32(hu_t["muscle"]) + f["muscle_offset"]
    _lerp_into(muscle, fat_hu, coverage(f["planes"], h))
    _lerp_into(muscle, F32(hu_t["vessel"]), coverage(f["vessels"], h))
    _lerp_into(hu, muscle, coverage(f["fascia"], h))
    in_fascia = f["fascia"] < 0
    labels[in_fascia] = TISSUES["muscle"]
    labels[in_fascia & (f["planes"] < 0)] = TISSUES["fat"]
    labels[in_fascia & (f["vessels"] < 0)] = TISSUES["vessel"]
    return hu


def _bone(p: AnatomyParams, f: dict[str, np.ndarray], n_vert: np.ndarray, n_neck: np.ndarray, hu: np.ndarray,
          labels: np.ndarray, h: float) -> None:
    """Composite cartilage, pelvis and femur into ``hu`` and ``labels`` (views of one slab)."""
    hu_t = p.hu
    g = f["grain"]
    grain = (n_vert * (1 - g) + n_neck * g) / np.sqrt((1 - g) ** 2 + g ** 2)
    # cartilage in the joint space
    joint = f["joint"]
    if (joint < h).any():
        _lerp_into(hu, F32(hu_t["cartilage"]), coverage(joint, h))
        labels[joint < 0] = TISSUES["cartilage"]
    # pelvis: thin cortex, cancellous bone without a preferred grain
    pel = f["pelvis"]
    if (pel < h).any():
        t_p = F32(p.cortex_mm["pelvis"]) * (1 + F32(0.15) * n_neck)
        tb = np.clip(F32(0.26 * p.bmd) * (1 + F32(TRABECULAR_CONTRAST) * n_vert), 0, 1)
        marrow = F32(hu_t["marrow_red"])
        canc = marrow + tb * F32(hu_t["trabecular_tissue"] - hu_t["marrow_red"])
        cort = F32(hu_t["cortical"] * 0.93)
        bone = cort + coverage(pel + t_p, h) * (canc - cort)
        _lerp_into(hu, bone, coverage(pel, h))
        labels[pel < 0] = TISSUES["pelvis_cortical"]
        labels[pel + t_p < 0] = TISSUES["pelvis_trabecular"]
    # femur: cortex of varying thickness with an irregular endosteal border, oriented trabeculae
    fem = f["femur"]
    if (fem < h).any():
        t_f = f["cortex"] * (1 + F32(0.18) * grain)
        tb = np.clip(f["density"] * (1 + F32(TRABECULAR_CONTRAST) * grain), 0, 1)
        marrow = f["marrow"]
        canc = marrow + tb * (F32(hu_t["trabecular_tissue"]) - marrow)
        cort = F32(hu_t["cortical"]) * (1 - F32(0.03) * np.abs(n_neck))
        bone = cort + coverage(fem + t_f, h) * (canc - cort)
        _lerp_into(hu, bone, coverage(fem, h))
        inside = fem < 0
        labels[inside] = TISSUES["femur_cortical"]
        cancellous = inside & (fem + t_f < 0)
        labels[cancellous & (f["density"] >= 0.1)] = TISSUES["femur_trabecular"]
        labels[cancellous & (f["density"] < 0.1)] = TISSUES["femur_marrow"]


def apply_scanner(hu: np.ndarray, body: np.ndarray, coarse: Grid, grid: Grid, s: ScannerParams) -> np.ndarray:
    """Calibration, cupping, noise and PSF blur; int16 HU clipped to [-1024, 3071].

    The noise is added before the blur, so the reconstruction kernel shapes both the edges and
    the noise grain (as in CT); its level after the blur is ``noise_hu``, up to 30% higher in
    deep tissue. ``body`` is the skin SDF on ``coarse``. ``hu`` is used as scratch space.
    """
    rng = np.random.default_rng(np.random.SeedSequence([s.noise_seed, PHANTOM_NOISE]))
    sigma = tuple(f / 2.3548 / sp for f, sp in zip(s.psf_fwhm_mm, s.spacing))
    gain = F32(s.noise_hu / _kernel_norm(sigma))
    for zs, g in chunks(grid, CHUNK_SLICES):
        depth = -upsample(body, coarse, g)
        slab = hu[zs]
        slab *= F32(s.hu_slope)
        slab += F32(s.hu_offset)
        slab -= F32(s.cupping_hu) * smoothstep(0.0, 90.0, depth)
        noise = rng.standard_normal(slab.shape, dtype=F32)
        noise *= gain * (F32(0.85) + F32(0.3) * smoothstep(10.0, 80.0, depth))
        slab += noise
    blurred = ndi.gaussian_filter(hu, sigma, truncate=3.0, mode="nearest")
    np.clip(blurred, -1024, 3071, out=blurred)
    return np.rint(blurred).astype(np.int16)


def _kernel_norm(sigma: tuple[float, float, float]) -> float:
    """L2 norm of the Gaussian kernel: the std of white noise after filtering with it."""
    size = [2 * int(np.ceil(3 * s)) + 1 for s in sigma]
    delta = np.zeros(size, dtype=np.float64)
    delta[tuple(n // 2 for n in size)] = 1.0
    k = ndi.gaussian_filter(delta, sigma, truncate=3.0, mode="constant")
    return float(np.sqrt((k * k).sum()))
