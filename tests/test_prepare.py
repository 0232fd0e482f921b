from __future__ import annotations

import numpy as np
import pytest
import yaml
from scipy import ndimage
from typer.testing import CliRunner

from helpers import fill_disk_at, make_volume, write_tiny_cohort, written_again
from metsynth.cli import app
from metsynth.cohort import load_cohort
from metsynth.errors import ConfigError, InputError, MetsynthError
from metsynth.prepare import (
    PrepareConfig,
    destandardize,
    prepare_cohort,
    resample_image,
    resample_mask,
    standardize,
    target_grid,
)
from metsynth.volume import Volume


def world_centroid(mask: Volume) -> np.ndarray:
    return mask.index_to_world(np.argwhere(mask.array > 0).mean(0))


@pytest.mark.parametrize("spacing", [(0.85, 0.85, 0.85), (2.0, 2.0, 2.0), (0.5, 1.3, 0.7)])
def test_resampling_keeps_physical_extent(spacing):
    vol = make_volume(shape=(20, 31, 17), spacing=(2.5, 0.7, 1.1))
    grid = target_grid(vol, spacing)
    np.testing.assert_allclose(grid.spacing, spacing)
    # extent differs by less than one target voxel, and the first voxel edge is kept
    assert np.all(np.abs(np.subtract(grid.extent_mm, vol.extent_mm)) <= np.asarray(spacing) / 2 + 1e-9)
    np.testing.assert_allclose(grid.index_to_world([-0.5, -0.5, -0.5]), vol.index_to_world([-0.5, -0.5, -0.5]),
                               atol=1e-9)


def test_image_resampling_preserves_world_positions():
    vol = make_volume(shape=(30, 30, 30), spacing=(1.0, 1.0, 1.0))
    arr = np.zeros(vol.shape, np.float32)
    arr[12:18, 8:14, 20:26] = 100
    vol = vol.with_array(arr)
    out = resample_image(vol, target_grid(vol, (0.85, 0.85, 0.85)))
    assert out.array.dtype == np.float32
    np.testing.assert_allclose(world_centroid(out.with_array(out.array > 50)),
                               world_centroid(vol.with_array(arr > 50)), atol=0.3)


def test_mask_resampling_keeps_volume_and_position():
    vol = make_volume(shape=(30, 40, 40), spacing=(1.5, 0.6, 0.6))
    mask = np.zeros(vol.shape, np.uint8)
    zz, yy, xx = np.indices(vol.shape)
    mask[((zz - 15) * 1.5) ** 2 + ((yy - 20) * 0.6) ** 2 + ((xx - 18) * 0.6) ** 2 < 6.0 ** 2] = 1
    mvol = vol.with_array(mask)
    out = resample_mask(mvol, target_grid(vol, (0.85, 0.85, 0.85)))
    before = mask.sum() * vol.voxel_volume_mm3
    after = out.array.sum() * out.voxel_volume_mm3
    assert after == pytest.approx(before, rel=0.05)
    np.testing.assert_allclose(world_centroid(out), world_centroid(mvol), atol=0.3)


@pytest.mark.parametrize("spacing", [(0.85, 0.85, 0.85), (2.0, 2.0, 2.0), (3.0, 3.0, 3.0)])
def test_small_lesions_are_not_lost(spacing):
    vol = make_volume(shape=(30, 30, 30), spacing=(1.0, 1.0, 1.0))
    mask = np.zeros(vol.shape, np.uint8)
    mask[5, 5, 5] = 1            # 1 mm^3
    mask[20, 20, 10:12] = 1      # 2 mm^3
    mask[10:16, 20:26, 20:26] = 1  # a larger one
    out = resample_mask(vol.with_array(mask), target_grid(vol, spacing))
    assert ndimage.label(out.array)[1] == 3


