"""Numerical building blocks: grids, separable upsampling, signed distances, noise fields.

Signed distance functions (SDF) are negative inside. All fields are float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

F32 = np.float32


@dataclass(frozen=True)
class Grid:
    """An axis-aligned voxel grid in world mm (identity direction), everything (z, y, x)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinate of the voxel centres along each axis."""
        return tuple(  # type: ignore[return-value]
            (o + s * np.arange(n)).astype(np.float64) for n, s, o in zip(self.shape, self.spacing, self.origin)
        )

    def crop(self, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> "Grid":
        shape = tuple(int(h - low) for low, h in zip(lo, hi))
        origin = tuple(o + s * low for o, s, low in zip(self.origin, self.spacing, lo))
        return Grid(shape, self.spacing, origin)  # type: ignore[arg-type]

    def box_around(self, centre_world: np.ndarray, half_mm: float | np.ndarray
                   ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Index bounds (lo, hi) of the sub-box of this grid within ``half_mm`` of a point (clipped)."""
        c = (np.asarray(centre_world) - np.asarray(self.origin)) / np.asarray(self.spacing)
        h = np.asarray(half_mm) / np.asarray(self.spacing)
        lo = np.clip(np.floor(c - h).astype(int), 0, np.asarray(self.shape))
        hi = np.clip(np.ceil(c + h).astype(int) + 1, 0, np.asarray(self.shape))
        return tuple(int(v) for v in lo), tuple(int(v) for v in hi)


def coarse_grid(fine: Grid, resolution_mm: float) -> Grid:
    """A grid of about ``resolution_mm`` covering ``fine`` (one extra node beyond each side)."""
    spacing, shape, origin = [], [], []
    for n, s, o in zip(fine.shape, fine.spacing, fine.origin):
        if resolution_mm <= s * 1.2:  # no gain: compute on the fine axis itself
            spacing.append(s)
            shape.append(n)
            origin.append(o)
            continue
        extent = (n - 1) * s
        m = int(np.ceil(extent / resolution_mm)) + 3
        step = resolution_mm
        spacing.append(step)
        shape.append(m)
        origin.append(o - step)
    return Grid(tuple(shape), tuple(spacing), tuple(origin))  # type: ignore[arg-type]


def _linear_weights(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each dst coordinate: index of the left source node and the weight of the right one."""
    if src.size == dst.size and np.allclose(src, dst):
        return np.arange(dst.size), np.zeros(dst.size, dtype=F32)
    pos = (dst - src[0]) / (src[1] - src[0]) if src.size > 1 else np.zeros_like(dst)
    idx = np.clip(np.floor(pos).astype(np.int64), 0, max(src.size - 2, 0))
    w = np.clip(pos - idx, 0.0, 1.0).astype(F32)
    return idx, w


def upsample(field: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """Separable linear interpolation of a field from grid ``src`` onto grid ``dst`` (float32).

    Only the part of ``field`` that ``dst`` needs is touched, so a small ``dst`` (a slab, a
    box) costs little however large ``src`` is. Outside ``src`` the edge values are repeated.
    """
    out = np.asarray(field, dtype=F32)
    src_axes, dst_axes = src.axes(), dst.axes()
    plans = [_linear_weights(src_axes[a], dst_axes[a]) for a in range(3)]
    # crop the source to the nodes dst needs
    crop = []
    for a, (idx, _) in enumerate(plans):
        lo, hi = int(idx.min()), min(int(idx.max()) + 2, src.shape[a])
        crop.append(slice(lo, hi))
    out = out[tuple(crop)]
    plans = [(idx - c.start, w) for (idx, w), c in zip(plans, crop)]
    for axis in (2, 1, 0):  # the cheap axes first: the array grows to full size at the end
        idx, w = plans[axis]
        n_src = out.shape[axis]
        if n_src == idx.size and not np.any(w) and np.array_equal(idx, np.arange(idx.size)):
            continue
        nxt = np.minimum(idx + 1, n_src - 1)
        if axis == 0:  # slice by slice: cache-friendly, no full-size temporaries
            res = np.empty((idx.size,) + out.shape[1:], dtype=F32)
            for k in range(idx.size):
                a = out[idx[k]]
                if w[k] == 0:
                    res[k] = a
                else:
                    np.subtract(out[nxt[k]], a, out=res[k])
                    res[k] *= w[k]
                    res[k] += a
            out = res
        else:
            a = np.take(out, idx, axis=axis)
            b = np.take(out, nxt, axis=axis)
            shape = [1, 1, 1]
            shape[axis] = -1
            b -= a
            b *= w.reshape(shape)
            a += b
            out = a
    return np.ascontiguousarray(out, dtype=F32)


def chunks(grid: Grid, size: int):
    """Slabs of ``size`` slices along z: yields (slice, sub-grid)."""
    for z0 in range(0, grid.shape[0], size):
        z1 = min(z0 + size, grid.shape[0])
        yield slice(z0, z1), grid.crop((z0, 0, 0), (z1, grid.shape[1], grid.shape[2]))


# ---------------------------------------------------------------- signed distances
def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (smooth union of two SDFs with blend radius ``k`` mm)."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.clip(k - np.abs(a - b), 0.0, None) / k
    return np.minimum(a, b) - h * h * (k * 0.25)


def smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth maximum (smooth intersection / subtraction)."""
    return -smin(-a, -b, k)


def sphere(p: tuple[np.ndarray, ...], centre: np.ndarray, radius: float) -> np.ndarray:
    d = [p[i] - centre[i] for i in range(3)]
    return np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) - F32(radius)


