"""Random lesion transforms (paper, section 2.3.1): draw the parameters, then apply them.

The chain, in the paper's order:

1. **ellipsoid crop**: the lesion mask is intersected with a random ellipsoid (centre near the
   lesion's centroid, random orientation, semi-axes a random fraction of the lesion's radius),
   "mimicking a realistic lesion shape" and giving new shapes from one lesion;
2. **rotation** about the three axes (z, y, x) and **scaling** (one log-uniform factor, times a
   small per-axis anisotropy), applied together as one affine resampling in millimetres, about
   the lesion's centroid; intensities with linear interpolation, the mask by linear
   interpolation of its indicator thresholded at 0.5;
3. **edge smoothing by a mean filter**: the blending weight of the lesion is the mean filter
   (box of ``edge_filter_size`` voxels) of its mask, so the pasted lesion fades over the filter
   width, symmetrically about the label's boundary (applied at composition, see
   :mod:`metsynth.synthesis.compose`, because the final label is only known after placement);
4. **Gaussian noise** added to the lesion intensities.

Everything random is drawn by :func:`draw_params` into a :class:`LesionTransformParams`
(JSON-serializable, stored in each sidecar); :func:`apply_transform` is deterministic, so a
sidecar's parameters replay the lesion exactly.

Units: geometric ranges are relative to the lesion (fractions of its radius, scale factors) or
in degrees, so they do not depend on the voxel size. The noise standard deviation is, by default,
*relative to the donor lesion's own intensity standard deviation* inside its mask (a robust
estimate, 1.4826 x the median absolute deviation; ``noise_reference="lesion_std"``), which is meaningful
whatever the intensity units of the
cohort (HU, [-1, 1]-standardized, z-scores). With ``noise_reference="absolute"`` it is in the
cohort's intensity units; for a prepared cohort with ``hu_window = (lo, hi)`` a value of ``h``
HU is ``2 * h / (hi - lo)`` standardized units (see :func:`hu_to_units`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from ..boxes import index_box
from ..config import Settings
from .edges import edge_pad, fill_from_interior

__all__ = [
    "LesionTransformParams",
    "TransformConfig",
    "TransformedLesion",
    "apply_transform",
    "blend_margin",
    "draw_params",
    "hu_to_units",
    "rotation_matrix",
]


def _check_range(name: str, value: tuple[float, float], low: float | None = None, high: float | None = None,
                 open_low: bool = False) -> tuple[float, float]:
    lo, hi = float(value[0]), float(value[1])
    if lo > hi:
        raise ValueError(f"{name}: the lower bound {lo:g} is above the upper bound {hi:g}; write [low, high]")
    if low is not None and (lo < low or (open_low and lo <= low)):
        bound = ">" if open_low else ">="
        raise ValueError(f"{name}: values must be {bound} {low:g}, got {lo:g}")
    if high is not None and hi > high:
        raise ValueError(f"{name}: values must be <= {high:g}, got {hi:g}")
    return lo, hi


class TransformConfig(Settings):
    """Ranges of the random lesion transforms. Defaults: plausible variations of real lesions."""

    ellipsoid_probability: float = Field(
        1.0, ge=0, le=1, description="Probability of the random ellipsoid crop (paper: always).")
    ellipsoid_axes: tuple[float, float] = Field(
        (0.7, 1.3), description="Range of the ellipsoid's semi-axes, as fractions of the lesion radius "
        "(largest distance from the centroid to a lesion voxel); each axis drawn uniformly.")
    ellipsoid_offset: float = Field(
        0.25, ge=0, le=1, description="Largest distance of the ellipsoid centre from the lesion centroid, "
        "as a fraction of the lesion radius (uniform in the ball).")
    rotation_deg: tuple[float, float] = Field(
        (-180.0, 180.0), description="Range of each of the three rotation angles (about z, y, x), degrees.")
    scale: tuple[float, float] = Field(
        (0.8, 1.25), description="Range of the isotropic scale factor (drawn log-uniformly).")
    anisotropy: float = Field(
        0.1, ge=0, lt=1, description="Per-axis scale jitter: each axis' scale is multiplied by U(1-a, 1+a).")
    edge_filter_size: tuple[int, int] = Field(
        (3, 5), description="Range of the mean-filter box size (odd, voxels) that smooths the lesion's "
        "edge; one odd size drawn uniformly in the range (1 = hard edge).")
    noise_std: tuple[float, float] = Field(
        (0.1, 0.4), description="Range of the Gaussian noise standard deviation, in the unit set by "
        "noise_reference.")
    edge_model: Literal["mean_filter", "donor"] = Field(
        "mean_filter", description="How the pasted lesion meets the bone. 'mean_filter' (paper): the blending "
        "weight is the mean filter (edge_filter_size) of the label, and the donor's values are carried up to "
        "its mask's boundary. 'donor': the donor's boundary voxels are replaced by its interior values and the "
        "weight is the label blurred by the Gaussian that reproduces the donor's own edge (measured on the bank "
        "patch; metsynth.synthesis.edges), so the edge is as sharp as the scanner made it.")
    noise_reference: Literal["lesion_std", "absolute"] = Field(
        "lesion_std", description="'lesion_std': noise_std is a fraction of the donor lesion's robust intensity "
        "standard deviation (1.4826 x MAD inside its mask; unit-free); 'absolute': noise_std is in the cohort's "
        "intensity units.")

    @field_validator("ellipsoid_axes")
    @classmethod
    def _axes(cls, v):
        return _check_range("ellipsoid_axes", v, low=0.0, open_low=True)

    @field_validator("rotation_deg")
    @classmethod
    def _rotation(cls, v):
        return _check_range("rotation_deg", v, low=-360.0, high=360.0)

    @field_validator("scale")
    @classmethod
    def _scale(cls, v):
        return _check_range("scale", v, low=0.0, open_low=True)

    @field_validator("noise_std")
    @classmethod
    def _noise(cls, v):
        return _check_range("noise_std", v, low=0.0)

    @field_validator("edge_filter_size")
    @classmethod
    def _filter(cls, v):
        lo, hi = int(v[0]), int(v[1])
        if lo < 1 or lo > hi:
            raise ValueError(f"edge_filter_size: need 1 <= low <= high, got [{lo}, {hi}]")
        if not any(k % 2 for k in range(lo, hi + 1)):
            raise ValueError(f"edge_filter_size: the range [{lo}, {hi}] holds no odd size; use e.g. [3, 5]")
        return lo, hi


@dataclass(frozen=True)
class LesionTransformParams:
    """Every value drawn for one lesion transform (all plain floats/ints: JSON-ready)."""

    ellipsoid: bool
    ellipsoid_offset_mm: tuple[float, float, float]  # ellipsoid centre - lesion centroid, (z, y, x)
    ellipsoid_semi_axes_mm: tuple[float, float, float]
    ellipsoid_angles_deg: tuple[float, float, float]  # orientation of the ellipsoid, about z, y, x
    rotation_deg: tuple[float, float, float]  # about z, y, x
    scale: float
    anisotropy: tuple[float, float, float]  # per-axis factor on the scale, (z, y, x)
    edge_filter_size: int
    noise_std: float  # as drawn, in the unit of ``noise_reference``
    noise_sigma: float  # resolved, in the cohort's intensity units
    noise_seed: int
    edge_sigma_mm: float | None = None  # edge_model "donor": Gaussian edge width measured on the donor

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LesionTransformParams":
        fields = dict(data)
        for key in ("ellipsoid_offset_mm", "ellipsoid_semi_axes_mm", "ellipsoid_angles_deg", "rotation_deg",
                    "anisotropy"):
            fields[key] = tuple(float(x) for x in fields[key])
        return cls(**fields)


def draw_params(rng: np.random.Generator, config: TransformConfig, lesion: Any) -> LesionTransformParams:
    """Draw one transform for a lesion.

    ``lesion`` is a bank entry (any object with ``radius_mm`` and ``intensity_robust_std``).
    The draws happen in a fixed order, so the same generator state gives the same parameters.
    """
    radius = float(lesion.radius_mm)
    use_ellipsoid = bool(rng.random() < config.ellipsoid_probability)
    direction = rng.standard_normal(3)
    direction /= max(float(np.linalg.norm(direction)), 1e-12)
    distance = config.ellipsoid_offset * radius * float(rng.random()) ** (1.0 / 3.0)
    offset = tuple(float(x) for x in direction * distance)
    axes = tuple(float(x) * radius for x in rng.uniform(*config.ellipsoid_axes, size=3))
    ell_angles = tuple(float(x) for x in rng.uniform(-180.0, 180.0, size=3))
    rotation = tuple(float(x) for x in rng.uniform(*config.rotation_deg, size=3))
    lo, hi = config.scale
    scale = float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else float(lo)
    aniso = tuple(float(x) for x in rng.uniform(1 - config.anisotropy, 1 + config.anisotropy, size=3))
    sizes = [k for k in range(config.edge_filter_size[0], config.edge_filter_size[1] + 1) if k % 2]
    filter_size = int(sizes[int(rng.integers(len(sizes)))])
    noise_std = float(rng.uniform(*config.noise_std))
    if config.noise_reference == "lesion_std":
        sigma = noise_std * float(lesion.intensity_robust_std)
    else:
        sigma = noise_std
    noise_seed = int(rng.integers(0, 2**63 - 1))
    return LesionTransformParams(
        ellipsoid=use_ellipsoid,
        ellipsoid_offset_mm=offset,  # type: ignore[arg-type]
        ellipsoid_semi_axes_mm=axes,  # type: ignore[arg-type]
        ellipsoid_angles_deg=ell_angles,  # type: ignore[arg-type]
        rotation_deg=rotation,  # type: ignore[arg-type]
        scale=scale,
        anisotropy=aniso,  # type: ignore[arg-type]
        edge_filter_size=filter_size,
        noise_std=noise_std,
        noise_sigma=float(sigma),
        noise_seed=noise_seed,
    )


def rotation_matrix(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """Rotation in (z, y, x) coordinates: about z, then y, then x (``Rz @ Ry @ Rx``)."""
    az, ay, ax = (math.radians(a) for a in angles_deg)
    cz, sz, cy, sy, cx, sx = math.cos(az), math.sin(az), math.cos(ay), math.sin(ay), math.cos(ax), math.sin(ax)
    # coordinates ordered (z, y, x): a rotation "about z" turns the (y, x) plane, etc.
    rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class TransformedLesion:
    """A transformed lesion on its own small grid (same spacing as the source).

    ``values``: lesion intensities (noise added) everywhere on the patch; outside the mask they
    continue the nearest lesion value, so the blending at the edge mixes lesion into healthy
    tissue only. ``mask``: the lesion's label. ``anchor``: index (z, y, x) of the mask's
    centroid in the patch (the point that placement puts on the chosen position). The patch has
    at least ``blend_margin(params) + 1`` empty voxels around the mask.
    """

    values: np.ndarray
    mask: np.ndarray
    anchor: tuple[int, int, int]

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())


def apply_transform(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float],
                    params: LesionTransformParams) -> TransformedLesion:
    """Apply drawn parameters to a bank patch (``image``, ``mask`` on the same grid).

    Deterministic. Returns an empty lesion (``voxels == 0``) when the ellipsoid crop or the
    scaling leave nothing; callers record that as a dropped attempt.
    """
    from scipy import ndimage

    sp = np.asarray(spacing, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    pad = blend_margin(params, spacing) + 1
    if not mask.any():
        return _empty(pad)
    if params.edge_sigma_mm is not None:  # edge_model "donor": carry the donor's interior, not its edge
        image = fill_from_interior(image, mask)
    idx = np.argwhere(mask)
    centroid = idx.mean(axis=0)

    # 1. ellipsoid crop (evaluated on the mask's voxels only)
    if params.ellipsoid:
        rel_mm = (idx - centroid) * sp - np.asarray(params.ellipsoid_offset_mm)
        local = rel_mm @ rotation_matrix(params.ellipsoid_angles_deg)  # world -> ellipsoid frame
        inside = np.sum((local / np.asarray(params.ellipsoid_semi_axes_mm)) ** 2, axis=1) <= 1.0
        cropped = np.zeros_like(mask)
        kept = idx[inside]
        cropped[tuple(kept.T)] = True
        mask, idx = cropped, kept
        if idx.size == 0:
            return _empty(pad)
    lo, hi = index_box(idx, mask.shape, 1)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    src_img = np.asarray(image[box], dtype=np.float32)
    src_mask = mask[box].astype(np.float32)
    c_in = idx.mean(axis=0) - lo  # centroid of the cropped lesion, in the box

    # 2. rotation + scaling about the centroid, in mm: x_out = A (x_in - c_in)
    scales = params.scale * np.asarray(params.anisotropy)
    a_mm = rotation_matrix(params.rotation_deg) @ np.diag(scales)
    corners = np.array([[z, y, x] for z in (0, hi[0] - lo[0] - 1) for y in (0, hi[1] - lo[1] - 1)
                        for x in (0, hi[2] - lo[2] - 1)], dtype=np.float64)
    out_mm = ((corners - c_in) * sp) @ a_mm.T
    out_lo = out_mm.min(axis=0) / sp
    out_hi = out_mm.max(axis=0) / sp
    c_out = np.floor(-out_lo) + pad + 1  # integer index of the centroid in the output
    shape = tuple(int(s) for s in np.ceil(out_hi).astype(int) + c_out.astype(int) + pad + 2)
    # index space: in = c_in + S^-1 A^-1 S (out - c_out)
    matrix = np.diag(1 / sp) @ np.linalg.inv(a_mm) @ np.diag(sp)
    offset = c_in - matrix @ c_out
    values = ndimage.affine_transform(src_img, matrix, offset, output_shape=shape, order=1, mode="nearest")
    soft = ndimage.affine_transform(src_mask, matrix, offset, output_shape=shape, order=1, mode="constant",
                                    cval=0.0)
    out_mask = soft >= 0.5
    if not out_mask.any():
        return _empty(pad)

    # trim to the mask plus the padding
    where = np.argwhere(out_mask)
    t_lo = np.maximum(where.min(axis=0) - pad, 0)
    t_hi = where.max(axis=0) + pad + 1
    pad_before = np.maximum(pad - where.min(axis=0), 0)  # should be 0 by construction
    trim = tuple(slice(a, b) for a, b in zip(t_lo, t_hi))
    values, out_mask = values[trim], out_mask[trim]
    if np.any(pad_before) or np.any(t_hi > np.asarray(shape)):
        width = [(int(b), int(max(e - s, 0))) for b, e, s in zip(pad_before, t_hi, shape)]
        values = np.pad(values, width, mode="edge")
        out_mask = np.pad(out_mask, width)

    # outside the mask, continue the nearest lesion value (so edge blending adds lesion only)
    nearest = ndimage.distance_transform_edt(~out_mask, return_distances=False, return_indices=True)
    values = values[tuple(nearest)]

    # 4. Gaussian noise
    if params.noise_sigma > 0:
        noise = np.random.default_rng(params.noise_seed).standard_normal(values.shape, dtype=np.float32)
        values = values + np.float32(params.noise_sigma) * noise
    anchor = tuple(int(round(c)) for c in np.argwhere(out_mask).mean(axis=0))
    return TransformedLesion(values.astype(np.float32), out_mask.astype(np.uint8), anchor)  # type: ignore[arg-type]


def blend_margin(params: LesionTransformParams, spacing: tuple[float, float, float]) -> int:
    """How many voxels beyond the label the blending of a lesion drawn with ``params`` reaches."""
    if params.edge_sigma_mm is not None:
        return edge_pad(params.edge_sigma_mm, spacing)
    return params.edge_filter_size // 2


def _empty(pad: int) -> TransformedLesion:
    n = 2 * pad + 1
    return TransformedLesion(np.zeros((n, n, n), np.float32), np.zeros((n, n, n), np.uint8), (pad, pad, pad))


def hu_to_units(hu: float, hu_window: tuple[float, float] | None) -> float:
    """A HU *difference* (e.g. a noise sigma) in a prepared cohort's standardized units.

    Prepared images map ``hu_window = (lo, hi)`` linearly to [-1, 1] (``x' = 2 (x - lo) /
    (hi - lo) - 1``), so a difference of ``h`` HU is ``2 h / (hi - lo)``. Without a window the
    cohort is taken to be in HU already.
    """
    if hu_window is None:
        return float(hu)
    lo, hi = hu_window
    return 2.0 * float(hu) / (float(hi) - float(lo))
