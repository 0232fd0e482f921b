"""The whole stage on the built-in phantom (tiny preset, raw int16 HU: units are not assumed)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import ndimage

from metsynth.synthesis.bank import extract_bank
from metsynth.synthesis.compose import SynthesisConfig
from metsynth.synthesis.run import run_synthesis
from metsynth.volume import Volume

phantom = pytest.importorskip("metsynth.phantom")


@pytest.fixture(scope="module")
def phantom_cohort(tmp_path_factory) -> Path:
    """Two healthy and two metastatic tiny phantom cases (48^3 at 2 mm), written as a manifest."""
    root = tmp_path_factory.mktemp("phantom")
    config = phantom.PhantomConfig.preset("tiny")
    cases = []
    for i, role in enumerate(("healthy", "healthy", "metastatic", "metastatic")):
        cid = f"{role[0].upper()}{i}"
        case = phantom.generate_case(cid, role, np.random.SeedSequence([7, i]), config)
        case.image.write(root / "images" / f"{cid}.nii.gz")
        case.femur.write(root / "femur" / f"{cid}.nii.gz")
        entry = {"id": cid, "image": f"images/{cid}.nii.gz", "femur_mask": f"femur/{cid}.nii.gz", "role": role}
        if case.lesion is not None:
            case.lesion.write(root / "lesions" / f"{cid}.nii.gz")
            entry["lesion_masks"] = [{"path": f"lesions/{cid}.nii.gz"}]
        cases.append(entry)
    manifest = root / "cohort.yaml"
    manifest.write_text(yaml.safe_dump({"name": "tiny-phantom", "cases": cases}, sort_keys=False))
    return manifest


def test_phantom_end_to_end(phantom_cohort, tmp_path):
    bank = extract_bank(phantom_cohort, tmp_path / "bank", progress=False)
    assert bank.entries and all(e.case in ("M2", "M3") for e in bank.entries)
    assert all(e.region in ("head", "neck", "trochanter", "shaft", "outside") for e in bank.entries)
    summary = run_synthesis(phantom_cohort, bank, tmp_path / "run", SynthesisConfig(repeats=2), progress=False,
                            allow_unprepared=True)  # a raw cohort and a bank of raw HU lesions, on purpose
    assert summary.attempts == 2 * len(bank.entries) * 2 and summary.kept > 0
    with open(tmp_path / "run" / "index.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kept"] == "true"]
    root = phantom_cohort.parent
    for row in rows:
        image = Volume.read(tmp_path / "run" / row["image"])
        label = Volume.read(tmp_path / "run" / row["label"]).array.astype(bool)
        healthy = Volume.read(root / "images" / f"{row['healthy_case']}.nii.gz")
        femur = Volume.read(root / "femur" / f"{row['healthy_case']}.nii.gz").array.astype(bool)
        assert image.array.dtype == np.int16 and image.same_grid(healthy)  # HU stay HU
        assert label.any() and np.all(femur[label])  # inside the femur
        near = ndimage.binary_dilation(label, np.ones((3, 3, 3), bool), iterations=2)
        assert np.array_equal(image.array[~near], healthy.array[~near])  # only the footprint changed
        # the pasted lesion is an osteolytic one: darker than the bone it replaced
        assert image.array[label].mean() < healthy.array[label].mean()
