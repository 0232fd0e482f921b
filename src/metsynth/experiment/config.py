"""The settings of one study (saved as RUN/config.yaml), and the library settings each step gets from them."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, PositiveInt, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..config import OverridesOf, Settings, look_up_option, preset_data
from ..devices import LightningDevices
from ..diffusion.presets import PRESETS as DIFFUSION_PRESETS
from ..diffusion.presets import DiffusionConfig
from ..diffusion.sweep import SweepConfig
from ..evaluation.evaluate import EvaluationConfig
from ..evaluation.splits import SplitConfig
from ..layout import PAPER_MODELS
from ..prepare import PrepareConfig
from ..realism.measure import RealismConfig
from ..segmentation.presets import PRESETS as SEGMENTATION_PRESETS
from ..segmentation.presets import SegmentationConfig
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


class PresetSection(Settings):
    """A named preset and settings over it, as the study's file says them (saved and fingerprinted
    as written), validated with the study and resolved into the typed settings :attr:`settings`.
    Overrides are validated against that model: an error names its key path in the study
    (``segmentation.overrides.network.channels``)."""

    MODEL: ClassVar[type[Settings]]
    PRESETS: ClassVar[dict[str, dict[str, Any]]]
    WHAT: ClassVar[str]

    preset: str
    overrides: dict[str, Any]
    _resolved: tuple[tuple[str, dict[str, Any]], Settings] | None = PrivateAttr(None)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        look_up_option(preset, cls.PRESETS, f"{cls.WHAT} preset")  # a ConfigError is a ValueError
        return preset

    @field_validator("overrides")
    @classmethod
    def _valid_overrides(cls, overrides: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        cls._check_overrides(overrides)
        preset = info.data.get("preset")
        if preset is not None:  # else the preset's own error is reported
            # raised here, the model's errors are located under this field: <section>.overrides.<key path>
            cls.MODEL.model_validate(preset_data(cls.PRESETS, preset, overrides, cls.WHAT))
        return overrides

    @classmethod
    def _check_overrides(cls, overrides: dict[str, Any]) -> None:
        """Refuse what the model accepts but the study sets elsewhere (a ValidationError located in overrides)."""

    def _settings(self) -> Any:
        data = preset_data(self.PRESETS, self.preset, self.overrides, self.WHAT)
        return self.MODEL.from_dict(data, source=f"{self.WHAT}: preset {self.preset!r} with its overrides")

    @property
    def settings(self) -> Any:
        """The preset with the overrides, validated (a copy of the one resolved when first asked; the
        overrides were validated with the study; the section's own ``preset`` and ``overrides`` say
        what it is, in the study's file and its stage fingerprints)."""
        key = (self.preset, self.overrides)
        if self._resolved is None or self._resolved[0] != key:  # changed since (in place, or a model_copy)
            self._resolved = ((self.preset, copy.deepcopy(self.overrides)), self._settings())
        return self._resolved[1].model_copy(deep=True)

    def __eq__(self, other: object) -> bool:  # what it says, not whether it was resolved yet
        if not isinstance(other, PresetSection):
            return NotImplemented
        return type(self) is type(other) and (self.preset, self.overrides) == (other.preset, other.overrides)

    __hash__ = None  # type: ignore[assignment]


class DiffusionSpec(PresetSection):
    MODEL = DiffusionConfig
    PRESETS = DIFFUSION_PRESETS
    WHAT = "diffusion"

    preset: str = Field("cpu", description="DDPM preset: paper, cpu or tiny.")
    overrides: Annotated[dict[str, Any], OverridesOf(DiffusionConfig)] = Field(
        default_factory=dict, description="Settings over the preset (model, noise, train, harmonize).")

    @property
    def settings(self) -> DiffusionConfig:
        return super().settings


class SegmentationSpec(PresetSection):
    MODEL = SegmentationConfig
    PRESETS = SEGMENTATION_PRESETS
    WHAT = "segmentation"

    preset: str = Field("cpu", description="U-Net preset: paper, cpu or tiny.")
    overrides: Annotated[dict[str, Any], OverridesOf(SegmentationConfig)] = Field(
        default_factory=dict, description="Settings over the preset.")

    @property
    def settings(self) -> SegmentationConfig:
        """The preset with the overrides, alone: a study's trainings get
        :attr:`ExperimentConfig.segmentation_settings` (the study's trainer and seed over these)."""
        return super().settings

    @classmethod
    def _check_overrides(cls, overrides: dict[str, Any]) -> None:
        trainer = overrides.get("trainer")
        device_keys = [k for k in trainer if k in LightningDevices.model_fields] if isinstance(trainer, dict) else []
        if device_keys:  # the study's trainer section replaces them (they were ignored before, silently)
            raise ValidationError.from_exception_data(cls.__name__, [{
                "type": PydanticCustomError(
                    "study_trainer", "a study's trainings run where its own trainer section says: set "
                    "trainer.{key} (top level of the study) instead", {"key": key}),
                "loc": ("trainer", key), "input": trainer[key]} for key in device_keys])


# Where every training of a study runs (the DDPM and the U-Nets), passed to Lightning; the U-Nets'
# TrainerConfig extends it with their own step settings (SegmentationConfig.trainer). One definition:
# TrainerSpec is another name of it (kept for imports).
TrainerSpec = LightningDevices


class ParallelSpec(Settings):
    workers: int = Field(1, ge=1, description=(
        "Local processes for the batch stages, the prediction on a CPU included (cores / workers torch threads "
        "each); the study keeps them from stage to stage, so each imports torch once."))
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
    size_study: list[PositiveInt] = Field(default_factory=lambda: [100, 500, 2000],
                                  description="Synthetic-set sizes of Table 2 (the full set is the 'synthetic' model).")
    variability_model: str = Field("harmonized_ft", description="Model compared with the operators (Table 1).")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    trainer: LightningDevices = Field(default_factory=LightningDevices)
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
        if self.variability_model not in self.models:
            raise ValueError(f"variability_model '{self.variability_model}' is not among models {self.models}")
        return self

    def needs_harmonized(self) -> bool:
        return any(MODEL_RECIPES[m][0] == "harmonized" or MODEL_RECIPES[m][1] == "harmonized" for m in self.models)

    @property
    def diffusion_settings(self) -> DiffusionConfig:
        """The DDPM's settings: the diffusion section's preset and overrides (a copy). The study's
        trainer section says where it trains (:func:`metsynth.diffusion.train.train_diffusion`'s
        device arguments); the harmonization gets the study's seed."""
        return self.diffusion.settings

    @property
    def segmentation_settings(self) -> SegmentationConfig:
        """Every U-Net training's settings (a copy): the segmentation section's preset and overrides,
        run where the study's trainer section says (:meth:`TrainerConfig.on_devices`: it replaces the
        preset's device fields), seeded by the study's seed unless the overrides set one."""
        settings = self.segmentation.settings
        settings.trainer = settings.trainer.on_devices(self.trainer)
        if "seed" not in self.segmentation.overrides:
            settings.seed = self.seed
        return settings


def load_experiment_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read a config file; a relative ``cohort.manifest`` is resolved against the file's folder."""
    config = ExperimentConfig.from_yaml(path)
    manifest = config.cohort.manifest
    if manifest is not None and not manifest.is_absolute():
        config.cohort = config.cohort.model_copy(update={"manifest": (Path(path).parent / manifest).resolve()})
    return config


def diffusion_settings(config: ExperimentConfig) -> DiffusionConfig:
    """:attr:`ExperimentConfig.diffusion_settings`."""
    return config.diffusion_settings


def segmentation_settings(config: ExperimentConfig) -> SegmentationConfig:
    """:attr:`ExperimentConfig.segmentation_settings`."""
    return config.segmentation_settings


def study_world(config: ExperimentConfig):
    """The ranks of the study's trainings (:func:`metsynth.devices.trainer_world`)."""
    from ..devices import trainer_world

    t = config.trainer
    return trainer_world(t.accelerator, t.devices, t.strategy, t.num_nodes, t.precision)
