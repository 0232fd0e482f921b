"""Fixtures of the segmentation tests: tiny phantom cases, prepared cohorts, synthetic sets,
splits, and one tiny model trained once per session (shared by the inference tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from metsynth.prepare import standardize
from metsynth.volume import Volume

HU_WINDOW = (-1000.0, 2000.0)


def _blob_case(seed: int, lesion: bool = True):
    """Fallback without the phantom: a bright bone cylinder with a dark lesion ball, in HU."""
    shape = (48, 48, 48)
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    c = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    hu = rng.normal(40, 20, shape)
    bone = ((yy - c[1]) ** 2 + (xx - c[2]) ** 2) < 12 ** 2
    hu[bone] = rng.normal(700, 80, bone.sum())
    les = np.zeros(shape, bool)
    if lesion:
        lc = c + rng.uniform(-4, 4, 3)
        les = (((zz - lc[0]) ** 2 + (yy - lc[1]) ** 2 + (xx - lc[2]) ** 2) < rng.uniform(4, 6) ** 2) & bone
        hu[les] = rng.normal(150, 30, les.sum())
    img = Volume(hu.astype(np.int16), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    return img, img.with_array(bone.astype(np.uint8)), img.with_array(les.astype(np.uint8)) if lesion else None


def make_case(seed: int, role: str = "metastatic"):
    """(image HU, femur, lesion or None): a tiny phantom femur (48^3 at 2 mm), or the blob fallback."""
    try:
        from metsynth.phantom import PhantomConfig, generate_case
    except ImportError:  # phantom not available: geometric stand-in
        return _blob_case(seed, role != "healthy")
    case = generate_case(f"X{seed}", role, seed, PhantomConfig.preset("tiny"))
    return case.image, case.femur, case.lesion


def write_prepared_cohort(root: Path, n_metastatic: int = 4, n_healthy: int = 1, seed: int = 0) -> Path:
    """A cohort that looks like `metsynth prepare`'s output (standardized images, femur masks)."""
    cases = []
    for i in range(n_healthy + n_metastatic):
        role = "healthy" if i < n_healthy else "metastatic"
        cid = f"{'H' if role == 'healthy' else 'M'}{i:02d}"
        image, femur, lesion = make_case(seed + i, role)
        std = image.with_array(standardize(image.array, HU_WINDOW))
        std.write(root / "images" / f"{cid}.nii.gz")
        femur.write(root / "femur" / f"{cid}.nii.gz")
        case = {"id": cid, "image": f"images/{cid}.nii.gz", "role": role, "femur_mask": f"femur/{cid}.nii.gz"}
        if lesion is not None:
            lesion.write(root / "lesions" / f"{cid}.nii.gz")
            case["lesion_masks"] = [{"path": f"lesions/{cid}.nii.gz"}]
        cases.append(case)
    manifest = root / "cohort.yaml"
    manifest.write_text(yaml.safe_dump({
        "name": "seg-test", "prepared": {"spacing": [2.0, 2.0, 2.0], "hu_window": list(HU_WINDOW)},
        "cases": cases}, sort_keys=False))
    return manifest


def write_synthetic_set(root: Path, cohort_manifest: Path, donors: list[str], healthy: str = "H00",
                        per_donor: int = 2) -> Path:
    """A synthetic-set folder (index.csv, images/, labels/) whose volumes come from ``donors``:
    the donor's own image and lesion stand in for a pasted result (content is irrelevant here)."""
    base = cohort_manifest.parent
    rows = []
    for donor in donors:
        for r in range(per_donor):
            vid = f"{healthy}__{donor}-L0__r{r}"
            img = Volume.read(base / "images" / f"{donor}.nii.gz")
            lbl = Volume.read(base / "lesions" / f"{donor}.nii.gz")
            img.write(root / "images" / f"{vid}.nii.gz")
            lbl.write(root / "labels" / f"{vid}.nii.gz")
            rows.append({"volume_id": vid, "healthy_case": healthy, "donor_case": donor, "donor_lesion": f"{donor}-L0",
                         "repeat": r, "kept": True, "image": f"images/{vid}.nii.gz", "label": f"labels/{vid}.nii.gz"})
    rows.append({"volume_id": "dropped", "healthy_case": healthy, "donor_case": donors[0], "donor_lesion": "x",
                 "repeat": 0, "kept": False, "image": "", "label": ""})
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    return root


@pytest.fixture
def prepared_cohort(tmp_path) -> Path:
    return write_prepared_cohort(tmp_path / "cohort")


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    """A tiny U-Net overfitted on one tiny phantom case: (run folder, TrainResult, manifest, initial Dice).

    Trained once per session (~10-30 s on 2 shared cores): the overfit test checks it, the
    inference, fine-tuning and CLI tests reuse its weights.
    """
    import lightning as L
    import torch

    from metsynth.cohort import load_cohort
    from metsynth.segmentation.datasets import TrainingSet, build_training_set
    from metsynth.segmentation.train import SegmentationModule, dice_of, sliding_window_logits, train_segmentation

    root = tmp_path_factory.mktemp("seg-trained")
    manifest = write_prepared_cohort(root / "cohort", n_metastatic=2, n_healthy=1)
    config = overfit_config()
    full = build_training_set(manifest, "real", val_cases=0, seed=0)
    one = max(full.train, key=lambda v: int(Volume.read(v.label).array.sum()))  # the largest lesion
    training_set = TrainingSet(sources=("real",), train=[one], val=[one], spacing=full.spacing,
                               hu_window=full.hu_window)

    L.seed_everything(config.seed, workers=True, verbose=False)
    meta = {"config": config.model_dump(mode="json"), "lr": 1.0, "lr_decay": 0.9}
    untrained = SegmentationModule(meta).eval()
    image = Volume.read(one.image)
    label = Volume.read(one.label)
    with torch.no_grad():
        logits = sliding_window_logits(untrained.net, torch.from_numpy(image.array.astype(np.float32))[None, None],
                                       config)
    initial = dice_of(logits.argmax(1)[0], torch.from_numpy(label.array) > 0)

    result = train_segmentation(training_set, root / "run", config, progress=False)
    return {"run": root / "run", "result": result, "manifest": manifest, "initial_dice": initial,
            "case": load_cohort(manifest).case(one.case), "config": config, "training_set": training_set}


def overfit_config(**changes):
    """tiny preset, no augmentation, a high SGD learning rate (decaying by 0.9 per epoch to settle):
    learns one phantom case in ~60-90 steps (8 epochs x 12 steps)."""
    from metsynth.segmentation.presets import segmentation_config

    data = {"augment": {"enabled": False}, "optim": {"lr": 1.0, "lr_decay_real": 0.9, "patience": 50},
            "max_epochs": 8, "patches_per_volume": 24, "batch_size": 2, "val_every_n_epochs": 2,
            "postprocess": {"min_lesion_mm3": 0.0}}
    from metsynth.segmentation.presets import deep_merge

    return segmentation_config("tiny", deep_merge(data, changes))


@pytest.fixture(scope="session")
def builders():
    """The builders above, for tests (conftest functions are not importable under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(make_case=make_case, write_prepared_cohort=write_prepared_cohort,
                           write_synthetic_set=write_synthetic_set, overfit_config=overfit_config)
