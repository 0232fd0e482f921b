"""The femoral head (step 3 of the method, :mod:`metsynth.bone`).

Where a femur's bone touches other bone, the head is fitted as the sphere whose surface is the
most distinct dark seam against bone on both sides (starts from a Hough vote for sphere centres
and from the deepest points of the bone; grid searches of centre and radius). Its ball becomes
femur marker and a 10 mm shell outside it, on the acetabulum's side, other-bone marker, so the
split follows the joint even where 3 mm voxels blur it.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..boxes import index_box
from ..volume import Volume
from .config import FemurSegConfig
from .grid import _WorkGrid

log = logging.getLogger(__name__)


@dataclass
class _Head:
    centre: np.ndarray  # world (z, y, x), mm
    radius: float  # mm
    contrast: float  # mean seam contrast, HU


def _fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * i / n)
    azimuth = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(polar), np.sin(polar) * np.sin(azimuth), np.sin(polar) * np.cos(azimuth)], 1)


_DIRECTIONS = _fibonacci_sphere(160)


def _add_head_markers(work: _WorkGrid, bone: np.ndarray, markers: np.ndarray, k: int,
                      config: FemurSegConfig, name: str, side: str, midline: float | None) -> "_Head | None":
    """If femur ``k`` touches other markers through the bone mask, fit its head sphere and mark the
    ball as femur and the acetabular shell around it as other bone (in place)."""
    other = markers.max()
    seed = markers == k
    labels, _ = ndi.label(bone)
    ids = np.unique(labels[seed])
    component = np.isin(labels, ids[ids > 0])
    if not (component & (markers > 0) & (markers != k)).any():
        return None  # nothing to split from
    head = _fit_head(work, component, seed, config, midline)
    if head is None:
        log.warning("%s: %s femoral head not found as a sphere; the hip joint is split by intensity only",
                    name, side)
        return None
    log.debug("%s: %s femoral head centre %s mm, radius %.1f mm, seam contrast %.0f HU", name, side,
              np.round(head.centre, 1), head.radius, head.contrast)
    vol = work.vol
    idx = np.argwhere(component)
    rel = vol.index_to_world(idx) - head.centre
    r = np.linalg.norm(rel, axis=1)
    half = 0.5 * max(vol.spacing)
    neck = vol.index_to_world(np.argwhere(seed).mean(0)) - head.centre
    neck /= np.linalg.norm(neck)
    away = rel @ neck < 0.3 * r  # more than ~73 degrees from the shaft's direction: not the neck
    ball = r <= head.radius - half  # femur
    shell = (r >= head.radius + half) & (r <= head.radius + half + 10.0) & away  # acetabulum
    free = markers[tuple(idx.T)]
    keep_ball = ball & ((free == 0) | (free == other))
    keep_shell = shell & (free != k) & (free == 0)
    markers[tuple(idx[keep_ball].T)] = k
    markers[tuple(idx[keep_shell].T)] = other
    return head


def _fit_head(work: _WorkGrid, component: np.ndarray, seed: np.ndarray, config: FemurSegConfig,
              midline: float | None) -> _Head | None:
    """The femoral head as the sphere whose surface is the darkest seam between bright bone inside
    (the head) and outside (the acetabulum), searched around the deepest points of the femur's bone."""
    vol = work.vol
    spacing = np.asarray(vol.spacing)
    r_lo, r_hi = config.head_radius_mm
    seed_centre = vol.index_to_world(np.argwhere(seed).mean(0))
    seed_top = float(vol.index_to_world(np.argwhere(seed))[:, 0].max())
    image = ndi.gaussian_filter(work.hu, 1.0 / spacing)
    # Candidate centres, each list best first: the peaks of a Hough vote for sphere centres (edges
    # voting along their gradient, towards the brighter side, at every head radius), and deep points
    # (local maxima of the distance to the bone's surface) of the bone before the closing (where a
    # visible joint space keeps the head a ball of its own) and after it. Only points above the
    # seed, within reach of it horizontally (the head sits ~40-70 mm medial to the shaft) and on its
    # side of the midline when that is known; taken in turn from each list, one per 15 mm.
    idx = np.argwhere(component)
    lo, hi = index_box(idx, component.shape, 1)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    size = tuple(np.maximum(3, np.round(10.0 / spacing).astype(int) | 1))

    def plausible(score: np.ndarray, floor: float) -> np.ndarray:
        peaks = np.argwhere((score == ndi.maximum_filter(score, size=size)) & (score > floor) & component[box])
        world = vol.index_to_world(peaks + lo) if peaks.size else np.zeros((0, 3))
        near = (world[:, 0] > seed_top) & (np.linalg.norm(world[:, 1:] - seed_centre[1:], axis=1) <= 100.0)
        if midline is not None:
            near &= np.sign(world[:, 2] - midline) == np.sign(seed_centre[2] - midline)
        return world[near][np.argsort(-score[tuple(peaks[near].T)])]

    ranked = [plausible(_hough_spheres(image[box], component[box], spacing, config), 0.0)]
    for mask in (work.open_bone[box] & component[box] if work.open_bone is not None else None, component[box]):
        if mask is not None:
            ranked.append(plausible(ndi.distance_transform_edt(mask, sampling=spacing), 0.5 * r_lo))
    starts: list[np.ndarray] = []
    for group in itertools.zip_longest(*ranked):
        for point in group:
            if point is not None and all(np.linalg.norm(point - c) > 15.0 for c in starts):
                starts.append(point)
    starts = starts[:_MAX_HEAD_CANDIDATES]
    if not starts:
        return None
    # Around each start: a coarse then a fine grid search of the sphere whose surface is the most
    # distinct dark seam (see _search_sphere).
    d = max(2.5, float(spacing.max()))
    coarse = [_climb_sphere(image, vol, c0, seed_centre, config, d) for c0 in starts]
    coarse = sorted((h for h in coarse if h is not None), key=lambda h: -h.contrast)[:2]
    best: _Head | None = None
    for head in coarse:
        head = _search_sphere(image, vol, head.centre, seed_centre, config, reach=1.0, step=0.5, d=d,
                              radius=head.radius) or head
        if best is None or head.contrast > best.contrast:
            best = head
    if best is None or best.contrast < config.min_seam_contrast_hu:
        return None
    return best


