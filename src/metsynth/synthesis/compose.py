"""One synthetic case: transform a bank lesion, place it in a healthy femur, blend it in.

:func:`synthesize_one` is the whole recipe for one (healthy femur, bank lesion, generator):

1. draw and apply the lesion transforms (:mod:`.transforms`);
2. drop the attempt if the lesion is now at most ``min_lesion_mm3`` (``too_small_after_transform``);
3. draw a position (:mod:`.placement`); drop the attempt if none is valid (``no_position``);
4. paste (:func:`paste`): the label is the transformed mask at that position (cut to the femur
   mask when ``placement.clip_to_femur``); the blending weight ``alpha`` is the mean filter
   (box of ``edge_filter_size`` voxels, exact integer counts) of the label; each voxel becomes
   ``healthy + alpha * (lesion - healthy)``, clipped to the healthy image's intensity range.
   Only voxels with ``alpha > 0`` are written: the **footprint** is the label dilated by
   ``edge_filter_size // 2`` voxels, and every voxel outside it keeps its exact bytes;
5. drop the result if the pasted label is at most ``min_lesion_mm3`` (``too_small_after_placement``).

The same function serves the batch run (:mod:`.run`) and the on-the-fly dataset (:mod:`.dataset`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..config import Settings
from ..errors import InputError
from ..volume import Volume
from .edges import donor_edge_sigma, gaussian_weights
from .placement import FemurSite, NoPlacement, PlacementConfig, draw_placement
from .transforms import TransformConfig, TransformedLesion, apply_transform, draw_params

__all__ = [
    "HealthyFemur",
    "SynthesisConfig",
    "SynthesisResult",
    "blend_weights",
    "paste",
    "synthesize_one",
]


class SynthesisConfig(Settings):
    """Settings of the ad-hoc synthesis (``metsynth synthesize``; the dataset uses the same)."""

    seed: int = Field(0, ge=0, description="Run seed; every volume's seed derives from it, the healthy "
                      "case, the lesion and the repeat.")
    repeats: int = Field(10, ge=1, description="Attempts per (healthy femur, bank lesion) pair (paper: 10).")
    min_lesion_mm3: float = Field(
        16.0, ge=0, description="Results whose pasted lesion is at most this volume (mm^3) are dropped "
        "(paper: 16 mm^3 = 26 voxels at 0.85 mm).")
    clip_to_intensity_range: bool = Field(
        True, description="Clip blended intensities to the healthy image's [min, max] (noise cannot leave "
        "the cohort's range, e.g. [-1, 1] for prepared images).")
    image_compression_level: int | None = Field(
        None, ge=1, le=9, description="gzip level of the synthetic images; null (default) writes "
        "uncompressed .nii: float32 CT with noise shrinks only ~15 % with gzip, which costs ~100x the "
        "synthesis compute (benchmarks/RESULTS.md); set 1 to save that disk space anyway.")
    image_storage: Literal["float32", "int16"] = Field(
        "float32", description="Voxel type of the synthetic images. float32 (default): the values as "
        "computed. int16: one HU per step of the cohort's prepared hu_window (round-trip error <= 0.5 HU), "
        "with NIfTI scl_slope/scl_inter recorded so every NIfTI reader returns the float values; half "
        "the bytes raw and, with gzip, about a third of float32's (benchmarks/RESULTS.md, 'Storage at "
        "paper scale'). The paper preset stores int16 with gzip level 1.")
    image_layout: Literal["whole", "changed_box"] = Field(
        "whole", description="How each synthetic image is laid out on disk. whole (default): the whole volume. "
        "changed_box: only the box where it differs from its healthy femur (the pasted lesion and its blend), "
        "with a <id>.base.json record beside it naming that femur's prepared image and its SHA-256; metsynth "
        "reads the whole volume back (training, harmonization, export), viewers show the box in place over the "
        "femur, and `metsynth export whole` (or `export nnunet`) writes whole files. At the paper's scale the "
        "synthetic set shrinks from ~20 GB to ~0.2 GB for the phantom's lesions (benchmarks/RESULTS.md, "
        "'Storage at paper scale'); the prepared healthy images must then stay where they are. The study's "
        "paper preset (configs/paper.yaml) uses it, where the run folder holds the prepared cohort beside the set.")
    label_compression_level: int | None = Field(
        1, ge=1, le=9, description="gzip level of the labels (they shrink ~1000x, for ~10 ms); null writes .nii.")
    transform: TransformConfig = Field(default_factory=TransformConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)

    @classmethod
    def preset(cls, name: str) -> "SynthesisConfig":
        """Named settings: ``paper`` (the defaults, images stored int16 with gzip level 1: a third of the
        float32 bytes at <= 0.5 HU, benchmarks/storage_paper.py) or ``tiny`` (2 repeats, for tests and demos)."""
        from ..config import look_up_option

        return cls.from_dict(look_up_option(name, PRESETS, "synthesis preset"), source=f"preset {name!r}")


PRESETS: dict[str, dict[str, Any]] = {
    # 5675 kept volumes of 0.85 mm femurs: 63.9 GB as float32 .nii, 20.3 GB as int16 .nii.gz (RESULTS.md)
    "paper": {"image_storage": "int16", "image_compression_level": 1},
    "tiny": {"repeats": 2},
}


@dataclass
class HealthyFemur:
    """A healthy case ready to receive lesions: image, femur site (mask + regions), value range."""

    id: str
    image: Volume
    site: FemurSite
    value_range: tuple[float, float]

    @classmethod
    def from_volumes(cls, case_id: str, image: Volume, femur: np.ndarray) -> "HealthyFemur":
        femur = np.asarray(femur).astype(bool)
        if not femur.any():
            raise InputError(f"healthy case {case_id}: the femur mask is empty; lesions need a femur to go into")
        site = FemurSite.from_mask(femur, image.spacing, image.direction)
        return cls(case_id, image, site, (float(image.array.min()), float(image.array.max())))

    @classmethod
    def load(cls, case: Any) -> "HealthyFemur":
        """From a cohort :class:`~metsynth.cohort.Case` (its femur mask is required)."""
        from ..cohort import load_case

        if case.femur_mask is None:
            raise InputError(
                f"healthy case {case.id}: no femur_mask in the manifest; lesions are placed inside the femur, "
                "so run `metsynth prepare` (which segments it) or add a femur_mask to the case")
        loaded = load_case(case, lesion=False)
        return cls.from_volumes(case.id, loaded.image, loaded.femur.array)  # type: ignore[union-attr]


@dataclass
class SynthesisResult:
    """Outcome of one attempt: kept (image and label on the healthy grid) or dropped, with provenance."""

    kept: bool
    reason: str | None
    image: np.ndarray | None = None
    label: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def blend_weights(mask: np.ndarray, size: int) -> np.ndarray:
    """Mean filter (box ``size``^3, zero outside) of a binary mask, from exact integer counts.

    Exactly 0 outside the mask dilated by ``size // 2`` and exactly 1 deep inside it.
    """
    counts = np.asarray(mask).astype(np.int32)
    if size <= 1:
        return counts.astype(np.float32)
    r = size // 2
    for axis in range(3):
        pad = [(0, 0)] * 3
        pad[axis] = (r + 1, r)
        c = np.cumsum(np.pad(counts, pad), axis=axis, dtype=np.int32)
        n = counts.shape[axis]
        hi = np.take(c, np.arange(size, size + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        counts = hi - lo
    return (counts / float(size**3)).astype(np.float32)


def paste(healthy: np.ndarray, lesion: TransformedLesion, corner: tuple[int, int, int], edge_filter_size: int,
          femur: np.ndarray | None = None, value_range: tuple[float, float] | None = None,
          edge_sigma_mm: float | None = None, spacing: tuple[float, float, float] | None = None
          ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Blend ``lesion`` into a copy of ``healthy`` with its patch's [0,0,0] at ``corner``.

    The blending weight is the mean filter of the label (``edge_filter_size``), or, with
    ``edge_sigma_mm`` (and the grid's ``spacing``), the label blurred by that Gaussian
    (:func:`~metsynth.synthesis.edges.gaussian_weights`).

    Returns ``(image, label, info)``: image in the healthy dtype, label uint8, and the footprint's
    bounding box and voxel count and the box of the pasted patch (``patch_box``; the label is
    zero outside it). Voxels outside the footprint are copied unchanged.
    """
    shape = np.asarray(healthy.shape)
    lo = np.asarray(corner)
    hi = lo + np.asarray(lesion.mask.shape)
    v_lo, v_hi = np.maximum(lo, 0), np.minimum(hi, shape)
    image = healthy.copy()
    label = np.zeros(healthy.shape, np.uint8)
    if np.any(v_hi <= v_lo):
        return image, label, {"footprint_voxels": 0, "footprint_box": None, "patch_box": None}
    vsl = tuple(slice(int(a), int(b)) for a, b in zip(v_lo, v_hi))
    psl = tuple(slice(int(a - c), int(b - c)) for a, b, c in zip(v_lo, v_hi, lo))
    mask = lesion.mask[psl].astype(bool)
    if femur is not None:
        mask &= femur[vsl]
    if edge_sigma_mm is not None:
        if spacing is None:
            raise ValueError("paste: a Gaussian edge (edge_sigma_mm) needs the grid's spacing")
        alpha = gaussian_weights(mask, edge_sigma_mm, spacing)
    else:
        alpha = blend_weights(mask, edge_filter_size)
    footprint = alpha > 0
    region = healthy[vsl]
    before = region[footprint].astype(np.float32)
    values = lesion.values[psl][footprint]
    a = alpha[footprint]
    blended = before + a * (values - before)
    if value_range is not None:
        blended = np.clip(blended, value_range[0], value_range[1])
    if np.issubdtype(healthy.dtype, np.integer):
        info = np.iinfo(healthy.dtype)
        blended = np.clip(np.rint(blended), info.min, info.max)
    out = image[vsl]
    out[footprint] = blended.astype(healthy.dtype)
    label[vsl] = mask
    where = np.argwhere(footprint)
    box = [[int(a + o), int(b + o + 1)] for a, b, o in zip(where.min(axis=0), where.max(axis=0), v_lo)] \
        if where.size else None
    patch_box = [[int(a), int(b)] for a, b in zip(v_lo, v_hi)]
    return image, label, {"footprint_voxels": int(footprint.sum()), "footprint_box": box, "patch_box": patch_box}


