"""Ad-hoc lesion synthesis (paper, section 2.3.1): lesion bank, random transforms, placement,
composition, the resumable parallel batch run, the on-the-fly dataset and a visual check.

One idea per module, in pipeline order:

* :mod:`.bank`        ``extract_bank`` / ``load_bank``: lesions of metastatic cases as patches
* :mod:`.transforms`  ``draw_params`` then ``apply_transform``: ellipsoid crop, rotation, scaling,
                      edge smoothing width, noise
* :mod:`.placement`   femoral regions (head, neck, trochanter, shaft) and ``draw_placement``
* :mod:`.compose`     ``paste`` and ``synthesize_one``: one synthetic case; ``SynthesisConfig``
* :mod:`.run`         ``run_synthesis``: every healthy case x lesion x repeat, to files
* :mod:`.dataset`     ``SyntheticLesionDataset``: the same recipe, on the fly
* :mod:`.qc`          ``write_preview``: a PNG montage, before and after
* :mod:`.commands`    ``metsynth lesions extract`` and ``metsynth synthesize``

Imports here are light (numpy, pydantic); SciPy, SimpleITK and matplotlib load when used.
"""

from .bank import BankConfig, BankEntry, LesionBank, extract_bank, load_bank
from .compose import HealthyFemur, SynthesisConfig, SynthesisResult, paste, synthesize_one
from .dataset import SyntheticLesionDataset
from .placement import REGIONS, FemurSite, PlacementConfig, PlacementParams, draw_placement, femur_regions
from .run import RunSummary, run_synthesis, stable_hash, volume_id, volume_seed
from .transforms import LesionTransformParams, TransformConfig, apply_transform, draw_params

__all__ = [
    "REGIONS",
    "BankConfig",
    "BankEntry",
    "FemurSite",
    "HealthyFemur",
    "LesionBank",
    "LesionTransformParams",
    "PlacementConfig",
    "PlacementParams",
    "RunSummary",
    "SynthesisConfig",
    "SynthesisResult",
    "SyntheticLesionDataset",
    "TransformConfig",
    "apply_transform",
    "draw_params",
    "draw_placement",
    "extract_bank",
    "femur_regions",
    "load_bank",
    "paste",
    "run_synthesis",
    "stable_hash",
    "synthesize_one",
    "volume_id",
    "volume_seed",
]
