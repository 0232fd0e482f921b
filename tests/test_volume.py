from __future__ import annotations

import numpy as np
import pytest

from helpers import make_volume
from metsynth.errors import InputError
from metsynth.volume import Volume, as_mask, check_finite


def oblique_direction() -> np.ndarray:
    a = np.deg2rad(20)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return rot @ np.diag([1.0, -1.0, 1.0])


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_array_and_geometry(tmp_path, suffix):
    vol = make_volume(spacing=(2.5, 0.7, 0.9), origin=(-123.4, 56.7, 8.9))
    vol.direction = oblique_direction()
    path = vol.write(tmp_path / f"v{suffix}")
    back = Volume.read(path)
    assert back.array.dtype == vol.array.dtype
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.spacing, vol.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)
    assert back.same_grid(vol)


def test_spacing_is_in_array_order(tmp_path):
    # a volume that is thick along z (array axis 0): SimpleITK must see it as its 3rd spacing
    vol = make_volume(shape=(10, 20, 30), spacing=(3.0, 1.0, 0.5))
    img = vol.to_sitk()
    assert img.GetSize() == (30, 20, 10)
    assert img.GetSpacing() == (0.5, 1.0, 3.0)
    np.testing.assert_allclose(vol.extent_mm, (30.0, 20.0, 15.0))


def test_index_world_round_trip():
    vol = make_volume(spacing=(2.0, 0.5, 0.75), origin=(1, 2, 3))
    vol.direction = oblique_direction()
    idx = np.array([[0, 0, 0], [3.5, 7, 11], [23, 27, 31]])
    np.testing.assert_allclose(vol.world_to_index(vol.index_to_world(idx)), idx, atol=1e-9)
    # the world step along array axis 0 has the length of its spacing
    step = vol.index_to_world([1, 0, 0]) - vol.index_to_world([0, 0, 0])
    assert np.linalg.norm(step) == pytest.approx(2.0)


def test_crop_keeps_world_positions():
    vol = make_volume()
    vol.direction = oblique_direction()
    sub = vol.crop((3, 4, 5), (10, 12, 20))
    np.testing.assert_allclose(sub.index_to_world([0, 0, 0]), vol.index_to_world([3, 4, 5]))
    np.testing.assert_array_equal(sub.array, vol.array[3:10, 4:12, 5:20])


def test_dicom_series_matches_its_segmentation_grid(real_data):
    folder = real_data / "totalsegmentator" / "example_ct_dicom"
    ct = Volume.read(folder)
    assert ct.shape == (20, 512, 512)
    np.testing.assert_allclose(ct.spacing, (2.0, 0.9765625, 0.9765625))
    seg = Volume.read(real_data / "totalsegmentator" / "example_seg_dicom.nii.gz")
    # the NIfTI label map is the same grid stored with the y axis flipped
    assert not seg.same_grid(ct)
    aligned = seg.aligned_to(ct)
    assert aligned is not None and aligned.same_grid(ct)
    np.testing.assert_array_equal(aligned.array, seg.array[:, ::-1, :])
    # every voxel centre lands on the same world point
    corner = np.array([[19, 511, 511]])
    np.testing.assert_allclose(ct.index_to_world(corner), seg.index_to_world([[19, 0, 511]]), atol=1e-3)


