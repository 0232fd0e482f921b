"""int16 storage of generated images: one HU per step, NIfTI scl_slope/scl_inter, geometry kept.

Tiny volumes only (32^3, the toy synthesis cohort, an untrained tiny DDPM): seconds in all.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import kept_rows
from metsynth.errors import InputError
from metsynth.volume import IntensityScale, Volume, nifti_layout, storage_scale

WINDOW = (-1000.0, 2000.0)
HU_PER_UNIT = (WINDOW[1] - WINDOW[0]) / 2  # standardized [-1, 1] -> HU
FLOAT32_SLACK_HU = 1e-3  # the float32 values read back carry ~1e-4 HU of rounding of their own
DIRECTION = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])


def standardized_volume(seed: int = 0, shape=(32, 32, 32)) -> Volume:
    rng = np.random.default_rng(seed)
    array = rng.uniform(-1, 1, shape).astype(np.float32)
    array[0, 0, :2] = (-1.0, 1.0)  # both ends of the window
    return Volume(array, spacing=(0.85, 0.7, 1.2), origin=(10.5, -20.25, 3.0), direction=DIRECTION)


def header(path: Path) -> tuple[int, float, float]:
    """(datatype code, scl_slope, scl_inter) of a NIfTI-1 file, read from its bytes."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(348)
    layout = nifti_layout(head)
    assert layout is not None
    slope, inter = struct.unpack(layout.endian + "2f", head[112:120])
    return layout.datatype, slope, inter


