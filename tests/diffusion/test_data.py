"""Training patches: within the femur (plus margin), deterministic per (seed, epoch, sample)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from scipy import ndimage

from metsynth.diffusion.data import (
    EpochSampler,
    PatchDataset,
    TrainingCase,
    centre_candidates,
    extract_patch,
    load_training_cases,
    patch_corner,
)
from metsynth.errors import InputError


def test_centre_candidates_are_the_mask_grown_by_the_margin():
    mask = np.zeros((20, 20, 20), bool)
    mask[8:12, 8:12, 8:12] = True
    spacing = (0.85, 0.85, 0.85)
    flat = centre_candidates(mask, spacing, margin_mm=2.0)
    chosen = np.zeros(mask.size, bool)
    chosen[flat] = True
    chosen = chosen.reshape(mask.shape)
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
    assert np.array_equal(chosen, distance <= 2.0)
    assert np.array_equal(centre_candidates(mask, spacing, 0.0), np.flatnonzero(mask))


def test_patch_corner_keeps_patches_inside_and_pads_small_volumes():
    assert tuple(patch_corner(np.array([0, 0, 0]), (4, 8, 8), (10, 20, 20))) == (0, 0, 0)
    assert tuple(patch_corner(np.array([9, 19, 19]), (4, 8, 8), (10, 20, 20))) == (6, 12, 12)
    image = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    patch = extract_patch(image, patch_corner(np.array([1, 2, 2]), (4, 4, 8), image.shape), (4, 4, 8))
    assert patch.shape == (4, 4, 8)
    assert np.array_equal(patch[:3, :, :5], image) and np.all(patch[3] == patch[2])  # edge padding


def _case(seed=0, shape=(24, 40, 40)):
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, 1, shape).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[10:14, 15:25, 15:25] = True
    return TrainingCase("C", image, centre_candidates(mask, (1, 1, 1), 2.0)), mask


def test_samples_are_deterministic_and_within_the_femur():
    case, mask = _case()
    ds = PatchDataset([case], (8, 16, 16), patches_per_case=3, num_train_timesteps=200, seed=5)
    assert len(ds) == 3
    a, b = ds[4], PatchDataset([case], (8, 16, 16), 3, 200, seed=5)[4]
    for key in ("image", "noise", "timestep"):
        assert np.array_equal(a[key].numpy(), b[key].numpy())
    assert a["image"].shape == (1, 8, 16, 16) and a["noise"].shape == (1, 8, 16, 16)
    assert not np.array_equal(ds[1]["noise"].numpy(), ds[4]["noise"].numpy())  # same sample, next epoch
    grown = ndimage.distance_transform_edt(~mask) <= 2.0
    for i in range(12):
        item = ds[i]
        assert 0 <= int(item["timestep"]) < 200
        # the patch is cut from the image and contains its (possibly shifted) centre's neighbourhood
        patch = item["image"][0].numpy()
        found = [tuple(c) for c in np.argwhere(np.all(
            np.lib.stride_tricks.sliding_window_view(case.image, (8, 16, 16)) == patch, axis=(3, 4, 5)))]
        assert len(found) == 1
        z, y, x = found[0]
        assert grown[z:z + 8, y:y + 16, x:x + 16].any()


def test_sampler_permutes_each_epoch_and_skips_after_a_restore():
    sampler = EpochSampler(6, seed=1)
    first = list(sampler)
    assert sorted(first) == list(range(6))
    sampler.set_epoch(2)
    second = list(sampler)
    assert sorted(second) == list(range(12, 18))
    sampler.skip = 4
    assert list(sampler) == second[4:]
    assert list(sampler) == second  # the skip applies once


def test_training_cases_come_from_healthy_prepared_cases(prepared_cohort):
    cases = load_training_cases(prepared_cohort, margin_mm=5.0)
    assert [c.id for c in cases] == ["H00", "H01"]
    assert all(c.image.dtype == np.float32 and c.image.min() >= -1 and c.image.max() <= 1 for c in cases)


def test_unprepared_or_incomplete_cohorts_are_refused(tmp_path, builders):
    from helpers import write_tiny_cohort  # HU images, not standardized

    manifest = write_tiny_cohort(tmp_path / "raw", n_healthy=1, n_metastatic=0)
    with pytest.raises(InputError, match=r"not \[-1, 1\].*metsynth prepare"):
        load_training_cases(manifest, 5.0)

    root = tmp_path / "nofemur"
    manifest = builders.write_prepared_cohort(root, n_healthy=1)
    data = yaml.safe_load(manifest.read_text())
    del data["cases"][0]["femur_mask"]
    manifest.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="H00: no femur_mask"):
        load_training_cases(manifest, 5.0)

    data["cases"][0]["role"] = "metastatic"
    data["cases"][0]["lesion_masks"] = [{"path": "femur/H00.nii.gz"}]
    manifest.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="role: healthy"):
        load_training_cases(manifest, 5.0)