def check_donor_contacts(entries: Any, config: "SynthesisConfig") -> None:
    """Refuse bank entries without a recorded ``surface_contact`` when ``placement.match_donor_contact``
    needs it (banks extracted before it was recorded, or from cases without a femur mask)."""
    if not config.placement.match_donor_contact:
        return
    for entry in entries:
        if getattr(entry, "surface_contact", None) is None:
            raise InputError(
                f"lesion {entry.id}: the bank does not record how much it touched its femur's surface (a bank "
                "extracted before metsynth recorded surface_contact, or from a case without a femur mask), which "
                "placement.match_donor_contact needs; re-extract the bank with `metsynth lesions extract "
                "PREPARED_MANIFEST --out BANK --force`, or set placement.match_donor_contact: 0")


def synthesize_one(healthy: HealthyFemur, entry: Any, lesion_image: np.ndarray, lesion_mask: np.ndarray,
                   config: SynthesisConfig, rng: np.random.Generator) -> SynthesisResult:
    """One attempt: transform ``entry``'s lesion, place it in ``healthy``, blend it (module docstring).

    ``entry`` is a :class:`~metsynth.synthesis.bank.BankEntry` (``radius_mm``, ``intensity_robust_std``,
    ``spacing``); ``lesion_image``/``lesion_mask`` its patch arrays. Deterministic given ``rng``.
    """
    spacing = healthy.image.spacing
    if not np.allclose(entry.spacing, spacing, rtol=1e-3):
        raise InputError(
            f"lesion {entry.id} has voxel size {tuple(entry.spacing)} mm but healthy case {healthy.id} has "
            f"{spacing} mm; prepare both cohorts at the same spacing (metsynth prepare) and re-extract the bank")
    voxel_mm3 = float(np.prod(spacing))
    params = draw_params(rng, config.transform, entry)
    if config.transform.edge_model == "donor":
        params = replace(params, edge_sigma_mm=donor_edge_sigma(lesion_image, lesion_mask, spacing))
    provenance: dict[str, Any] = {"transform": params.to_dict()}
    lesion = apply_transform(lesion_image, lesion_mask, spacing, params)
    mm3 = lesion.voxels * voxel_mm3
    provenance["transformed_mm3"] = round(mm3, 4)
    if mm3 <= config.min_lesion_mm3:
        provenance["reason_detail"] = (f"lesion is {mm3:.1f} mm^3 after the transforms "
                                       f"(<= min_lesion_mm3 {config.min_lesion_mm3:g})")
        return SynthesisResult(False, "too_small_after_transform", provenance=provenance)
    check_donor_contacts([entry], config)
    placement = draw_placement(rng, healthy.site, lesion, config.placement, getattr(entry, "region", None),
                               getattr(entry, "surface_contact", None))
    if isinstance(placement, NoPlacement):
        provenance["placement"] = {"tries": placement.tries}
        provenance["reason_detail"] = placement.reason
        return SynthesisResult(False, "no_position", provenance=provenance)
    provenance["placement"] = placement.to_dict()
    femur = healthy.site.femur if config.placement.clip_to_femur else None
    value_range = healthy.value_range if config.clip_to_intensity_range else None
    image, label, info = paste(healthy.image.array, lesion, placement.corner, params.edge_filter_size, femur,
                               value_range, params.edge_sigma_mm, spacing)
    patch_box = info.pop("patch_box")
    if patch_box is None:
        where = np.zeros((0, 3), int)
    else:  # the label is empty outside the patch: search only there
        where = np.argwhere(label[tuple(slice(a, b) for a, b in patch_box)]) + [a for a, _ in patch_box]
    mm3 = len(where) * voxel_mm3
    provenance["lesion"] = {
        "voxels": int(len(where)),
        "mm3": round(mm3, 4),
        "centroid_index": [round(float(c), 3) for c in where.mean(axis=0)] if len(where) else None,
        "bbox": [[int(a), int(b) + 1] for a, b in zip(where.min(axis=0), where.max(axis=0))] if len(where) else None,
        "region": healthy.site.majority_region(where) if len(where) else "outside",
        **info,
    }
    if mm3 <= config.min_lesion_mm3:
        provenance["reason_detail"] = (f"pasted lesion is {mm3:.1f} mm^3 (<= min_lesion_mm3 "
                                       f"{config.min_lesion_mm3:g}) after cutting it to the femur mask")
        return SynthesisResult(False, "too_small_after_placement", provenance=provenance)
    return SynthesisResult(True, None, image, label, provenance)
