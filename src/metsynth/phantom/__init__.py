"""The built-in procedural phantom: proximal-femur CT with osteolytic lesions and annotators.

``generate_case`` makes one CT (int16 HU) with its exact femur and lesion masks and, for test
cases, several simulated operators' lesion masks; ``generate_cohort`` writes a whole cohort as
NIfTI files with a ``cohort.yaml`` manifest (and optional PNG previews). See ``PhantomConfig``
for what can be changed (field of view, voxel sizes and scanners per centre, lesions, operators).

Modules: ``config`` (settings), ``fields`` (grids, distance functions, noise), ``anatomy_params``
(the drawn sizes, angles and densities; the local anatomical frame), ``anatomy`` (bone and
soft-tissue geometry as fields), ``render`` (tissue HU, scanner), ``lesions``, ``annotators``,
``case`` (one case), ``dataset`` (a cohort on disk).
"""

from .case import PhantomCase, generate_case
from .config import AnnotatorProfile, CentreProfile, PhantomConfig
from .dataset import generate_cohort
from .render import HU_RANGES, TISSUES

__all__ = [
    "AnnotatorProfile", "CentreProfile", "HU_RANGES", "PhantomCase", "PhantomConfig", "TISSUES",
    "generate_case", "generate_cohort",
]