def test_standardization_round_trip_and_clipping():
    hu = np.array([-2000, -1000, 0, 400, 2000, 3000], np.float32)
    std = standardize(hu, (-1000, 2000))
    np.testing.assert_allclose(std, [-1, -1, -1 / 3, 1 / 15 - 1 / 3 + 1 / 3 * 0.6, 1, 1], atol=0.2)
    assert std.min() == -1 and std.max() == 1
    inside = hu[1:5]
    np.testing.assert_allclose(destandardize(standardize(inside, (-1000, 2000)), (-1000, 2000)), inside, atol=1e-3)


def test_config_validation():
    with pytest.raises(ConfigError, match="hu_window.*low < high"):
        PrepareConfig.from_dict({"hu_window": [100, -100]})
    with pytest.raises(ConfigError, match="unknown setting 'spacng'; did you mean 'spacing'"):
        PrepareConfig.from_dict({"spacng": 1.0})
    assert PrepareConfig.from_dict({"spacing": 1.0}).spacing == (1.0, 1.0, 1.0)


def test_prepare_cohort(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "raw")
    out = tmp_path / "prepared"
    cfg = PrepareConfig(crop_margin_mm=2.0)
    result = prepare_cohort(load_cohort(manifest), out, cfg, progress=False)
    prepared = load_cohort(result)
    assert prepared.prepared is not None and prepared.prepared.hu_window == (-1000.0, 2000.0)
    raw = load_cohort(manifest)
    for case in prepared.cases:
        image = Volume.read(case.image)
        femur = Volume.read(case.femur_mask)
        assert image.array.dtype == np.float32
        np.testing.assert_allclose(image.spacing, (0.85, 0.85, 0.85))
        assert -1 <= image.array.min() and image.array.max() <= 1
        assert femur.same_grid(image) and femur.array.any()
        assert case.source["femur_mask"] == "manifest"
        if case.role == "metastatic":
            lesion = Volume.read(case.reference_lesion().path)
            assert lesion.same_grid(image)
            assert np.all(femur.array[lesion.array > 0])  # lesions are part of the femur
            original = Volume.read(raw.case(case.id).reference_lesion().path)
            np.testing.assert_allclose(world_centroid(lesion), world_centroid(original), atol=0.5)
            vol_before = original.array.sum() * original.voxel_volume_mm3
            assert lesion.array.sum() * lesion.voxel_volume_mm3 == pytest.approx(vol_before, rel=0.25)
    # the crop keeps the femur with its margin, not the whole field of view
    assert image.extent_mm[2] < Volume.read(raw.cases[-1].image).extent_mm[2]


