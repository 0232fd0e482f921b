"""Femoral regions from the mask's geometry, and placement inside the femur."""

from __future__ import annotations

import numpy as np
import pytest

from metsynth.errors import ConfigError
from metsynth.synthesis.placement import (
    REGIONS,
    FemurSite,
    NoPlacement,
    PlacementConfig,
    PlacementParams,
    draw_placement,
    femur_regions,
)
from metsynth.synthesis.transforms import TransformedLesion
from synthesis.synth_toy import SPACING, toy_femur


@pytest.fixture(scope="module")
def site() -> FemurSite:
    _, femur, _ = toy_femur(seed=0)
    return FemurSite.from_mask(femur, SPACING)


def cube_lesion(size: int, pad: int = 2) -> TransformedLesion:
    n = size + 2 * pad
    mask = np.zeros((n, n, n), np.uint8)
    mask[pad:pad + size, pad:pad + size, pad:pad + size] = 1
    return TransformedLesion(np.zeros(mask.shape, np.float32), mask, (pad + size // 2,) * 3)


def placed_mask(site: FemurSite, lesion: TransformedLesion, params: PlacementParams) -> np.ndarray:
    out = np.zeros(site.shape, bool)
    lo = np.asarray(params.corner)
    where = np.argwhere(lesion.mask) + lo
    out[tuple(where.T)] = True
    return out


def test_regions_follow_the_anatomy(site):
    name = site.region_at
    assert name((54, 22, 11)) == "head"  # head centre
    assert name((5, 22, 34)) == "shaft"  # low in the shaft
    assert name((47, 22, 41)) == "trochanter"  # greater trochanter
    assert name((48, 22, 24)) == "neck"  # middle of the neck
    assert name((0, 0, 0)) == "outside"
    assert site.info["head_radius_mm"] == pytest.approx(8.5, abs=1.0)
    assert set(site.info["voxels"]) == set(REGIONS) and all(v > 0 for v in site.info["voxels"].values())
    assert np.array_equal(site.regions > 0, site.femur)


def test_regions_follow_the_superior_direction():
    """A volume stored upside down (z axis pointing inferior) gives the same regions."""
    _, femur, _ = toy_femur(seed=0)
    flipped = femur[::-1]
    direction = np.diag([-1.0, 1.0, 1.0])
    regions, _ = femur_regions(flipped, SPACING, direction)
    upright, _ = femur_regions(femur, SPACING)
    assert np.mean(regions[::-1] == upright) > 0.99


def test_shaft_only_mask_is_all_shaft():
    femur = np.zeros((40, 20, 20), bool)
    yy, xx = np.indices((20, 20))
    femur[:, (yy - 10) ** 2 + (xx - 10) ** 2 <= 25] = True
    regions, info = femur_regions(femur, (1.0, 1.0, 1.0))
    assert set(np.unique(regions[femur])) == {4}


@pytest.mark.parametrize("seed", range(12))
def test_placement_is_inside_the_femur(site, seed):
    lesion = cube_lesion(6)
    params = draw_placement(np.random.default_rng(seed), site, lesion, PlacementConfig())
    assert isinstance(params, PlacementParams)
    placed = placed_mask(site, lesion, params)
    assert placed.sum() == lesion.voxels
    assert np.all(site.femur[placed])
    assert params.inside_fraction == 1.0
    assert params.region == site.region_at(params.centre)


def test_partial_inside_fraction(site):
    lesion = cube_lesion(8)
    config = PlacementConfig(min_inside_fraction=0.5)
    for seed in range(10):
        params = draw_placement(np.random.default_rng(seed), site, lesion, config)
        placed = placed_mask(site, lesion, params)
        assert site.femur[placed].sum() >= 0.5 * lesion.voxels
        assert params.inside_fraction == pytest.approx(site.femur[placed].sum() / lesion.voxels)


def test_region_weights_choose_the_region(site):
    lesion = cube_lesion(4)
    config = PlacementConfig(region_weights={"head": 1.0, "shaft": 0.0})
    for seed in range(8):
        params = draw_placement(np.random.default_rng(seed), site, lesion, config)
        assert params.requested_region == "head" and params.region == "head"


def test_same_region_as_donor_keeps_the_lesions_surroundings(site):
    lesion = cube_lesion(4)
    config = PlacementConfig(same_region_as_donor=True)
    for donor in ("head", "neck", "shaft"):
        for seed in range(4):
            params = draw_placement(np.random.default_rng(seed), site, lesion, config, donor_region=donor)
            assert params.requested_region == donor and params.region == donor
    # off, or no known donor region: uniform over the femur, as in the paper
    regions = {draw_placement(np.random.default_rng(s), site, lesion, PlacementConfig(), "head").region
               for s in range(40)}
    assert len(regions) > 1
    assert draw_placement(np.random.default_rng(0), site, lesion, config, None).requested_region is None


def test_same_region_as_donor_falls_back_where_the_lesion_does_not_fit(site):
    big = cube_lesion(9)  # fits in the head, trochanter and shaft, not centred in the neck
    params = draw_placement(np.random.default_rng(0), site, big, PlacementConfig(same_region_as_donor=True), "neck")
    assert isinstance(params, PlacementParams)
    assert params.requested_region is None and params.region != "neck"  # placed elsewhere in the femur


def test_surface_contact_is_the_share_of_the_shell_outside_the_femur():
    femur = np.zeros((12, 12, 12), bool)
    femur[2:10, 2:10, 2:10] = True
    site = FemurSite.from_mask(femur, (2.0, 1.0, 1.0))
    deep = np.zeros((2, 2, 2), bool)
    deep[:] = True
    assert site.contact_at(deep, np.array([5, 5, 5])) == 0.0  # its whole shell is bone
    # against the x = 2 face: 16 of the 4x4x4 - 8 = 56 shell voxels are outside
    assert site.contact_at(deep, np.array([5, 5, 2])) == pytest.approx(16 / 56)
    # in a corner of the image, outside the femur: its shell within the image is all outside
    assert site.contact_of(np.array([[0, 0, 0]])) == 1.0
    assert site.contact_of(np.argwhere(np.pad(deep, [(5, 0), (5, 0), (2, 0)]))) == pytest.approx(16 / 56)


def test_match_donor_contact_pastes_lesions_against_the_cortex_like_their_donor(site):
    lesion = cube_lesion(3)
    plain = PlacementConfig()
    matched = PlacementConfig(match_donor_contact=16)

    def contacts(config, donor):
        out = []
        for seed in range(30):
            params = draw_placement(np.random.default_rng(seed), site, lesion, config, None, donor)
            out.append(site.contact_of(np.argwhere(placed_mask(site, lesion, params))))
            if config.match_donor_contact:
                assert params.contact == pytest.approx(out[-1], abs=1e-3) and params.donor_contact == donor
            else:
                assert params.contact is None
        return np.asarray(out)

    uniform, touching = contacts(plain, 0.3), contacts(matched, 0.3)
    assert np.median(uniform) < 0.05  # uniform positions are mostly deep in the bone
    assert np.median(np.abs(touching - 0.3)) < 0.1 < np.median(np.abs(uniform - 0.3))
    assert np.median(contacts(matched, 0.0)) == 0.0
    # no donor contact known: the paper's uniform placement, the same draws
    assert draw_placement(np.random.default_rng(3), site, lesion, matched, None, None) == \
        draw_placement(np.random.default_rng(3), site, lesion, plain, None, None)


def test_a_lesion_allowed_to_cross_the_surface_matches_its_donor_as_it_will_be_pasted(site):
    """With min_inside_fraction < 1 the lesion may cross the femur's surface and is cut there
    (clip_to_femur): the contact matched is the cut lesion's, as the donor's label is inside its femur."""
    lesion = cube_lesion(4)
    config = PlacementConfig(match_donor_contact=16, min_inside_fraction=0.6)
    crossing = 0
    for seed in range(20):
        params = draw_placement(np.random.default_rng(seed), site, lesion, config, None, 0.3)
        placed = placed_mask(site, lesion, params)
        cut = placed & site.femur
        assert params.contact == pytest.approx(site.contact_of(np.argwhere(cut)), abs=1e-3)
        crossing += int(cut.sum() < placed.sum())
    assert crossing > 0  # some positions do cross the surface: a breach of the cortex


def test_exact_search_finds_rare_positions():
    femur = np.zeros((30, 30, 30), bool)
    femur[10:20, 10:20, 10:20] = True  # a 10^3 box: an 8^3 lesion fits in only 27 positions
    site = FemurSite(femur, femur.astype(np.uint8) * 4)
    lesion = cube_lesion(8)
    methods = set()
    for seed in range(10):
        params = draw_placement(np.random.default_rng(seed), site, lesion, PlacementConfig(max_tries=1))
        assert isinstance(params, PlacementParams)
        assert np.all(femur[placed_mask(site, lesion, params)])
        methods.add(params.method)
    assert "exact" in methods
    no_fallback = PlacementConfig(max_tries=1, exact_fallback=False)
    outcomes = [draw_placement(np.random.default_rng(s), site, lesion, no_fallback) for s in range(10)]
    assert any(isinstance(o, NoPlacement) for o in outcomes)


def test_no_position_for_a_lesion_bigger_than_the_femur(site):
    outcome = draw_placement(np.random.default_rng(0), site, cube_lesion(30), PlacementConfig(max_tries=5))
    assert isinstance(outcome, NoPlacement)
    assert "no position in the femur" in outcome.reason and outcome.tries == 5


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"region_weights": {"haed": 1}}, r"unknown femoral region 'haed'.*did you mean 'head'\?"),
        ({"region_weights": {"head": -1}}, r"region weight of 'head' must be a number >= 0"),
        ({"region_weights": {"head": 0}}, r"at least one region needs a weight > 0"),
        ({"min_inside_fraction": 0}, r"min_inside_fraction"),
        ({"max_tries": 0}, r"max_tries"),
    ],
)
def test_bad_placement_settings(settings_, message):
    with pytest.raises(ConfigError, match=message):
        PlacementConfig.from_dict(settings_)