_MAX_HEAD_CANDIDATES = 6


def _hough_spheres(image: np.ndarray, bone: np.ndarray, spacing, config: FemurSegConfig) -> np.ndarray:
    """Votes for sphere centres: every strong edge near the bone votes, weighted by its gradient,
    at each head radius along its gradient (towards the brighter side: a head's surface, seen from
    the dark joint space or soft tissue, votes for the head's centre). Smoothed; same grid."""
    spacing = np.asarray(spacing, float)
    grad = np.stack(np.gradient(image, *spacing))  # HU/mm along each array axis
    magnitude = np.sqrt((grad ** 2).sum(0))
    near = ndi.binary_dilation(bone, iterations=2)
    if not near.any():
        return np.zeros(image.shape, np.float32)
    strong = near & (magnitude > np.percentile(magnitude[near], 85))
    points = np.argwhere(strong).astype(np.float32)
    weight = magnitude[strong]
    unit = (grad[:, strong] / weight).T / spacing  # index steps per mm of travel along the gradient
    votes = np.zeros(image.size, np.float32)
    shape = np.asarray(image.shape)
    r_lo, r_hi = config.head_radius_mm
    for r in np.arange(r_lo, r_hi + 1e-6, 1.0):
        target = np.round(points + r * unit).astype(np.int64)
        ok = np.all((target >= 0) & (target < shape), axis=1)
        np.add.at(votes, np.ravel_multi_index(target[ok].T, image.shape), weight[ok])
    return ndi.gaussian_filter(votes.reshape(image.shape), 2.0 / spacing)


def _climb_sphere(image: np.ndarray, vol: Volume, c0: np.ndarray, seed_centre: np.ndarray,
                  config: FemurSegConfig, d: float) -> _Head | None:
    """Coarse search: best sphere on a 2 mm grid of centres within 4 mm, re-centred on it until it
    stays put (at most four moves)."""
    head = None
    centre = np.asarray(c0, float)
    for _ in range(4):
        head = _search_sphere(image, vol, centre, seed_centre, config, reach=4.0, step=2.0, d=d)
        if head is None or np.allclose(head.centre, centre):
            break
        centre = head.centre
    return head


def _search_sphere(image: np.ndarray, vol: Volume, c0: np.ndarray, seed_centre: np.ndarray,
                   config: FemurSegConfig, reach: float, step: float, d: float,
                   radius: float | None = None) -> _Head | None:
    """Best sphere with its centre on a grid within ``reach`` mm of ``c0`` and a radius in
    ``head_radius_mm``: the one whose surface is darkest against the bone ``d`` mm inside and
    outside it, averaged over the acetabulum's side of the head (away from the neck) within the
    field of view; directions without bone on both sides count as no contrast. ``image`` is on
    ``vol``'s grid. With ``radius``, only radii within 2 mm of it are tried."""
    r_lo, r_hi = config.head_radius_mm
    if radius is not None:
        r_lo, r_hi = max(r_lo, radius - 2.0), min(r_hi, radius + 2.0)
    r_step = 0.5
    k = max(1, int(round(d / r_step)))
    radii = np.arange(r_lo - k * r_step, r_hi + k * r_step + 1e-6, r_step)
    offsets = np.arange(-reach, reach + 1e-6, step)
    centres = c0 + np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), -1).reshape(-1, 3)
    dirs = _acetabular_directions(c0, seed_centre)
    to_index = np.linalg.inv(vol.direction) / np.asarray(vol.spacing)[:, None]  # world -> index, linear part
    index = (vol.world_to_index(centres)[:, None, None, :]
             + radii[None, :, None, None] * (dirs @ to_index.T)[None, None, :, :])
    values = ndi.map_coordinates(image, index.reshape(-1, 3).T, order=1, mode="nearest")
    values = values.reshape(index.shape[:-1])  # (centres, radii, dirs)
    inside = np.all((index >= -0.5) & (index <= np.asarray(image.shape) - 0.5), axis=-1)
    inner, seam, outer = values[:, :-2 * k], values[:, k:-k], values[:, 2 * k:]
    in_view = inside[:, 2 * k:] & inside[:, :-2 * k]
    covered = (inner > config.bone_low_hu) & (outer > config.bone_low_hu) & in_view
    total = np.where(covered, np.minimum(inner, outer) - seam, 0.0).sum(-1)  # (centres, radii)
    contrast = total / np.maximum(in_view.sum(-1), 0.5 * len(dirs))
    i, j = np.unravel_index(int(np.argmax(contrast)), contrast.shape)
    if not np.isfinite(contrast[i, j]) or contrast[i, j] <= 0:
        return None
    return _Head(centres[i], float(radii[k + j]), float(contrast[i, j]))


def _acetabular_directions(centre: np.ndarray, seed_centre: np.ndarray) -> np.ndarray:
    """Unit directions from the head centre away from the femur's shaft (the acetabulum's side)."""
    neck = seed_centre - centre
    neck = neck / (np.linalg.norm(neck) + 1e-9)
    return _DIRECTIONS[_DIRECTIONS @ neck < 0]