def stored(path: Path) -> np.ndarray:
    """The int16 voxels of a NIfTI file as stored (no scaling applied)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    layout = nifti_layout(data[:540])
    assert layout is not None and layout.datatype == 4
    return np.frombuffer(data[layout.offset:layout.total_bytes], dtype=layout.endian + "i2")


# ----------------------------------------------------------------------------- the scale
def test_hu_step_is_one_hu_of_the_window():
    scale = IntensityScale.hu_step(WINDOW)
    assert scale.restore(np.array([-1000, 0, 2000])) == pytest.approx([-1.0, -1 / 3, 1.0], abs=1e-6)
    assert scale.slope * HU_PER_UNIT == pytest.approx(1.0, rel=1e-6)
    assert IntensityScale.hu_step(None) == IntensityScale(1.0, 0.0)  # raw HU images: the HU themselves
    assert storage_scale("float32", WINDOW) is None
    with pytest.raises(InputError, match="image_storage must be one of float32, int16"):
        storage_scale("int8", WINDOW)
    with pytest.raises(InputError, match="low < high"):
        IntensityScale.hu_step((100.0, 100.0))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_int16_round_trip_within_half_a_hu_and_geometry_kept(tmp_path, suffix):
    import SimpleITK as sitk

    volume = standardized_volume()
    scale = IntensityScale.hu_step(WINDOW)
    path = volume.write(tmp_path / f"image{suffix}", scale=scale)
    datatype, slope, inter = header(path)
    assert datatype == 4  # DT_INT16
    assert (slope, inter) == (np.float32(scale.slope), np.float32(scale.inter))

    back = Volume.read(path)
    assert back.array.dtype == np.float32
    assert back.grid_mismatch(volume) is None
    assert np.allclose(back.direction, DIRECTION) and back.spacing == pytest.approx(volume.spacing)
    error_hu = np.abs(back.array.astype(np.float64) - volume.array) * HU_PER_UNIT
    assert error_hu.max() <= 0.5 + FLOAT32_SLACK_HU
    assert error_hu.max() > 0.4  # really quantized to 1 HU (uniform values hit every rounding)
    assert back.array[0, 0, 0] == pytest.approx(-1.0, abs=1e-6) and back.array[0, 0, 1] == pytest.approx(1.0, abs=1e-6)

    plain = sitk.ReadImage(str(path))  # any reader: ITK applies scl_slope/scl_inter itself
    assert plain.GetPixelID() == sitk.sitkFloat32
    assert np.array_equal(sitk.GetArrayFromImage(plain), back.array)
    assert plain.GetSpacing() == pytest.approx(tuple(reversed(volume.spacing)))
    assert plain.GetOrigin() == pytest.approx(tuple(reversed(volume.origin)))


def test_int16_halves_the_raw_bytes_and_float32_writes_are_unchanged(tmp_path):
    volume = standardized_volume()
    plain = volume.write(tmp_path / "plain.nii")
    explicit = volume.write(tmp_path / "explicit.nii", scale=None)
    int16 = volume.write(tmp_path / "int16.nii", scale=IntensityScale.hu_step(WINDOW))
    assert plain.read_bytes() == explicit.read_bytes()
    assert header(plain)[0] == 16  # DT_FLOAT32
    assert int16.stat().st_size == pytest.approx(plain.stat().st_size / 2, abs=400)
    # the same stored integers for the same values: reproducible bytes
    again = volume.write(tmp_path / "again.nii.gz", scale=IntensityScale.hu_step(WINDOW))
    twice = volume.write(tmp_path / "again2.nii.gz", scale=IntensityScale.hu_step(WINDOW))
    assert again.read_bytes() == twice.read_bytes()


def test_int16_storage_refuses_what_it_cannot_hold(tmp_path):
    volume = standardized_volume()
    scale = IntensityScale.hu_step(WINDOW)
    bad = volume.array.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        volume.with_array(bad).write(tmp_path / "nan.nii.gz", scale=scale)
    huge = volume.array.copy()
    huge[0, 0, 0] = 40.0  # 58 500 HU
    with pytest.raises(InputError, match="beyond what int16 holds"):
        volume.with_array(huge).write(tmp_path / "huge.nii.gz", scale=scale)
    with pytest.raises(InputError, match="needs NIfTI"):
        volume.write(tmp_path / "image.nrrd", scale=scale)
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_requantizing_stored_values_gives_the_same_integers(tmp_path):
    """A volume read from int16 storage and written again keeps its stored integers (harmonization's
    untouched voxels; the header's geometry may differ in the last float32 bit of the spacing)."""
    scale = IntensityScale.hu_step(WINDOW)
    first = standardized_volume().write(tmp_path / "a.nii.gz", scale=scale)
    second = Volume.read(first).write(tmp_path / "b.nii.gz", scale=scale)
    assert np.array_equal(stored(first), stored(second))
    assert not np.array_equal(stored(first), stored(first)[::-1])  # the comparison can fail


# ----------------------------------------------------------------------------- the synthesis run
def test_synthesis_run_writes_int16_when_configured(toy_synthesis, tmp_path):
    from metsynth.cohort import load_cohort
    from metsynth.synthesis.compose import SynthesisConfig
    from metsynth.synthesis.output_size import GZIP_INT16_IMAGE_RATIO, estimate_output_bytes
    from metsynth.synthesis.run import run_synthesis

    cohort, bank = toy_synthesis
    floats = run_synthesis(cohort, bank, tmp_path / "f32", SynthesisConfig(repeats=1), progress=False).out_dir
    config = SynthesisConfig(repeats=1, image_storage="int16", image_compression_level=1)
    ints = run_synthesis(cohort, bank, tmp_path / "i16", config, progress=False).out_dir
    rows_f, rows_i = kept_rows(floats), kept_rows(ints)
    assert rows_f and [r["volume_id"] for r in rows_f] == [r["volume_id"] for r in rows_i]
    for row_f, row_i in zip(rows_f, rows_i):
        assert row_f["image"].endswith(".nii") and row_i["image"].endswith(".nii.gz")
        assert header(floats / row_f["image"])[0] == 16
        assert header(ints / row_i["image"])[0] == 4
        a, b = Volume.read(floats / row_f["image"]), Volume.read(ints / row_i["image"])
        assert b.grid_mismatch(a) is None
        assert np.abs(a.array.astype(np.float64) - b.array).max() * HU_PER_UNIT <= 0.5 + FLOAT32_SLACK_HU
        assert (floats / row_f["label"]).read_bytes() == (ints / row_i["label"]).read_bytes()
    assert yaml.safe_load((ints / "config.yaml").read_text())["synthesis"]["image_storage"] == "int16"

    healthy = load_cohort(cohort).by_role("healthy")
    as_float = estimate_output_bytes(healthy, 2, 1, SynthesisConfig(repeats=1, image_compression_level=1))
    as_int = estimate_output_bytes(healthy, 2, 1, config)
    assert as_int < 0.9 * as_float
    # the disk check's figure for an int16 .nii.gz image holds what was written
    voxels = Volume.read(ints / rows_i[0]["image"]).array.size
    written = max((ints / r["image"]).stat().st_size for r in rows_i)
    assert written <= 352 + 2 * voxels * GZIP_INT16_IMAGE_RATIO


def test_synthesis_preset_paper_stores_int16():
    from metsynth.synthesis.compose import SynthesisConfig

    paper = SynthesisConfig.preset("paper")
    assert paper.image_storage == "int16" and paper.image_compression_level == 1
    assert SynthesisConfig().image_storage == "float32"


# ----------------------------------------------------------------------------- harmonization
@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """A tiny DDPM's freshly initialised weights, exported like `metsynth diffusion train` does."""
    import torch

    from metsynth.diffusion.presets import diffusion_config

    config = diffusion_config("tiny", {"harmonize": {"lesion_margin_mm": 1.0, "feather_mm": 1.0,
                                                     "start_timestep": 4, "ddim_steps": 50}})
    torch.manual_seed(0)
    model = config.model.build()
    folder = tmp_path_factory.mktemp("ddpm")
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "model.yaml").write_text(yaml.safe_dump({"weights": "final", "config": config.model_dump(mode="json")}))
    return folder / "model.pt"


