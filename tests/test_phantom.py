"""The procedural phantom: determinism, tissue HU, masks, lesions, annotators, cohort on disk."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import ndimage as ndi

from metsynth.errors import ConfigError
from metsynth.phantom import HU_RANGES, TISSUES, PhantomConfig, generate_case, generate_cohort
from metsynth.phantom.annotators import dice
from metsynth.phantom.dataset import case_seed
from metsynth.phantom.fields import Grid, upsample
from metsynth.volume import Volume

TINY = PhantomConfig.preset("tiny")
# 1 mm voxels from above the head to the proximal diaphysis: every tissue, little partial volume
MEDIUM = PhantomConfig(fov_mm=(110, 90, 100), fov_offset_mm=(-60, 8, -20), spacing=(1.0, 1.0, 1.0),
                       lesion_volume_mm3=(500, 4000))
ANNOTATIONS = {("A", 1), ("A", 2), ("B", 1), ("B", 2), ("C", 1)}


@pytest.fixture(scope="module")
def tiny_cases():
    """Six tiny test cases (with annotators), made once for the module."""
    return [generate_case(f"T{i}", "test", i, TINY) for i in range(6)]


def _same(a: Volume, b: Volume) -> bool:
    return a.same_grid(b) and np.array_equal(a.array, b.array)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_case_and_other_seed_differs(tiny_cases):
    again = generate_case("T3", "test", 3, TINY)
    ref = tiny_cases[3]
    assert _same(again.image, ref.image) and _same(again.femur, ref.femur) and _same(again.lesion, ref.lesion)
    assert again.annotations.keys() == ref.annotations.keys()
    assert all(_same(again.annotations[k], ref.annotations[k]) for k in ref.annotations)
    assert again.lesions == ref.lesions
    other = tiny_cases[4]
    assert not np.array_equal(other.image.array, ref.image.array)


def test_generator_and_seed_sequence_are_accepted():
    a = generate_case("H", "healthy", np.random.default_rng(case_seed(5, "healthy", 0)), TINY)
    b = generate_case("H", "healthy", case_seed(5, "healthy", 0), TINY)
    assert _same(a.image, b.image)


def test_case_does_not_depend_on_cohort_size(tmp_path):
    small = generate_cohort(tmp_path / "small", n_healthy=1, n_metastatic=2, seed=7, config=TINY)
    large = generate_cohort(tmp_path / "large", n_healthy=2, n_metastatic=3, seed=7, config=TINY)
    for rel in ("images/H001.nii.gz", "images/M001.nii.gz", "images/M002.nii.gz", "lesions/M002.nii.gz"):
        a, b = Volume.read(small.parent / rel), Volume.read(large.parent / rel)
        assert _same(a, b), rel


# ----------------------------------------------------------------------------- tissues
@pytest.mark.parametrize("seed", [0, 2])
def test_tissue_hu_medians_are_plausible(seed):
    case = generate_case("M", "metastatic", seed, MEDIUM)
    image, labels = case.image.array, case.labels.array
    checked = []
    for tissue, (lo, hi) in HU_RANGES.items():
        interior = ndi.binary_erosion(labels == TISSUES[tissue])  # away from partial volume
        if interior.sum() < 20:
            continue
        median = float(np.median(image[interior]))
        assert lo <= median <= hi, f"{tissue}: median {median:.0f} HU outside [{lo}, {hi}] (seed {seed})"
        checked.append(tissue)
    assert {"fat", "muscle", "femur_cortical", "femur_trabecular", "lesion"} <= set(checked)


def test_air_outside_the_body_and_noise_present(tiny_cases):
    seen_air = False
    for case in tiny_cases:
        air = ndi.binary_erosion(case.labels.array == TISSUES["air"], iterations=2)
        if air.sum() > 50:
            values = case.image.array[air].astype(float)
            assert -1024 <= np.median(values) <= -950
            assert values.std() > 3  # scanner noise
            seen_air = True
    assert seen_air


def test_image_types_and_geometry(tiny_cases):
    for case in tiny_cases:
        assert case.image.array.dtype == np.int16
        assert case.image.shape == (48, 48, 48)
        assert case.image.spacing == (2.0, 2.0, 2.0)
        assert np.allclose(case.image.direction, np.eye(3))
        for vol in [case.femur, case.lesion, case.labels, *case.annotations.values()]:
            assert vol.array.dtype == np.uint8 and vol.same_grid(case.image)


def test_spacing_per_centre_and_side_orientation():
    config = PhantomConfig(fov_mm=(70, 60, 60), fov_offset_mm=(-30, 5, -15), pelvis=False)
    for centre, profile in config.centres.items():
        for side in ("left", "right"):
            case = generate_case("H", "healthy", 11, config, centre=centre, side=side)
            assert case.image.spacing == pytest.approx(profile.spacing)
            assert case.centre == centre and case.side == side
            femur = np.argwhere(case.femur.array)
            world = case.image.index_to_world(femur)  # (z, y, x) LPS: x grows to the patient's left
            top = world[world[:, 0] > np.percentile(world[:, 0], 90)]  # the head
            low = world[world[:, 0] < np.percentile(world[:, 0], 10)]  # the shaft
            medial = 1 if side == "right" else -1  # the midline is at x = 0
            assert np.sign(world[:, 2].mean()) == -medial  # a right femur lies at negative x
            assert medial * (top[:, 2].mean() - low[:, 2].mean()) > 5  # the head points medially


# ----------------------------------------------------------------------------- masks and lesions
def test_masks_are_exact_and_consistent(tiny_cases):
    for case in tiny_cases:
        femur, lesion = case.femur.array.astype(bool), case.lesion.array.astype(bool)
        labels = case.labels.array
        assert set(np.unique(case.femur.array)) <= {0, 1} and set(np.unique(case.lesion.array)) <= {0, 1}
        assert lesion.any() and not (lesion & ~femur).any()  # lesions lie inside the femur
        assert np.array_equal(lesion, labels == TISSUES["lesion"])
        pelvis = np.isin(labels, [TISSUES["pelvis_cortical"], TISSUES["pelvis_trabecular"]])
        assert not (femur & pelvis).any()  # the femur mask excludes the pelvis
        assert 1 <= len(case.lesions) <= 3
        voxel = case.image.voxel_volume_mm3
        assert sum(les["volume_mm3"] for les in case.lesions) == pytest.approx(lesion.sum() * voxel)
        assert ndi.label(lesion)[1] <= len(case.lesions)


def test_lesion_volumes_sites_and_cortical_breaks(tiny_cases):
    lo, hi = TINY.lesion_volume_mm3
    lesions = [lesion for case in tiny_cases for lesion in case.lesions]
    for lesion in lesions:
        assert 0.5 * lo <= lesion["volume_mm3"] <= 1.01 * hi
        assert lesion["region"] in TINY.region_weights
        assert len(lesion["centre_world"]) == 3
    near_target = [abs(lesion["volume_mm3"] - lesion["target_mm3"]) <= 0.1 * lesion["target_mm3"] for lesion in lesions]
    assert np.mean(near_target) > 0.7
    breaks = [lesion["breaks_cortex"] for lesion in lesions]
    assert any(breaks) and not all(breaks)


def test_default_lesion_volume_range_reaches_small_lesions():
    config = PhantomConfig(fov_mm=(80, 70, 80), fov_offset_mm=(-25, 5, -15), spacing=(0.8, 0.8, 0.8),
                           lesion_volume_mm3=(20, 60), lesion_count=(2, 2), pelvis=False)
    case = generate_case("M", "metastatic", 4, config)
    for lesion in case.lesions:
        assert 10 <= lesion["volume_mm3"] <= 61


def test_healthy_case_has_no_lesion(tiny_cases):
    case = generate_case("H", "healthy", 1, TINY)
    assert case.lesion is None and case.lesions == [] and case.annotations == {}
    assert not (case.labels.array == TISSUES["lesion"]).any()
    assert case.femur.array.any()


# ----------------------------------------------------------------------------- annotators
def test_annotators_disagree_like_people(tiny_cases):
    per: dict[tuple[str, int], list[float]] = {k: [] for k in ANNOTATIONS}
    intra = []
    for case in tiny_cases:
        assert set(case.annotations) == ANNOTATIONS
        ref = case.lesion.array
        for key, vol in case.annotations.items():
            assert set(np.unique(vol.array)) <= {0, 1}
            per[key].append(dice(vol.array, ref))
        intra.append(dice(case.annotations["A", 1].array, case.annotations["A", 2].array))
        intra.append(dice(case.annotations["B", 1].array, case.annotations["B", 2].array))
    means = {k: float(np.mean(v)) for k, v in per.items()}
    for key, m in means.items():
        assert 0.5 <= m <= 0.95, f"annotator {key}: mean Dice {m:.2f} vs the exact mask"
    assert all(max(v) < 1.0 for v in per.values())  # nobody matches the exact mask
    assert 0.55 <= float(np.mean(intra)) <= 0.92
    novices = np.mean([means[k] for k in ANNOTATIONS if k[0] != "C"])
    assert means["C", 1] > novices  # the expert is closer to the truth


def test_metastatic_cases_can_carry_annotators_too():
    config = TINY.merged(annotate_metastatic=True)
    case = generate_case("M", "metastatic", 2, config)
    assert set(case.annotations) == ANNOTATIONS
    assert generate_case("M", "metastatic", 2, TINY).annotations == {}


# ----------------------------------------------------------------------------- config errors
def test_bad_role_centre_side_and_empty_fov_are_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'metastatic'"):
        generate_case("X", "metastatc", 0, TINY)
    with pytest.raises(ConfigError, match="unknown centre 'D'"):
        generate_case("X", "healthy", 0, TINY, centre="D")
    with pytest.raises(ConfigError, match="side"):
        generate_case("X", "healthy", 0, TINY, side="up")
    far = TINY.merged(fov_offset_mm=(400.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match="no femur"):
        generate_case("X", "metastatic", 0, far)
    with pytest.raises(ConfigError, match="lesion_count"):
        PhantomConfig.from_dict({"lesion_count": (3, 1)})
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        PhantomConfig.preset("tiyn")
    with pytest.raises(ConfigError, match="lesion region"):
        PhantomConfig.from_dict({"region_weights": {"hed": 1.0}})


def test_separable_upsampling_matches_a_linear_function():
    src = Grid((6, 5, 7), (3.0, 2.0, 2.5), (-1.0, 4.0, 0.0))
    dst = Grid((11, 9, 13), (1.3, 0.85, 1.1), (0.5, 5.0, 1.0))  # inside src
    zs, ys, xs = src.axes()
    field = 2 * zs[:, None, None] - ys[None, :, None] + 0.5 * xs[None, None, :]
    out = upsample(field, src, dst)
    zd, yd, xd = dst.axes()
    expected = 2 * zd[:, None, None] - yd[None, :, None] + 0.5 * xd[None, None, :]
    assert np.allclose(out, expected, atol=1e-4)


# ----------------------------------------------------------------------------- cohort on disk
@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    manifest = generate_cohort(out, n_healthy=1, n_metastatic=1, n_test=1, seed=3, config=TINY, preview=True)
    return manifest


def test_cohort_manifest_loads_and_checks(cohort_dir):
    from metsynth.cohort import check_cohort, load_cohort

    cohort = load_cohort(cohort_dir)
    assert [c.id for c in cohort.cases] == ["H001", "M001", "T001"]
    assert [c.role for c in cohort.cases] == ["healthy", "metastatic", "test"]
    assert [c.centre for c in cohort.cases] == ["A", "B", "C"]
    assert all(c.femur_mask is not None and c.femur_mask.is_file() for c in cohort.cases)
    assert cohort.case("H001").lesion_masks == []
    m = cohort.case("M001")
    assert [(a.annotator, a.expertise) for a in m.lesion_masks] == [("reference", "reference")]
    t = cohort.case("T001")
    got = {(a.annotator, a.round): a.expertise for a in t.lesion_masks}
    assert got == {("reference", 1): "reference", ("A", 1): "novice", ("A", 2): "novice", ("B", 1): "novice",
                   ("B", 2): "novice", ("C", 1): "expert"}
    assert t.reference_lesion().annotator == "reference"
    reports = check_cohort(cohort)  # opens every file: grids, binary masks, non-empty lesions
    assert len(reports) == 3
    assert (cohort_dir.parent / "meta" / "T001.json").is_file()


def test_cohort_previews_are_pngs(cohort_dir):
    for case_id in ("H001", "M001", "T001"):
        png = cohort_dir.parent / "previews" / f"{case_id}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cohort_rerun_skips_and_refuses_other_parameters(cohort_dir):
    out = cohort_dir.parent
    image = out / "images" / "M001.nii.gz"
    stamp = image.stat().st_mtime_ns
    os.utime(image, ns=(stamp - 10**9, stamp - 10**9))
    again = generate_cohort(out, n_healthy=1, n_metastatic=1, n_test=1, seed=3, config=TINY, preview=True)
    assert again == cohort_dir
    assert image.stat().st_mtime_ns == stamp - 10**9  # same parameters: the file was kept
    with pytest.raises(ConfigError, match="seed"):
        generate_cohort(out, n_healthy=1, n_metastatic=1, n_test=1, seed=4, config=TINY)
    with pytest.raises(ConfigError, match="n_healthy"):
        generate_cohort(out, n_healthy=2, n_metastatic=1, n_test=1, seed=3, config=TINY)


def test_cohort_resumes_missing_files_and_force_replaces(tmp_path):
    manifest = generate_cohort(tmp_path, n_healthy=0, n_metastatic=1, seed=1, config=TINY)
    lesion = tmp_path / "lesions" / "M001.nii.gz"
    before = Volume.read(lesion).array
    lesion.unlink()
    generate_cohort(tmp_path, n_healthy=0, n_metastatic=1, seed=1, config=TINY)
    assert np.array_equal(Volume.read(lesion).array, before)  # regenerated identically
    generate_cohort(tmp_path, n_healthy=0, n_metastatic=1, seed=2, config=TINY, force=True)
    assert not np.array_equal(Volume.read(lesion).array, before)
    assert manifest.is_file()


def test_foreign_manifest_is_not_overwritten(tmp_path):
    (tmp_path / "cohort.yaml").write_text("name: mine\ncases: []\n")
    with pytest.raises(ConfigError, match=r"files that are not a phantom cohort \(cohort.yaml; no phantom.json\)"):
        generate_cohort(tmp_path, n_healthy=1, n_metastatic=0, config=TINY)
    assert (tmp_path / "cohort.yaml").read_text() == "name: mine\ncases: []\n"


def test_bad_counts_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="empty"):
        generate_cohort(tmp_path, 0, 0, 0, config=TINY)
    with pytest.raises(ConfigError, match="n_metastatic"):
        generate_cohort(tmp_path, 1, -1, config=TINY)


# ----------------------------------------------------------------------------- disk space
def test_unbounded_request_is_refused_before_writing(tmp_path):
    import time

    from typer.testing import CliRunner

    from metsynth.cli import app

    out = tmp_path / "ph"
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["--quiet", "phantom", "--out", str(out), "--healthy", "1000000000",
                                      "--metastatic", "0", "--size", "tiny"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1,000,000,000 phantom cases would need about" in errors[0]
    assert "is free there" in errors[0] and "fewer cases" in errors[0] and "another --out" in errors[0]
    assert time.perf_counter() - start < 10 and not out.exists()


def test_estimate_follows_the_files(tmp_path, monkeypatch):
    from metsynth import fileio
    from metsynth.errors import MetsynthError
    from metsynth.phantom.dataset import estimate_cohort_bytes

    generate_cohort(tmp_path / "a", n_healthy=1, n_metastatic=1, n_test=1, seed=0, config=TINY)
    written = sum(p.stat().st_size for p in (tmp_path / "a").rglob("*.nii.gz"))
    estimate = estimate_cohort_bytes({"healthy": 1, "metastatic": 1, "test": 1}, TINY)
    assert written < estimate < 3 * written
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: int(estimate) // 2)
    with pytest.raises(MetsynthError, match=r"b: 3 phantom cases would need about"):
        generate_cohort(tmp_path / "b", n_healthy=1, n_metastatic=1, n_test=1, seed=0, config=TINY)
    assert not (tmp_path / "b").exists()
    # a completed folder needs no more space
    assert generate_cohort(tmp_path / "a", n_healthy=1, n_metastatic=1, n_test=1, seed=0, config=TINY).is_file()


def test_disk_full_midway_stops_leaves_no_partial_file_and_a_rerun_finishes(tmp_path, monkeypatch):
    from helpers import fill_disk_at
    from metsynth.errors import MetsynthError

    reference = generate_cohort(tmp_path / "ref", n_healthy=2, n_metastatic=1, seed=5, config=TINY).parent
    calls = fill_disk_at(monkeypatch, 3)  # the 3rd file: some bytes, then the disk is full
    out = tmp_path / "ph"
    with pytest.raises(MetsynthError, match=r"^disk full writing .*\.nii\.gz: free space or choose another --out$"):
        generate_cohort(out, n_healthy=2, n_metastatic=1, seed=5, config=TINY)
    assert len(calls) == 3  # stopped at the first full write
    assert not list(out.rglob(".tmp-*")) and not (out / "cohort.yaml").exists()
    for path in out.rglob("*.nii.gz"):
        Volume.read(path)  # what is there is whole
    monkeypatch.undo()
    generate_cohort(out, n_healthy=2, n_metastatic=1, seed=5, config=TINY)
    for path in reference.rglob("*.nii.gz"):
        assert (out / path.relative_to(reference)).read_bytes() == path.read_bytes()
