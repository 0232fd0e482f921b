"""Picture helpers: sizes, orientation conventions, outlines, errors."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest

from metsynth.errors import InputError
from metsynth.viz import Tile, canonical, display_slice, montage, ortho_slices, volume_slices
from metsynth.volume import Volume


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def phantom_like() -> Volume:
    """A small CT-like volume (z, y, x) at anisotropic spacing with a 'bone' and a 'lesion'."""
    rng = np.random.default_rng(0)
    arr = rng.normal(40, 10, (30, 40, 50)).astype(np.int16)
    arr[:, 10:30, 15:35] = 1200
    return Volume(arr, spacing=(2.0, 0.8, 0.8), origin=(-10.0, 5.0, -20.0))


def test_ortho_slices_writes_png_of_requested_size(tmp_path, phantom_like):
    lesion = np.zeros(phantom_like.shape, np.uint8)
    lesion[12:18, 15:22, 20:28] = 1
    path = ortho_slices(phantom_like, {"lesion": (phantom_like.with_array(lesion), "red")},
                        path=tmp_path / "a.png", width_px=900, height_px=400, title="test")
    assert png_size(path) == (900, 400)
    auto = ortho_slices(phantom_like, None, path=tmp_path / "b.png", width_px=700, window="bone")
    w, h = png_size(auto)
    assert w == 700 and 100 < h < 700


def test_empty_and_full_masks_do_not_crash(tmp_path, phantom_like):
    empty = phantom_like.with_array(np.zeros(phantom_like.shape, np.uint8))
    full = phantom_like.with_array(np.ones(phantom_like.shape, np.uint8))
    path = ortho_slices(phantom_like, {"empty": (empty, "red"), "full": (full, "lime")},
                        path=tmp_path / "e.png", center_world=(0.0, 20.0, 0.0))
    assert png_size(path)[0] == 1500


def test_center_choice_and_errors(tmp_path, phantom_like):
    with pytest.raises(InputError, match="not both"):
        ortho_slices(phantom_like, None, path=tmp_path / "x.png", center_world=(0, 0, 0), center_index=(1, 1, 1))
    with pytest.raises(InputError, match="PNG"):
        ortho_slices(phantom_like, None, path=tmp_path / "x.jpg")
    with pytest.raises(InputError, match="window"):
        ortho_slices(phantom_like, None, path=tmp_path / "x.png", window="lung")
    with pytest.raises(InputError, match="upper value"):
        ortho_slices(phantom_like, None, path=tmp_path / "x.png", window=(100, 0))
    wrong = Volume(np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(InputError, match="grid"):
        ortho_slices(phantom_like, {"m": (wrong, "red")}, path=tmp_path / "x.png")
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".tmp-*"))


def test_radiological_orientation():
    """Axial: patient's right on the image's left, anterior up; coronal/sagittal: superior up."""
    arr = np.zeros((20, 20, 20), np.int16)
    arr[:, :, 2] = 1  # x small = patient's right (LPS: x grows to the left)
    arr[:, 3, :] += 2  # y small = anterior
    arr[17, :, :] += 4  # z large = superior
    vol = Volume(arr, spacing=(1.0, 1.0, 1.0))
    axial, _ = display_slice(arr, vol.spacing, "axial", 10)
    assert np.all(axial[:, 2] & 1) and np.all(axial[3, :] & 2)  # right at left columns, anterior at top
    coronal, _ = display_slice(arr, vol.spacing, "coronal", 10)
    assert np.all(coronal[2, :] & 4)  # superior near the top row
    sagittal, px = display_slice(arr, vol.spacing, "sagittal", 10)
    assert np.all(sagittal[2, :] & 4) and np.all(sagittal[:, 3] & 2)  # superior up, anterior left
    assert px == (1.0, 1.0)


def test_canonical_undoes_flips_and_permutations():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 100, (4, 5, 6)).astype(np.int16)
    vol = Volume(arr, spacing=(3.0, 2.0, 1.0), origin=(0.0, 0.0, 0.0))
    # the same voxels stored with the x axis reversed (origin at the other end)
    flipped = Volume(arr[:, :, ::-1].copy(), spacing=(3.0, 2.0, 1.0), origin=(0.0, 0.0, 5.0),
                     direction=np.diag([1.0, 1.0, -1.0]))
    # ... and with the array axes in x, y, z order
    transposed = Volume(np.transpose(arr, (2, 1, 0)).copy(), spacing=(1.0, 2.0, 3.0),
                        direction=np.array([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]]))
    a, sa, _, _ = canonical(vol)
    for other in (flipped, transposed):
        b, sb, _, _ = canonical(other)
        assert np.array_equal(a, b) and sa == sb


def test_volume_slices_tiles_carry_spacing_and_outlines(phantom_like):
    mask = phantom_like.with_array((phantom_like.array > 1000).astype(np.uint8))
    tiles = volume_slices(phantom_like, (15, 20, 25), {"bone": (mask, "yellow")})
    assert list(tiles) == ["axial", "coronal", "sagittal"]
    assert tiles["axial"].image.shape == (40, 50) and tiles["axial"].spacing == (0.8, 0.8)
    assert tiles["coronal"].image.shape == (30, 50) and tiles["coronal"].spacing == (2.0, 0.8)
    assert tiles["sagittal"].image.shape == (30, 40) and tiles["sagittal"].spacing == (2.0, 0.8)
    outline, colour = tiles["axial"].outlines["bone"]
    assert outline.shape == (40, 50) and colour == "yellow" and outline.any()


def test_montage_sizes_cells_and_errors(tmp_path):
    img = np.linspace(-1000, 1500, 64 * 48).reshape(64, 48)
    mask = np.zeros_like(img, dtype=np.uint8)
    mask[20:40, 10:30] = 1
    rows = [
        [(img, [(mask, "red")], "tuple"), Tile(img, {"m": (mask, "cyan")}, "tile", (2.0, 1.0), window="soft")],
        [None, (img, None, "no outline", (1.0, 1.0))],
    ]
    path = montage(rows, tmp_path / "m.png", cell_px=120, title="QC")
    assert png_size(path) == (240, 2 * (120 + 22) + 40)
    with pytest.raises(InputError, match="at least one"):
        montage([], tmp_path / "n.png")
    with pytest.raises(InputError, match="2D"):
        montage([[(np.zeros((3, 3, 3)), None, "3d")]], tmp_path / "n.png")
    with pytest.raises(InputError, match="does not match"):
        montage([[(img, [(mask[:10], "red")], "bad")]], tmp_path / "n.png")
    with pytest.raises(InputError, match="Tile or a tuple"):
        montage([[img]], tmp_path / "n.png")


def test_no_pyplot_state(tmp_path, phantom_like):
    before = "matplotlib.pyplot" in sys.modules
    ortho_slices(phantom_like, None, path=tmp_path / "p.png", width_px=300)
    assert ("matplotlib.pyplot" in sys.modules) == before
