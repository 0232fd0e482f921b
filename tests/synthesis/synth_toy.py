"""Tiny femur cohorts for the synthesis tests (a few 10^5 voxels, built in well under a second).

A toy proximal femur at 1 mm: shaft, metaphysis, neck, head and greater trochanter, with a
cortical shell, trabecular interior and noise, in "standardized" units (HU window -1000..2000
mapped to [-1, 1]); metastatic cases carry lytic ellipsoids with exact masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from metsynth.volume import Volume

SHAPE = (64, 44, 56)
SPACING = (1.0, 1.0, 1.0)
HU_WINDOW = (-1000.0, 2000.0)


def _std(hu: float) -> float:
    lo, hi = HU_WINDOW
    return 2 * (hu - lo) / (hi - lo) - 1


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0, 1)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def toy_femur(seed: int = 0, shift: tuple[int, int, int] = (0, 0, 0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image float32 standardized, femur mask uint8, depth below the bone surface in mm)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    p = np.stack(np.indices(SHAPE), axis=-1).astype(np.float64) * np.asarray(SPACING)
    s = np.asarray(shift, dtype=float)
    shaft = _segment_distance(p, np.array([-5, 22, 34.0]) + s, np.array([44, 22, 34.0]) + s) <= 7.5
    meta = np.sum(((p - (np.array([40, 22, 33.0]) + s)) / np.array([9, 9, 10.0])) ** 2, axis=-1) <= 1
    neck = _segment_distance(p, np.array([42, 22, 31.0]) + s, np.array([53, 22, 14.0]) + s) <= 5.0
    head = np.linalg.norm(p - (np.array([54, 22, 11.0]) + s), axis=-1) <= 8.5
    troch = np.linalg.norm(p - (np.array([47, 22, 41.0]) + s), axis=-1) <= 6.0
    femur = shaft | meta | neck | head | troch
    depth = ndimage.distance_transform_edt(femur, sampling=SPACING)
    hu = np.full(SHAPE, 40.0) + rng.normal(0, 25, SHAPE)  # muscle
    trab = 250 + 120 * ndimage.gaussian_filter(rng.standard_normal(SHAPE), 1.0) * 3
    hu[femur] = trab[femur]
    hu[femur & (depth <= 2.0)] = 1400 + rng.normal(0, 80, int((femur & (depth <= 2.0)).sum()))
    hu = ndimage.gaussian_filter(hu, 0.6) + rng.normal(0, 15, SHAPE)
    image = np.clip(2 * (hu - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0]) - 1, -1, 1).astype(np.float32)
    return image, femur.astype(np.uint8), depth


def add_lesion(image: np.ndarray, femur: np.ndarray, centre, radii, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.stack(np.indices(SHAPE), axis=-1).astype(np.float64)
    inside = np.sum(((p - np.asarray(centre, float)) / np.asarray(radii, float)) ** 2, axis=-1) <= 1
    mask = inside & femur.astype(bool)
    image[mask] = _std(30.0) + rng.normal(0, 0.02, int(mask.sum())).astype(np.float32)
    return mask.astype(np.uint8)


def write_toy_cohort(root: Path, n_healthy: int = 2, n_metastatic: int = 2, prepared: bool = True) -> Path:
    """Healthy H00.., metastatic M00.. (M00 has a big and a tiny lesion, the tiny one is skipped)."""
    root.mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(n_healthy):
        cid = f"H{i:02d}"
        image, femur, _ = toy_femur(seed=10 + i, shift=(0, i % 2, -(i % 2)))
        Volume(image, SPACING).write(root / "images" / f"{cid}.nii.gz")
        Volume(femur, SPACING).write(root / "femur" / f"{cid}.nii.gz")
        cases.append({"id": cid, "image": f"images/{cid}.nii.gz", "femur_mask": f"femur/{cid}.nii.gz",
                      "role": "healthy"})
    lesion_specs = [
        [((20, 22, 34), (6, 5, 5)), ((54, 22, 11), (1, 1, 1))],  # shaft lesion + a tiny one (skipped)
        [((54, 22, 12), (5, 4, 4))],  # head lesion
        [((44, 24, 38), (4, 5, 5))],  # trochanter lesion
    ]
    for j in range(n_metastatic):
        cid = f"M{j:02d}"
        image, femur, _ = toy_femur(seed=100 + j)
        lesion = np.zeros(SHAPE, np.uint8)
        for k, (centre, radii) in enumerate(lesion_specs[j % len(lesion_specs)]):
            lesion |= add_lesion(image, femur, centre, radii, seed=j * 10 + k)
        Volume(image, SPACING).write(root / "images" / f"{cid}.nii.gz")
        Volume(femur, SPACING).write(root / "femur" / f"{cid}.nii.gz")
        Volume(lesion, SPACING).write(root / "lesions" / f"{cid}.nii.gz")
        cases.append({"id": cid, "image": f"images/{cid}.nii.gz", "femur_mask": f"femur/{cid}.nii.gz",
                      "role": "metastatic", "lesion_masks": [{"path": f"lesions/{cid}.nii.gz"}]})
    data: dict = {"name": "toy", "cases": cases}
    if prepared:
        data["prepared"] = {"spacing": list(SPACING), "hu_window": list(HU_WINDOW)}
    manifest = root / "cohort.yaml"
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    return manifest


