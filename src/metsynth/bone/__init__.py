"""Automatic bone and femur segmentation of CT in Hounsfield units.

The synthesis pipeline needs a mask of each healthy femur to constrain where a lesion may be
pasted; Saillard et al. use an automatic bone segmentation for it (their ref. [16]). This package
is a classical, training-free version of that step. Sizes are in millimetres and converted with
the voxel spacing; directions come from the image's direction cosines (world LPS: z superior,
x towards the patient's left), never from the array's axis order.

The method, step by step (each module's docstring gives the details):

1. **Working grid** (``grid``). The HU image is clipped (metal counts as dense bone, no more) and
   block-averaged to about ``work_spacing_mm``; masks found on it are mapped back to the image's
   grid, their surface redrawn from the full-resolution voxels.
2. **All bone** (:func:`segment_bone`; ``threshold``). Hysteresis threshold, thin streaks near
   metal opened away, a closing of ``closing_mm`` and hole filling in 3D and in every axial plane
   (``morphology``: closings, hole filling and components with sizes in mm).
3. **Femurs** (:func:`find_femurs`, :func:`segment_femur`). A marker-based watershed on the
   smoothed CT intensity inside the bone mask: femur and other-bone markers (``markers``); where a
   femur's bone touches other bone, the femoral head fitted as a sphere whose ball is femur marker
   and whose acetabular shell is other-bone marker (``head``); the watershed, then each femur
   closed with ``lesion_closing_mm`` and kept apart from the other bones (``separation``).
4. **Is it a femur?** (:func:`measure_femur`, :func:`check_femur`; ``presence``). Each femur found
   is measured and checked against the ``femur_*`` limits of :class:`FemurSegConfig`: one that is
   certainly not a proximal femur is dropped, and when none is left an :class:`InputError` names
   the image; a doubtful one is kept with a logged warning naming the image.

The entry points chaining these steps are in ``segment``; the settings (:class:`FemurSegConfig`,
its presets) in ``config``.

Side convention: "left" and "right" are the patient's; the left femur is the one at larger
world x. When the body is narrower than ``bilateral_min_width_mm`` (one leg in view), the midline
is not visible: the single femur found is returned whatever side is asked (with a warning), its
side guessed from the sign of world x (the scanner's isocentre is usually near the midline).

Metal implants do not stop the segmentation, but a femur with a prosthesis is segmented with
streak artefacts and cement around the stem; expect a poor mask on that side.
"""

from .config import PRESETS, SIDES, FemurSegConfig, Side
from .presence import FemurCandidate, check_femur, measure_femur
from .segment import FemurSearch, find_femurs, segment_bone, segment_femur

__all__ = [
    "PRESETS", "SIDES", "FemurCandidate", "FemurSearch", "FemurSegConfig", "Side", "check_femur", "find_femurs",
    "measure_femur", "segment_bone", "segment_femur",
]
