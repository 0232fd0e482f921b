"""Automatic bone and femur segmentation of CT in Hounsfield units.

The synthesis pipeline needs a mask of each healthy femur to constrain where a lesion may be
pasted; Saillard et al. use an automatic bone segmentation for it (their ref. [16]). This module
is a classical, training-free version of that step. Sizes are in millimetres and converted with
the voxel spacing; directions come from the image's direction cosines (world LPS: z superior,
x towards the patient's left), never from the array's axis order.

1. **Working grid.** The HU image is clipped (metal counts as dense bone, no more) and
   block-averaged to about ``work_spacing_mm`` (a 0.7 mm CT is processed at 1.4 mm, a 3 mm CT
   as it is), so a 512 x 512 x 300 CT takes seconds to tens of seconds.
2. **All bone** (:func:`segment_bone`). Hysteresis threshold (voxels above ``bone_low_hu``
   connected to voxels above ``bone_high_hu``, so trabecular bone hangs on to the cortex), thin
   streaks near metal opened away, a closing of ``closing_mm`` that bridges small cortical breaks,
   and hole filling in 3D and in every axial plane (perpendicular to the head-foot axis). Marrow
   and osteolytic lesions (soft-tissue density) inside the bone are inside the mask.
3. **Femurs** (:func:`find_femurs`, :func:`segment_femur`). A marker-based watershed on the
   smoothed CT intensity inside the bone mask (the joint space is a darker seam between the
   bright subchondral bone of the femoral head and of the acetabulum). Markers:

   * femur: in the lowest ``seed_slab_mm`` of bone (the field of view must end across the femur
     shafts), the most lateral cross-section on each side of the body midline (one leg in view:
     the largest cross-section);
   * other bone: the rest of that slab (ischium, pubis), bone within ``midline_mm`` of the midline
     (sacrum, spine, symphysis) when both hips are in view, and bone in the top ``top_slab_mm`` of
     the field of view;
   * the femoral head: where a femur's bone touches other bone, the head is fitted as the sphere
     whose surface is the most distinct dark seam against bone on both sides (starts from a Hough
     vote for sphere centres and from the deepest points of the bone; grid searches of centre and
     radius). Its ball becomes femur marker and a 10 mm shell outside it, on the acetabulum's
     side, other-bone marker, so the split follows the joint even where 3 mm voxels blur it.

   Each femur's region is then closed with ``lesion_closing_mm`` with hole filling between the
   dilation and the erosion (sealing cortical breaks made by lesions), kept apart from the other
   bones, and mapped back to the image's grid: the working-grid mask decides where the femur is,
   its surface is redrawn from the full-resolution voxels above ``surface_hu``, then closed and
   filled again at full resolution.
4. **Is it a femur?** (:func:`measure_femur`, :func:`check_femur`). The search above finds "femurs"
   in any CT with bone near its lower edge (the arms beside a thorax, a vertebra, a slab of shaft).
   Each femur found is measured (volume, head-foot height, largest axial cross-section, distance of
   its shaft from the body midline when both hips are in view, median and 99th-percentile HU) and
   checked against the ``femur_*`` limits of :class:`FemurSegConfig`: one that is certainly not a
   proximal femur is dropped, and when none is left an :class:`InputError` names the image, the
   measurements and the failed limits; a doubtful one (a scan that ends above the lesser trochanter,
   bone denser than a femur with its marrow) is kept with a logged warning naming the image.

Side convention: "left" and "right" are the patient's; the left femur is the one at larger
world x. When the body is narrower than ``bilateral_min_width_mm`` (one leg in view), the midline
is not visible: the single femur found is returned whatever side is asked (with a warning), its
side guessed from the sign of world x (the scanner's isocentre is usually near the midline).

Metal implants do not stop the segmentation, but a femur with a prosthesis is segmented with
streak artefacts and cement around the stem; expect a poor mask on that side.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from scipy import ndimage as ndi

from .config import Settings, look_up_option
from .errors import InputError
from .volume import Volume, check_finite

log = logging.getLogger(__name__)

Side = Literal["left", "right", "both"]
SIDES = ("left", "right")


class FemurSegConfig(Settings):
    """Settings of the automatic bone / femur segmentation (HU thresholds, sizes in mm)."""

    bone_low_hu: float = Field(
        110.0, description="Hysteresis low threshold, HU: voxels above it are bone if connected to a "
        "voxel above bone_high_hu. Low enough to keep thin cortices blurred by partial volume "
        "(3 mm slices) and trabecular bone; above muscle (~50 HU).")
    bone_high_hu: float = Field(
        300.0, description="Hysteresis high threshold, HU: every bone component must hold a voxel above it "
        "(keeps contrast-filled vessels and noise out).")
    metal_clip_hu: float = Field(
        1500.0, description="HU values above this (metal implants, their streaks) are clipped to it before "
        "averaging and smoothing, so an implant counts as dense bone and no more.")
    metal_hu: float = Field(
        2000.0, description="Voxels above this HU are metal (implants); their streak artefacts are thinned "
        "near them, see streak_opening_mm.")
    metal_margin_mm: float = Field(
        40.0, ge=0, description="Distance from metal within which bone candidates are opened to drop streaks, mm.")
    streak_opening_mm: float = Field(
        3.0, ge=0, description="Radius of the opening applied to bone candidates near metal, mm (streaks are "
        "thin bright lines; 0 disables).")
    body_hu: float = Field(
        -400.0, description="Body outline threshold, HU (the body is the largest component above it; bone "
        "outside it, e.g. the table, is ignored).")
    work_spacing_mm: float = Field(
        1.5, gt=0, description="Target voxel size of the working grid, mm: finer images are block-averaged "
        "by an integer factor per axis (0.7 mm -> 1.4 mm); coarser ones are used as they are.")
    closing_mm: float = Field(
        4.5, ge=0, description="Radius of the closing applied to all bone, mm: bridges cortical gaps up to "
        "about twice this before hole filling.")
    lesion_closing_mm: float = Field(
        8.0, ge=0, description="Radius of the closing applied to each femur alone after it is separated, mm: "
        "bridges cortical breaks made by lytic lesions (up to ~2x this wide) so they are filled in.")
    smoothing_mm: float = Field(
        1.0, ge=0, description="Gaussian sigma of the intensity relief used by the watershed, mm.")
    seed_slab_mm: float = Field(
        9.0, gt=0, description="Height of the most inferior bone slab searched for femur cross-sections, mm.")
    top_slab_mm: float = Field(
        9.0, gt=0, description="Height of the top slab of the field of view whose bone marks the pelvis/spine, mm.")
    use_top_markers: bool = Field(
        True, description="Mark bone in the top slab of the field of view as not-femur (pelvis, spine). A "
        "femoral head cut by the top of the field of view is taken back by the head fit; set False if the "
        "head cannot be fitted there (no acetabulum in view).")
    midline_mm: float = Field(
        30.0, ge=0, description="Bone within this distance of the body midline is marked not-femur (sacrum, "
        "spine, pubic symphysis); used only when the field of view spans both hips.")
    bilateral_min_width_mm: float = Field(
        240.0, gt=0, description="A body at least this wide (world x) is taken as showing both hips, so the "
        "midline and the left/right sides are read from it.")
    max_seed_gap_mm: float = Field(
        20.0, ge=0, description="The lowest bone (the femur shafts) must lie within this distance of the lower "
        "edge of the field of view, mm: a proximal-femur CT ends across the shaft(s).")
    min_femur_area_mm2: float = Field(
        150.0, gt=0, description="Smallest mean cross-section of a femur in the inferior slab, mm^2.")
    min_lateral_offset_mm: float = Field(
        40.0, ge=0, description="A femur's cross-section centre lies at least this far from the midline, mm.")
    surface_hu: float = Field(
        200.0, description="On images finer than the working grid, the bone surface is redrawn at full "
        "resolution from the voxels above this HU (within one working voxel of the working-grid surface).")
    fill_2d: bool = Field(True, description="Also fill holes slice by slice in the axial planes.")
    max_hole_area_mm2: float = Field(
        4000.0, gt=0, description="Largest hole filled in an axial plane, mm^2: femoral head and marrow "
        "sections are far smaller (a 50 mm head: ~2000 mm^2); the pelvic cavity inside a closed pelvic ring "
        "is larger and stays open.")
    head_radius_mm: tuple[float, float] = Field(
        (17.0, 30.0), description="Range of femoral head radii searched when the head must be split from the "
        "acetabulum (adult heads: ~20-28 mm), mm.")
    min_seam_contrast_hu: float = Field(
        5.0, ge=0, description="Least mean contrast of the joint seam (darker than the bone on both sides) for a "
        "fitted head sphere to be used, HU; below it the split is left to the intensity watershed alone.")
    # Femur-presence check (step 4 of the module docstring). The limits were set from the femurs of the
    # real 3 mm CT (TotalSegmentator example: right femur 103 cm3, 54 mm tall, largest section 2880 mm2,
    # 121 mm from the midline, median 150 HU, 99th percentile 638 HU), the phantoms (tiny/small/default
    # presets: 173-249 cm3, 96-192 mm, sections >= 2580 mm2, medians 326-456 HU, 99th percentiles >=
    # 1356 HU), the synthetic hips of the tests (68-79 cm3, 100 mm, sections >= 1320 mm2, 110 mm from
    # the midline) and the arm bones of a thorax CT that the search took for femurs (17 and 23 cm3,
    # sections 485 and 751 mm2, 207 and 213 mm from the midline, medians 773 and 536 HU).
    check_femur: bool = Field(
        True, description="Check that each femur found is a plausible proximal femur (the femur_min_* and "
        "femur_max_* limits, measured on its mask on the image's grid): a candidate outside one is dropped, "
        "and an InputError names the image when none is left; a femur outside a femur_warn_* limit is kept "
        "with a logged warning. False: every candidate is returned unchecked.")
    femur_min_volume_cm3: float = Field(
        30.0, ge=0, description="Smallest volume of a femur, cm3: a femoral head alone (radius >= 17 mm) is "
        "over 20 cm3; femurs measured: >= 68 cm3 (103 cm3 for a real femur cut 54 mm below its head top).")
    femur_min_section_mm2: float = Field(
        900.0, ge=0, description="Smallest largest axial cross-section of a femur, mm2: the equator of the "
        "smallest femoral head (radius 17 mm, ~900 mm2); head, neck and trochanters are wider. Femurs "
        "measured: >= 1320 mm2; arm bones and femoral shafts alone (no proximal femur in view): ~450-810 mm2.")
    femur_min_height_mm: float = Field(
        20.0, ge=0, description="Least head-foot extent of a femur, mm: thinner slabs of bone cannot be "
        "told from other bone nor used (femurs measured: >= 54 mm).")
    femur_max_offset_mm: float = Field(
        175.0, gt=0, description="Largest distance of a femur's lowest part (its shaft) from the body midline, "
        "mm; checked when both hips are in view (femurs measured: 109-121 mm; an adult's shafts lie within "
        "~150 mm; arms beside the trunk: > 200 mm).")
    femur_min_cortex_hu: float = Field(
        400.0, description="Least 99th percentile of the HU inside a femur: its cortex (over 1000 HU, still "
        "638 HU on 3 mm voxels); fainter 'bone' is not cortical bone, or the image is not in HU.")
    femur_warn_height_mm: float = Field(
        70.0, ge=0, description="A femur less tall than this (mm) is kept with a warning: the scan probably "
        "ends above the lesser trochanter (head top to lesser trochanter: ~70-90 mm in adults), so the "
        "shaft and trochanteric regions are missing.")
    femur_warn_median_hu: float = Field(
        700.0, description="A femur whose median HU is above this is kept with a warning: a femur with its "
        "marrow reads 150-460 HU (measured); denser is a small dense bone, a sclerotic femur, or an image "
        "not in HU (e.g. stored values without the -1024 rescale).")

    @model_validator(mode="after")
    def _ordered(self):
        if not 0 < self.head_radius_mm[0] <= self.head_radius_mm[1]:
            raise ValueError(f"head_radius_mm must be (min, max) with 0 < min <= max, got {self.head_radius_mm}")
        if self.bone_high_hu < self.bone_low_hu:
            raise ValueError(f"bone_high_hu ({self.bone_high_hu}) must be >= bone_low_hu ({self.bone_low_hu})")
        if self.femur_warn_height_mm < self.femur_min_height_mm:
            raise ValueError(f"femur_warn_height_mm ({self.femur_warn_height_mm}) must be >= femur_min_height_mm "
                             f"({self.femur_min_height_mm})")
        return self

    @classmethod
    def preset(cls, name: str) -> "FemurSegConfig":
        """Named presets: ``default``; ``fast`` (2.5 mm working grid, for previews)."""
        return cls.from_dict(look_up_option(name, PRESETS, "femur segmentation preset"), source=f"preset {name}")


PRESETS: dict[str, dict] = {
    "default": {},
    "fast": {"work_spacing_mm": 2.5},
}


# =================================================================== public API
def segment_bone(image: Volume, config: FemurSegConfig | None = None) -> Volume:
    """All bone of a CT in HU, marrow and lesions inside the bone included (uint8 on the image's grid)."""
    config = config or FemurSegConfig()
    work = _WorkGrid.build(image, config)
    bone = _bone_mask(work, config)
    _require_bone(image, bone, config)
    return image.with_array(work.to_native(bone, image, config).astype(np.uint8))


def segment_femur(image: Volume, side: Side | None = None, config: FemurSegConfig | None = None) -> Volume:
    """Mask of the femur(s) of a CT in HU (uint8 on the image's grid), separated from the pelvis.

    ``side``: ``"left"`` / ``"right"`` (the patient's), ``"both"``, or ``None`` (every femur
    found: both if the field of view shows two). Raises :class:`InputError` if no femur is found
    or the asked side is missing.
    """
    if side is not None:
        side = look_up_option(str(side), ["left", "right", "both"], "femur side")
    config = config or FemurSegConfig()
    found = find_femurs(image, config)
    if side in SIDES:
        if side in found.masks:
            wanted = [side]
        elif not found.bilateral and len(found.masks) == 1:
            (only,) = found.masks
            log.warning("%s: the field of view shows one leg; returning its femur (guessed %s side) for "
                        "side=%s", image.name, only, side)
            wanted = [only]
        else:
            why = f"; the {side} candidate was dropped: {found.rejected[side]}" if side in found.rejected else ""
            raise InputError(
                f"{image.name}: no {side} femur found (found: {', '.join(found.masks) or 'none'}{why}); check the "
                "case's side in the manifest, or that the field of view includes that hip")
    else:
        if side == "both" and len(found.masks) < 2:
            raise InputError(
                f"{image.name}: side 'both' asked but only the {', '.join(found.masks)} femur was found; "
                "check that the field of view includes both hips, or give one side")
        wanted = list(found.masks)
    out = np.zeros(image.shape, np.uint8)
    for s in wanted:
        out |= found.masks[s]
    return image.with_array(out)


@dataclass
class FemurSearch:
    """What :func:`find_femurs` found: one mask per side, and how the sides were read."""

    masks: dict[str, np.ndarray] = field(default_factory=dict)  # side -> uint8 array on the image's grid
    bilateral: bool = False  # both hips in view (the midline read from the body)
    midline_x_mm: float | None = None  # world x of the body midline when bilateral
    heads: dict[str, tuple[tuple[float, float, float], float]] = field(default_factory=dict)
    # side -> (centre (z, y, x) in world mm, radius mm) of the fitted femoral head, when one was needed
    candidates: dict[str, "FemurCandidate"] = field(default_factory=dict)  # side -> measurements (kept or not)
    rejected: dict[str, str] = field(default_factory=dict)  # side -> why that candidate is not a femur
    doubts: dict[str, str] = field(default_factory=dict)  # side -> why a kept femur is doubtful


def find_femurs(image: Volume, config: FemurSegConfig | None = None) -> FemurSearch:
    """Every femur in the image, by side (see the module docstring for the method)."""
    config = config or FemurSegConfig()
    work = _WorkGrid.build(image, config)
    bone = _bone_mask(work, config)
    _require_bone(image, bone, config)
    seeds = _find_markers(work, bone, config)
    if not seeds.femurs:
        raise InputError(f"{image.name}: no femur found ({seeds.problem}); {_NO_FEMUR_HINT}")
    result = FemurSearch(bilateral=seeds.bilateral, midline_x_mm=seeds.midline_x)
    for k, side in enumerate(seeds.femurs, start=1):
        head = _add_head_markers(work, bone, seeds.array, k, config, image.name, side, seeds.midline_x)
        if head is not None:
            result.heads[side] = (tuple(float(c) for c in head.centre), head.radius)
    labels = _watershed(work, bone, seeds, config)
    for k, side in enumerate(seeds.femurs, start=1):
        femur = _finish_femur(labels, k, work, config)
        if not femur.any():
            continue
        others = (labels > 0) & (labels != k)
        result.masks[side] = work.to_native(femur, image, config, exclude=others,
                                            closing_mm=config.lesion_closing_mm).astype(np.uint8)
    if config.check_femur:
        _require_femur(image, result, config)
    return result


# =================================================================== is it a femur?
@dataclass
class FemurCandidate:
    """Measurements of a femur found (its mask on the image's grid), for :func:`check_femur`."""

    volume_cm3: float
    height_mm: float  # head-foot (world z) extent
    section_mm2: float  # largest cross-section in an axial plane (perpendicular to the head-foot axis)
    offset_mm: float | None  # distance of its lowest seed_slab_mm (the shaft) from the body midline, when known
    median_hu: float
    cortex_hu: float  # 99th percentile of the HU inside

    def describe(self) -> str:
        parts = [f"{self.volume_cm3:.0f} cm3", f"{self.height_mm:.0f} mm tall",
                 f"largest axial section {self.section_mm2:.0f} mm2"]
        if self.offset_mm is not None:
            parts.append(f"{self.offset_mm:.0f} mm from the midline")
        parts.append(f"median {self.median_hu:.0f} HU, 99th percentile {self.cortex_hu:.0f} HU")
        return ", ".join(parts)


def measure_femur(image: Volume, mask: np.ndarray, config: FemurSegConfig | None = None,
                  midline_x_mm: float | None = None) -> FemurCandidate:
    """Volume, height, largest axial section, distance from the midline (when ``midline_x_mm`` is
    given) and HU of a femur mask on ``image``'s grid."""
    config = config or FemurSegConfig()
    inside = np.asarray(mask) > 0
    if not inside.any():
        raise ValueError("measure_femur: empty mask")
    si_axis = int(np.argmax(np.abs(image.direction[0])))
    spacing = np.asarray(image.spacing)
    idx = np.argwhere(inside)
    world = image.index_to_world(idx)
    z = world[:, 0]
    voxel_height = float(np.abs(image.direction[0]) @ spacing)  # a voxel's extent along world z
    per_slice = np.bincount(idx[:, si_axis])
    lowest = z <= z.min() + config.seed_slab_mm
    hu = image.array[inside].astype(np.float32)
    median, cortex = np.percentile(hu, [50, 99])
    return FemurCandidate(
        volume_cm3=float(idx.shape[0] * image.voxel_volume_mm3 / 1000.0),
        height_mm=float(np.ptp(z)) + voxel_height,
        section_mm2=float(per_slice.max() * np.prod(np.delete(spacing, si_axis))),
        offset_mm=None if midline_x_mm is None else float(abs(world[lowest, 2].mean() - midline_x_mm)),
        median_hu=float(median),
        cortex_hu=float(cortex),
    )


def check_femur(candidate: FemurCandidate, config: FemurSegConfig | None = None) -> tuple[list[str], list[str]]:
    """The limits of ``config`` that ``candidate`` fails: (hard, certainly not a proximal femur;
    doubtful, kept with a warning)."""
    config = config or FemurSegConfig()
    c = candidate
    hard = []
    if c.volume_cm3 < config.femur_min_volume_cm3:
        hard.append(f"volume < {config.femur_min_volume_cm3:g} cm3")
    if c.section_mm2 < config.femur_min_section_mm2:
        hard.append(f"largest axial section < {config.femur_min_section_mm2:g} mm2, a femoral head's")
    if c.height_mm < config.femur_min_height_mm:
        hard.append(f"height < {config.femur_min_height_mm:g} mm")
    if c.offset_mm is not None and c.offset_mm > config.femur_max_offset_mm:
        hard.append(f"> {config.femur_max_offset_mm:g} mm from the midline (an arm?)")
    if c.cortex_hu < config.femur_min_cortex_hu:
        hard.append(f"99th percentile < {config.femur_min_cortex_hu:g} HU, no cortical bone (is the image in HU?)")
    doubtful = []
    if c.height_mm < config.femur_warn_height_mm:
        doubtful.append(f"height < {config.femur_warn_height_mm:g} mm: the scan may end above the lesser trochanter")
    if c.median_hu > config.femur_warn_median_hu:
        doubtful.append(f"median > {config.femur_warn_median_hu:g} HU: denser than a femur with its marrow (a "
                        "smaller bone, or an image not in HU?)")
    return hard, doubtful


def _require_femur(image: Volume, result: FemurSearch, config: FemurSegConfig) -> None:
    """Like :func:`_require_bone`, one level up: measure and check every femur of ``result`` (in
    place), drop those that are not proximal femurs, warn about doubtful ones; raise when none is left."""
    for side, mask in list(result.masks.items()):
        candidate = measure_femur(image, mask, config, result.midline_x_mm if result.bilateral else None)
        result.candidates[side] = candidate
        hard, doubtful = check_femur(candidate, config)
        if hard:
            result.rejected[side] = f"{candidate.describe()}: {'; '.join(hard)}"
            del result.masks[side]
            result.heads.pop(side, None)
        elif doubtful:
            result.doubts[side] = f"{candidate.describe()}: {'; '.join(doubtful)}"
    if not result.masks and result.rejected:
        what = "; ".join(f"the {side} candidate ({why})" for side, why in result.rejected.items())
        raise InputError(f"{image.name}: no femur found (the bone taken for one is not a proximal femur): {what}; "
                         f"{_NO_FEMUR_HINT}")
    for side, why in result.rejected.items():
        log.warning("%s: the %s candidate is not a proximal femur and is ignored (%s)", image.name, side, why)
    for side, why in result.doubts.items():
        log.warning("%s: doubtful %s femur (%s); check its mask", image.name, side, why)


# =================================================================== working grid
@dataclass
class _WorkGrid:
    hu: np.ndarray  # float32 HU on the working grid (clipped)
    metal: np.ndarray  # bool: working voxels holding metal (any native voxel above metal_hu)
    vol: Volume  # geometry of the working grid (array = hu)
    factors: tuple[int, int, int]
    si_axis: int  # array axis closest to world z (head-foot)
    open_bone: np.ndarray | None = None  # bone mask before the closing (set by _bone_mask)

    @classmethod
    def build(cls, image: Volume, config: FemurSegConfig) -> "_WorkGrid":
        if not (np.issubdtype(image.array.dtype, np.number) and image.array.dtype != bool):
            raise InputError(f"{image.name}: expected a CT in HU (numbers), got dtype {image.array.dtype}")
        check_finite(image, "CT")
        raw = image.array
        hu = np.clip(raw.astype(np.float32), -1024.0, config.metal_clip_hu)
        metal = raw > config.metal_hu
        spacing = np.asarray(image.spacing)
        factors = tuple(int(max(1, round(config.work_spacing_mm / s))) for s in spacing)
        factors = tuple(min(f, n) for f, n in zip(factors, image.shape))
        if any(f > 1 for f in factors):
            hu = _block_mean(hu, factors)
            metal = _block_mean(metal.astype(np.float32), factors) > 0
        offset = (np.asarray(factors) - 1) / 2.0  # centre of block 0, in fine voxels
        origin = image.index_to_world(offset)
        vol = Volume(hu, tuple(spacing * factors), tuple(origin), image.direction.copy(), image.path)
        si_axis = int(np.argmax(np.abs(image.direction[0])))
        return cls(hu, metal, vol, factors, si_axis)

    def filler(self, config: FemurSegConfig) -> "_Filler":
        in_plane = [s for i, s in enumerate(self.vol.spacing) if i != self.si_axis]
        max_px = int(config.max_hole_area_mm2 / (in_plane[0] * in_plane[1]))
        return _Filler(self.si_axis, config.fill_2d, max_px)

    def world_coordinate(self, component: int) -> np.ndarray:
        """World coordinate (0: z, 1: y, 2: x; mm) of every voxel, as a broadcastable sum."""
        vol = self.vol
        out = np.float32(vol.origin[component])
        for axis in range(3):
            step = vol.spacing[axis] * vol.direction[component, axis]
            shape = [1, 1, 1]
            shape[axis] = vol.shape[axis]
            out = out + (np.arange(vol.shape[axis], dtype=np.float32) * np.float32(step)).reshape(shape)
        return np.broadcast_to(out, vol.shape)

    def to_native(self, mask: np.ndarray, image: Volume, config: FemurSegConfig,
                  exclude: np.ndarray | None = None, closing_mm: float = 0.0) -> np.ndarray:
        """A working-grid mask on the image's grid. The working mask says where the structure is;
        within one working voxel of its surface, the surface is redrawn from the full-resolution
        voxels above ``surface_hu`` (never where ``exclude`` dominates), then closed with filling
        by ``closing_mm`` (bridging cortical breaks) and hole-filled."""
        if all(f == 1 for f in self.factors):
            return mask.astype(bool)
        out = np.zeros(image.shape, bool)
        if not mask.any():
            return out
        f = np.asarray(self.factors)
        idx = np.argwhere(mask)
        lo_c = np.maximum(idx.min(0) - 2, 0)
        hi_c = np.minimum(idx.max(0) + 3, mask.shape)
        lo, hi = lo_c * f, np.minimum(hi_c * f, image.shape)
        box_c = tuple(slice(a, b) for a, b in zip(lo_c, hi_c))
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        cube = np.ones((3, 3, 3), bool)

        def up(coarse: np.ndarray) -> np.ndarray:
            return _upsample_linear(coarse, self.factors, hi - lo)

        def up_nearest(coarse: np.ndarray) -> np.ndarray:
            index = np.ix_(*(np.arange(n) // k for n, k in zip(hi - lo, self.factors)))
            return coarse[index]

        sub = mask[box_c]
        core = up_nearest(ndi.binary_erosion(sub, cube))  # surely inside: marrow, lesions
        region = up_nearest(ndi.binary_dilation(sub, cube))  # where the surface may lie
        if exclude is not None:
            region &= ~(up(exclude[box_c]) > up(sub))
        fine = (image.array[box] > config.surface_hu) & region | core
        spacing = image.spacing
        in_plane = [s for i, s in enumerate(spacing) if i != self.si_axis]
        fill = _Filler(self.si_axis, config.fill_2d, int(config.max_hole_area_mm2 / np.prod(in_plane)))
        fine = (_close(fine, closing_mm, spacing, fill=fill) if closing_mm > 0 else fill(fine)) & region | core
        out[box] = _largest_component(fine) if exclude is not None else fine
        return out


def _block_mean(a: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    pads = [(0, (-n) % f) for n, f in zip(a.shape, factors)]
    if any(p[1] for p in pads):
        a = np.pad(a, pads, mode="edge")
    shape = []
    for n, f in zip(a.shape, factors):
        shape += [n // f, f]
    return a.reshape(shape).mean(axis=(1, 3, 5), dtype=np.float32)


def _upsample_linear(coarse: np.ndarray, factors, shape) -> np.ndarray:
    """Linear interpolation of a block-averaged array back onto its fine voxels (block ``i``
    covers fine voxels ``i * f .. i * f + f - 1``), cropped to ``shape``."""
    fine = ndi.zoom(coarse.astype(np.float32), factors, order=1, grid_mode=True, mode="nearest")
    return fine[tuple(slice(0, n) for n in shape)]


# =================================================================== morphology (sizes in mm)
def _dilate(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def _erode(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    if radius_mm <= 0:
        return mask.copy()
    return ndi.distance_transform_edt(mask, sampling=spacing) > radius_mm


def _close(mask: np.ndarray, radius_mm: float, spacing, fill: "_Filler | None" = None) -> np.ndarray:
    """Closing with a ball of ``radius_mm`` (exact, by distance transforms); the volume edge does
    not erode (padded). With ``fill``, holes are filled between the dilation and the erosion, so
    a cortical break narrower than ~2 radii seals the whole cavity behind it."""
    if radius_mm <= 0 or not mask.any():
        return fill(mask) if fill is not None else mask.copy()
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing]
    padded = np.pad(mask, [(p, p) for p in pad])
    dilated = _dilate(padded, radius_mm, spacing)
    if fill is not None:
        dilated = fill(dilated)
    closed = _erode(dilated, radius_mm, spacing)
    return closed[tuple(slice(p, p + n) for p, n in zip(pad, mask.shape))] | mask


@dataclass
class _Filler:
    """Hole filling in 3D and, optionally, in each plane perpendicular to ``axis`` (axial planes);
    2D holes larger than ``max_area_px`` voxels (e.g. the pelvic cavity inside a closed pelvic
    ring) are left open."""

    axis: int
    fill_2d: bool
    max_area_px: int

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        filled = _fill_holes(mask)
        if self.fill_2d:
            filled = _fill_holes(_fill_holes_2d(filled, self.axis, self.max_area_px))
        return filled


def _fill_holes(mask: np.ndarray, max_size: int | None = None) -> np.ndarray:
    """Fill the background components that do not touch the array's edge (any dimension), up to
    ``max_size`` voxels each; labelling is much faster than scipy's iterative hole filling."""
    if mask.all() or not mask.any():
        return mask.copy()
    background, n = ndi.label(~mask)
    if n <= 1:
        return mask.copy()
    edge = np.zeros(n + 1, bool)
    for axis in range(mask.ndim):
        for end in (0, -1):
            edge[np.unique(np.take(background, end, axis=axis))] = True
    hole = ~edge
    hole[0] = False
    if max_size is not None:
        hole &= np.bincount(background.ravel(), minlength=n + 1) <= max_size
    return mask | hole[background]


def _fill_holes_2d(mask: np.ndarray, axis: int, max_area_px: int | None = None) -> np.ndarray:
    out = np.moveaxis(mask.copy(), axis, 0)
    for i in range(out.shape[0]):
        if out[i].any():
            out[i] = _fill_holes(out[i], max_area_px)
    return np.moveaxis(out, 0, axis)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


# =================================================================== bone
def _bone_mask(work: _WorkGrid, config: FemurSegConfig) -> np.ndarray:
    hu, spacing = work.hu, work.vol.spacing
    body = _largest_component(hu > config.body_hu)
    body = _fill_holes_2d(body, work.si_axis)  # lungs and bowel gas are inside the body
    candidate = (hu > config.bone_low_hu) & body
    candidate = _drop_streaks(candidate, work, config)
    labels, n = ndi.label(candidate)
    if n == 0:
        return candidate
    strong = np.zeros(n + 1, bool)
    strong[np.unique(labels[(hu > config.bone_high_hu) & candidate])] = True
    strong[0] = False
    bone = strong[labels]
    fill = work.filler(config)
    work.open_bone = fill(bone)  # before the closing: the hip joint space is still open where visible
    return fill(_close(bone, config.closing_mm, spacing))


def _drop_streaks(candidate: np.ndarray, work: _WorkGrid, config: FemurSegConfig) -> np.ndarray:
    """Open the bone candidates near metal: streak artefacts are thin, bone around an implant is not."""
    if config.streak_opening_mm <= 0:
        return candidate
    metal = work.metal
    if not metal.any():
        return candidate
    spacing = np.asarray(work.vol.spacing)
    reach = np.ceil((config.metal_margin_mm + 2 * config.streak_opening_mm) / spacing).astype(int) + 1
    idx = np.argwhere(metal)
    lo, hi = np.maximum(idx.min(0) - reach, 0), np.minimum(idx.max(0) + reach + 1, metal.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    near = _dilate(metal[box], config.metal_margin_mm, spacing)
    sub = candidate[box]
    opened = _dilate(_erode(sub, config.streak_opening_mm, spacing), config.streak_opening_mm, spacing)
    out = candidate.copy()
    out[box] = np.where(near, opened | metal[box], sub)
    return out


_NO_FEMUR_HINT = ("check that the image is in HU and that the field of view covers the proximal femur (from the hip "
                  "joint to below the lesser trochanter, its lower edge cutting the femur shaft(s)), or give the femur "
                  "mask in the manifest (femur_mask)")


def _require_bone(image: Volume, bone: np.ndarray, config: FemurSegConfig) -> None:
    if not bone.any():
        hi = float(np.max(image.array)) if image.array.size else float("nan")
        raise InputError(
            f"{image.name}: no bone found (no voxel above {config.bone_high_hu:g} HU inside the body; the "
            f"image's maximum is {hi:g}); check that the image is in Hounsfield units (not standardized "
            "or rescaled) and that the field of view includes the femur")


# =================================================================== markers
@dataclass
class _Markers:
    femurs: list[str]  # side of femur marker k (label k + 1 in ``array``)
    array: np.ndarray  # int32: 1..n femur markers, n + 1 other bone, 0 unknown
    bilateral: bool
    midline_x: float | None
    problem: str = ""  # why no femur marker was found


def _find_markers(work: _WorkGrid, bone: np.ndarray, config: FemurSegConfig) -> _Markers:
    spacing = work.vol.spacing
    voxel_mm3 = float(np.prod(spacing))
    wz = work.world_coordinate(0)
    wx = work.world_coordinate(2)

    # Ignore specks when finding the lowest bone.
    labels, n = ndi.label(bone)
    sizes = np.bincount(labels.ravel())
    min_voxels = max(1, int(config.min_femur_area_mm2 * config.seed_slab_mm / voxel_mm3 / 4))
    keep = sizes >= min_voxels
    keep[0] = False
    solid = keep[labels]
    empty = np.zeros(bone.shape, np.int32)
    if not solid.any():
        return _Markers([], empty, False, None, "no bone piece large enough to be a femur")
    z_low = float(wz[solid].min())
    gap = z_low - float(wz.min())
    if gap > config.max_seed_gap_mm:
        return _Markers([], empty, False, None,
                        f"the lowest bone is {gap:.0f} mm above the lower edge of the field of view, where the "
                        "femur shaft(s) should be cut")
    slab = solid & (wz <= z_low + config.seed_slab_mm)
    slice_mm = spacing[work.si_axis]
    slab_height = min(config.seed_slab_mm, float(wz[solid].max() - z_low)) + slice_mm

    # Body width tells whether both hips (and the midline) are in view.
    body = _largest_component(work.hu > config.body_hu)
    body_x = wx[body]
    lr_axis = int(np.argmax(np.abs(work.vol.direction[2])))
    width = float(body_x.max() - body_x.min()) + spacing[lr_axis] if body_x.size else 0.0
    bilateral = width >= config.bilateral_min_width_mm
    midline = float(body_x.mean()) if bilateral else 0.0

    slab_labels, n_slab = ndi.label(slab)
    index = np.arange(1, n_slab + 1)
    counts = ndi.sum_labels(np.ones_like(slab_labels), slab_labels, index) if n_slab else np.array([])
    cx = ndi.mean(wx, slab_labels, index) if n_slab else np.array([])
    area = np.asarray(counts) * voxel_mm3 / slab_height
    candidates = [i for i in range(n_slab) if area[i] >= config.min_femur_area_mm2]

    chosen: dict[str, int] = {}
    if bilateral:
        for side, sign in (("left", 1.0), ("right", -1.0)):
            lateral = [(sign * (cx[i] - midline), i) for i in candidates
                       if sign * (cx[i] - midline) >= config.min_lateral_offset_mm]
            if lateral:
                chosen[side] = max(lateral)[1]
    elif candidates:
        best = max(candidates, key=lambda i: area[i])
        chosen["left" if cx[best] > midline else "right"] = best
    log.debug("femur markers: bilateral=%s midline=%.1f chosen=%s", bilateral, midline, chosen)
    problem = "" if chosen else (
        f"no bone cross-section of at least {config.min_femur_area_mm2:g} mm^2 in the lowest "
        f"{config.seed_slab_mm:g} mm of bone" + (f", {config.min_lateral_offset_mm:g} mm or more lateral to the "
                                               "midline" if bilateral else ""))

    markers = np.zeros(bone.shape, np.int32)
    other = len(chosen) + 1
    markers[slab & (slab_labels > 0)] = other
    if bilateral and config.midline_mm > 0:
        markers[bone & (np.abs(wx - midline) < config.midline_mm)] = other
    if config.use_top_markers:
        markers[_top_markers(work, bone, wz, z_low, config)] = other
    sides = []
    for k, (side, i) in enumerate(sorted(chosen.items()), start=1):
        markers[slab_labels == i + 1] = k
        sides.append(side)
    return _Markers(sides, markers, bilateral, midline if bilateral else None, problem)


def _top_markers(work: _WorkGrid, bone: np.ndarray, wz: np.ndarray, z_low: float,
                 config: FemurSegConfig) -> np.ndarray:
    """Bone in the top ``top_slab_mm`` of the field of view (well above the femur seeds), except
    pieces shaped like the dome of a femoral head (seen from above: a round patch no wider than a
    head): a head cut by the top of the field of view with no pelvis around it must stay femur,
    while an ilium, an acetabular roof around the head, or a spine is wider or elongated."""
    top = bone & (wz >= float(wz.max()) - config.top_slab_mm) & (wz > z_low + 2 * config.seed_slab_mm)
    labels, n = ndi.label(top)
    if n == 0:
        return top
    wy, wx = work.world_coordinate(1), work.world_coordinate(2)
    in_plane = [s for i, s in enumerate(work.vol.spacing) if i != work.si_axis]
    keep = np.zeros(n + 1, bool)
    for i, piece in enumerate(ndi.find_objects(labels), start=1):
        inside = labels[piece] == i
        y, x = wy[piece][inside], wx[piece][inside]
        width = max(float(np.ptp(p)) for p in (x, y, (x + y) / np.sqrt(2), (x - y) / np.sqrt(2)))
        area = float(inside.any(axis=work.si_axis).sum()) * in_plane[0] * in_plane[1]  # seen from above
        round_patch = area >= 0.6 * np.pi * (width / 2) ** 2
        keep[i] = not (width <= 2 * config.head_radius_mm[1] and round_patch)
    return keep[labels]


# =================================================================== femoral head
@dataclass
class _Head:
    centre: np.ndarray  # world (z, y, x), mm
    radius: float  # mm
    contrast: float  # mean seam contrast, HU


def _fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * i / n)
    azimuth = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(polar), np.sin(polar) * np.sin(azimuth), np.sin(polar) * np.cos(azimuth)], 1)


_DIRECTIONS = _fibonacci_sphere(160)


def _add_head_markers(work: _WorkGrid, bone: np.ndarray, markers: np.ndarray, k: int,
                      config: FemurSegConfig, name: str, side: str, midline: float | None) -> "_Head | None":
    """If femur ``k`` touches other markers through the bone mask, fit its head sphere and mark the
    ball as femur and the acetabular shell around it as other bone (in place)."""
    other = markers.max()
    seed = markers == k
    labels, _ = ndi.label(bone)
    ids = np.unique(labels[seed])
    component = np.isin(labels, ids[ids > 0])
    if not (component & (markers > 0) & (markers != k)).any():
        return None  # nothing to split from
    head = _fit_head(work, component, seed, config, midline)
    if head is None:
        log.warning("%s: %s femoral head not found as a sphere; the hip joint is split by intensity only",
                    name, side)
        return None
    log.debug("%s: %s femoral head centre %s mm, radius %.1f mm, seam contrast %.0f HU", name, side,
              np.round(head.centre, 1), head.radius, head.contrast)
    vol = work.vol
    idx = np.argwhere(component)
    rel = vol.index_to_world(idx) - head.centre
    r = np.linalg.norm(rel, axis=1)
    half = 0.5 * max(vol.spacing)
    neck = vol.index_to_world(np.argwhere(seed).mean(0)) - head.centre
    neck /= np.linalg.norm(neck)
    away = rel @ neck < 0.3 * r  # more than ~73 degrees from the shaft's direction: not the neck
    ball = r <= head.radius - half  # femur
    shell = (r >= head.radius + half) & (r <= head.radius + half + 10.0) & away  # acetabulum
    free = markers[tuple(idx.T)]
    keep_ball = ball & ((free == 0) | (free == other))
    keep_shell = shell & (free != k) & (free == 0)
    markers[tuple(idx[keep_ball].T)] = k
    markers[tuple(idx[keep_shell].T)] = other
    return head


def _fit_head(work: _WorkGrid, component: np.ndarray, seed: np.ndarray, config: FemurSegConfig,
              midline: float | None) -> _Head | None:
    """The femoral head as the sphere whose surface is the darkest seam between bright bone inside
    (the head) and outside (the acetabulum), searched around the deepest points of the femur's bone."""
    vol = work.vol
    spacing = np.asarray(vol.spacing)
    r_lo, r_hi = config.head_radius_mm
    seed_centre = vol.index_to_world(np.argwhere(seed).mean(0))
    seed_top = float(vol.index_to_world(np.argwhere(seed))[:, 0].max())
    image = ndi.gaussian_filter(work.hu, 1.0 / spacing)
    # Candidate centres, each list best first: the peaks of a Hough vote for sphere centres (edges
    # voting along their gradient, towards the brighter side, at every head radius), and deep points
    # (local maxima of the distance to the bone's surface) of the bone before the closing (where a
    # visible joint space keeps the head a ball of its own) and after it. Only points above the
    # seed, within reach of it horizontally (the head sits ~40-70 mm medial to the shaft) and on its
    # side of the midline when that is known; taken in turn from each list, one per 15 mm.
    idx = np.argwhere(component)
    lo = np.maximum(idx.min(0) - 1, 0)
    hi = np.minimum(idx.max(0) + 2, component.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    size = tuple(np.maximum(3, np.round(10.0 / spacing).astype(int) | 1))

    def plausible(score: np.ndarray, floor: float) -> np.ndarray:
        peaks = np.argwhere((score == ndi.maximum_filter(score, size=size)) & (score > floor) & component[box])
        world = vol.index_to_world(peaks + lo) if peaks.size else np.zeros((0, 3))
        near = (world[:, 0] > seed_top) & (np.linalg.norm(world[:, 1:] - seed_centre[1:], axis=1) <= 100.0)
        if midline is not None:
            near &= np.sign(world[:, 2] - midline) == np.sign(seed_centre[2] - midline)
        return world[near][np.argsort(-score[tuple(peaks[near].T)])]

    ranked = [plausible(_hough_spheres(image[box], component[box], spacing, config), 0.0)]
    for mask in (work.open_bone[box] & component[box] if work.open_bone is not None else None, component[box]):
        if mask is not None:
            ranked.append(plausible(ndi.distance_transform_edt(mask, sampling=spacing), 0.5 * r_lo))
    starts: list[np.ndarray] = []
    for group in itertools.zip_longest(*ranked):
        for point in group:
            if point is not None and all(np.linalg.norm(point - c) > 15.0 for c in starts):
                starts.append(point)
    starts = starts[:_MAX_HEAD_CANDIDATES]
    if not starts:
        return None
    # Around each start: a coarse then a fine grid search of the sphere whose surface is the most
    # distinct dark seam (see _search_sphere).
    d = max(2.5, float(spacing.max()))
    coarse = [_climb_sphere(image, vol, c0, seed_centre, config, d) for c0 in starts]
    coarse = sorted((h for h in coarse if h is not None), key=lambda h: -h.contrast)[:2]
    best: _Head | None = None
    for head in coarse:
        head = _search_sphere(image, vol, head.centre, seed_centre, config, reach=1.0, step=0.5, d=d,
                              radius=head.radius) or head
        if best is None or head.contrast > best.contrast:
            best = head
    if best is None or best.contrast < config.min_seam_contrast_hu:
        return None
    return best


_MAX_HEAD_CANDIDATES = 6


def _hough_spheres(image: np.ndarray, bone: np.ndarray, spacing, config: FemurSegConfig) -> np.ndarray:
    """Votes for sphere centres: every strong edge near the bone votes, weighted by its gradient,
    at each head radius along its gradient (towards the brighter side: a head's surface, seen from
    the dark joint space or soft tissue, votes for the head's centre). Smoothed; same grid."""
    spacing = np.asarray(spacing, float)
    grad = np.stack(np.gradient(image, *spacing))  # HU/mm along each array axis
    magnitude = np.sqrt((grad ** 2).sum(0))
    near = ndi.binary_dilation(bone, iterations=2)
    if not near.any():
        return np.zeros(image.shape, np.float32)
    strong = near & (magnitude > np.percentile(magnitude[near], 85))
    points = np.argwhere(strong).astype(np.float32)
    weight = magnitude[strong]
    unit = (grad[:, strong] / weight).T / spacing  # index steps per mm of travel along the gradient
    votes = np.zeros(image.size, np.float32)
    shape = np.asarray(image.shape)
    r_lo, r_hi = config.head_radius_mm
    for r in np.arange(r_lo, r_hi + 1e-6, 1.0):
        target = np.round(points + r * unit).astype(np.int64)
        ok = np.all((target >= 0) & (target < shape), axis=1)
        np.add.at(votes, np.ravel_multi_index(target[ok].T, image.shape), weight[ok])
    return ndi.gaussian_filter(votes.reshape(image.shape), 2.0 / spacing)


def _climb_sphere(image: np.ndarray, vol: Volume, c0: np.ndarray, seed_centre: np.ndarray,
                  config: FemurSegConfig, d: float) -> _Head | None:
    """Coarse search: best sphere on a 2 mm grid of centres within 4 mm, re-centred on it until it
    stays put (at most four moves)."""
    head = None
    centre = np.asarray(c0, float)
    for _ in range(4):
        head = _search_sphere(image, vol, centre, seed_centre, config, reach=4.0, step=2.0, d=d)
        if head is None or np.allclose(head.centre, centre):
            break
        centre = head.centre
    return head


def _search_sphere(image: np.ndarray, vol: Volume, c0: np.ndarray, seed_centre: np.ndarray,
                   config: FemurSegConfig, reach: float, step: float, d: float,
                   radius: float | None = None) -> _Head | None:
    """Best sphere with its centre on a grid within ``reach`` mm of ``c0`` and a radius in
    ``head_radius_mm``: the one whose surface is darkest against the bone ``d`` mm inside and
    outside it, averaged over the acetabulum's side of the head (away from the neck) within the
    field of view; directions without bone on both sides count as no contrast. ``image`` is on
    ``vol``'s grid. With ``radius``, only radii within 2 mm of it are tried."""
    r_lo, r_hi = config.head_radius_mm
    if radius is not None:
        r_lo, r_hi = max(r_lo, radius - 2.0), min(r_hi, radius + 2.0)
    r_step = 0.5
    k = max(1, int(round(d / r_step)))
    radii = np.arange(r_lo - k * r_step, r_hi + k * r_step + 1e-6, r_step)
    offsets = np.arange(-reach, reach + 1e-6, step)
    centres = c0 + np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), -1).reshape(-1, 3)
    dirs = _acetabular_directions(c0, seed_centre)
    to_index = np.linalg.inv(vol.direction) / np.asarray(vol.spacing)[:, None]  # world -> index, linear part
    index = (vol.world_to_index(centres)[:, None, None, :]
             + radii[None, :, None, None] * (dirs @ to_index.T)[None, None, :, :])
    values = ndi.map_coordinates(image, index.reshape(-1, 3).T, order=1, mode="nearest")
    values = values.reshape(index.shape[:-1])  # (centres, radii, dirs)
    inside = np.all((index >= -0.5) & (index <= np.asarray(image.shape) - 0.5), axis=-1)
    inner, seam, outer = values[:, :-2 * k], values[:, k:-k], values[:, 2 * k:]
    in_view = inside[:, 2 * k:] & inside[:, :-2 * k]
    covered = (inner > config.bone_low_hu) & (outer > config.bone_low_hu) & in_view
    total = np.where(covered, np.minimum(inner, outer) - seam, 0.0).sum(-1)  # (centres, radii)
    contrast = total / np.maximum(in_view.sum(-1), 0.5 * len(dirs))
    i, j = np.unravel_index(int(np.argmax(contrast)), contrast.shape)
    if not np.isfinite(contrast[i, j]) or contrast[i, j] <= 0:
        return None
    return _Head(centres[i], float(radii[k + j]), float(contrast[i, j]))


def _acetabular_directions(centre: np.ndarray, seed_centre: np.ndarray) -> np.ndarray:
    """Unit directions from the head centre away from the femur's shaft (the acetabulum's side)."""
    neck = seed_centre - centre
    neck = neck / (np.linalg.norm(neck) + 1e-9)
    return _DIRECTIONS[_DIRECTIONS @ neck < 0]


# =================================================================== separation
def _watershed(work: _WorkGrid, bone: np.ndarray, markers: _Markers, config: FemurSegConfig) -> np.ndarray:
    from skimage.segmentation import watershed

    sigma = [config.smoothing_mm / s for s in work.vol.spacing]
    relief = -ndi.gaussian_filter(work.hu, sigma) if config.smoothing_mm > 0 else -work.hu
    # Metal is flooded last: a prosthetic head in a metal cup would otherwise be a bright bridge
    # from the femur into the pelvis; its voxels go to whichever bone surrounds them.
    relief[work.metal] = -config.bone_low_hu
    return watershed(relief, markers.array, mask=bone)


def _finish_femur(labels: np.ndarray, k: int, work: _WorkGrid, config: FemurSegConfig) -> np.ndarray:
    femur = labels == k
    if not femur.any():
        return femur
    others = (labels > 0) & (labels != k)
    # Work in the femur's bounding box plus the closing radius.
    spacing = work.vol.spacing
    idx = np.argwhere(femur)
    pad = np.ceil(config.lesion_closing_mm / np.asarray(spacing)).astype(int) + 2
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, femur.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub = femur[box]
    sub = _close(sub, config.lesion_closing_mm, spacing, fill=work.filler(config)) & ~others[box]
    sub = _largest_component(sub | femur[box])
    out = np.zeros_like(femur)
    out[box] = sub
    return out
