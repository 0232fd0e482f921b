"""How much a lesion touches its bone's surface: the share of the one-voxel shell around it (its
26-neighbours outside it) that lies outside the femur mask. Shell voxels beyond the image are left
out of the count (unknown, not "outside the bone": a scan cut through the shaft is no cortex).

0 for a lesion deep in the marrow; more for one against the cortex, and the most for one that has
broken through it. Osteolytic metastases are often cortical (the cortex is what fractures), so the
evaluation reports detection by it (:data:`CORTICAL_CONTACT`) and the synthesis can paste a lesion
where it touches the surface as much as its donor did (``placement.match_donor_contact``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

CORTICAL_CONTACT = 0.05  # a lesion whose shell is more than 5 % outside the femur is "cortical"
_CUBE = np.ones((3, 3, 3), bool)


def shell_outside_share(mask: np.ndarray, femur_around: np.ndarray) -> float:
    """Share of ``mask``'s one-voxel shell outside the femur. ``femur_around``: :func:`femur_around`
    on ``mask``'s box (shape ``mask.shape + 2``): 1 femur, 0 not femur, -1 beyond the image (left out)."""
    grown = np.pad(mask.astype(bool), 1)
    shell = ndi.binary_dilation(grown, _CUBE) & ~grown & (femur_around >= 0)
    n = int(np.count_nonzero(shell))
    return float(np.count_nonzero(shell & (femur_around == 0)) / n) if n else 0.0


def femur_around(femur: np.ndarray, lo, shape) -> np.ndarray:
    """The femur on the box of ``shape`` at index ``lo``, grown by one voxel on every side, as int8:
    1 femur, 0 not femur, -1 beyond the image: what :func:`shell_outside_share` compares a lesion's
    shell with."""
    lo = np.asarray(lo, dtype=int) - 1
    hi = lo + np.asarray(shape, dtype=int) + 2
    out = np.full(tuple(int(n) for n in hi - lo), -1, np.int8)
    a, b = np.maximum(lo, 0), np.minimum(hi, femur.shape)
    if np.all(b > a):
        out[tuple(slice(int(x - y), int(z - y)) for x, y, z in zip(a, lo, b))] = \
            femur[tuple(slice(int(x), int(z)) for x, z in zip(a, b))] != 0
    return out


def surface_contact(mask: np.ndarray, femur: np.ndarray, offset=None) -> float:
    """:func:`shell_outside_share` of a lesion ``mask`` in ``femur``'s grid: the whole volume, or a
    box of it whose [0, 0, 0] is at index ``offset``; only the lesion's own box is looked at.
    0 for an empty mask."""
    where = np.argwhere(mask)
    if where.size == 0:
        return 0.0
    lo, hi = where.min(axis=0), where.max(axis=0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    start = lo if offset is None else lo + np.asarray(offset, dtype=int)
    return shell_outside_share(mask[box], femur_around(femur, start, hi - lo))


def location(contact: float) -> str:
    """``"cortical"`` (touching the surface, :data:`CORTICAL_CONTACT`) or ``"medullary"``."""
    return "cortical" if contact > CORTICAL_CONTACT else "medullary"


__all__ = ["CORTICAL_CONTACT", "femur_around", "location", "shell_outside_share", "surface_contact"]
