"""On-the-fly dataset: deterministic per (seed, index, epoch), provenance, patches, no torch import."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from metsynth.errors import ConfigError
from metsynth.synthesis.compose import SynthesisConfig
from metsynth.synthesis.dataset import SyntheticLesionDataset, crop_patch


@pytest.fixture(scope="module")
def dataset(toy_cohort, toy_bank) -> SyntheticLesionDataset:
    return SyntheticLesionDataset(toy_cohort, toy_bank, length=6, seed=3)


def test_samples_are_deterministic_and_fresh(dataset, toy_cohort, toy_bank):
    a = dataset[2]
    again = SyntheticLesionDataset(toy_cohort, toy_bank, length=6, seed=3)[2]
    assert a["image"].tobytes() == again["image"].tobytes() and a["label"].tobytes() == again["label"].tobytes()
    assert a["provenance"] == again["provenance"]
    other = dataset[3]
    assert other["image"].tobytes() != a["image"].tobytes()
    next_epoch = dataset.sample(2, epoch=1)
    assert next_epoch["image"].tobytes() != a["image"].tobytes()
    assert a["image"].dtype == np.float32 and a["label"].dtype == np.uint8 and a["label"].any()
    prov = a["provenance"]
    assert prov["index"] == 2 and prov["epoch"] == 0
    assert {"healthy_case", "donor_case", "donor_lesion", "transform", "placement", "lesion", "seed"} <= set(prov)
    with pytest.raises(IndexError):
        dataset[6]


def test_pickled_copy_gives_the_same_samples(dataset):
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone[1]["image"].tobytes() == dataset[1]["image"].tobytes()


def test_patches_around_the_lesion(toy_cohort, toy_bank):
    ds = SyntheticLesionDataset(toy_cohort, toy_bank, length=4, patch_size=24, seed=1)
    for i in range(4):
        sample = ds[i]
        assert sample["image"].shape == (24, 24, 24) == sample["label"].shape
        assert sample["label"].any()
        assert sample["provenance"]["patch_size"] == [24, 24, 24]


def test_donor_restriction(toy_cohort, toy_bank):
    ds = SyntheticLesionDataset(toy_cohort, toy_bank, length=5, donor_cases=["M01"], healthy_cases=["H01"])
    assert {ds[i]["provenance"]["donor_case"] for i in range(5)} == {"M01"}
    assert {ds[i]["provenance"]["healthy_case"] for i in range(5)} == {"H01"}
    with pytest.raises(ConfigError, match="donor_cases: no bank lesion comes from M07"):
        SyntheticLesionDataset(toy_cohort, toy_bank, donor_cases=["M07"])
    with pytest.raises(ConfigError, match="healthy_cases: M00 are not healthy cases"):
        SyntheticLesionDataset(toy_cohort, toy_bank, healthy_cases=["M00"])
    with pytest.raises(ConfigError, match="patch_size must be 3 positive sizes"):
        SyntheticLesionDataset(toy_cohort, toy_bank, patch_size=(8, 8))


def test_impossible_settings_say_why(toy_cohort, toy_bank):
    ds = SyntheticLesionDataset(toy_cohort, toy_bank, SynthesisConfig(min_lesion_mm3=1e6), length=2, max_attempts=3)
    with pytest.raises(Exception, match="no kept result in 3 attempts \\(too_small_after_transform\\)"):
        ds[0]


def test_crop_patch_pads_at_the_border():
    array = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    crop, corner = crop_patch(array, np.array([0, 0, 0]), (4, 4, 4))
    assert crop.shape == (4, 4, 4) and corner == (-2, -2, -2)
    assert crop[2, 2, 2] == array[0, 0, 0] and crop[0, 0, 0] == array[0, 0, 0]  # edge padding


def test_module_does_not_import_torch():
    code = "import sys, metsynth.synthesis.dataset; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_dataset_refuses_a_bank_of_other_units(toy_cohort, tmp_path):
    from metsynth.errors import InputError
    from metsynth.synthesis.bank import extract_bank
    from synthesis.synth_toy import write_toy_cohort

    raw = write_toy_cohort(tmp_path / "raw", n_healthy=0, n_metastatic=1, prepared=False)
    extract_bank(raw, tmp_path / "bank", progress=False)
    with pytest.raises(InputError, match="does not fit cohort .*their intensity units differ"):
        SyntheticLesionDataset(toy_cohort, tmp_path / "bank", length=2)


def test_the_most_recently_used_healthy_femurs_stay_loaded(toy_cohort, toy_bank, monkeypatch):
    from metsynth.synthesis import compose

    loads = []
    real_load = compose.HealthyFemur.load
    counting = staticmethod(lambda case: loads.append(case.id) or real_load(case))
    monkeypatch.setattr(compose.HealthyFemur, "load", counting)
    ds = SyntheticLesionDataset(toy_cohort, toy_bank, length=4, seed=0, cache_size=1)
    first = ds.healthy[0]
    for _ in range(3):
        ds._get_healthy(first)
    assert loads == [first.id]  # loaded once, then kept
    ds._get_healthy(ds.healthy[1])
    ds._get_healthy(first)  # the one-femur cache had to let it go
    assert loads == [first.id, ds.healthy[1].id, first.id]
    ds.cache_size = 2
    ds._get_healthy(ds.healthy[1])
    ds._get_healthy(first)
    ds._get_healthy(ds.healthy[1])
    assert loads == [first.id, ds.healthy[1].id, first.id, ds.healthy[1].id]  # both kept now
    assert SyntheticLesionDataset(toy_cohort, toy_bank, length=4).cache_size == 32
