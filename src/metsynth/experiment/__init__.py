"""The paper's study from one config: a chain of resumable stages in one run directory.

``cohort -> prepare -> bank -> synthesize -> diffusion -> harmonize -> sweep -> realism -> splits ->
train -> size_study -> predict -> evaluate -> stats -> variability -> report``

Each stage calls the library function of its step (which itself skips finished outputs), and
:mod:`metsynth.stages` skips stages whose settings and inputs did not change. Paths follow
:class:`metsynth.layout.RunLayout`. Presets: ``paper`` (every setting of the paper, for a GPU),
``demo`` (the whole study on a laptop CPU in minutes), ``tiny`` (tests).

* :mod:`.config` — :class:`ExperimentConfig` and its parts, and the settings each step gets from it
* :mod:`.presets` — the ``paper``, ``demo`` and ``tiny`` studies; ``docs/config.md``
* :mod:`.pipeline` — the stages in order (:func:`build_stages`) and what each one does
* :mod:`.training` — the segmentation trainings: every model and fold, the size study
* :mod:`.run` — :func:`run_experiment`: run or resume a study (on every rank of a DDP study)
"""

from .config import (
    MODEL_RECIPES,
    CohortSpec,
    DiffusionSpec,
    ExperimentConfig,
    ParallelSpec,
    PhantomSpec,
    SegmentationSpec,
    TrainerSpec,
    diffusion_settings,
    load_experiment_config,
    segmentation_settings,
    study_world,
)
from .pipeline import TRAINING_STAGES, build_stages
from .presets import config_reference, experiment_preset
from .run import run_experiment
from .training import FoldTrainings, run_fold_trainings, size_study_sizes, trained_models, training_processes

__all__ = [
    "MODEL_RECIPES",
    "TRAINING_STAGES",
    "CohortSpec",
    "DiffusionSpec",
    "ExperimentConfig",
    "FoldTrainings",
    "ParallelSpec",
    "PhantomSpec",
    "SegmentationSpec",
    "TrainerSpec",
    "build_stages",
    "config_reference",
    "diffusion_settings",
    "experiment_preset",
    "load_experiment_config",
    "run_experiment",
    "run_fold_trainings",
    "segmentation_settings",
    "size_study_sizes",
    "study_world",
    "trained_models",
    "training_processes",
]
