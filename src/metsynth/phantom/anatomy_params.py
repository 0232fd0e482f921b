"""What is drawn about one phantom's anatomy: :class:`AnatomyParams` (sizes, angles, cortical
thicknesses, densities, soft tissues) and :func:`draw_anatomy`.

The parameters live in a *local* anatomical frame centred on the femoral head, in mm: ``u``
medial, ``v`` anterior, ``w`` superior (along the shaft). The drawn pose maps it to the LPS world
(x to the patient's left, y posterior, z superior); a left femur is the mirror image of a right one
in x. The shapes built from them are in :mod:`metsynth.phantom.anatomy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .fields import F32


def _rot(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@dataclass
class AnatomyParams:
    """Everything drawn about one phantom's anatomy and tissue densities (mm, degrees, HU)."""

    side: str
    head_world: tuple[float, float, float]  # (z, y, x) world position of the femoral head centre
    pose_deg: tuple[float, float, float]  # adduction of the shaft, rotation about it, flexion
    head_radius: float
    neck_shaft_angle: float
    anteversion: float
    offset: float
    neck_semi: float
    neck_ratio: float
    shaft_radius: float
    flare_ml: float
    flare_ap: float
    bow: float
    gt_scale: float
    lt_scale: float
    cortex_mm: dict[str, float]
    bmd: float
    hu: dict[str, float]
    joint_gap: float
    body: dict[str, float]
    muscle_seeds: np.ndarray  # (n, 6): angle, radius, drift amplitude, drift phase, HU offset, weight
    fat_plane_mm: float
    pelvis: bool
    noise_seed: int
    derived: dict[str, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ frame
    @property
    def sign(self) -> float:
        return 1.0 if self.side == "right" else -1.0

    @property
    def pose(self) -> np.ndarray:
        """Columns: the local axes (u, v, w) in the anatomical frame (medial, anterior, superior)."""
        add, rot, flex = self.pose_deg
        return _rot(1, -add) @ _rot(2, rot) @ _rot(0, flex)

    def local(self, z, y, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (z, y, x) arrays -> local (u, v, w) float32 arrays."""
        hz, hy, hx = self.head_world
        du = (np.asarray(x, dtype=F32) - F32(hx)) * F32(self.sign)
        dv = -(np.asarray(y, dtype=F32) - F32(hy))
        dw = np.asarray(z, dtype=F32) - F32(hz)
        r = self.pose.astype(F32)
        return (du * r[0, 0] + dv * r[1, 0] + dw * r[2, 0],
                du * r[0, 1] + dv * r[1, 1] + dw * r[2, 1],
                du * r[0, 2] + dv * r[1, 2] + dw * r[2, 2])

    def to_world_vector(self, a: np.ndarray) -> np.ndarray:
        """A local direction as a world (z, y, x) vector."""
        anat = self.pose @ np.asarray(a, dtype=np.float64)
        return np.array([anat[2], -anat[1], self.sign * anat[0]])

    def to_world_point(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(self.head_world) + self.to_world_vector(a)

    # ------------------------------------------------------------ derived landmarks (local)
    def landmarks(self) -> dict[str, np.ndarray]:
        e = np.radians(self.neck_shaft_angle - 90.0)
        b = np.radians(self.anteversion)
        n = np.array([np.cos(e) * np.cos(b), np.cos(e) * np.sin(b), np.sin(e)])
        length = self.offset / (np.cos(e) * np.cos(b))
        s = -length * n  # where the neck axis meets the shaft axis
        return {"neck_dir": n, "neck_base": s, "head": np.zeros(3)}


def draw_anatomy(rng: np.random.Generator, side: str, pelvis: bool) -> AnatomyParams:
    """Draw one patient's anatomy (sizes, angles, thicknesses, densities, soft tissues)."""
    u = rng.uniform
    habitus = u(0.8, 1.3)
    n_seeds = int(rng.integers(11, 15))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n_seeds))
    seeds = np.stack([
        angles,
        rng.uniform(22, 70, n_seeds),
        rng.uniform(0.05, 0.3, n_seeds),
        rng.uniform(0, 2 * np.pi, n_seeds),
        rng.normal(0, 4, n_seeds) - 14 * (rng.random(n_seeds) < 0.15),  # some fattier muscles
        rng.uniform(0, 14, n_seeds),  # additive weight: curved borders, muscles of different bulk
    ], axis=1)
    shaft_radius = u(13.0, 15.5)
    return AnatomyParams(
        side=side,
        head_world=(0.0, 0.0, -90.0 if side == "right" else 90.0),  # hips ~9 cm from the midline
        pose_deg=(u(3, 9), u(-10, 10), u(-4, 6)),
        head_radius=u(21.5, 25.0),
        neck_shaft_angle=u(122, 136),
        anteversion=u(4, 20),
        offset=u(37, 46),
        neck_semi=u(14.5, 17.0),
        neck_ratio=u(0.78, 0.9),
        shaft_radius=shaft_radius,
        flare_ml=u(8, 12),
        flare_ap=u(3, 6),
        bow=u(2, 6),
        gt_scale=u(0.9, 1.1),
        lt_scale=u(0.85, 1.15),
        cortex_mm={"head": u(0.8, 1.2), "neck": u(1.0, 1.5), "calcar": u(2.0, 3.2), "trochanter": u(0.9, 1.3),
                   "proximal": u(1.6, 2.2), "diaphysis": min(u(4.5, 6.5), shaft_radius - 6.0), "pelvis": u(1.0, 1.6)},
        bmd=u(0.75, 1.15),
        hu={"cortical": u(1450, 1800), "trabecular_tissue": u(750, 950), "marrow_red": u(-5, 25),
            "marrow_yellow": u(-50, -25), "muscle": u(46, 60), "fat": u(-110, -88), "skin": u(20, 50),
            "cartilage": u(70, 95), "vessel": u(35, 50)},
        joint_gap=u(2.5, 4.0),
        body={"habitus": habitus, "thigh_ml": 70 * habitus + u(-5, 5), "thigh_ap": 64 * habitus + u(-5, 5),
              "trunk_ml": u(160, 185) + 20 * (habitus - 1), "trunk_ap": u(100, 125) * habitus,
              "fat_mm": u(5, 18) * habitus ** 1.5, "skin_mm": u(1.5, 2.2), "irregularity_mm": u(0.5, 1.5),
              "marbling_hu": u(10, 40)},
        muscle_seeds=seeds,
        fat_plane_mm=u(1.0, 2.2),
        pelvis=pelvis,
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )
