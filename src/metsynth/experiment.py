"""The paper's study from one config: a chain of resumable stages in one run directory.

``cohort -> prepare -> bank -> synthesize -> diffusion -> harmonize -> sweep -> realism -> splits ->
train -> size_study -> predict -> evaluate -> stats -> variability -> report``

Each stage calls the library function of its step (which itself skips finished outputs), and
:mod:`metsynth.stages` skips stages whose settings and inputs did not change. Paths follow
:class:`metsynth.layout.RunLayout`. Presets: ``paper`` (every setting of the paper, for a GPU),
``demo`` (the whole study on a laptop CPU in minutes), ``tiny`` (tests).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from .config import Settings, look_up_option
from .errors import ConfigError
from .evaluation.evaluate import EvaluationConfig
from .evaluation.splits import SplitConfig
from .layout import PAPER_MODELS, RunLayout, size_model
from .diffusion.sweep import SweepConfig
from .prepare import PrepareConfig
from .realism.measure import RealismConfig
from .stages import RunContext, Stage, StageResult, run_stages
from .synthesis.bank import BankConfig
from .synthesis.compose import SynthesisConfig

log = logging.getLogger(__name__)

# model -> (training sources, the model it is fine-tuned from)
MODEL_RECIPES: dict[str, tuple[str, str | None]] = {
    "real": ("real", None),
    "synthetic": ("synthetic", None),
    "synthetic_ft": ("real", "synthetic"),
    "harmonized": ("harmonized", None),
    "harmonized_ft": ("real", "harmonized"),
}


class PhantomSpec(Settings):
    """Generate the built-in phantom cohort instead of reading a manifest."""

    healthy: int = Field(6, ge=1, description="Healthy femurs (they receive the synthetic lesions; the DDPM learns from them).")
    metastatic: int = Field(6, ge=2, description="Femurs with lesions: the real cases of the cross-validation and the lesion donors.")
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
    overrides: dict[str, Any] = Field(default_factory=dict, description="Settings over the preset (model, noise, train, harmonize).")


class SegmentationSpec(Settings):
    preset: str = Field("cpu", description="U-Net preset: paper, cpu or tiny.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Settings over the preset.")


class TrainerSpec(Settings):
    """Passed to Lightning for every training (DDPM and U-Nets)."""

    accelerator: str = Field("auto", description="Lightning accelerator: cpu, gpu, auto, ...")
    devices: int | str = Field("auto", description="Devices per node: a number, a list like '0,1', or auto.")
    strategy: str = Field("auto", description="auto, ddp, ... (several GPUs or nodes; SLURM is detected).")
    num_nodes: int = Field(1, ge=1, description="Nodes of a multi-node DDP training.")
    precision: str = Field("32-true", description="32-true, 16-mixed (the paper preset on a GPU), bf16-mixed.")


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
                              description="Models of Table 3 to train: real, synthetic, synthetic_ft, harmonized, harmonized_ft.")
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
        from .diffusion.presets import diffusion_config
        from .segmentation.presets import segmentation_config

        segmentation_config(self.segmentation.preset, self.segmentation.overrides)  # validates
        diffusion_config(self.diffusion.preset, self.diffusion.overrides)
        if self.variability_model not in self.models:
            raise ValueError(f"variability_model '{self.variability_model}' is not among models {self.models}")
        return self

    def needs_harmonized(self) -> bool:
        return any(MODEL_RECIPES[m][0] == "harmonized" or MODEL_RECIPES[m][1] == "harmonized" for m in self.models)


# ------------------------------------------------------------------ presets
def experiment_preset(name: str) -> ExperimentConfig:
    """The named study: ``paper`` (GPU, the paper's settings), ``demo`` (laptop CPU), ``tiny`` (tests)."""
    builder = look_up_option(name, _PRESETS, "experiment preset")
    return ExperimentConfig.from_dict(builder(), source=f"preset {name}")


def _paper() -> dict[str, Any]:
    return {
        "name": "paper",
        "cohort": {"manifest": "cohort.yaml"},
        "prepare": {"spacing": 0.85},
        "synthesis": {"repeats": 10, "min_lesion_mm3": 16.0},
        "diffusion": {"preset": "paper"},
        # Figure 4 shows lambda 5..50 DDIM steps of stride 4, i.e. training timesteps 20..200
        "sweep": {"timesteps": [0, 10, 20, 40, 80, 160]},
        "splits": {"n_folds": 5},
        "segmentation": {"preset": "paper"},
        "size_study": [100, 500, 2000],
        "trainer": {"accelerator": "gpu", "precision": "16-mixed"},
        "parallel": {"workers": 8},
    }


def _demo() -> dict[str, Any]:
    # The whole study in about 8 minutes on 2 CPU cores; docs/demo.md has the measurements behind
    # each choice (a sweep of variants on the same phantom) and the results over several seeds.
    return {
        "name": "demo",
        # 10 healthy femurs: the synthetic set needs their spread of bone density (4 gave a set whose
        # backgrounds were all denser than half the metastatic cases, and false positives there)
        # 24 test-only cases (cheap: predicted, never trained on): with the 6 held-out metastatic cases every
        # model is scored on 30 cases, enough for the paired test to see a 0.05 Dice difference
        "cohort": {"phantom": {"healthy": 10, "metastatic": 6, "test": 24, "preset": "small"}},
        "prepare": {"spacing": 1.7},
        # the paper's 3-5 voxel edge filter is 2.6-4.3 mm at 0.85 mm; at 1.7 mm, 3 voxels is closest.
        # Lesions stay in the femoral region they came from (a shaft lesion keeps marrow around it):
        # pasted uniformly, 70 % landed in the dense bone of the head and trochanter; fewer false
        # positives and a better Synthetic+FT this way (docs/demo.md)
        # edge_model donor: the pasted edge as sharp as the donor's own (the paper's mean filter made it
        # twice as soft and gave the lesions away: realism AUC 0.98 -> 0.53, benchmarks/RESULTS.md)
        "synthesis": {"repeats": 2, "transform": {"edge_filter_size": [3, 3], "edge_model": "donor"},
                      "placement": {"same_region_as_donor": True}},
        # The DDPM and its start timestep, from the realism sweep (docs/realism.md): a single SDEdit run of a
        # CPU-sized DDPM leaves inside the lesion noise it cannot remove (realism AUC 0.70-0.84 against 0.53-0.75
        # for the synthetic set); draws 2 averages an antithetic pair of runs, which cancels that noise
        # (0.52 and 0.61 at t = 2 on seeds 0 and 1); higher starts smooth the bone's grain more (t = 10: 0.55, 0.68)
        "diffusion": {"preset": "tiny", "overrides": {
            "train": {"max_steps": 200, "checkpoint_every_n_steps": 50, "max_timestep": 10, "ema_decay": 0.99},
            "harmonize": {"start_timestep": 2, "draws": 2}}},
        "sweep": {"timesteps": [0, 2, 5, 10]},
        # under a minute on 2 cores: 3 null splits, 20 CNN epochs (the defaults 5 and 30 took 68 s)
        "realism": {"null_splits": 3, "cnn_epochs": 20},
        # 2 folds: 3 real training cases per fold, the few-cases setting where synthetic data should help
        "splits": {"n_folds": 2},
        # every model gets the same compute (40 patches per epoch whatever its set's size); with 3
        # real cases per fold there is none to spare for validation, so the epoch bounds stop training.
        # 80 epochs: longer training helped every model in the sweep, and the folds training at once
        # (parallel.trainings) made room for it in the 10 minutes
        "segmentation": {"preset": "cpu", "overrides": {
            "network": {"channels": [8, 16, 32]}, "patch_size": [32, 32, 32], "patches_per_epoch": 40,
            "max_epochs": 80, "finetune": {"max_epochs": 15}, "val_cases": 0, "num_workers": 0}},
        "size_study": [40],
        # the two folds train at once, one core each: 1.5x the steps of one training on two threads
        # (benchmarks/bench_parallel_trainings.py)
        "parallel": {"workers": 2, "trainings": 2},
        "preview": 4,
    }


def _tiny() -> dict[str, Any]:
    return {
        "name": "tiny",
        "cohort": {"phantom": {"healthy": 2, "metastatic": 4, "test": 1, "preset": "tiny"}},
        "prepare": {"spacing": 2.0, "crop_margin_mm": 4.0},
        "synthesis": {"repeats": 2},
        "diffusion": {"preset": "tiny", "overrides": {"train": {"max_steps": 4}}},
        "splits": {"n_folds": 2},
        "segmentation": {"preset": "tiny", "overrides": {"max_epochs": 2, "val_cases": 1, "num_workers": 0}},
        "size_study": [4],
        "sweep": {"timesteps": [0, 10, 20]},
        "realism": {"folds": 2, "repeats": 1, "cnn_epochs": 2, "bootstrap": 100, "null_splits": 2},
        "parallel": {"trainings": 2},  # the tests kill and resume folds that train at once
        "preview": 2,
    }


_PRESETS = {"paper": _paper, "demo": _demo, "tiny": _tiny}


def config_reference() -> str:
    """``docs/config.md``: every setting of a study with its value in each preset, and the settings
    that ``segmentation.overrides`` and ``diffusion.overrides`` may change (``metsynth experiment reference``)."""
    from .config import reference_table
    from .diffusion.presets import PRESETS as DIFFUSION_PRESETS, diffusion_config
    from .segmentation.presets import PRESETS as SEGMENTATION_PRESETS, segmentation_config

    parts = [
        "# Configuration reference",
        "",
        "Written by `metsynth experiment reference -o docs/config.md` from the settings models (a test checks",
        "that this file is current). Start from a preset (`metsynth experiment init --preset paper -o my.yaml`),",
        "edit, and run `metsynth experiment run my.yaml --run-dir RUN`; unknown keys are errors that suggest",
        "the closest valid name. Arrays are in (z, y, x) order.",
        "",
        "## The study (`metsynth experiment`)",
        "",
        reference_table({name: experiment_preset(name) for name in _PRESETS}),
        "## Segmentation (`segmentation.preset` + `segmentation.overrides`, or `metsynth train --preset/--config`)",
        "",
        "The study's `trainer` and `seed` are passed to every training over these.",
        "",
        reference_table({name: segmentation_config(name) for name in SEGMENTATION_PRESETS}),
        "## Diffusion (`diffusion.preset` + `diffusion.overrides`, or `metsynth diffusion train --preset`, `metsynth harmonize --preset`)",
        "",
        reference_table({name: diffusion_config(name) for name in DIFFUSION_PRESETS}),
    ]
    return "\n".join(parts)


def load_experiment_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read a config file; a relative ``cohort.manifest`` is resolved against the file's folder."""
    config = ExperimentConfig.from_yaml(path)
    manifest = config.cohort.manifest
    if manifest is not None and not manifest.is_absolute():
        config.cohort = config.cohort.model_copy(update={"manifest": (Path(path).parent / manifest).resolve()})
    return config


# ------------------------------------------------------------------ stages
def build_stages(config: ExperimentConfig) -> list[Stage]:
    c = config
    stages = [
        Stage("cohort", _stage_cohort, config=lambda ctx: [c.seed, c.cohort.model_dump(mode="json")],
              description="the cohort (generated phantom or your manifest), checked"),
        Stage("prepare", _stage_prepare, ("cohort",), lambda ctx: c.prepare.model_dump(mode="json"),
              "femur masks, crop, resampling, intensity standardization"),
        Stage("bank", _stage_bank, ("prepare",), lambda ctx: c.bank.model_dump(mode="json"), "lesion bank"),
        Stage("synthesize", _stage_synthesize, ("prepare", "bank"),
              lambda ctx: [c.seed, c.synthesis.model_dump(mode="json")], "ad-hoc lesion synthesis"),
        Stage("diffusion", _stage_diffusion, ("prepare",),
              lambda ctx: [c.seed, c.diffusion.model_dump(mode="json"), c.trainer.model_dump()], "DDPM training"),
        Stage("harmonize", _stage_harmonize, ("synthesize", "diffusion"), lambda ctx: c.seed,
              "SDEdit/DDIM harmonization of the synthetic set"),
        Stage("sweep", _stage_sweep, ("synthesize", "diffusion"),
              lambda ctx: [c.seed, c.sweep.model_dump(mode="json"), c.realism.seed, c.diffusion.model_dump(mode="json")],
              "the synthetic volumes harmonized from each start timestep (Figure 4)"),
        Stage("realism", _stage_realism, ("synthesize", "harmonize", "sweep"),
              lambda ctx: c.realism.model_dump(mode="json"),
              "can a classifier tell generated lesions from real ones (C2ST, null controls)"),
        Stage("splits", _stage_splits, ("prepare",), lambda ctx: c.splits.model_dump(mode="json"), "CV folds"),
        Stage("train", _stage_train, ("synthesize", "harmonize", "splits"),
              lambda ctx: [c.seed, c.models, c.segmentation.model_dump(mode="json"), c.trainer.model_dump()],
              "the paper's models, every fold"),
        Stage("size_study", _stage_size_study, ("synthesize", "splits"),
              lambda ctx: [c.seed, c.size_study, c.segmentation.model_dump(mode="json"), c.trainer.model_dump()],
              "models on subsets of the synthetic set"),
        Stage("predict", _stage_predict, ("train", "size_study"), lambda ctx: None,
              "sliding-window inference on each fold's held-out cases"),
        Stage("evaluate", _stage_evaluate, ("predict",), lambda ctx: c.evaluation.model_dump(mode="json"),
              "Dice, HD, HD95, ASSD, lesion-wise detection"),
        Stage("stats", _stage_stats, ("evaluate",), lambda ctx: None, "Kruskal-Wallis, pairwise tests, tables"),
        Stage("variability", _stage_variability, ("predict",), lambda ctx: c.variability_model,
              "inter/intra-operator variability (Table 1)"),
        Stage("report", _stage_report, ("stats", "variability"), lambda ctx: None, "HTML report"),
    ]
    if not config.needs_harmonized():
        stages = [s for s in stages if s.name not in ("diffusion", "harmonize", "sweep")]
        for s in stages:
            s.needs = tuple(n for n in s.needs if n not in ("diffusion", "harmonize", "sweep"))
    return stages


TRAINING_STAGES = ("diffusion", "train", "size_study")


def study_world(config: ExperimentConfig):
    """The ranks of the study's trainings (:func:`metsynth.devices.trainer_world`)."""
    from .devices import trainer_world

    t = config.trainer
    return trainer_world(t.accelerator, t.devices, t.strategy, t.num_nodes, t.precision)


def run_experiment(config: ExperimentConfig, run_dir: str | os.PathLike, until: str | None = None,
                   only: list[str] | None = None, progress: bool = True, force: bool = False) -> list[StageResult]:
    """Run (or resume) the study in ``run_dir``; the resolved config is saved there.

    With trainings on several ranks (``trainer: {strategy: ddp, devices: N}``, SLURM, torchrun),
    every rank runs this: global rank 0 runs the stages and writes the run folder, the other ranks
    only join its trainings (:class:`metsynth.devices.StudyRanks`) and return no results.
    """
    from .stages import select

    stages = build_stages(config)
    wanted = select(stages, until, only)  # an unknown stage name is an error before anything is written
    trains = bool(set(wanted) & set(TRAINING_STAGES))
    world = study_world(config) if trains or _later_rank_by_environment() else None
    if world is not None and world.follows and world.rank > 0:
        if trains:
            from .devices import StudyRanks

            StudyRanks.start(world).follow()
        return []  # rank 0 runs the stages (alone when none of them trains)
    ranks = None  # one process, ranks that live inside each training (ddp_spawn), or nothing to train
    if world is not None and world.follows and trains:
        from .devices import StudyRanks

        ranks = StudyRanks.start(world)  # first: the other ranks wait for rank 0, also to hear of its errors
    try:
        results = _run_on_rank_zero(stages, config, Path(run_dir), until, only, progress, force, ranks)
    except BaseException as err:
        if ranks is not None:
            ranks.finish(err)
        raise
    if ranks is not None:
        ranks.finish()
    return results


def _run_on_rank_zero(stages, config: ExperimentConfig, run_dir: Path, until, only, progress: bool, force: bool,
                      ranks) -> list[StageResult]:
    layout = RunLayout(run_dir)
    saved = layout.config
    if saved.exists():
        previous = ExperimentConfig.from_yaml(saved)
        if previous.cohort != config.cohort and not force:
            raise ConfigError(f"{run_dir}: holds a study of another cohort; choose another run folder "
                              "(or --force to redo everything)")
    layout.root.mkdir(parents=True, exist_ok=True)
    config.to_yaml(saved)
    ctx = RunContext(layout.root, config, progress=progress, force=force)
    if ranks is not None:
        ctx.extra["ranks"] = ranks
    return run_stages(stages, ctx, until=until, only=only)


def _later_rank_by_environment() -> bool:
    """Whether a launcher (Lightning's for its ranks > 0, torchrun, SLURM, MPI) may have started this
    process as a rank other than 0 (then the trainer settings must be asked even with nothing to train)."""
    names = ("LOCAL_RANK", "RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK",
             "JSM_NAMESPACE_RANK")
    return any(os.environ.get(name, "0").strip() not in ("", "0") for name in names)


def _train(ctx: RunContext, fn, *args, **kwargs):
    """A training: on every rank of a DDP study (rank 0 hands the call to the others), else here."""
    ranks = ctx.extra.get("ranks")
    return fn(*args, **kwargs) if ranks is None else ranks.call(fn, *args, **kwargs)


# ------------------------------------------------------------------ stage bodies
def _layout(ctx: RunContext) -> RunLayout:
    return RunLayout(ctx.run_dir)


def _cohort_manifest(ctx: RunContext) -> Path:
    cfg: ExperimentConfig = ctx.config
    if cfg.cohort.manifest is not None:
        return Path(cfg.cohort.manifest)
    return _layout(ctx).phantom / "cohort.yaml"


def _stage_cohort(ctx: RunContext) -> None:
    from .cohort import check_cohort, load_cohort

    cfg: ExperimentConfig = ctx.config
    if cfg.cohort.phantom is not None:
        from .phantom import PhantomConfig, generate_cohort

        spec = cfg.cohort.phantom
        generate_cohort(_layout(ctx).phantom, n_healthy=spec.healthy, n_metastatic=spec.metastatic,
                        n_test=spec.test, seed=cfg.seed, config=PhantomConfig.preset(spec.preset),
                        preview=False, progress=ctx.progress, workers=cfg.parallel.workers, force=ctx.force)
    check_cohort(load_cohort(_cohort_manifest(ctx)))


def _stage_prepare(ctx: RunContext) -> None:
    from .cohort import load_cohort
    from .prepare import prepare_cohort

    cfg: ExperimentConfig = ctx.config
    # force: the stage runs again only when its settings or inputs changed; same-settings cases are kept
    prepare_cohort(load_cohort(_cohort_manifest(ctx)), _layout(ctx).prepared, cfg.prepare, force=True,
                   progress=ctx.progress, workers=cfg.parallel.workers, scheduler=cfg.parallel.scheduler)


def _stage_bank(ctx: RunContext) -> None:
    from .synthesis.bank import extract_bank

    layout = _layout(ctx)
    extract_bank(layout.prepared_manifest, layout.bank, ctx.config.bank, force=True, progress=ctx.progress)


def _stage_synthesize(ctx: RunContext) -> None:
    from .synthesis.run import run_synthesis

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    run_synthesis(layout.prepared_manifest, layout.bank, layout.synthetic, cfg.synthesis.merged(seed=cfg.seed),
                  workers=cfg.parallel.workers, scheduler=cfg.parallel.scheduler, progress=ctx.progress,
                  force=True, preview=cfg.preview)


def diffusion_settings(config: ExperimentConfig):
    from .diffusion.presets import diffusion_config

    return diffusion_config(config.diffusion.preset, config.diffusion.overrides)


def _stage_diffusion(ctx: RunContext) -> None:
    from .diffusion.train import train_diffusion

    cfg: ExperimentConfig = ctx.config
    t = cfg.trainer
    _train(ctx, train_diffusion, _layout(ctx).prepared_manifest, _layout(ctx).diffusion, diffusion_settings(cfg),
           accelerator=t.accelerator, devices=t.devices, precision=_short_precision(t.precision),
           strategy=t.strategy, num_nodes=t.num_nodes, resume=True, force=True, progress=ctx.progress)


def _stage_harmonize(ctx: RunContext) -> None:
    from .diffusion.harmonize import harmonize_set

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    settings = diffusion_settings(cfg).harmonize.merged(seed=cfg.seed)
    harmonize_set(layout.synthetic, layout.harmonized, layout.diffusion / "model.pt", settings,
                  workers=cfg.parallel.workers, scheduler=cfg.parallel.scheduler, progress=ctx.progress,
                  force=True, preview=cfg.preview)


def _stage_sweep(ctx: RunContext) -> None:
    from .diffusion.sweep import sweep_start_timesteps
    from .realism.measure import real_lesion_count, sample_volume_ids

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    n = cfg.sweep.volumes or cfg.realism.max_per_set or real_lesion_count(layout.prepared_manifest, cfg.realism)
    ids = sample_volume_ids(layout.synthetic, n, cfg.realism.seed)
    settings = diffusion_settings(cfg).harmonize.merged(seed=cfg.seed)
    # the study's own start timestep is the harmonized set itself (the realism stage reads it there)
    timesteps = tuple(t for t in cfg.sweep.timesteps if t != settings.start_timestep or not cfg.needs_harmonized())
    sweep_start_timesteps(layout.synthetic, layout.diffusion / "model.pt", layout.sweep, ids, timesteps,
                          settings, workers=cfg.parallel.workers, scheduler=cfg.parallel.scheduler,
                          progress=ctx.progress, force=True)


def _stage_realism(ctx: RunContext) -> None:
    from .realism.measure import measure_realism, run_sets

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    manifest, sets = run_sets(layout.root)
    measure_realism(manifest, sets, layout.realism, cfg.realism, progress=ctx.progress,
                    chosen=diffusion_settings(cfg).harmonize.start_timestep if "harmonized" in sets else None)


def _stage_splits(ctx: RunContext) -> None:
    from .evaluation.splits import load_or_make_splits

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    if layout.splits.exists():
        layout.splits.unlink()  # settings changed (else the stage would be skipped): make them anew
    s = cfg.splits
    load_or_make_splits(layout.splits, layout.prepared_manifest, n_folds=s.n_folds, seed=s.seed, group_by=s.group_by)


def segmentation_settings(config: ExperimentConfig):
    from .segmentation.presets import segmentation_config

    t = config.trainer
    overrides = dict(config.segmentation.overrides)
    overrides["trainer"] = {**overrides.get("trainer", {}), "accelerator": t.accelerator, "devices": t.devices,
                            "strategy": t.strategy, "num_nodes": t.num_nodes, "precision": t.precision}
    overrides.setdefault("seed", config.seed)
    return segmentation_config(config.segmentation.preset, overrides)


def _train_one(ctx: RunContext, model: str, fold: int, sources: str, init_model: str | None,
               limit: int | None = None) -> Path:
    from .cohort import load_cohort
    from .segmentation.datasets import build_training_set
    from .segmentation.train import other_training, train_segmentation

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    seg = segmentation_settings(cfg)
    if seg.cache_dir is None:  # one unpacked copy of each volume for every model and fold (keyed by path)
        seg = seg.merged(cache_dir=str(layout.cache))
    training_set = build_training_set(
        load_cohort(layout.prepared_manifest), sources, fold=fold, splits=layout.splits,
        synthetic=layout.synthetic, harmonized=layout.harmonized if layout.harmonized.exists() else None,
        limit=limit, val_cases=seg.val_cases, seed=cfg.seed + fold,
    )
    out = layout.model_dir(model, fold)
    init = layout.model_dir(init_model, fold) / "model.pt" if init_model else None
    stale = other_training(out, seg, training_set, init)  # the study's settings changed since it was trained
    if stale is not None:
        log.warning("%s: %s; training it again with the study's settings", out, stale)
    _train(ctx, train_segmentation, training_set, out, seg, init=init, resume=True,
           force=ctx.force or stale is not None, progress=ctx.progress)
    return out


def _folds(ctx: RunContext) -> int:
    from .evaluation.splits import load_splits

    return load_splits(_layout(ctx).splits).n_folds


def _stage_train(ctx: RunContext) -> None:
    cfg: ExperimentConfig = ctx.config
    # per fold, in the config's order (a fine-tuned model after the one it starts from)
    _train_folds(ctx, {fold: [(model, *MODEL_RECIPES[model], None) for model in cfg.models]
                       for fold in range(_folds(ctx))})


@dataclass(frozen=True)
class FoldTrainings:
    """The trainings of one fold, in order: ``(model, sources, init model, limit)`` (a picklable task)."""

    run_dir: str
    config: dict[str, Any]
    fold: int
    jobs: tuple[tuple[str, str, str | None, int | None], ...]
    threads: int = 0  # torch threads in a worker process (0: leave as is)
    force: bool = False
    log_level: int = logging.INFO  # the parent's, for the worker's messages

    @property
    def key(self) -> str:
        return f"fold {self.fold}"


def run_fold_trainings(task: FoldTrainings) -> list[str]:
    """A worker process's task: train ``task.jobs`` one after the other; the model folders."""
    from .logs import configure_logging

    configure_logging(task.log_level)
    if task.threads:
        import torch

        torch.set_num_threads(task.threads)
    ctx = RunContext(Path(task.run_dir), ExperimentConfig.from_dict(task.config), progress=False, force=task.force)
    return _train_jobs(ctx, task.fold, task.jobs)


def _train_jobs(ctx: RunContext, fold: int, jobs) -> list[str]:
    out = []
    for model, sources, base, limit in jobs:
        log.info("training %s, fold %d", model, fold)
        if limit is None:
            out.append(str(_train_one(ctx, model, fold, sources, base)))
        else:
            out.append(str(_train_size_model(ctx, limit, fold)))
    return out


def training_processes(config: ExperimentConfig, n_folds: int) -> int:
    """How many folds train at once: ``parallel.trainings`` on a local CPU-only run, else 1 (also
    when each training runs on several ranks: DDP spreads one training, and its ranks follow rank 0's
    trainings one at a time)."""
    if config.parallel.trainings <= 1 or n_folds <= 1 or config.parallel.scheduler:
        return 1
    world = study_world(config)
    if world is not None and world.size > 1:
        log.info("parallel.trainings: %d ignored: each training runs on %d ranks", config.parallel.trainings,
                 world.size)
        return 1
    from .devices import resolve_device

    if config.trainer.accelerator not in ("cpu", "auto") or str(resolve_device(config.trainer.accelerator)) != "cpu":
        return 1
    return min(config.parallel.trainings, n_folds)


def _train_folds(ctx: RunContext, jobs: dict[int, list[tuple[str, str, str | None, int | None]]]) -> None:
    cfg: ExperimentConfig = ctx.config
    processes = training_processes(cfg, len(jobs))
    if processes == 1:
        for fold, fold_jobs in jobs.items():
            _train_jobs(ctx, fold, fold_jobs)
        return
    from .parallel import map_tasks

    threads = max(1, (os.cpu_count() or 1) // processes)
    config = cfg.model_dump(mode="json")
    level = logging.getLogger("metsynth").getEffectiveLevel()
    tasks = [FoldTrainings(str(ctx.run_dir), config, fold, tuple(fold_jobs), threads, ctx.force, level)
             for fold, fold_jobs in jobs.items()]
    log.info("training %d folds at once, %d torch thread(s) each", processes, threads)
    for _ in map_tasks(run_fold_trainings, tasks, workers=processes, progress=ctx.progress, desc="folds trained"):
        pass


def size_study_sizes(ctx: RunContext) -> list[int]:
    """The sizes of Table 2 smaller than the synthetic set (the full set is the 'synthetic' model)."""
    from .synthesis.sets import count_kept

    cfg: ExperimentConfig = ctx.config
    kept = count_kept(_layout(ctx).synthetic)
    sizes = sorted(n for n in set(cfg.size_study) if n < kept)
    skipped = sorted(n for n in set(cfg.size_study) if n >= kept)
    if skipped:
        log.warning("size study: %s not smaller than the %d synthetic volumes; the full set is the "
                    "'synthetic' model", skipped, kept)
    return sizes


def _stage_size_study(ctx: RunContext) -> None:
    if "synthetic" not in ctx.config.models:
        return
    _train_folds(ctx, {fold: [(size_model(n), "synthetic", None, n) for n in size_study_sizes(ctx)]
                       for fold in range(_folds(ctx))})


def _train_size_model(ctx: RunContext, n: int, fold: int) -> Path:
    from .synthesis.sets import NotEnoughVolumes

    try:
        return _train_one(ctx, size_model(n), fold, "synthetic", None, limit=n)
    except NotEnoughVolumes as err:
        # the leakage filter may leave fewer than N volumes in a fold: train on what remains
        log.warning("size study N=%d, fold %d: %s; training on every allowed volume", n, fold, err)
        return _train_one(ctx, size_model(n), fold, "synthetic", None, limit=None)


def trained_models(ctx: RunContext) -> list[str]:
    layout = _layout(ctx)
    models = list(ctx.config.models)
    if "synthetic" in models and (layout.synthetic / "index.csv").exists():
        models += [size_model(n) for n in size_study_sizes(ctx)]
    return models


def _stage_predict(ctx: RunContext) -> None:
    from .cohort import Cohort, load_cohort
    from .evaluation.splits import load_splits
    from .segmentation.inference import combine_fold_predictions, predict_cohort

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    cohort = load_cohort(layout.prepared_manifest)
    splits = load_splits(layout.splits)
    for model in trained_models(ctx):
        final = layout.predictions(model)
        for fold in range(splits.n_folds):
            ids = set(splits.test(fold)) | set(splits.test_only)
            sub = Cohort(name=f"{cohort.name}-fold{fold}", prepared=cohort.prepared,
                         cases=[c for c in cohort.cases if c.id in ids])
            fold_dir = final / f"fold{fold}"
            manifest = sub.save(fold_dir / "cases.yaml")
            # in this process (torch's threads use every core; new local processes would each pay
            # for importing torch, per model and fold); a Dask cluster still gets the cases
            predict_cohort(layout.model_dir(model, fold) / "model.pt", manifest, fold_dir, workers=1,
                           scheduler=cfg.parallel.scheduler, force=ctx.force, replace_other=True, progress=ctx.progress)
        combine_fold_predictions(final, splits)


def _stage_evaluate(ctx: RunContext) -> None:
    from .evaluation.evaluate import evaluate_cohort

    layout = _layout(ctx)
    for model in trained_models(ctx):
        result = evaluate_cohort(layout.predictions(model), layout.prepared_manifest, ctx.config.evaluation)
        result.write(layout.evaluation(model))


def _stage_stats(ctx: RunContext) -> None:
    from .evaluation.stats import compare_models, load_results
    from .fileio import write_json, write_text

    layout = _layout(ctx)
    evaluated = layout.evaluated_models()
    data = load_results({m: layout.evaluation(m) / "metrics.csv" for m in evaluated},
                        worst_case=ctx.config.evaluation.worst_case)
    paper = [m for m in PAPER_MODELS if m in evaluated]
    groups = {"table3": (paper, "real" if "real" in paper else None, "Segmentation results (Table 3 layout)")}
    sizes = [m for m in evaluated if m.startswith("size_")] + (["synthetic"] if "synthetic" in evaluated else [])
    if len(sizes) > 1:
        groups["table2"] = (sizes, None, "Size of the synthetic training set (Table 2 layout)")
    for key, (models, reference, title) in groups.items():
        if len(models) < 2:
            continue
        comparison = compare_models(data, models=models, reference=reference, title=title,
                                    rng=np.random.default_rng(ctx.config.seed), n_resamples=2000)
        table = comparison.table
        write_text(layout.stats / f"{key}.md", table.to_markdown() + "\n")
        write_text(layout.stats / f"{key}.html", table.to_html() + "\n")
        write_text(layout.stats / f"{key}.tex", table.to_latex() + "\n")
        write_json(layout.stats / f"{key}.json", comparison.to_dict())
        write_text(layout.stats / f"{key}.txt", comparison.report() + "\n")


def _stage_variability(ctx: RunContext) -> None:
    from .cohort import load_cohort
    from .evaluation.variability import operator_variability, write_variability

    layout = _layout(ctx)
    cohort = load_cohort(layout.prepared_manifest)
    if not any(len({(a.annotator, a.round) for a in c.lesion_masks}) > 1 for c in cohort.cases):
        log.info("variability: no case has several annotations; skipped")
        return
    result = operator_variability(cohort, predictions=layout.predictions(ctx.config.variability_model),
                                  staple_dir=layout.variability / "staple", allow_missing=True)
    write_variability(result, layout.variability)


def _stage_report(ctx: RunContext) -> None:
    from .report import write_report

    write_report(ctx.run_dir)


def _short_precision(precision: str) -> str:
    return {"32-true": "32", "16-mixed": "16-mixed", "bf16-mixed": "bf16-mixed"}.get(precision, precision)

