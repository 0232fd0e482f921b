"""Is it a femur? (step 4 of the method, :mod:`metsynth.bone`.)

The search for femurs finds "femurs" in any CT with bone near its lower edge (the arms beside a
thorax, a vertebra, a slab of shaft). Each femur found is measured (:func:`measure_femur`: volume,
head-foot height, largest axial cross-section, distance of its shaft from the body midline when
both hips are in view, median and 99th-percentile HU) and checked (:func:`check_femur`) against
the ``femur_*`` limits of :class:`FemurSegConfig`: one that is certainly not a proximal femur is
dropped, and when none is left an :class:`InputError` names the image, the measurements and the
failed limits; a doubtful one (a scan that ends above the lesser trochanter, bone denser than a
femur with its marrow) is kept with a logged warning naming the image. (Dropping and warning:
:func:`metsynth.bone.segment._require_femur`.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..volume import Volume
from .config import FemurSegConfig

# Above any bone (dense cortex reaches about 2000-2500 HU): metal. A femur holding at least
# METAL_WARN_CM3 of it is doubtful (a warning, not a setting: it changes no output).
METAL_HU = 3000.0
METAL_WARN_CM3 = 0.5


@dataclass
class FemurCandidate:
    """Measurements of a femur found (its mask on the image's grid), for :func:`check_femur`."""

    volume_cm3: float
    height_mm: float  # head-foot (world z) extent
    section_mm2: float  # largest cross-section in an axial plane (perpendicular to the head-foot axis)
    offset_mm: float | None  # distance of its lowest seed_slab_mm (the shaft) from the body midline, when known
    median_hu: float
    cortex_hu: float  # 99th percentile of the HU inside
    metal_cm3: float = 0.0  # volume above METAL_HU inside: an implant (prosthesis, nail, screws)

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
        metal_cm3=float(np.count_nonzero(hu > METAL_HU) * image.voxel_volume_mm3 / 1000.0),
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
    if c.metal_cm3 >= METAL_WARN_CM3:
        doubtful.append(f"{c.metal_cm3:.1f} cm3 above {METAL_HU:g} HU inside: metal, a prosthesis, nail or screws? "
                        "An implanted femur is no healthy recipient and no lesion donor; leave the case out or "
                        "give the other side")
    if c.median_hu > config.femur_warn_median_hu:
        doubtful.append(f"median > {config.femur_warn_median_hu:g} HU: denser than a femur with its marrow (a "
                        "smaller bone, or an image not in HU?)")
    return hard, doubtful