def ellipsoid(p: tuple[np.ndarray, ...], centre: np.ndarray, semi_axes: np.ndarray,
              rotation: np.ndarray | None = None) -> np.ndarray:
    """Approximate SDF of an ellipsoid (exact on the surface; ``rotation`` columns = its axes)."""
    d = [p[i] - centre[i] for i in range(3)]
    if rotation is not None:
        d = [d[0] * rotation[0, j] + d[1] * rotation[1, j] + d[2] * rotation[2, j] for j in range(3)]
    q = [d[j] / semi_axes[j] for j in range(3)]
    k = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2])
    return (k - 1.0) * F32(np.min(semi_axes))


def capsule(p: tuple[np.ndarray, ...], a: np.ndarray, b: np.ndarray, radius_a: float, radius_b: float | None = None,
            profile=None) -> tuple[np.ndarray, np.ndarray]:
    """SDF of a (tapered) capsule from ``a`` to ``b``; also returns the axial parameter t in [0, 1].

    ``profile(t)``, if given, returns the radius along the axis (overrides the linear taper).
    """
    ab = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    L2 = float(ab @ ab)
    d = [p[i] - F32(a[i]) for i in range(3)]
    t = np.clip((d[0] * F32(ab[0]) + d[1] * F32(ab[1]) + d[2] * F32(ab[2])) / F32(L2), 0.0, 1.0)
    q = [d[i] - t * F32(ab[i]) for i in range(3)]
    dist = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2])
    if profile is not None:
        r = profile(t)
    else:
        rb = radius_a if radius_b is None else radius_b
        r = F32(radius_a) + (F32(rb) - F32(radius_a)) * t
    return dist - r, t