def _synthetic_set(root: Path, storage_scale_: IntensityScale | None, intensity: bool = True) -> Path:
    image = standardized_volume(seed=3)
    smooth = np.clip(image.array * 0.1 - 0.3, -1, 1).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[14:18, 14:18, 14:18] = 1
    smooth[label.astype(bool)] = -0.45
    image = Volume(smooth, (0.85, 0.85, 0.85), (1.0, 2.0, 3.0), DIRECTION)
    image.write(root / "images" / "v0.nii.gz", scale=storage_scale_)
    image.with_array(label).write(root / "labels" / "v0.nii.gz")
    (root / "index.csv").write_text("volume_id,kept,image,label\nv0,true,images/v0.nii.gz,labels/v0.nii.gz\n")
    if intensity:
        (root / "config.yaml").write_text(yaml.safe_dump(
            {"intensity": {"units": "standardized", "hu_window": list(WINDOW), "spacing": [0.85] * 3}}))
    return root


def test_harmonization_writes_int16_when_configured(untrained_checkpoint, tmp_path):
    from metsynth.diffusion.harmonize import harmonize_config_for, harmonize_set

    scale = IntensityScale.hu_step(WINDOW)
    source = _synthetic_set(tmp_path / "syn", scale)
    as_float = harmonize_set(source, tmp_path / "h32", untrained_checkpoint, progress=False).out_dir
    config = harmonize_config_for(untrained_checkpoint, {"image_storage": "int16"})
    as_int = harmonize_set(source, tmp_path / "h16", untrained_checkpoint, config, progress=False).out_dir

    f32, i16 = as_float / "images" / "v0.nii.gz", as_int / "images" / "v0.nii.gz"
    assert header(f32)[0] == 16 and header(i16)[:1] == (4,)
    assert header(i16)[1:] == (np.float32(scale.slope), np.float32(scale.inter))
    a, b, before = Volume.read(f32), Volume.read(i16), Volume.read(source / "images" / "v0.nii.gz")
    assert b.grid_mismatch(before) is None and b.grid_mismatch(a) is None
    assert not np.array_equal(a.array, before.array)  # the lesion box was refined
    assert np.abs(a.array.astype(np.float64) - b.array).max() * HU_PER_UNIT <= 0.5 + FLOAT32_SLACK_HU
    # voxels the harmonization leaves alone keep their stored integers
    untouched = a.array == before.array
    assert untouched.mean() > 0.25  # the lesion box (one 16x32x32 patch) covers half of the 32^3 volume
    assert np.array_equal(b.array[untouched], before.array[untouched])


