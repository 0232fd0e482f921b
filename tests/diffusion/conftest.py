"""Fixtures of the diffusion tests: tiny prepared-like femurs, a tiny trained DDPM, synthetic sets.

The volumes imitate what ``metsynth prepare`` and ``metsynth synthesize`` write: float32 images
in [-1, 1] at 0.85 mm, a femur-like cylinder (cortical shell, textured marrow) in soft tissue,
and for synthetic volumes darker (osteolytic) lesions with a binary label and a JSON sidecar.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from metsynth.volume import Volume

SPACING = (0.85, 0.85, 0.85)
SHAPE = (32, 48, 48)


def femur_volume(seed: int, shape=SHAPE) -> tuple[Volume, Volume]:
    """(image in [-1, 1], femur mask) of a cylinder-shaped 'femur' along z."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    cy, cx = shape[1] / 2 + rng.uniform(-2, 2), shape[2] / 2 + rng.uniform(-2, 2)
    radius = 0.3 * min(shape[1:]) * (1 + 0.1 * np.sin(zz / 5.0))
    r = np.hypot(yy - cy, xx - cx)
    image = -0.32 + 0.02 * rng.standard_normal(shape).astype(np.float32)
    marrow = r < radius - 2.5
    texture = ndimage_smooth(rng.standard_normal(shape).astype(np.float32))
    image[marrow] = -0.05 + 0.08 * texture[marrow]
    shell = (r < radius) & ~marrow
    image[shell] = 0.45 + 0.03 * rng.standard_normal(int(shell.sum())).astype(np.float32)
    image = np.clip(image, -1, 1).astype(np.float32)
    mask = (r < radius).astype(np.uint8)
    origin = (10.0, -20.0, 5.0)
    return Volume(image, SPACING, origin), Volume(mask, SPACING, origin)


def ndimage_smooth(x: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    y = ndimage.gaussian_filter(x, 1.0)
    return y / (y.std() + 1e-6)


LESION_CENTRES = [(10, 22, 22), (22, 26, 20), (16, 20, 27)]


def write_prepared_cohort(root: Path, n_healthy: int = 2) -> Path:
    cases = []
    for i in range(n_healthy):
        cid = f"H{i:02d}"
        image, mask = femur_volume(seed=100 + i)
        image.write(root / "images" / f"{cid}.nii.gz")
        mask.write(root / "femur" / f"{cid}.nii.gz")
        cases.append({"id": cid, "image": f"images/{cid}.nii.gz", "role": "healthy",
                      "femur_mask": f"femur/{cid}.nii.gz"})
    manifest = root / "cohort.yaml"
    root.mkdir(parents=True, exist_ok=True)
    manifest.write_text(yaml.safe_dump({"name": "tiny-prepared",
                                        "prepared": {"spacing": list(SPACING), "hu_window": [-1000, 2000]},
                                        "cases": cases}, sort_keys=False))
    return manifest


def write_synthetic_set(root: Path, n_volumes: int = 2, n_lesions: int = 1, sidecars: bool = True,
                        index: bool = True, dropped: bool = False) -> Path:
    """A folder laid out like the synthesis stage's output (images/, labels/, sidecars/, index.csv)."""
    rows = []
    for v in range(n_volumes):
        vid = f"syn{v:03d}"
        image, _ = femur_volume(seed=200 + v)
        label = np.zeros(image.shape, np.uint8)
        zz, yy, xx = np.indices(image.shape)
        arr = image.array.copy()
        for c in LESION_CENTRES[:n_lesions]:
            ball = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 9
            label[ball] = 1
            arr[ball] = -0.45
        image.with_array(arr).write(root / "images" / f"{vid}.nii.gz")
        image.with_array(label).write(root / "labels" / f"{vid}.nii.gz")
        if sidecars:
            side = {"volume_id": vid, "healthy_case": f"H{v:02d}", "donor_case": "M01", "seed": 1234 + v,
                    "kept": True,
                    "lesions": [{"donor_case": "M01", "centre": list(c)} for c in LESION_CENTRES[:n_lesions]]}
            (root / "sidecars").mkdir(parents=True, exist_ok=True)
            (root / "sidecars" / f"{vid}.json").write_text(json.dumps(side))
        rows.append({"volume_id": vid, "kept": "true", "image": f"images/{vid}.nii.gz",
                     "label": f"labels/{vid}.nii.gz", "donor_case": "M01", "healthy_case": f"H{v:02d}"})
    if dropped:  # an attempt the synthesis dropped: no files, kept=false
        rows.append({"volume_id": "syn999", "kept": "false", "image": "", "label": "", "donor_case": "M01",
                     "healthy_case": "H00"})
    if index:
        with open(root / "index.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root


@pytest.fixture(scope="session")
def prepared_cohort(tmp_path_factory) -> Path:
    return write_prepared_cohort(tmp_path_factory.mktemp("prepared"))


# The tiny preset, with what the tests exercise: EMA, a checkpoint every step, small lesion boxes.
TEST_OVERRIDES = {
    "train": {"max_steps": 6, "ema_decay": 0.9, "checkpoint_every_n_steps": 1},
    "harmonize": {"lesion_margin_mm": 1.0, "feather_mm": 1.0},
}


@pytest.fixture(scope="session")
def tiny_config():
    from metsynth.diffusion.presets import diffusion_config

    return diffusion_config("tiny", TEST_OVERRIDES)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, prepared_cohort, tiny_config):
    """A tiny DDPM trained for a few steps (shared by the harmonization tests)."""
    from metsynth.diffusion.train import train_diffusion

    out = tmp_path_factory.mktemp("ddpm")
    return train_diffusion(prepared_cohort, out / "run", tiny_config, accelerator="cpu", devices=1,
                           progress=False)


@pytest.fixture
def synthetic_set(tmp_path) -> Path:
    return write_synthetic_set(tmp_path / "synthetic")


@pytest.fixture(scope="session")
def builders():
    """The builder functions of this file, for tests that need variants (conftest is not importable)."""
    from types import SimpleNamespace

    return SimpleNamespace(femur_volume=femur_volume, write_prepared_cohort=write_prepared_cohort,
                           write_synthetic_set=write_synthetic_set, lesion_centres=LESION_CENTRES)