def coverage(phi: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Fraction of a voxel inside the surface ``phi = 0`` (a linear ramp one voxel wide)."""
    out = np.multiply(phi, F32(-1.0 / voxel_mm), dtype=F32)
    out += F32(0.5)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def normalize_distance(phi: np.ndarray, spacing: tuple[float, float, float], floor: float = 0.35) -> np.ndarray:
    """Divide an approximate SDF by its gradient norm, so that it measures mm near the surface."""
    g = np.gradient(phi, *spacing)
    norm = np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2)
    return (phi / np.maximum(norm, floor)).astype(F32)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# ---------------------------------------------------------------- noise
def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...],
                 sigma_vox: float | tuple[float, ...]) -> np.ndarray:
    """Gaussian-filtered white noise, rescaled to zero mean and unit standard deviation.

    Large correlation lengths are made on a subsampled grid and interpolated (same look, a
    fraction of the cost).
    """
    sigma = np.broadcast_to(np.asarray(sigma_vox, dtype=np.float64), (len(shape),))
    factor = np.maximum(np.floor(sigma / 3.0), 1).astype(int)  # >= 3 nodes per sigma: no visible kinks
    small = tuple(int(np.ceil(n / f)) + 2 if f > 1 else n for n, f in zip(shape, factor))
    n = rng.standard_normal(small, dtype=F32)
    n = ndi.gaussian_filter(n, tuple(sigma / factor), mode="wrap")
    if np.any(factor > 1):
        src = Grid(small, tuple(float(f) for f in factor), (0.0, 0.0, 0.0))  # type: ignore[arg-type]
        n = upsample(n, src, Grid(tuple(shape), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))  # type: ignore[arg-type]
    n -= n.mean()
    sd = float(n.std())
    return (n / (sd if sd > 0 else 1.0)).astype(F32)


def bandpass_noise(rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                   wavelength_mm: float, directions: list[np.ndarray | None],
                   stretch: float = 2.5) -> list[np.ndarray]:
    """Band-passed Gaussian noise from one white-noise draw, filtered once per direction.

    The result is periodic over ``shape`` (it can be tiled without seams).

    A direction elongates the structures along it by ``stretch`` (a trabecular grain); ``None``
    gives isotropic noise. The outputs share their white noise, so blending them is seamless.
    Each output has zero mean and unit standard deviation.
    """
    fast = tuple(int(n) for n in shape)  # no padding: the result is exactly periodic (tileable)
    white = rng.standard_normal(fast, dtype=F32)
    spec = sfft.rfftn(white, workers=1)
    del white
    kz = sfft.fftfreq(fast[0], spacing[0]).astype(F32)[:, None, None]
    ky = sfft.fftfreq(fast[1], spacing[1]).astype(F32)[None, :, None]
    kx = sfft.rfftfreq(fast[2], spacing[2]).astype(F32)[None, None, :]
    k2 = kz * kz + ky * ky + kx * kx
    k0 = 1.0 / wavelength_mm
    outs = []
    for direction in directions:
        if direction is None:
            ke2 = k2
        else:
            d = np.asarray(direction, dtype=np.float64)
            d = d / np.linalg.norm(d)
            kp = kz * F32(d[0]) + ky * F32(d[1]) + kx * F32(d[2])
            ke2 = k2 + (F32(stretch * stretch) - 1.0) * kp * kp
        # A smooth band around k0: (k/k0)^2 exp(1 - (k/k0)^2), peak 1 at k = k0.
        r2 = ke2 / F32(k0 * k0)
        filt = r2 * np.exp(1.0 - r2)
        field = sfft.irfftn(spec * filt, s=fast, workers=1)
        field = field - field.mean()
        sd = float(field.std())
        outs.append((field / (sd if sd > 0 else 1.0)).astype(F32))
    return outs


def plane_waves(rng: np.random.Generator, n: int, wavelength_mm: tuple[float, float]) -> dict[str, np.ndarray]:
    """Parameters of a sum of random plane waves (a cheap smooth random function of position)."""
    dirs = rng.standard_normal((n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    lam = rng.uniform(*wavelength_mm, size=n)
    return {"k": dirs * (2 * np.pi / lam)[:, None], "phase": rng.uniform(0, 2 * np.pi, n),
            "amp": rng.uniform(0.5, 1.0, n) / np.sqrt(n / 2)}


def eval_plane_waves(waves: dict[str, np.ndarray], p: tuple[np.ndarray, ...]) -> np.ndarray:
    out = np.zeros(np.broadcast_shapes(*(x.shape for x in p)), dtype=F32)
    for k, ph, a in zip(waves["k"], waves["phase"], waves["amp"]):
        out += F32(a) * np.cos(p[0] * F32(k[0]) + p[1] * F32(k[1]) + p[2] * F32(k[2]) + F32(ph))
    return out
