"""Builders of tiny cohorts (several annotators per case) and prediction folders for evaluation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from metsynth.volume import Volume

SHAPE = (24, 26, 28)
SPACING = (1.5, 0.8, 0.9)


def _ball(centre, radius) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in SHAPE)]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, SPACING))
    return (d2 <= radius**2).astype(np.uint8)


def _shift(mask: np.ndarray, dz=0, dy=0, dx=0) -> np.ndarray:
    return np.roll(mask, (dz, dy, dx), axis=(0, 1, 2))


def build_cohort(root: Path, n_metastatic: int = 3, n_test: int = 1, n_healthy: int = 1,
                 annotators: bool = True) -> tuple[Path, dict[str, np.ndarray]]:
    """Write images, reference masks and (optionally) operators' masks; return the manifest and
    the reference masks by case id."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cases, references = [], {}
    roles = ["metastatic"] * n_metastatic + ["test"] * n_test + ["healthy"] * n_healthy
    for i, role in enumerate(roles):
        cid = {"metastatic": "M", "test": "T", "healthy": "H"}[role] + f"{i:02d}"
        image = Volume(rng.normal(0, 1, SHAPE).astype(np.float32), spacing=SPACING, origin=(1.0, 2.0, 3.0))
        image.write(root / "images" / f"{cid}.nii.gz")
        case = {"id": cid, "image": f"images/{cid}.nii.gz", "role": role, "centre": "AB"[i % 2],
                "patient": f"P{i // 2}"}
        if role != "healthy":
            ref = _ball((12, 13, 14), 4.5 + i) | _ball((5, 6, 20), 2.2)  # two lesions
            references[cid] = ref
            masks = {"reference": (ref, "reference", 1)}
            if annotators:
                masks.update({
                    "A1": (_shift(ref, 0, 1, 0), "A", 1), "A2": (_shift(ref, 0, 1, 1), "A", 2),
                    "B1": (_shift(ref, 1, 0, 0), "B", 1), "B2": (_shift(ref, 1, -1, 0), "B", 2),
                    "C1": (ref.copy(), "C", 1),
                })
            entries = []
            for key, (mask, annotator, rnd) in masks.items():
                path = f"lesions/{cid}_{key}.nii.gz"
                image.with_array(mask).write(root / path)
                expertise = {"reference": "reference", "A": "novice", "B": "novice", "C": "expert"}[annotator]
                entries.append({"path": path, "annotator": annotator, "round": rnd, "expertise": expertise})
            case["lesion_masks"] = entries
        cases.append(case)
    manifest = root / "cohort.yaml"
    manifest.write_text(yaml.safe_dump({"name": "tiny-eval", "cases": cases}, sort_keys=False))
    return manifest, references


def write_predictions(folder: Path, references: dict[str, np.ndarray], shift: int = 1,
                      empty: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for cid, ref in references.items():
        if cid in skip:
            continue
        pred = np.zeros_like(ref) if cid in empty else _shift(ref, 0, 0, shift)
        Volume(pred, spacing=SPACING, origin=(1.0, 2.0, 3.0)).write(folder / f"{cid}.nii.gz")
    return folder

