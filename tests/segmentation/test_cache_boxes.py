"""The training cache holds labels as their lesion's box, and changed-box images as the box over their
base's array (:class:`metsynth.segmentation.cache.Overlaid`): every read equals the whole array's.

Tiny volumes (40^3 and less): a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metsynth.boxed import write_boxed
from metsynth.segmentation.cache import CachedVolume, Overlaid, cache_volume, open_cached
from metsynth.segmentation.datasets import draw_patch_params, extract_patch
from metsynth.segmentation.presets import AugmentConfig
from metsynth.segmentation.training_set import TrainingVolume
from metsynth.volume import Volume

SHAPE = (40, 36, 44)


def _arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    image = base.copy()
    image[14:25, 9:20, 18:31] = rng.uniform(-0.5, -0.2, (11, 11, 13)).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[16:23, 11:18, 20:29] = 1
    return base, image, label


@settings(max_examples=80, deadline=None)
@given(lo=st.tuples(*[st.integers(-8, 40)] * 3), size=st.tuples(*[st.integers(0, 20)] * 3),
       point=st.tuples(*[st.integers(-3, 35)] * 3))
def test_an_overlaid_array_reads_as_the_whole_one(lo, size, point):
    base, image, _ = _arrays()
    lo_b, hi_b = (14, 9, 18), (25, 20, 31)
    box = image[14:25, 9:20, 18:31].copy()
    over = Overlaid(box, lo_b, SHAPE, base)
    zeros = Overlaid(box, lo_b, SHAPE)  # no base: zeros outside the box
    only_box = np.zeros(SHAPE, np.float32)
    only_box[14:25, 9:20, 18:31] = box
    key = tuple(slice(a, a + n) for a, n in zip(lo, size))
    assert np.array_equal(over[key], image[key]) and over[key].dtype == np.float32
    assert np.array_equal(zeros[key], only_box[key])
    assert over[point] == image[point] and zeros[point] == only_box[point]
    assert np.array_equal(np.asarray(over), image) and np.array_equal(np.array(zeros, dtype=np.float64), only_box)
    assert over.shape == SHAPE and over.ndim == 3 and tuple(hi_b) == tuple(a + n for a, n in zip(lo_b, box.shape))
    with pytest.raises(ValueError):
        Overlaid(box, (35, 0, 0), SHAPE)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_patches_from_the_boxed_cache_are_those_of_the_whole_arrays(seed):
    """Any patch the training draws (rotated, scaled, flipped, noisy, positive or not) is the same."""
    base, image, label = _arrays()
    lesion = np.argwhere(label).astype(np.int32)
    whole = CachedVolume(image, label, lesion)
    boxed = CachedVolume(Overlaid(image[14:25, 9:20, 18:31].copy(), (14, 9, 18), SHAPE, base),
                         Overlaid(label[16:23, 11:18, 20:29].copy(), (16, 11, 20), SHAPE), lesion)
    augment = AugmentConfig(rotate_prob=1.0, scale_prob=0.5) if seed % 2 else AugmentConfig()
    positive = bool(seed % 3)
    a = draw_patch_params(whole, (16, 12, 20), positive, augment, np.random.default_rng(seed))
    b = draw_patch_params(boxed, (16, 12, 20), positive, augment, np.random.default_rng(seed))
    assert a == b
    for x, y in zip(extract_patch(whole.image, whole.label, a, (16, 12, 20)),
                    extract_patch(boxed.image, boxed.label, b, (16, 12, 20))):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def test_the_cache_of_a_changed_box_holds_the_box_and_one_base_per_femur(tmp_path):
    base, image, label = _arrays()
    geometry = {"spacing": (0.85, 0.85, 0.85), "origin": (1.0, -2.0, 3.0)}
    base_path = Volume(base, **geometry).write(tmp_path / "prepared" / "H.nii.gz")
    items = []
    for k in range(2):  # two volumes of the same femur
        img = image.copy()
        img[14 + k, 9:20, 18:31] += 0.01 * k
        write_boxed(Volume(img, **geometry), base_path, tmp_path / "set" / f"v{k}.nii.gz")
        Volume(label, **geometry).write(tmp_path / "set" / f"v{k}_label.nii.gz")
        items.append((img, TrainingVolume(key=f"synthetic/v{k}", source="synthetic", case=f"v{k}",
                                          image=str(tmp_path / "set" / f"v{k}.nii.gz"),
                                          label=str(tmp_path / "set" / f"v{k}_label.nii.gz"))))
    Volume(image, **geometry).write(tmp_path / "whole.nii.gz")
    whole_item = TrainingVolume(key="synthetic/w", source="synthetic", case="w", image=str(tmp_path / "whole.nii.gz"),
                                label=str(tmp_path / "set" / "v0_label.nii.gz"))
    cache = tmp_path / "cache"
    for img, item in items:
        cached = open_cached(cache_volume(item, cache))
        assert isinstance(cached.image, Overlaid) and isinstance(cached.label, Overlaid)
        assert np.array_equal(np.asarray(cached.image), img) and np.array_equal(np.asarray(cached.label), label)
        assert np.array_equal(cached.lesion_voxels, np.argwhere(label))
    assert len(list(cache.glob("base-*_image.npy"))) == 1  # the femur once, for both volumes
    plain = open_cached(cache_volume(whole_item, cache))  # a whole image is cached whole, its label as a box
    assert isinstance(plain.image, np.memmap) and isinstance(plain.label, Overlaid)
    assert np.array_equal(plain.image, image)
    boxes = sum(p.stat().st_size for p in cache.glob("*box.npy"))
    assert boxes < 0.2 * (base.nbytes + label.nbytes)


def test_a_cache_written_whole_by_an_earlier_version_still_opens(tmp_path):
    _, image, label = _arrays()
    stem = tmp_path / "old"
    for suffix, array in (("image", image), ("label", label), ("lesion", np.argwhere(label).astype(np.int32))):
        np.save(f"{stem}_{suffix}.npy", array)
    cached = open_cached(stem)  # no JSON needed: the whole arrays
    assert isinstance(cached.label, np.memmap) and np.array_equal(cached.label, label)