def test_prepare_resumes_and_refuses_other_settings(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "raw", n_healthy=1, n_metastatic=1)
    out = tmp_path / "prepared"
    prepare_cohort(load_cohort(manifest), out, PrepareConfig(), progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    (out / "images" / "H00.nii.gz").unlink()  # as if interrupted before this case was written
    (out / "sources" / "H00.json").unlink()
    prepare_cohort(load_cohort(manifest), out, PrepareConfig(), progress=False)
    for p, t in stamps.items():
        if "H00" not in p.name:
            assert p.stat().st_mtime_ns == t, f"{p} was rewritten"
    assert (out / "images" / "H00.nii.gz").exists()
    with pytest.raises(ConfigError, match="other settings .*spacing"):
        prepare_cohort(load_cohort(manifest), out, PrepareConfig(spacing=1.0), progress=False)
    prepare_cohort(load_cohort(manifest), out, PrepareConfig(spacing=1.0), force=True, progress=False)
    assert Volume.read(out / "images" / "H00.nii.gz").spacing == (1.0, 1.0, 1.0)


def test_prepare_refuses_a_folder_of_another_cohort(tmp_path):
    """Another cohort into a prepared folder is another preparation: refused (nothing changed), not mixed
    with the cases already there; --force replaces it; the same cohort still resumes."""
    first = write_tiny_cohort(tmp_path / "raw", n_healthy=1, n_metastatic=2)
    other = write_tiny_cohort(tmp_path / "raw2", n_healthy=1, n_metastatic=1)
    out = tmp_path / "prepared"
    prepare_cohort(load_cohort(first), out, PrepareConfig(), progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"other settings or inputs \(cases M02 are prepared here but not in "
                                          r"cohort 'tiny'\).*--force"):
        prepare_cohort(load_cohort(other), out, PrepareConfig(), progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    prepare_cohort(load_cohort(first), out, PrepareConfig(), progress=False)  # the same cohort: resumed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == {
        p: t for p, t in before.items() if p.name.endswith(".nii.gz")}
    # a folder prepared before the cohort was recorded: judged by the cases it holds
    (out / "prepare_inputs.json").unlink()
    with pytest.raises(ConfigError, match="cases M02 are not in cohort"):
        prepare_cohort(load_cohort(other), out, PrepareConfig(), progress=False)
    prepare_cohort(load_cohort(other), out, PrepareConfig(), force=True, progress=False)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["H00.nii.gz", "M01.nii.gz"]


def test_cases_added_to_the_manifest_are_prepared_beside_the_others(tmp_path):
    """A manifest that grew (the same cases, unchanged, and new ones) resumes: only the new cases are
    prepared. One whose earlier cases now name other files is still another preparation."""
    grown = write_tiny_cohort(tmp_path / "raw", n_healthy=1, n_metastatic=2)  # H00, M01, M02
    data = yaml.safe_load(grown.read_text())
    small = grown.with_name("first-two.yaml")  # the same folder and files, M02 not yet listed
    small.write_text(yaml.safe_dump({**data, "cases": data["cases"][:2]}, sort_keys=False))
    out = tmp_path / "prepared"
    prepare_cohort(load_cohort(small), out, PrepareConfig(), progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.nii.gz")}
    prepare_cohort(load_cohort(grown), out, PrepareConfig(), progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.nii.gz")}
    assert sorted(after) == ["H00.nii.gz", "M01.nii.gz", "M02.nii.gz"]
    assert {name: after[name] for name in before} == before  # the first two untouched
    assert [c.id for c in load_cohort(out / "cohort.yaml").cases] == ["H00", "M01", "M02"]
    data = yaml.safe_load(grown.read_text())
    data["cases"][1]["side"] = "left"
    data["cases"].append({**data["cases"][2], "id": "M03"})
    grown.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"cases M01: other image or mask files \(or sides\) than prepared"):
        prepare_cohort(load_cohort(grown), out, PrepareConfig(), progress=False)
    # a case added that fails (no femur mask, and none found in the toy scan) binds nothing: drop it and rerun
    data["cases"][1].pop("side")
    data["cases"][-1].pop("femur_mask")
    grown.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(MetsynthError, match=r"1 of 4 prepare failed \(M03: InputError: case M03: (?!case M03)"):
        prepare_cohort(load_cohort(grown), out, PrepareConfig(), progress=False)
    data["cases"].pop()
    grown.write_text(yaml.safe_dump(data, sort_keys=False))
    prepare_cohort(load_cohort(grown), out, PrepareConfig(), progress=False)
    assert [c.id for c in load_cohort(out / "cohort.yaml").cases] == ["H00", "M01", "M02"]


def test_a_case_whose_scan_was_written_again_is_prepared_again(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "raw", n_healthy=1, n_metastatic=1)
    out = tmp_path / "prepared"
    prepare_cohort(load_cohort(manifest), out, PrepareConfig(), progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.nii.gz")}
    raw = load_cohort(manifest)
    written_again(raw.cases[0].image)
    prepare_cohort(load_cohort(manifest), out, PrepareConfig(), progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.nii.gz")}
    redone = {name for name in stamps if after[name] != stamps[name]}
    assert redone == {f"{raw.cases[0].id}.nii.gz"}


def test_bad_input_writes_nothing(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "raw")
    (manifest.parent / "lesions" / "M02.nii.gz").unlink()
    out = tmp_path / "prepared"
    with pytest.raises(InputError, match="case M02: .*file not found"):
        prepare_cohort(load_cohort(manifest), out, progress=False)
    assert not out.exists()


def test_cli_prepare(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "raw", n_healthy=1, n_metastatic=1)
    out = tmp_path / "prep"
    result = CliRunner().invoke(app, ["--quiet", "prepare", str(manifest), "--out", str(out), "--spacing", "1.2"])
    assert result.exit_code == 0, result.output
    assert Volume.read(out / "images" / "M01.nii.gz").spacing == pytest.approx((1.2, 1.2, 1.2))
    again = CliRunner().invoke(app, ["--quiet", "prepare", str(manifest), "--out", str(out), "--spacing", "1.0"])
    assert again.exit_code == 2 and "--force" in again.output


def test_parallel_prepare_gives_the_same_bytes(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "raw", n_healthy=1, n_metastatic=2)
    one = prepare_cohort(load_cohort(manifest), tmp_path / "one", progress=False, workers=1)
    two = prepare_cohort(load_cohort(manifest), tmp_path / "two", progress=False, workers=2)
    for case in load_cohort(one).cases:
        for sub in ("images", "femur"):
            name = f"{case.id}.nii.gz"
            assert (one.parent / sub / name).read_bytes() == (two.parent / sub / name).read_bytes()
    assert [c.id for c in load_cohort(two).cases] == ["H00", "M01", "M02"]


def test_prepare_segments_the_femur_when_the_manifest_has_none(tmp_path):
    import yaml

    from metsynth.phantom import PhantomConfig, generate_cohort

    manifest = generate_cohort(tmp_path / "phantom", n_healthy=0, n_metastatic=1, seed=3,
                               config=PhantomConfig.preset("tiny"))
    data = yaml.safe_load(manifest.read_text())
    truth_femur = manifest.parent / data["cases"][0].pop("femur_mask")
    manifest.write_text(yaml.safe_dump(data))
    out = prepare_cohort(load_cohort(manifest), tmp_path / "prep", PrepareConfig(spacing=2.0), progress=False)
    case = load_cohort(out).cases[0]
    assert case.source["femur_mask"] == "automatic"
    auto = Volume.read(case.femur_mask)
    truth = resample_mask(Volume.read(truth_femur), auto)  # onto the prepared grid
    dice = 2 * np.sum(auto.array & truth.array) / (auto.array.sum() + truth.array.sum())
    assert dice > 0.85
    lesion = Volume.read(case.reference_lesion().path)
    assert np.all(auto.array[lesion.array > 0])


def test_cli_femur_on_real_ct(real_data, tmp_path):
    ct = real_data / "totalsegmentator" / "example_ct.nii.gz"
    out = tmp_path / "femur_right.nii.gz"
    result = CliRunner().invoke(app, ["--quiet", "femur", str(ct), "--out", str(out), "--side", "right"])
    assert result.exit_code == 0, result.output
    mask = Volume.read(out)
    ref = Volume.read(real_data / "totalsegmentator" / "example_seg" / "femur_right.nii.gz")
    assert mask.same_grid(ref)
    dice = 2 * np.sum((mask.array > 0) & (ref.array > 0)) / (mask.array.sum() + (ref.array > 0).sum())
    assert dice > 0.85
    bad = CliRunner().invoke(app, ["--quiet", "femur", str(ct), "--out", str(tmp_path / "x.nii.gz"), "--side", "rigth"])
    assert bad.exit_code == 2 and "did you mean 'right'" in bad.output
    assert not (tmp_path / "x.nii.gz").exists()


@pytest.mark.parametrize("spacing", [float("nan"), float("inf"), 0.0, -1.0, 1e-9, 500.0])
def test_spacing_that_is_not_a_voxel_size_is_refused(spacing):
    from metsynth.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="spacing"):
        PrepareConfig.from_dict({"spacing": spacing})
    assert PrepareConfig.from_dict({"spacing": 1.7}).spacing == (1.7, 1.7, 1.7)


def test_a_case_without_femur_fails_by_name_and_writes_nothing(tmp_path):
    import yaml

    from metsynth.errors import MetsynthError
    from metsynth.phantom import PhantomConfig, generate_case

    manifest = write_tiny_cohort(tmp_path / "raw", n_healthy=1, n_metastatic=1)
    # a scan of the wrong part: the lowest 16 mm of a phantom hip (a slab of bone), no femur mask
    image = generate_case("S0", "healthy", 0, PhantomConfig.preset("tiny")).image
    image.crop((0, 0, 0), (8, *image.shape[1:])).write(manifest.parent / "images" / "SLAB.nii.gz")
    data = yaml.safe_load(manifest.read_text())
    data["cases"].append({"id": "SLAB", "image": "images/SLAB.nii.gz", "role": "healthy"})
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "prepared"
    with pytest.raises(MetsynthError) as err:
        prepare_cohort(load_cohort(manifest), out, PrepareConfig(spacing=2.0), progress=False)
    message = str(err.value)
    assert "1 of 3" in message and "case SLAB: " in message and "SLAB.nii.gz: no femur found" in message
    assert "volume < 30 cm3" in message and "femur mask in the manifest" in message
    assert not list(out.rglob("SLAB*"))  # nothing written for that case
    assert (out / "images" / "H00.nii.gz").exists() and (out / "sources" / "M01.json").exists()  # the others are


def test_cli_femur_on_a_thorax_ct_fails_in_one_line(real_data, tmp_path):
    thorax = real_data / "totalsegmentator" / "example_ct_dicom"
    if not thorax.is_dir():
        pytest.skip(f"{thorax} is missing")
    out = tmp_path / "femur.nii.gz"
    result = CliRunner().invoke(app, ["--quiet", "femur", str(thorax), "--out", str(out)])
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"{thorax}: no femur found" in error[0]
    assert "covers the proximal femur" in error[0] and "femur mask in the manifest" in error[0]
    assert not out.exists()
    # the limits are settings: with the check off, the arm bones are written as before
    settings = tmp_path / "femur.yaml"
    settings.write_text("check_femur: false\n")
    unchecked = CliRunner().invoke(app, ["--quiet", "femur", str(thorax), "--out", str(out), "--config", str(settings)])
    assert unchecked.exit_code == 0, unchecked.output
    assert out.exists()


def test_prepare_refuses_an_image_cut_short_and_writes_nothing(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "raw", n_healthy=1, n_metastatic=1)
    image = manifest.parent / "images" / "M01.nii.gz"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    out = tmp_path / "prepared"
    result = CliRunner().invoke(app, ["--quiet", "prepare", str(manifest), "--out", str(out), "--spacing", "2"])
    assert result.exit_code == 2, result.output
    assert "M01.nii.gz: the file is incomplete" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_disk_full_during_prepare_stops_leaves_no_partial_file_and_a_rerun_finishes(tmp_path, monkeypatch):
    manifest = write_tiny_cohort(tmp_path / "raw", n_healthy=1, n_metastatic=2)
    config = PrepareConfig(spacing=2.0)
    reference = prepare_cohort(load_cohort(manifest), tmp_path / "reference", config, progress=False).parent
    calls = fill_disk_at(monkeypatch, 4)  # the 4th file: some bytes, then the disk is full
    out = tmp_path / "prepared"
    result = CliRunner().invoke(app, ["--quiet", "prepare", str(manifest), "--out", str(out), "--spacing", "2"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: disk full writing ")
    assert errors[0].endswith(": free space or choose another --out")
    assert len(calls) == 4  # stopped at the first full write: the third case was not started
    assert not list(out.rglob(".tmp-*")) and not (out / "cohort.yaml").exists()
    for path in out.rglob("*.nii.gz"):  # what is there is whole
        Volume.read(path)
    monkeypatch.undo()
    assert prepare_cohort(load_cohort(manifest), out, config, progress=False) == out / "cohort.yaml"
    for path in reference.rglob("*.nii.gz"):
        assert (out / path.relative_to(reference)).read_bytes() == path.read_bytes()