def test_harmonizing_a_set_of_changed_boxes_gives_the_same_bytes(untrained_checkpoint, tmp_path):
    """The harmonization reads a boxed synthetic image whole (``image_layout: changed_box``)."""
    import shutil

    from metsynth.boxed import is_boxed, write_boxed
    from metsynth.diffusion.harmonize import harmonize_set

    source = _synthetic_set(tmp_path / "syn", None)
    boxed = tmp_path / "boxed"
    shutil.copytree(source, boxed)
    image = Volume.read(source / "images" / "v0.nii.gz")
    healthy = image.with_array(np.where(image.array == -0.45, np.float32(-0.3), image.array))
    base = healthy.write(tmp_path / "prepared" / "H.nii.gz")
    write_boxed(image, base, boxed / "images" / "v0.nii.gz")
    assert is_boxed(boxed / "images" / "v0.nii.gz") and Volume.read(boxed / "images" / "v0.nii.gz").shape == image.shape
    a = harmonize_set(source, tmp_path / "ha", untrained_checkpoint, progress=False).out_dir
    b = harmonize_set(boxed, tmp_path / "hb", untrained_checkpoint, progress=False).out_dir
    for sub in ("images", "labels"):
        assert (a / sub / "v0.nii.gz").read_bytes() == (b / sub / "v0.nii.gz").read_bytes()


def test_harmonization_int16_without_the_sets_hu_window_uses_a_fine_step(untrained_checkpoint, tmp_path, caplog):
    from metsynth.diffusion.harmonize import harmonize_config_for, harmonize_set

    source = _synthetic_set(tmp_path / "syn", None, intensity=False)
    config = harmonize_config_for(untrained_checkpoint, {"image_storage": "int16"})
    as_float = harmonize_set(source, tmp_path / "h32", untrained_checkpoint, progress=False).out_dir
    with caplog.at_level("WARNING"):
        as_int = harmonize_set(source, tmp_path / "h16", untrained_checkpoint, config, progress=False).out_dir
    assert "records no HU window" in caplog.text
    path = as_int / "images" / "v0.nii.gz"
    assert header(path) == (4, 2.0**-14, 0.0)
    error = np.abs(Volume.read(path).array.astype(np.float64) - Volume.read(as_float / "images" / "v0.nii.gz").array)
    assert error.max() <= 2.0**-15 * (1 + 1e-3)  # 0.05 HU of a 3000 HU window


def test_paper_diffusion_preset_stores_int16():
    from metsynth.diffusion.presets import diffusion_config

    assert diffusion_config("paper").harmonize.image_storage == "int16"
    assert diffusion_config("cpu").harmonize.image_storage == "float32"


def test_harmonized_images_as_changed_boxes_read_as_the_whole_ones(untrained_checkpoint, tmp_path):
    """``image_layout: changed_box``: region lesion stores the box around the lesion over its synthetic image
    (itself read whole); region volume changes every voxel, so it writes the whole volume."""
    from metsynth.boxed import companion_path, is_boxed
    from metsynth.diffusion.harmonize import harmonize_config_for, harmonize_set

    scale = IntensityScale.hu_step(WINDOW)
    source = _synthetic_set(tmp_path / "syn", scale)
    whole = harmonize_set(source, tmp_path / "whole", untrained_checkpoint, harmonize_config_for(
        untrained_checkpoint, {"image_storage": "int16"}), progress=False).out_dir
    boxed = harmonize_set(source, tmp_path / "boxed", untrained_checkpoint, harmonize_config_for(
        untrained_checkpoint, {"image_storage": "int16", "image_layout": "changed_box"}), progress=False).out_dir
    a, b = whole / "images" / "v0.nii.gz", boxed / "images" / "v0.nii.gz"
    assert is_boxed(b) and not is_boxed(a) and b.stat().st_size < 0.7 * a.stat().st_size
    assert np.array_equal(Volume.read(a).array, Volume.read(b).array)
    assert Volume._read_file(b, as_box=True).shape != Volume.read(b).shape  # the file holds the box only
    record = yaml.safe_load(companion_path(b).read_text())
    assert (b.parent / record["base"]).resolve() == (source / "images" / "v0.nii.gz").resolve()
    # the whole volume changed: written whole, and a rerun over the boxed folder leaves no stale record
    everywhere = harmonize_set(source, tmp_path / "boxed", untrained_checkpoint, harmonize_config_for(
        untrained_checkpoint, {"image_layout": "changed_box", "region": "volume"}), progress=False,
        force=True).out_dir
    assert not is_boxed(everywhere / "images" / "v0.nii.gz")
    assert Volume._read_file(everywhere / "images" / "v0.nii.gz").shape == (32, 32, 32)
