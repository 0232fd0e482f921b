"""Settings of the procedural phantom: field of view, scanner "centres", lesions, annotators."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..config import Settings, look_up_option


class CentreProfile(Settings):
    """One acquisition site: voxel size, noise, blur and HU calibration of its scanner."""

    spacing: tuple[float, float, float] = Field(
        (0.8, 0.8, 0.8), description="Voxel size in mm, (z, y, x) order (z = slice spacing).")
    noise_hu: float = Field(18.0, ge=0, description="Standard deviation of the image noise in HU "
                            "(in water-like tissue near the body surface; deeper tissue gets up to 30% more).")
    psf_fwhm_mm: tuple[float, float, float] = Field(
        (1.2, 0.9, 0.9), description="Full width at half maximum of the scanner's point-spread function "
                                     "in mm, (z, y, x); it also sets the grain of the noise.")
    hu_slope: float = Field(1.0, gt=0.5, lt=1.5, description="Calibration slope: HU_out = slope * HU + offset.")
    hu_offset: float = Field(0.0, ge=-200, le=200, description="Calibration offset in HU.")

    @field_validator("spacing", "psf_fwhm_mm")
    @classmethod
    def _positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError(f"all three values must be > 0 mm, got {value}")
        return value


class AnnotatorProfile(Settings):
    """How one simulated operator deviates from the exact lesion outline."""

    expertise: Literal["expert", "novice"] = Field("novice", description="expert or novice.")
    rounds: int = Field(1, ge=1, le=5, description="Annotation rounds (novices segment twice, months apart).")
    bias_mm: float = Field(0.0, ge=-3, le=3, description="Systematic outward (+) or inward (-) shift of the "
                           "boundary, in mm (a habit: some people draw generously, some tightly).")
    round_bias_sd_mm: float = Field(0.25, ge=0, le=2,
                                    description="Change of that shift from round to round (mm, sd).")
    jitter_mm: float = Field(0.9, ge=0, le=5, description="Amplitude (sd, mm) of the smooth random displacement "
                             "of the boundary.")
    jitter_scale_mm: float = Field(5.0, gt=0, le=30,
                                   description="In-plane correlation length of that displacement (mm).")
    opening_mm: float = Field(0.0, ge=0, le=3, description="Radius (mm, rounded to whole voxels) of a morphological "
                              "opening: thin parts of the lesion narrower than about twice this are missed.")
    miss_small_probability: float = Field(0.0, ge=0, le=1, description="Chance to miss a lesion smaller than "
                                          "`small_lesion_mm3` entirely.")
    small_lesion_mm3: float = Field(250.0, ge=0, description="Size below which a lesion may be missed.")


def _default_centres() -> dict[str, CentreProfile]:
    return {
        "A": CentreProfile(spacing=(0.7, 0.7, 0.7), noise_hu=14.0, psf_fwhm_mm=(1.0, 0.85, 0.85),
                           hu_slope=1.0, hu_offset=0.0),
        "B": CentreProfile(spacing=(1.0, 0.8, 0.8), noise_hu=21.0, psf_fwhm_mm=(1.3, 0.95, 0.95),
                           hu_slope=0.98, hu_offset=-6.0),
        "C": CentreProfile(spacing=(1.25, 0.9, 0.9), noise_hu=27.0, psf_fwhm_mm=(1.6, 1.1, 1.1),
                           hu_slope=1.03, hu_offset=8.0),
    }


def _default_annotators() -> dict[str, AnnotatorProfile]:
    return {
        # novices: A draws tightly and loses thin parts, B draws generously; both miss small lesions
        "A": AnnotatorProfile(expertise="novice", rounds=2, bias_mm=-0.15, round_bias_sd_mm=0.2, jitter_mm=0.6,
                              opening_mm=0.8, miss_small_probability=0.25),
        "B": AnnotatorProfile(expertise="novice", rounds=2, bias_mm=0.25, round_bias_sd_mm=0.2, jitter_mm=0.6,
                              opening_mm=0.0, miss_small_probability=0.15),
        "C": AnnotatorProfile(expertise="expert", rounds=1, bias_mm=0.1, round_bias_sd_mm=0.1, jitter_mm=0.4,
                              opening_mm=0.0, miss_small_probability=0.0),
    }


class PhantomConfig(Settings):
    """What the phantom generator makes. The default is a realistic proximal-femur CT.

    The field of view is placed relative to the femoral head centre, in anatomical directions
    (superior, posterior, medial), so that it covers the same anatomy for both sides.
    """

    fov_mm: tuple[float, float, float] = Field(
        (200.0, 160.0, 180.0), description="Field of view in mm (z, y, x): from above the acetabular roof to "
                                           "the proximal diaphysis; in-plane the thigh with its lateral skin.")
    fov_offset_mm: tuple[float, float, float] = Field(
        (-65.0, 8.0, -18.0), description="Centre of the field of view relative to the femoral head centre, in mm "
                                         "(superior, posterior, medial): (0, 0, 0) centres it on the head.")
    spacing: tuple[float, float, float] | None = Field(
        None, description="Voxel size (z, y, x) in mm for every case; None uses each centre's own spacing.")
    centres: dict[str, CentreProfile] = Field(default_factory=_default_centres,
                                              description="Acquisition sites; cases cycle through them in order.")
    field_resolution_mm: float = Field(1.6, gt=0, le=5, description="Grid on which the smooth anatomical fields "
                                       "(distance functions, thickness maps) are computed before linear upsampling.")
    pelvis: bool = Field(True, description="Include the acetabulum and adjacent pelvis (with a joint space).")
    lesion_count: tuple[int, int] = Field((1, 3), description="Min and max number of lesions of a metastatic case.")
    lesion_volume_mm3: tuple[float, float] = Field(
        (20.0, 8000.0), description="Range of lesion volumes (inside the femur), drawn log-uniformly.")
    break_cortex_probability: float = Field(0.35, ge=0, le=1, description="Chance that a lesion is placed to "
                                            "break through the cortex.")
    region_weights: dict[str, float] = Field(
        default_factory=lambda: {"head": 0.15, "neck": 0.2, "trochanter": 0.3, "shaft": 0.35},
        description="Relative frequency of lesion sites (head, neck, trochanter, shaft).")
    annotators: dict[str, AnnotatorProfile] = Field(default_factory=_default_annotators,
                                                    description="Simulated operators for test cases.")
    annotate_metastatic: bool = Field(False, description="Also write annotators' masks for 'metastatic' "
                                      "cases (always written for 'test' cases).")

    @field_validator("fov_mm")
    @classmethod
    def _fov_positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) < 10:
            raise ValueError(f"every side of the field of view must be >= 10 mm, got {value}")
        return value

    @field_validator("spacing")
    @classmethod
    def _spacing_positive(cls, value: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if value is not None and min(value) <= 0:
            raise ValueError(f"spacing must be > 0 mm, got {value}")
        return value

    @field_validator("region_weights")
    @classmethod
    def _regions_known(cls, value: dict[str, float]) -> dict[str, float]:
        for name, w in value.items():
            look_up_option(name, list(REGIONS), "lesion region")
            if w < 0:
                raise ValueError(f"region weight of {name!r} must be >= 0, got {w}")
        if sum(value.values()) <= 0:
            raise ValueError("at least one region weight must be > 0")
        return value

    @model_validator(mode="after")
    def _ranges(self) -> "PhantomConfig":
        lo, hi = self.lesion_count
        if not 1 <= lo <= hi <= 10:
            raise ValueError(f"lesion_count must satisfy 1 <= min <= max <= 10, got {self.lesion_count}")
        vlo, vhi = self.lesion_volume_mm3
        if not 0 < vlo <= vhi:
            raise ValueError(f"lesion_volume_mm3 must satisfy 0 < min <= max, got {self.lesion_volume_mm3}")
        if not self.centres:
            raise ValueError("at least one centre is needed")
        return self

    def centre_spacing(self, centre: str) -> tuple[float, float, float]:
        spacing = self.spacing if self.spacing is not None else self.centres[centre].spacing
        return tuple(float(s) for s in spacing)  # type: ignore[return-value]

    @classmethod
    def preset(cls, name: str) -> "PhantomConfig":
        """A named preset: ``default`` (realistic), ``small`` (1.5 mm, the demo) or ``tiny`` (48^3 voxels at 2 mm,
        tests)."""
        return cls.from_dict(look_up_option(name, PRESETS, "phantom preset"), source=f"phantom preset {name!r}")


REGIONS = ("head", "neck", "trochanter", "shaft")

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # 48^3 voxels at 2 mm around the head, neck and trochanters: a few hundred ms per case.
    "tiny": {
        "fov_mm": (96.0, 96.0, 96.0),
        "fov_offset_mm": (-30.0, 4.0, -24.0),
        "spacing": (2.0, 2.0, 2.0),
        "field_resolution_mm": 2.0,
        "lesion_volume_mm3": (400.0, 5000.0),
    },
    # 64^3 at 1.5 mm: a middle ground for quick looks.
    "small": {
        "fov_mm": (120.0, 96.0, 112.0),
        "fov_offset_mm": (-40.0, 4.0, -18.0),
        "spacing": (1.5, 1.5, 1.5),
        "field_resolution_mm": 2.0,
        "lesion_volume_mm3": (150.0, 6000.0),
    },
}