@pytest.mark.parametrize("spoil", ["missing", "duplicate"])
def test_dicom_series_with_a_missing_or_duplicated_slice_is_refused(real_data, tmp_path, spoil):
    """Read as one grid, a series with a gap would get an averaged spacing and misplace every slice
    after it: refused in one line naming the folder and the gap (positions in mm)."""
    import shutil

    from metsynth.errors import InputError

    source = real_data / "totalsegmentator" / "example_ct_dicom"
    folder = tmp_path / "series"
    shutil.copytree(source, folder)  # a copy in the test's own folder (never in the repository)
    names = sorted(p.name for p in folder.iterdir())
    victim = folder / names[len(names) // 2]
    if spoil == "missing":
        victim.unlink()
        says = r"a gap of 4\.00 mm between the slices at -?\d+\.\d\d mm and -?\d+\.\d\d mm along the slice normal, " \
               r"where the others are 2\.00 mm apart"
    else:
        shutil.copy(victim, folder / "copy-of-a-slice")
        says = r"two slices at the same position \(the slices at -?\d+\.\d\d mm and -?\d+\.\d\d mm"
    with pytest.raises(InputError, match=rf"{folder}: the DICOM slices are not evenly spaced: {says}"):
        Volume.read(folder)


def test_the_header_check_refuses_what_no_3d_scan_is(real_data, tmp_path):
    """check_3d_header (predict's check of every input before any is predicted): a 2D image, a
    volume of one slice, and a DICOM folder with a slice missing, from headers alone."""
    import shutil

    import SimpleITK as sitk

    from metsynth.errors import InputError
    from metsynth.volume import check_3d_header

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.int16)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(InputError, match=r"flat\.nii\.gz: image of 'x' expected a 3D volume, got a 2D image"):
        check_3d_header(tmp_path / "flat.nii.gz", "image of 'x'")
    Volume(np.zeros((1, 8, 8), np.int16), (1.0, 1.0, 1.0)).write(tmp_path / "one.nii.gz")
    with pytest.raises(InputError, match=r"one\.nii\.gz: is a single slice \(size \(8, 8, 1\)\)"):
        check_3d_header(tmp_path / "one.nii.gz")
    Volume(np.zeros((4, 8, 8), np.int16), (1.0, 1.0, 1.0)).write(tmp_path / "fine.nii.gz")
    check_3d_header(tmp_path / "fine.nii.gz")
    one = sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16))
    sitk.WriteImage(sitk.JoinSeries([one, one]), str(tmp_path / "series.nii"))
    with pytest.raises(InputError, match=r"series\.nii: expected a 3D volume, got a 4D image of size \(8, 8, 4, 2\)"):
        check_3d_header(tmp_path / "series.nii")
    sitk.WriteImage(sitk.JoinSeries([one]), str(tmp_path / "one-time.nii"))
    check_3d_header(tmp_path / "one-time.nii")  # a 4D header of one time point: a 3D volume, as readers take it
    assert Volume.read(tmp_path / "one-time.nii").shape == (4, 8, 8)
    folder = tmp_path / "series"
    shutil.copytree(real_data / "totalsegmentator" / "example_ct_dicom", folder)
    check_3d_header(folder)
    names = sorted(p.name for p in folder.iterdir())
    (folder / names[len(names) // 2]).unlink()
    with pytest.raises(InputError, match=rf"{folder}: the DICOM slices are not evenly spaced"):
        check_3d_header(folder)


def test_dicom_to_nifti_keeps_geometry(real_data, tmp_path):
    ct = Volume.read(real_data / "totalsegmentator" / "example_ct_dicom")
    back = Volume.read(ct.write(tmp_path / "ct.nii.gz"))
    assert back.same_grid(ct)
    np.testing.assert_array_equal(back.array, ct.array)


def test_aligned_to_handles_transposed_storage():
    vol = make_volume(spacing=(2.0, 1.0, 0.5))
    transposed = Volume(np.transpose(vol.array, (2, 1, 0)), vol.spacing[::-1], vol.origin, vol.direction[:, ::-1])
    aligned = transposed.aligned_to(vol)
    assert aligned is not None
    np.testing.assert_array_equal(aligned.array, vol.array)
    shifted = Volume(vol.array, vol.spacing, (0, 0, 0))
    assert shifted.aligned_to(vol) is None


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        Volume.read(tmp_path / "nope.nii.gz")


def test_unreadable_file(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a nifti file")
    with pytest.raises(InputError, match="broken.nii.gz: cannot be read"):
        Volume.read(bad)


def test_unsupported_suffix(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(InputError, match="unsupported file type"):
        Volume.read(txt)


def test_2d_image_is_rejected(tmp_path):
    import SimpleITK as sitk

    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.int16)), str(path))
    with pytest.raises(InputError, match="expected a 3D volume, got a 2D image"):
        Volume.read(path)
    with pytest.raises(InputError, match="expected a 3D volume"):
        Volume(np.zeros((4, 4)))


def test_nan_is_rejected():
    vol = make_volume().with_array(np.zeros((24, 28, 32), np.float32))
    vol.array[3, 4, 5] = np.nan  # array (z, y, x): the voxel a viewer calls (i, j, k) = (5, 4, 3)
    with pytest.raises(InputError, match=r"1 NaN or infinite voxels \(the first at voxel \(i, j, k\) = \(5, 4, 3\)"):
        check_finite(vol)


def test_mask_checks():
    img = make_volume()
    good = img.with_array((img.array > 500).astype(np.uint8))
    assert as_mask(good, img).array.dtype == np.uint8
    with pytest.raises(InputError, match=r"not binary \(values 0, 1, 2\)"):
        as_mask(img.with_array(np.clip(img.array, 0, 2)), img)
    moved = Volume(good.array, good.spacing, (0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="not on the grid of its image.*origin"):
        as_mask(moved, img)
    thick = Volume(good.array, (2.0, 0.8, 0.8), img.origin)
    with pytest.raises(InputError, match="spacing"):
        as_mask(thick, img)
    small = Volume(good.array[:-1], good.spacing, img.origin)
    with pytest.raises(InputError, match="shape"):
        as_mask(small, img)
    tilted = Volume(good.array, good.spacing, img.origin, oblique_direction())
    with pytest.raises(InputError, match="direction"):
        as_mask(tilted, img)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import SimpleITK as sitk

    vol = make_volume()

    def boom(image, path, *args):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", boom)
    with pytest.raises(RuntimeError):
        vol.write(tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_nan_in_file_is_found(tmp_path, suffix):
    # ITK's NIfTI reader would silently read NaN as 0: the raw bytes are scanned instead
    vol = make_volume().with_array(np.ones((24, 28, 32), np.float32))
    vol.array[2, 3, 4] = np.nan
    path = vol.write(tmp_path / f"nan{suffix}")
    if suffix == ".nrrd":
        with pytest.raises(InputError, match="1 NaN or infinite voxels"):
            check_finite(Volume.read(path))
    else:
        with pytest.raises(InputError, match="image has 1 NaN or infinite voxels"):
            Volume.read(path)


def test_gzip_level_is_honoured_and_bytes_are_reproducible(tmp_path):
    rng = np.random.default_rng(0)
    vol = make_volume().with_array(np.round(rng.normal(0, 50, (24, 28, 32))).astype(np.int16))
    fast = vol.write(tmp_path / "fast.nii.gz", compression_level=1).read_bytes()
    small = vol.write(tmp_path / "small.nii.gz", compression_level=9).read_bytes()
    assert fast != small  # ITK alone would have ignored the level
    np.testing.assert_array_equal(Volume.read(tmp_path / "fast.nii.gz").array, vol.array)
    np.testing.assert_array_equal(Volume.read(tmp_path / "small.nii.gz").array, vol.array)
    again = vol.write(tmp_path / "again.nii.gz", compression_level=1).read_bytes()
    assert again == fast  # no timestamp in the gzip header
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.nii.gz", "fast.nii.gz", "small.nii.gz"]


# ----------------------------------------------------------------------------- incomplete files, full disks
def _cut(path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_cut_short_is_refused_not_zero_filled(tmp_path, suffix, dtype):
    # ITK reads the missing half of a cut .nii/.nii.gz as 0 without a word
    path = make_volume().with_array(np.ones((24, 28, 32), dtype)).write(tmp_path / f"cut{suffix}")
    _cut(path, 0.5)
    with pytest.raises(InputError, match=r"cut\.nii(\.gz)?: the file is incomplete .*copy or export it again"):
        Volume.read(path)


def test_gzip_of_a_cut_nifti_is_refused(tmp_path):
    # a complete gzip stream holding a NIfTI cut short (what gzipping ITK's short write gave)
    import gzip

    raw = make_volume().write(tmp_path / "a.nii", compression_level=None).read_bytes()
    bad = tmp_path / "b.nii.gz"
    bad.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(InputError, match=r"b\.nii\.gz: the file is incomplete .*once decompressed"):
        Volume.read(bad)


def test_multi_member_gzip_is_still_read(tmp_path):
    # bgzip and concatenated gzips have several members: the trailer alone is not the length
    import gzip

    vol = make_volume()
    raw = vol.write(tmp_path / "a.nii", compression_level=None).read_bytes()
    path = tmp_path / "m.nii.gz"
    path.write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]))
    assert np.array_equal(Volume.read(path).array, vol.array)


def _itk_short_write(monkeypatch, keep=0.4):
    """SimpleITK's writer as it behaves on a full disk: it leaves a short file and reports nothing."""
    from pathlib import Path

    import SimpleITK as sitk

    real = sitk.WriteImage

    def short(image, name, *args):
        real(image, name, *args)
        _cut(Path(name), keep)

    monkeypatch.setattr(sitk, "WriteImage", short)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd"])
def test_disk_full_during_itk_write_leaves_no_file(tmp_path, monkeypatch, suffix):
    from metsynth import volume as volume_module
    from metsynth.fileio import DiskFullError

    target = tmp_path / "out" / f"img{suffix}"
    _itk_short_write(monkeypatch)
    monkeypatch.setattr(volume_module, "free_bytes", lambda folder: 0)
    with pytest.raises(DiskFullError, match=rf"^disk full writing .*img{suffix}: free space or choose another --out$"):
        make_volume().write(target)
    assert sorted(p.name for p in target.parent.iterdir()) == []  # no final name, no temporary file
    monkeypatch.undo()
    assert make_volume().write(target).is_file() and Volume.read(target).shape == (24, 28, 32)


def test_short_write_with_free_space_is_an_error_too(tmp_path, monkeypatch):
    from metsynth.fileio import WriteError

    _itk_short_write(monkeypatch)
    with pytest.raises(WriteError, match=r"img\.nii: the image writer stopped after .* bytes without an error"):
        make_volume().write(tmp_path / "img.nii")
    assert list(tmp_path.iterdir()) == []


def test_enospc_while_gzipping_keeps_the_existing_file(tmp_path, monkeypatch):
    import errno

    from metsynth import volume as volume_module
    from metsynth.errors import MetsynthError

    target = tmp_path / "img.nii.gz"
    old = make_volume(seed=1).write(target).read_bytes()
    real = volume_module._gzip_file

    def fails_partway(src, dst, level):
        real(src, dst, level)
        _cut(dst, 0.3)  # some bytes reached the temporary file...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk was full

    monkeypatch.setattr(volume_module, "_gzip_file", fails_partway)
    with pytest.raises(MetsynthError, match=r"^disk full writing .*img\.nii\.gz: free space or choose another --out$"):
        make_volume(seed=2).write(target)
    assert target.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["img.nii.gz"]


def test_enospc_in_atomic_text_writes(tmp_path, monkeypatch):
    import errno
    import pathlib

    from metsynth.errors import MetsynthError
    from metsynth.fileio import write_json

    real = pathlib.Path.write_text

    def fails_partway(self, text, *args, **kwargs):
        real(self, text[:5], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", fails_partway)
    with pytest.raises(MetsynthError,
                       match=r"^disk full writing .*a\.json: free space or choose another --out$") as info:
        write_json(tmp_path / "a.json", {"x": 1})
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC  # still an OSError for callers
    assert list(tmp_path.iterdir()) == []


def test_torch_exports_of_the_same_weights_are_the_same_bytes(tmp_path):
    """A re-export must hash the same: harmonized sets and fine-tunings are keyed on the sha256."""
    import torch

    from metsynth.fileio import file_sha256, save_torch

    state = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(2)}
    first, second = save_torch(tmp_path / "a" / "model.pt", state), save_torch(tmp_path / "b" / "model.pt", state)
    assert file_sha256(first) == file_sha256(second)
    again = torch.load(first, weights_only=True)
    assert torch.equal(again["w"], state["w"]) and not list(tmp_path.glob("*/.tmp-*"))


def test_grid_mismatch_names_the_mask_first_in_itk_xyz_order():
    """The message lists the values in the order its sentence names them, labelled, in ITK's (x, y, z)
    order: a shift in x (the last array axis) reads as a shift in x, as in ITK / 3D Slicer."""
    img = make_volume(spacing=(1.0, 0.8, 0.7), origin=(5.0, -10.0, 20.0))  # (z, y, x)
    mask = img.with_array((img.array > 500).astype(np.uint8))
    moved = Volume(mask.array, img.spacing, (5.0, -10.0, 35.0))  # x moved by 15 mm
    with pytest.raises(InputError) as err:
        as_mask(moved, img, what="lesion mask (reference, round 1)")
    text = str(err.value)
    assert "origin (x, y, z) mm: lesion mask (35, -10, 5) vs image (20, -10, 5)" in text, text
    assert "\n" not in text
    thick = Volume(mask.array, (2.5, 0.8, 0.7), img.origin)
    with pytest.raises(InputError, match=r"spacing \(x, y, z\) mm: femur mask \(0\.7, 0\.8, 2\.5\) vs image "
                                         r"\(0\.7, 0\.8, 1\)"):
        as_mask(thick, img, what="femur mask")
    small = Volume(mask.array[:-1], img.spacing, img.origin)
    with pytest.raises(InputError, match=r"shape \(x, y, z\) voxels: mask \(32, 28, 23\) vs image \(32, 28, 24\)"):
        as_mask(small, img, what="mask")
    # without names: the volumes' file names label the values, still in (x, y, z) order
    a = Volume(mask.array, img.spacing, img.origin, path="/d/M01.nii.gz")
    b = Volume(mask.array, img.spacing, (5.0, -10.0, 35.0), path="/d/M01_seg.nii.gz")
    assert a.grid_mismatch(b) == "origin (x, y, z) mm: M01.nii.gz (20, -10, 5) vs M01_seg.nii.gz (35, -10, 5)"


def test_a_rounding_offset_is_fixed_by_copying_the_geometry_not_by_resampling():
    img = make_volume(spacing=(1.0, 0.8, 0.7), origin=(5.0, -10.0, 20.0))
    mask = img.with_array((img.array > 500).astype(np.uint8))
    rounded = Volume(mask.array, img.spacing, (5.0, -10.0, 20.01))  # 0.01 mm: written with fewer digits
    with pytest.raises(InputError, match=r"at most 0\.01 mm, under a tenth of a voxel.*CopyInformation") as err:
        as_mask(rounded, img, what="lesion mask")
    assert "resample the mask" not in str(err.value)
    moved = Volume(mask.array, img.spacing, (5.0, -10.0, 21.0))  # 1 mm, more than a voxel: another grid
    with pytest.raises(InputError, match="resample the mask onto the image"):
        as_mask(moved, img, what="lesion mask")


def test_missing_file_given_directly_is_named_as_given_and_absolute(tmp_path, monkeypatch):
    """A file given on the command line (no manifest): 'file not found: X' with X as given and its
    absolute form, and no hint about manifests."""
    from metsynth.volume import check_readable

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as err:
        check_readable("scans/nope.nii.gz", "femur mask of 'H001'")
    text = str(err.value)
    assert text.startswith(f"file not found: scans/nope.nii.gz (absolute path {tmp_path}/scans/nope.nii.gz)"), text
    assert "femur mask of 'H001'" in text and "manifest" not in text
    with pytest.raises(InputError, match=rf"^file not found: {tmp_path}/nope.nii.gz; check the path$"):
        Volume.read(tmp_path / "nope.nii.gz")
