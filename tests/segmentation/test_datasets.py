"""Training sets (leakage filter, limits, hold-out), balanced patch sampling and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metsynth.cohort import load_cohort
from metsynth.errors import ConfigError, InputError
from metsynth.evaluation.splits import make_splits
from metsynth.segmentation.datasets import (
    AIR,
    CachedVolume,
    PatchDataset,
    PatchParams,
    PatchSampler,
    TrainingSet,
    TrainingVolume,
    build_training_set,
    cache_volume,
    draw_patch_params,
    extract_patch,
    parse_sources,
)
from metsynth.segmentation.presets import AugmentConfig, segmentation_config
from metsynth.synthesis.transforms import rotation_matrix
from metsynth.volume import Volume


# ------------------------------------------------------------------ training sets
@pytest.fixture
def cohort_with_splits(tmp_path, builders):
    manifest = builders.write_prepared_cohort(tmp_path / "cohort", n_metastatic=6, n_healthy=1)
    splits = make_splits(load_cohort(manifest), n_folds=3, seed=0)
    splits.save(tmp_path / "splits.json")
    return manifest, splits, tmp_path / "splits.json"


def test_real_training_set_excludes_the_test_fold_and_holds_out_validation(cohort_with_splits):
    manifest, splits, path = cohort_with_splits
    ts = build_training_set(manifest, "real", fold=1, splits=path, val_cases=1, seed=0)
    train = {v.case for v in ts.train}
    val = {v.case for v in ts.val}
    assert ts.test_cases == splits.test(1)
    assert not (train | val) & set(splits.test(1))
    assert train | val == set(splits.train(1)) and not train & val and len(val) == 1
    # the hold-out depends on the seed only, not on the sources
    assert {v.case for v in build_training_set(manifest, "real", fold=1, splits=path, val_cases=1).val} == val


def test_planted_leaking_volume_never_reaches_fold_k(cohort_with_splits, tmp_path, builders):
    manifest, splits, path = cohort_with_splits
    leaking_donor = splits.test(0)[0]
    safe_donor = splits.test(1)[0]
    syn = builders.write_synthetic_set(tmp_path / "syn", manifest, donors=[leaking_donor, safe_donor])
    ts = build_training_set(manifest, "synthetic,real", fold=0, splits=path, synthetic=syn, val_cases=1)
    donors = {v.donor_case for v in ts.train if v.source == "synthetic"}
    assert leaking_donor not in donors and donors == {safe_donor}
    assert ts.dropped_leaking == 2  # both repeats of the leaking donor
    assert "dropped" not in {v.case for v in ts.train}  # kept == False rows are not volumes
    # fold 1: the other way round
    ts1 = build_training_set(manifest, "synthetic", fold=1, splits=path, synthetic=syn, val_cases=1)
    assert {v.donor_case for v in ts1.train} == {leaking_donor}
    # harmonized sets go through the same filter, also in a mix
    har = builders.write_synthetic_set(tmp_path / "har", manifest, donors=[leaking_donor, safe_donor], per_donor=1)
    mix = build_training_set(manifest, "synthetic,harmonized,real", fold=0, splits=path, synthetic=syn,
                             harmonized=har, val_cases=1)
    assert {(v.source, v.donor_case) for v in mix.train if v.source != "real"} == {
        ("synthetic", safe_donor), ("harmonized", safe_donor)}
    assert mix.dropped_leaking == 3


def test_saved_training_set_round_trips(cohort_with_splits, tmp_path, builders):
    manifest, splits, path = cohort_with_splits
    syn = builders.write_synthetic_set(tmp_path / "syn", manifest, donors=[splits.test(1)[0]])
    ts = build_training_set(manifest, "synthetic,real", fold=0, splits=path, synthetic=syn, val_cases=1)
    ts.save(tmp_path / "ts.json")
    again = TrainingSet.load(tmp_path / "ts.json")
    assert again == ts and again.counts() == {"real": 3, "synthetic": 2}


def test_limit_takes_nested_subsets_of_synthetic_volumes(cohort_with_splits, tmp_path, builders):
    manifest, splits, path = cohort_with_splits
    syn = builders.write_synthetic_set(tmp_path / "syn", manifest, donors=splits.train(0), per_donor=2)
    sets = {n: {v.key for v in build_training_set(manifest, "synthetic", fold=0, splits=path, synthetic=syn,
                                                   limit=n, val_cases=1).train} for n in (2, 5, 8)}
    assert [len(sets[n]) for n in (2, 5, 8)] == [2, 5, 8]
    assert sets[2] < sets[5] < sets[8]
    with pytest.raises(ConfigError, match="limit=9 but only 8"):
        build_training_set(manifest, "synthetic", fold=0, splits=path, synthetic=syn, limit=9, val_cases=1)
    with pytest.raises(ConfigError, match="applies to synthetic"):
        build_training_set(manifest, "real", limit=2, val_cases=1)


def test_training_set_errors_name_the_fix(cohort_with_splits, tmp_path):
    manifest, splits, path = cohort_with_splits
    with pytest.raises(ConfigError, match="did you mean 'synthetic'"):
        parse_sources("real,synthetc")
    with pytest.raises(ConfigError, match="--synthetic DIR"):
        build_training_set(manifest, "synthetic", val_cases=1)
    with pytest.raises(ConfigError, match="--splits"):
        build_training_set(manifest, "real", fold=0, val_cases=1)
    with pytest.raises(ConfigError, match="lower val_cases"):
        build_training_set(manifest, "real", fold=0, splits=path, val_cases=4)
    with pytest.raises(ConfigError, match="--bank"):
        build_training_set(manifest, "online", val_cases=1)
    with pytest.raises(InputError, match="no index.csv"):
        build_training_set(manifest, "synthetic", synthetic=tmp_path, val_cases=1)


def test_splits_of_another_cohort_are_refused(tmp_path, builders):
    a = builders.write_prepared_cohort(tmp_path / "a", n_metastatic=4)
    b = builders.write_prepared_cohort(tmp_path / "b", n_metastatic=6)
    make_splits(load_cohort(a), n_folds=2).save(tmp_path / "splits.json")
    with pytest.raises(InputError, match="missing from the splits: M05, M06"):
        build_training_set(b, "real", fold=0, splits=tmp_path / "splits.json", val_cases=1)


# ------------------------------------------------------------------ sampling
def test_sampler_is_balanced_and_visits_every_volume_equally():
    sampler = PatchSampler(n_volumes=5, patches_per_volume=4, pos_fraction=0.5, seed=1)
    keys = list(sampler)
    assert len(keys) == len(sampler) == 20
    assert sum(k[3] for k in keys) == 10
    assert sorted(np.bincount([k[2] for k in keys])) == [4] * 5
    assert list(sampler) == keys  # deterministic
    sampler.set_epoch(1)
    assert list(sampler) != keys and all(k[0] == 1 for k in sampler)


@pytest.mark.parametrize("n_volumes, length", [(3, 10), (40, 10), (7, 7)])
def test_fixed_epoch_length_spreads_patches_evenly(n_volumes, length):
    sampler = PatchSampler(n_volumes=n_volumes, patches_per_volume=4, pos_fraction=0.5, seed=2,
                           patches_per_epoch=length)
    keys = list(sampler)
    assert len(keys) == len(sampler) == length
    counts = np.bincount([k[2] for k in keys], minlength=n_volumes)
    assert counts.max() - counts.min() <= 1  # whole passes first: no volume twice before all once
    assert sum(k[3] for k in keys) == round(length * 0.5)
    sampler.set_epoch(1)
    if n_volumes > length:  # a later epoch reaches other volumes
        assert {k[2] for k in sampler} != {k[2] for k in keys}


def test_sampler_splits_keys_between_ddp_ranks(monkeypatch):
    sampler = PatchSampler(n_volumes=5, patches_per_volume=3, pos_fraction=0.5, seed=0)
    everything = list(sampler)
    parts = []
    for rank in range(2):
        monkeypatch.setattr(PatchSampler, "_rank_world", staticmethod(lambda r=rank: (r, 2)))
        parts.append(list(sampler))
        assert len(sampler) == 7
    assert len(parts[0]) == len(parts[1]) == 7
    assert not set(parts[0]) & set(parts[1]) and set(parts[0]) | set(parts[1]) <= set(everything)


def _volume(shape=(40, 40, 40)):
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[18:24, 10:16, 20:26] = 1
    return CachedVolume(image, label, np.argwhere(label).astype(np.int32))


def test_positive_patches_are_centred_on_lesion_and_negatives_on_background():
    vol = _volume()
    plain = AugmentConfig(enabled=False)
    for i in range(20):
        rng = np.random.default_rng(i)
        pos = draw_patch_params(vol, (16, 16, 16), True, plain, rng)
        assert pos.positive and vol.label[pos.center] == 1
        img, lbl = extract_patch(vol.image, vol.label, pos, (16, 16, 16))
        assert lbl[8, 8, 8] == 1
        neg = draw_patch_params(vol, (16, 16, 16), False, plain, rng)
        assert not neg.positive and vol.label[neg.center] == 0


def test_volume_without_lesion_gives_background_patches():
    vol = _volume()
    empty = CachedVolume(vol.image, np.zeros_like(vol.label), np.zeros((0, 3), np.int32))
    params = draw_patch_params(empty, (16, 16, 16), True, AugmentConfig(), np.random.default_rng(0))
    assert not params.positive


def test_plain_patch_is_the_slice_and_pads_with_air_outside():
    vol = _volume()
    params = PatchParams(center=(20, 20, 20), positive=True)
    img, lbl = extract_patch(vol.image, vol.label, params, (16, 16, 16))
    assert np.array_equal(img, vol.image[12:28, 12:28, 12:28]) and np.array_equal(lbl, vol.label[12:28, 12:28, 12:28])
    small = extract_patch(vol.image[:10], vol.label[:10], PatchParams(center=(5, 20, 20), positive=False),
                          (16, 16, 16))[0]
    assert np.all(small[:3] == AIR) and np.array_equal(small[3:13], vol.image[:10, 12:28, 12:28])


def test_flips_rotations_and_scaling_act_as_said():
    vol = _volume()
    base = PatchParams(center=(20, 20, 20), positive=True)
    img, lbl = extract_patch(vol.image, vol.label, base, (16, 16, 16))
    flipped, flbl = extract_patch(vol.image, vol.label, PatchParams((20, 20, 20), True, flips=(False, False, True)),
                                  (16, 16, 16))
    assert np.array_equal(flipped, img[:, :, ::-1]) and np.array_equal(flbl, lbl[:, :, ::-1])
    # 90 degrees about the z axis on a centred odd patch: a lossless quarter turn in the (y, x) plane
    odd = (15, 15, 15)
    ref = extract_patch(vol.image, vol.label, base, odd)[0]
    rot = extract_patch(vol.image, vol.label, PatchParams((20, 20, 20), True, angles_deg=(90.0, 0, 0)), odd)[0]
    assert (np.allclose(rot, np.rot90(ref, k=1, axes=(1, 2)), atol=1e-5)
            or np.allclose(rot, np.rot90(ref, k=-1, axes=(1, 2)), atol=1e-5))
    # zoom 2: the patch covers half the field of view, so the lesion looks twice as large
    _, lbl2 = extract_patch(vol.image, vol.label, PatchParams((20, 12, 22), True, scale=2.0), (16, 16, 16))
    _, lbl1 = extract_patch(vol.image, vol.label, PatchParams((20, 12, 22), True), (16, 16, 16))
    assert lbl2.sum() == pytest.approx(8 * lbl1.sum(), rel=0.35)


def test_a_rotated_patch_out_of_the_lesion_s_reach_skips_the_label_transform(monkeypatch):
    from scipy import ndimage

    vol = _volume()
    calls = []
    real = ndimage.affine_transform
    monkeypatch.setattr(ndimage, "affine_transform", lambda *a, **k: calls.append(1) or real(*a, **k))
    far = PatchParams(center=(8, 34, 8), positive=False, angles_deg=(20.0, -10.0, 5.0), scale=1.1)
    img, lbl = extract_patch(vol.image, vol.label, far, (12, 12, 12))
    # the transform of an all-zero block is all zeros: only the image's was computed
    assert len(calls) == 1 and not lbl.any() and lbl.dtype == np.uint8 and lbl.shape == (12, 12, 12)
    near = PatchParams(center=(21, 13, 23), positive=True, angles_deg=(20.0, -10.0, 5.0), scale=1.1)
    _, lbl = extract_patch(vol.image, vol.label, near, (12, 12, 12))
    assert len(calls) == 3 and lbl[6, 6, 6] == 1


def test_noise_and_contrast_change_intensities_only():
    vol = _volume()
    ref, lbl = extract_patch(vol.image, vol.label, PatchParams((20, 20, 20), True), (16, 16, 16))
    noisy, nlbl = extract_patch(vol.image, vol.label, PatchParams((20, 20, 20), True, noise_std=0.1, noise_seed=3),
                                (16, 16, 16))
    assert np.array_equal(lbl, nlbl)
    assert np.std(noisy - ref) == pytest.approx(0.1, rel=0.1)
    contrast, _ = extract_patch(vol.image, vol.label, PatchParams((20, 20, 20), True, gamma=2.0), (16, 16, 16))
    assert np.allclose(contrast, ((ref + 1) / 2) ** 2 * 2 - 1, atol=1e-6)
    assert contrast.min() >= -1 and contrast.max() <= 1


def test_patches_replay_from_their_key(tmp_path, builders):
    manifest = builders.write_prepared_cohort(tmp_path / "c", n_metastatic=1, n_healthy=0)
    case = load_cohort(manifest).cases[0]
    item = TrainingVolume(key="real/x", source="real", image=str(case.image), label=str(case.lesion_masks[0].path),
                          case="x")
    stem = cache_volume(item, tmp_path / "cache")
    config = segmentation_config("tiny", {"augment": {"rotate_prob": 1.0, "noise_prob": 1.0}})
    a = PatchDataset([str(stem)], config)[(3, 7, 0, True)]
    b = PatchDataset([str(stem)], config)[(3, 7, 0, True)]
    c = PatchDataset([str(stem)], config)[(4, 7, 0, True)]
    assert a["image"].shape == (1, 32, 32, 32) and a["label"].dtype.is_floating_point is False
    assert a["image"].numpy().tobytes() == b["image"].numpy().tobytes()
    assert a["image"].numpy().tobytes() != c["image"].numpy().tobytes()


def test_the_dataset_keeps_the_volumes_it_uses_most_recently_open(monkeypatch):
    from metsynth.segmentation import datasets

    opened = []
    monkeypatch.setattr(datasets, "OPEN_VOLUMES", 2)
    monkeypatch.setattr(datasets, "open_cached", lambda stem: opened.append(stem) or _volume((12, 12, 12)))
    dataset = PatchDataset(["a", "b", "c"], segmentation_config("tiny", {"patch_size": [8, 8, 8]}))
    for volume in (0, 1, 0, 2, 0, 1):
        dataset[(0, len(opened), volume, False)]
    # a, b; a again (kept); c replaces b, the least recently used; a again (kept); b again (reopened)
    assert opened == ["a", "b", "c", "b"]
    assert len(dataset._open) == 2


def test_cache_checks_the_label_grid(tmp_path):
    img = Volume(np.zeros((8, 8, 8), np.float32))
    img.write(tmp_path / "i.nii.gz")
    Volume(np.zeros((8, 8, 9), np.uint8)).write(tmp_path / "l.nii.gz")
    item = TrainingVolume(key="real/a", source="real", image=str(tmp_path / "i.nii.gz"),
                          label=str(tmp_path / "l.nii.gz"), case="a")
    with pytest.raises(InputError, match="not on the grid"):
        cache_volume(item, tmp_path / "cache")
    missing = TrainingVolume(key="real/b", source="real", image=str(tmp_path / "nope.nii.gz"), label="x", case="b")
    with pytest.raises(InputError, match="not found"):
        cache_volume(missing, tmp_path / "cache")


# ------------------------------------------------------------------ online mixed with listed volumes
def _mixed_set(n_real: int) -> TrainingSet:
    real = [TrainingVolume(key=f"real/M{i}", source="real", image=f"M{i}.nii.gz", label=f"M{i}_l.nii.gz", case=f"M{i}")
            for i in range(n_real)]
    return TrainingSet(sources=("real", "online"), train=real, val=[], online={"bank": "unused"})


@pytest.mark.parametrize("changes, expected", [
    ({"online_share": 0.25}, {"real": 36, "online": 12}),         # online part 3 x 4; real 3 times as many
    ({}, {"real": 24, "online": 12}),                             # proportional: every volume 4 patches
    ({"online_share": 0.25, "patches_per_epoch": 40}, {"real": 30, "online": 10}),
])
def test_online_mixed_with_real_draws_both_in_the_stated_share(changes, expected):
    from metsynth.segmentation.datasets import patch_sampler

    config = segmentation_config("tiny", {"online_volumes_per_epoch": 3, "patches_per_volume": 4, **changes})
    ts = _mixed_set(6)
    sampler = patch_sampler(ts, config)
    sources = [v.source for v in ts.train]
    keys = list(sampler)
    drawn = {"real": sum(k[2] < 6 for k in keys), "online": sum(k[2] >= 6 for k in keys)}
    assert drawn == expected and len(sampler) == len(keys) == sum(expected.values())
    assert sampler.source_counts(sources) == expected
    described = sampler.describe(sources)
    assert described["online_share"] == pytest.approx(expected["online"] / len(keys))
    assert described["online_share_setting"] == changes.get("online_share", "proportional")
    real = np.bincount([k[2] for k in keys if k[2] < 6], minlength=6)
    assert real.max() - real.min() <= 1  # whole passes over the real volumes
    online = [k[2] - 6 for k in keys if k[2] >= 6]
    assert set(online) <= {0, 1, 2} and all(  # each fresh volume's patches stay together (one synthesis)
        online[i] == online[i - 1] or online[i] not in online[:i] for i in range(1, len(online)))
    assert sum(k[3] for k in keys) == round(len(keys) * config.pos_fraction)
    # seeded: the same seed draws the same list, another epoch or seed another one
    assert list(patch_sampler(ts, config)) == keys
    sampler.set_epoch(1)
    assert list(sampler) != keys and sampler.source_counts(sources) == expected
    assert list(patch_sampler(ts, config.merged(seed=1))) != keys


@pytest.mark.parametrize("per_epoch, counts", [(None, [4, 4, 4]), (10, [4, 3, 3]), (2, [1, 1, 0])])
def test_an_online_only_epoch_has_the_length_of_any_other(per_epoch, counts):
    """``patches_per_epoch`` bounds an online-only epoch too (it once gave online models twice the
    offline models' steps); the patches spread over the fresh volumes, each volume's together."""
    from metsynth.segmentation.datasets import patch_sampler
    from metsynth.segmentation.training_set import TrainingSet

    config = segmentation_config("tiny", {"online_volumes_per_epoch": 3, "patches_per_volume": 4,
                                          "patches_per_epoch": per_epoch})
    sampler = patch_sampler(TrainingSet(sources=("online",), train=[], val=[], online={"bank": "unused"}), config)
    volumes = [k[2] for k in sampler]
    assert len(sampler) == len(volumes) == sum(counts) and volumes == sorted(volumes)
    assert [volumes.count(j) for j in range(3)] == counts


def test_online_share_is_a_validated_preset_setting():
    assert segmentation_config("paper").online_share is None
    assert segmentation_config("tiny", {"online_share": 0.5}).online_share == 0.5
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match="online_share"):
            segmentation_config("tiny", {"online_share": bad})


def test_mixed_patches_come_from_the_real_volumes_and_the_online_source(tmp_path, builders):
    """The dataset reads key volume v < n from the listed volumes and v >= n from the online source."""
    from metsynth.segmentation.datasets import patch_sampler

    manifest = builders.write_prepared_cohort(tmp_path / "c", n_metastatic=2, n_healthy=0)
    ts = build_training_set(manifest, "real", val_cases=0)
    stems = [str(cache_volume(v, tmp_path / "cache")) for v in ts.train]
    made = []

    def online_source(epoch, volume):  # a constant image: its patches are recognisable
        made.append((epoch, volume))
        label = np.zeros((40, 40, 40), np.uint8)
        label[18:22, 18:22, 18:22] = 1
        return np.full((40, 40, 40), 0.25, np.float32), label

    config = segmentation_config("tiny", {"online_volumes_per_epoch": 2, "patches_per_volume": 3,
                                          "online_share": 0.5, "augment": {"enabled": False}})
    ts = TrainingSet(sources=("real", "online"), train=ts.train, val=[], online={"bank": "unused"})
    dataset = PatchDataset(stems, config, online_source=online_source)
    patches = [dataset[key]["image"] for key in patch_sampler(ts, config)]
    from_online = sum(bool((p == 0.25).all()) for p in patches)
    assert (from_online, len(patches) - from_online) == (6, 6)
    assert sorted(set(made)) == [(0, 0), (0, 1)] and len(made) == 2  # two fresh volumes, one synthesis each


def test_online_recipients_exclude_the_patients_a_fold_tests(tmp_path, builders):
    """A healthy femur of a patient whose other femur is tested in fold k is that patient's anatomy:
    fold k's online synthesis must not paste into it (the offline sets' leakage rule)."""
    import yaml

    manifest = builders.write_prepared_cohort(tmp_path / "c", n_metastatic=4, n_healthy=2)
    data = yaml.safe_load(manifest.read_text())
    for case in data["cases"]:
        case["patient"] = "P1" if case["id"] in ("H00", "M02") else case["id"]  # H00: M02's other femur
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    splits = make_splits(load_cohort(manifest), n_folds=2, seed=0, group_by="patient")
    splits.save(tmp_path / "splits.json")
    tested = splits.fold_of("M02")
    healthy = {}
    for fold in (0, 1):
        ts = build_training_set(manifest, "online", fold=fold, splits=tmp_path / "splits.json", bank=tmp_path,
                                val_cases=0)
        healthy[fold] = ts.online["healthy_cases"]
    assert "H00" not in healthy[tested] and "H01" in healthy[tested]
    assert {"H00", "H01"} <= set(healthy[1 - tested])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_the_label_is_the_whole_patch_s_transform_computed_only_where_the_lesion_reaches(seed):
    """The label is transformed only in the part of the patch the lesion voxels can reach; the result
    is the transform of the whole patch, voxel for voxel, and never a view of the cached arrays."""
    from scipy import ndimage

    vol = _volume()
    rng = np.random.default_rng(seed)
    params = PatchParams(center=tuple(int(c) for c in rng.integers(6, 34, size=3)), positive=True,
                         angles_deg=tuple(float(a) for a in rng.uniform(-40, 40, size=3)),
                         scale=float(rng.uniform(0.8, 1.25)))
    size = np.array([12, 14, 16])
    img, lbl = extract_patch(vol.image, vol.label, params, tuple(size))
    matrix = rotation_matrix(params.angles_deg) / params.scale
    half = (size - 1) / 2.0
    reach = np.abs(matrix) @ half
    lo = np.floor(np.asarray(params.center) - reach).astype(int) - 1
    hi = np.ceil(np.asarray(params.center) + reach).astype(int) + 2
    block = np.zeros(tuple(hi - lo), np.float32)
    src_lo, src_hi = np.clip(lo, 0, vol.label.shape), np.clip(hi, 0, vol.label.shape)
    block[tuple(slice(a - b, c - b) for a, b, c in zip(src_lo, lo, src_hi))] = \
        vol.label[tuple(slice(a, c) for a, c in zip(src_lo, src_hi))]
    whole = ndimage.affine_transform(block, matrix, offset=(np.asarray(params.center) - lo) - matrix @ half,
                                     output_shape=tuple(size), order=1, mode="constant", cval=0.0, prefilter=False)
    assert np.array_equal(lbl, (whole >= 0.5).astype(np.uint8))
    for out, cached in ((img, vol.image), (lbl, vol.label)):
        assert out.flags.writeable and out.flags.c_contiguous and not np.shares_memory(out, cached)
