"""Composition: only the lesion's footprint changes; the label is the pasted mask; size filter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from metsynth.errors import InputError
from metsynth.synthesis.bank import load_bank
from metsynth.synthesis.compose import HealthyFemur, SynthesisConfig, blend_weights, synthesize_one
from metsynth.volume import Volume
from synthesis.synth_toy import SPACING, toy_femur


@pytest.fixture(scope="module")
def healthy() -> HealthyFemur:
    image, femur, _ = toy_femur(seed=42)
    return HealthyFemur.from_volumes("H", Volume(image, SPACING), femur)


@pytest.fixture(scope="module")
def lesions(toy_bank):
    bank = load_bank(toy_bank)
    return [(entry, entry.arrays()) for entry in bank.entries]


def footprint_of(label: np.ndarray, filter_size: int) -> np.ndarray:
    r = filter_size // 2
    if r == 0:
        return label.astype(bool)
    return ndimage.binary_dilation(label.astype(bool), structure=np.ones((3, 3, 3), bool), iterations=r)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, 10))
def test_nothing_outside_the_footprint_changes(healthy, lesions, seed, which):
    entry, (image, mask) = lesions[which % len(lesions)]
    result = synthesize_one(healthy, entry, image, mask, SynthesisConfig(), np.random.default_rng(seed))
    if not result.kept:
        return
    before = healthy.image.array
    footprint = footprint_of(result.label, result.provenance["transform"]["edge_filter_size"])
    outside = ~footprint
    assert result.image.dtype == before.dtype
    assert result.image[outside].tobytes() == before[outside].tobytes()  # bit-identical
    changed = result.image != before
    assert not np.any(changed & outside)
    assert result.provenance["lesion"]["footprint_voxels"] == int(footprint.sum())
    # the label is the pasted mask, fully inside the femur, and sized as recorded
    assert set(np.unique(result.label)) <= {0, 1}
    assert np.all(healthy.site.femur[result.label.astype(bool)])
    assert result.label.sum() == result.provenance["lesion"]["voxels"]
    # intensities stay within the healthy image's range
    lo, hi = healthy.value_range
    assert result.image.min() >= lo and result.image.max() <= hi


def test_the_lesion_is_darker_than_the_bone_it_replaces(healthy, lesions):
    entry, (image, mask) = lesions[0]
    result = synthesize_one(healthy, entry, image, mask, SynthesisConfig(), np.random.default_rng(1))
    inside = result.label.astype(bool)
    assert result.image[inside].mean() < healthy.image.array[inside].mean()
    core = ndimage.binary_erosion(inside, np.ones((3, 3, 3), bool),
                                  iterations=result.provenance["transform"]["edge_filter_size"] // 2)
    assert result.image[core].mean() == pytest.approx(entry.intensity_mean, abs=0.02)


def test_contact_matching_needs_a_bank_that_records_it(healthy, lesions):
    from dataclasses import replace

    entry, (image, mask) = lesions[0]
    config = SynthesisConfig.from_dict({"placement": {"match_donor_contact": 8}})
    result = synthesize_one(healthy, entry, image, mask, config, np.random.default_rng(0))
    if result.kept:
        assert result.provenance["placement"]["donor_contact"] == pytest.approx(entry.surface_contact, abs=1e-3)
    old = replace(entry, surface_contact=None)  # a bank extracted before surface_contact was recorded
    with pytest.raises(InputError, match=rf"lesion {entry.id}: the bank does not record how much.*re-extract"):
        synthesize_one(healthy, old, image, mask, config, np.random.default_rng(0))


def test_blend_weights_match_a_mean_filter():
    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(rng.random((20, 22, 18)) > 0.6)
    for size in (1, 3, 5):
        weights = blend_weights(mask, size)
        reference = ndimage.uniform_filter(mask.astype(np.float64), size=size, mode="constant")
        np.testing.assert_allclose(weights, reference, atol=1e-6)
        assert np.all(weights[~footprint_of(mask, size)] == 0)  # exactly zero outside
    solid = np.zeros((12, 12, 12), bool)
    solid[2:10, 2:10, 2:10] = True
    assert blend_weights(solid, 3)[6, 6, 6] == 1.0  # exactly one deep inside


def test_size_filter_drops_results_at_or_below_the_limit(healthy, lesions):
    entry, (image, mask) = lesions[0]
    kept = synthesize_one(healthy, entry, image, mask, SynthesisConfig(min_lesion_mm3=0), np.random.default_rng(7))
    mm3 = kept.provenance["lesion"]["mm3"]
    assert kept.kept and mm3 == kept.provenance["transformed_mm3"]
    at_limit = SynthesisConfig(min_lesion_mm3=mm3)  # "<= 16 mm^3 is dropped": equality drops
    dropped = synthesize_one(healthy, entry, image, mask, at_limit, np.random.default_rng(7))
    assert not dropped.kept and dropped.reason == "too_small_after_transform"
    assert dropped.image is None and "min_lesion_mm3" in dropped.provenance["reason_detail"]
    just_below = SynthesisConfig(min_lesion_mm3=mm3 - 0.5)
    assert synthesize_one(healthy, entry, image, mask, just_below, np.random.default_rng(7)).kept


def test_size_filter_after_cutting_to_the_femur(healthy, lesions):
    """With lesions allowed half outside and cut to the femur, the pasted size is checked again."""
    entry, (image, mask) = lesions[0]
    base = {"placement": {"min_inside_fraction": 0.3, "clip_to_femur": True}}
    for seed in range(40):
        probe = synthesize_one(healthy, entry, image, mask, SynthesisConfig.from_dict({**base, "min_lesion_mm3": 0}),
                               np.random.default_rng(seed))
        pasted, transformed = probe.provenance["lesion"]["mm3"], probe.provenance["transformed_mm3"]
        if pasted < transformed - 2:
            break
    else:
        pytest.fail("no draw put part of the lesion outside the femur")
    assert np.all(healthy.site.femur[probe.label.astype(bool)])  # cut to the femur
    limit = (pasted + transformed) / 2
    result = synthesize_one(healthy, entry, image, mask, SynthesisConfig.from_dict({**base, "min_lesion_mm3": limit}),
                            np.random.default_rng(seed))
    assert not result.kept and result.reason == "too_small_after_placement"


def test_integer_images_stay_integer(lesions):
    image, femur, _ = toy_femur(seed=3)
    hu = np.rint((image + 1) / 2 * 3000 - 1000).astype(np.int16)
    healthy = HealthyFemur.from_volumes("H16", Volume(hu, SPACING), femur)
    entry, (patch, mask) = lesions[0]
    # a bank in standardized units pasted into HU: blending still only touches the footprint
    result = synthesize_one(healthy, entry, (patch + 1) / 2 * 3000 - 1000, mask, SynthesisConfig(),
                            np.random.default_rng(0))
    assert result.image.dtype == np.int16
    outside = ~footprint_of(result.label, result.provenance["transform"]["edge_filter_size"])
    assert np.array_equal(result.image[outside], hu[outside])
