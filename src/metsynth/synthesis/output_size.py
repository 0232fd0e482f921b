"""How many bytes a synthesis run writes, estimated before it starts, and the check that they fit
on the disk of its output folder (a resumed run counts only the attempts still to do)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import check_free_space
from .compose import SynthesisConfig

BLOCK = 4096  # every file takes at least a block of the file system
SIDECAR_BYTES = BLOCK
INDEX_ROW_BYTES = 200
GZIP_IMAGE_RATIO = 0.9  # float32 CT with noise shrinks ~15 % with gzip (SynthesisConfig.image_compression_level)
# int16 (one HU per step) CT shrinks to ~63 % with gzip level 1 (phantom at 0.85 mm; real CT 60 %:
# benchmarks/storage_paper.py), 0.75 with a margin for noisier scans
GZIP_INT16_IMAGE_RATIO = 0.75
GZIP_LABEL_BYTES_PER_VOXEL = 0.01  # labels shrink ~1000x; 10x that as a margin


def _blocks(n: float) -> float:
    return BLOCK * np.ceil(max(n, 1.0) / BLOCK)


def box_voxels_bound(bbox: list[list[int]], config: SynthesisConfig) -> float:
    """At most how many voxels the changed box of one lesion takes (``image_layout: changed_box``): a cube
    around the lesion's bounding box turned any way (its diagonal), at the largest scale and jitter, plus
    the blend's filter on each side."""
    diagonal = float(np.sqrt(sum((hi - lo) ** 2 for lo, hi in bbox)))
    t = config.transform
    side = diagonal * t.scale[1] * (1.0 + t.anisotropy) + 2 * t.edge_filter_size[1] + 2
    return side ** 3


def estimate_output_bytes(healthy: list[Any], n_lesions: int, repeats: int, config: SynthesisConfig,
                          lesion_bboxes: list[list[list[int]]] | None = None) -> float:
    """Bytes a run writes if every attempt is kept: per healthy case, its lesions x repeats x
    (image + label + sidecar) from the size in its image's header and the voxel type stored (that of
    the header for float32 storage, 2 bytes for int16), plus index.csv. With ``image_layout:
    changed_box`` and the bank lesions' bounding boxes (``lesion_bboxes``), an image is the box that
    its lesion can change at most (:func:`box_voxels_bound`) and its ``.base.json`` record."""
    from ..volume import read_header

    box_voxels = None
    if config.image_layout == "changed_box" and lesion_bboxes:
        box_voxels = float(np.mean([box_voxels_bound(b, config) for b in lesion_bboxes]))
    total = 0.0
    for case in healthy:
        try:
            shape, itemsize = read_header(case.image)
        except Exception:  # noqa: BLE001 - an unreadable image fails the run with its own message later
            continue
        voxels = float(np.prod(shape, dtype=np.float64))
        int16 = config.image_storage == "int16"
        image = 352 + min(voxels, box_voxels or voxels) * (2 if int16 else itemsize)
        if config.image_compression_level is not None:
            image *= GZIP_INT16_IMAGE_RATIO if int16 else GZIP_IMAGE_RATIO
        if box_voxels is not None:
            image = _blocks(image) + SIDECAR_BYTES  # and its .base.json record
        label = 352 + voxels if config.label_compression_level is None else \
            1024 + voxels * GZIP_LABEL_BYTES_PER_VOXEL
        total += float(n_lesions) * repeats * (_blocks(image) + _blocks(label) + SIDECAR_BYTES + INDEX_ROW_BYTES)
    return total


def _check_output_fits(out: Path, healthy: list[Any], n_lesions: int, config: SynthesisConfig,
                       force: bool = False, lesion_bboxes: list[list[list[int]]] | None = None) -> None:
    """Refuse (before anything is written) a run whose remaining attempts cannot fit on the disk
    (with ``force`` every attempt counts: the outputs there may be those of another run)."""
    count = len(healthy) * n_lesions * config.repeats
    estimate = estimate_output_bytes(healthy, n_lesions, config.repeats, config, lesion_bboxes)
    sidecars = out / "sidecars"
    if sidecars.is_dir() and not force:  # a resumed run: only what is not done yet is still to be written
        done = sum(1 for e in os.scandir(sidecars) if e.name.endswith(".json") and not e.name.startswith("."))
        remaining = max(count - done, 0)
        estimate = estimate * remaining / count if count else 0.0
        count = remaining
    check_free_space(out, count, estimate, "synthetic volumes (every attempt kept)",
                     "ask for fewer --repeats, fewer healthy cases or lesions, or choose another --out "
                     "with more free space")
