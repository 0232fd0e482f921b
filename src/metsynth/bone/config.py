"""Settings of the bone / femur segmentation: :class:`FemurSegConfig` (HU thresholds, sizes in mm),
its named presets, and the side names."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..config import Settings, look_up_option

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
    # Femur-presence check (step 4 of the method, metsynth.bone.presence). The limits were set from the femurs of the
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
