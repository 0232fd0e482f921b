"""Before/after pictures of harmonization: one row per lesion, synthetic | harmonized | difference.

The same axial slice (through the lesion's centre) is shown before and after, cropped around
the lesion, in the same grey window; the label is outlined. The difference (after - before) is
shown in grey with a symmetric window (mid-grey = unchanged; the window is in the caption).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..fileio import read_json
from ..volume import Volume

CROP_MM = 48.0  # minimum side of the crop around a lesion


def _largest_lesion_centre(label: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    components, count = ndimage.label(label > 0)
    if count == 0:
        return None
    sizes = ndimage.sum_labels(np.ones_like(components), components, index=np.arange(1, count + 1))
    k = int(np.argmax(sizes)) + 1
    voxels = np.argwhere(components == k)
    return voxels.mean(axis=0), voxels.max(axis=0) - voxels.min(axis=0) + 1


def lesion_tiles(before: Volume, after: Volume, label: Volume, name: str, caption: str = "harmonized"):
    """Three :class:`metsynth.viz.Tile` objects for the largest lesion of ``label``."""
    from ..viz import Tile, canonical, display_slice

    found = _largest_lesion_centre(label.array)
    if found is None:
        return None
    centre, extent = found
    arrays = {}
    for key, vol in (("before", before), ("after", after), ("label", label)):
        arr, spacing, perm, flips = canonical(vol)
        arrays[key] = arr
    idx = np.asarray(centre, dtype=np.float64)[perm]
    shape = np.asarray(before.shape)[perm]
    idx = np.where(flips, shape - 1 - idx, idx)
    ext = np.asarray(extent)[perm]
    z = int(round(idx[0]))
    slices = {k: display_slice(a, spacing, "axial", z) for k, a in arrays.items()}
    img_b, px = slices["before"]
    img_a, lab = slices["after"][0], slices["label"][0]
    # crop around the lesion (rows: canonical y, columns: canonical x)
    half = [max(CROP_MM / 2 / px[0], ext[1] * 0.9), max(CROP_MM / 2 / px[1], ext[2] * 0.9)]
    r0, r1 = int(max(idx[1] - half[0], 0)), int(min(idx[1] + half[0] + 1, img_b.shape[0]))
    c0, c1 = int(max(idx[2] - half[1], 0)), int(min(idx[2] + half[1] + 1, img_b.shape[1]))
    crop = (slice(r0, r1), slice(c0, c1))
    b, a, m = img_b[crop], img_a[crop], lab[crop] > 0
    lo, hi = np.percentile(b, [1, 99.5])
    if hi - lo < 1e-3:
        lo, hi = -1.0, 1.0
    diff = a - b
    d = float(max(np.percentile(np.abs(diff), 99.5), 0.02))
    outline = [(m, "#ffd24d")]
    return [
        Tile(b, outline, f"{name}: synthetic", px, (float(lo), float(hi))),
        Tile(a, outline, caption, px, (float(lo), float(hi))),
        Tile(diff, outline, f"difference (grey = 0, +-{d:.2f})", px, (-d, d)),
    ]


def write_before_after(synthetic_dir: str | os.PathLike, harmonized_dir: str | os.PathLike, k: int,
                       path: str | os.PathLike) -> Path | None:
    """PNG montage of the first ``k`` harmonized volumes (sorted ids), largest lesion of each."""
    from ..viz import montage

    harmonized_dir = Path(harmonized_dir)
    rows = []
    for sidecar in sorted((harmonized_dir / "sidecars").glob("*.json")):
        if len(rows) >= k:
            break
        data = read_json(sidecar)
        h = data.get("harmonization") or {}
        if not data.get("image") or not data.get("label") or not h.get("source_image"):
            continue
        before = Volume.read(h["source_image"])
        after = Volume.read(harmonized_dir / data["image"])
        label = Volume.read(harmonized_dir / data["label"])
        caption = f"harmonized (t={h.get('start_timestep')}, {len(h.get('timesteps', []))} steps)"
        tiles = lesion_tiles(before, after, label, data.get("volume_id", sidecar.stem), caption)
        if tiles is not None:
            rows.append(tiles)
    if not rows:
        return None
    return montage(rows, path, title="harmonization: same axial slice before / after", cell_px=300)


__all__ = ["lesion_tiles", "write_before_after"]
