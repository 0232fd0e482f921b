"""The settings of one study (saved as RUN/config.yaml), and the library settings each step gets from them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from ..config import Settings, look_up_option
from ..devices import LightningDevices
from ..diffusion.sweep import SweepConfig
from ..evaluation.evaluate import EvaluationConfig
from ..evaluation.splits import SplitConfig
from ..layout import PAPER_MODELS
from ..prepare import PrepareConfig
from ..realism.measure import RealismConfig
from ..synthesis.bank import BankConfig
from ..synthesis.compose import SynthesisConfig

# model -> (training sources, the model it is fine-tuned from)
MODEL_RECIPES: dict[str, tuple[str, str | None]] = {
    "real": ("real", None),
    "synthetic": ("synthetic", None),
    "synthetic_ft": ("real", "synthetic"),
    "harmonized": ("harmonized", None),
    "harmonized_ft": ("real", "harmonized"),
    # fresh synthetic volumes drawn during training (SyntheticTumors' on-the-fly synthesis), from the
    # lesions of the fold's real training cases only, seeded by (seed + fold, epoch, volume)
    "online": ("online", None),
    "online_ft": ("real", "online"),
}


class PhantomSpec(Settings):
    """Generate the built-in phantom cohort instead of reading a manifest."""

    healthy: int = Field(
        6, ge=1, description="Healthy femurs (they receive the synthetic lesions; the DDPM learns from them).")
    metastatic: int = Field(
        6, ge=2, description="Femurs with lesions: the real cases of the cross-validation and the lesion donors.")
    test: int = Field(2, ge=0, description="Test-only cases with several annotators (variability study).")
    preset: str = Field("default", description="PhantomConfig preset: default, small or tiny.")


class CohortSpec(Settings):
    manifest: Path | None = Field(None, description="Your cohort manifest (relative to the config file).")
    phantom: PhantomSpec | None = Field(None, description="Or: generate the phantom cohort.")

    @model_validator(mode="after")
    def _one_source(self) -> "CohortSpec":
        if (self.manifest is None) == (self.phantom is None):
            raise ValueError("give exactly one of cohort.manifest (your data) or cohort.phantom (generated)")
        return self


class DiffusionSpec(Settings):
    preset: str = Field("cpu", description="DDPM preset: paper, cpu or tiny.")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Settings over the preset (model, noise, train, harmonize).")


class SegmentationSpec(Settings):
    preset: str = Field("cpu", description="U-Net preset: paper, cpu or tiny.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Settings over the preset.")


class TrainerSpec(LightningDevices):
    """Passed to Lightning for every training of the study (DDPM and U-Nets): the device fields of
    :class:`metsynth.devices.LightningDevices`, one definition with the trainings' own settings."""


class ParallelSpec(Settings):
    workers: int = Field(1, ge=1, description="Local processes for the batch stages.")
    scheduler: str | None = Field(None, description="Dask scheduler address (tcp://host:port) for the batch stages.")
    trainings: int = Field(1, ge=1, description=(
        "Segmentation trainings at once on a CPU-only machine: the folds train in that many local processes, "
        "each with cores / trainings torch threads (small CPU trainings use one core poorly with two threads). "
        "A model's numbers depend on its threads; with a GPU, trainings run one at a time."))


class ExperimentConfig(Settings):
    """Everything that defines one study; saved as RUN/config.yaml."""

    name: str = Field("experiment", description="Name of the study (shown in the report).")
    seed: int = Field(0, description="Seed of the phantom, the synthesis, the harmonization and the trainings.")
    cohort: CohortSpec
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    bank: BankConfig = Field(default_factory=BankConfig)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    diffusion: DiffusionSpec = Field(default_factory=DiffusionSpec)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    realism: RealismConfig = Field(default_factory=RealismConfig)
    splits: SplitConfig = Field(default_factory=SplitConfig)
    segmentation: SegmentationSpec = Field(default_factory=SegmentationSpec)
    models: list[str] = Field(default_factory=lambda: list(PAPER_MODELS),
                              description="Models of Table 3 to train: real, synthetic, synthetic_ft, harmonized, "
                                          "harmonized_ft (the paper's), online, online_ft (synthetic volumes drawn "
                                          "during training).")
    size_study: list[int] = Field(default_factory=lambda: [100, 500, 2000],
                                  description="Synthetic-set sizes of Table 2 (the full set is the 'synthetic' model).")
    variability_model: str = Field("harmonized_ft", description="Model compared with the operators (Table 1).")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    parallel: ParallelSpec = Field(default_factory=ParallelSpec)
    preview: int = Field(6, ge=0, description="Volumes shown in the synthesis/harmonization QC montages.")

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: list[str]) -> list[str]:
        for m in models:
            look_up_option(m, list(MODEL_RECIPES), "model")
        for m in models:
            base = MODEL_RECIPES[m][1]
            if base is not None and base not in models:
                raise ValueError(f"model '{m}' is fine-tuned from '{base}', which must be in models too")
        return models

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentConfig":
        from ..diffusion.presets import diffusion_config
        from ..segmentation.presets import segmentation_config

        segmentation_config(self.segmentation.preset, self.segmentation.overrides)  # validates
        diffusion_config(self.diffusion.preset, self.diffusion.overrides)
        if self.variability_model not in self.models:
            raise ValueError(f"variability_model '{self.variability_model}' is not among models {self.models}")
        return self

    def needs_harmonized(self) -> bool:
        return any(MODEL_RECIPES[m][0] == "harmonized" or MODEL_RECIPES[m][1] == "harmonized" for m in self.models)


def load_experiment_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read a config file; a relative ``cohort.manifest`` is resolved against the file's folder."""
    config = ExperimentConfig.from_yaml(path)
    manifest = config.cohort.manifest
    if manifest is not None and not manifest.is_absolute():
        config.cohort = config.cohort.model_copy(update={"manifest": (Path(path).parent / manifest).resolve()})
    return config


def diffusion_settings(config: ExperimentConfig):
    from ..diffusion.presets import diffusion_config

    return diffusion_config(config.diffusion.preset, config.diffusion.overrides)


def segmentation_settings(config: ExperimentConfig):
    from ..segmentation.presets import segmentation_config

    t = config.trainer
    overrides = dict(config.segmentation.overrides)
    overrides["trainer"] = {**overrides.get("trainer", {}), "accelerator": t.accelerator, "devices": t.devices,
                            "strategy": t.strategy, "num_nodes": t.num_nodes, "precision": t.precision}
    overrides.setdefault("seed", config.seed)
    return segmentation_config(config.segmentation.preset, overrides)


def study_world(config: ExperimentConfig):
    """The ranks of the study's trainings (:func:`metsynth.devices.trainer_world`)."""
    from ..devices import trainer_world

    t = config.trainer
    return trainer_world(t.accelerator, t.devices, t.strategy, t.num_nodes, t.precision)
