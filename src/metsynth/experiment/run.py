"""Run or resume the study in a run folder: on rank 0, and on the other ranks of a DDP study."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..layout import RunLayout
from ..outdir import differences, shown
from ..parallel import reuse_workers
from ..stages import RunContext, StageResult, run_stages
from .config import ExperimentConfig, study_world
from .pipeline import TRAINING_STAGES, build_stages


def run_experiment(config: ExperimentConfig, run_dir: str | os.PathLike, until: str | None = None,
                   only: list[str] | None = None, progress: bool = True, force: bool = False) -> list[StageResult]:
    """Run (or resume) the study in ``run_dir``; the resolved config is saved there.

    With trainings on several ranks (``trainer: {strategy: ddp, devices: N}``, SLURM, torchrun),
    every rank runs this: global rank 0 runs the stages and writes the run folder, the other ranks
    only join its trainings (:class:`metsynth.devices.StudyRanks`) and return no results.
    """
    from ..stages import select

    stages = build_stages(config)
    wanted = select(stages, until, only)  # an unknown stage name is an error before anything is written
    trains = bool(set(wanted) & set(TRAINING_STAGES))
    world = study_world(config) if trains or _later_rank_by_environment() else None
    if world is not None and world.follows and world.rank > 0:
        if trains:
            from ..devices import StudyRanks

            StudyRanks.start(world).follow()
        return []  # rank 0 runs the stages (alone when none of them trains)
    ranks = None  # one process, ranks that live inside each training (ddp_spawn), or nothing to train
    if world is not None and world.follows and trains:
        from ..devices import StudyRanks

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
    _check_before_writing(config)
    if saved.exists():
        try:
            previous = ExperimentConfig.from_yaml(saved)
        except ConfigError:
            if not force:  # e.g. a setting an update removed: --force writes the new study over it
                raise
            previous = None
        if previous is not None and previous.cohort != config.cohort and not force:
            changes = shown(differences(previous.cohort.model_dump(mode="json"), config.cohort.model_dump(mode="json"),
                                        "cohort."))
            raise ConfigError(f"{run_dir}: holds a study of another cohort ({changes}); choose another run folder, "
                              "or accept this one with --force (the study replaces its outputs there, the "
                              "cohort's stages and all that follow)")
    layout.root.mkdir(parents=True, exist_ok=True)
    config.to_yaml(saved)
    ctx = RunContext(layout.root, config, progress=progress, force=force)
    if ranks is not None:
        ctx.extra["ranks"] = ranks
    with reuse_workers():  # each worker process imports torch, MONAI and Lightning once for the whole study
        return run_stages(stages, ctx, until=until, only=only)


def _check_before_writing(config: ExperimentConfig) -> None:
    """What is known to fail before any stage runs, refused before the run folder is touched: a
    manifest that cannot be read (a typo in cohort.manifest read as 'another cohort' before), and
    more folds than the cohort's patient groups (found at the splits stage, after config.yaml and
    the stages before had been redone with the new settings)."""
    from ..cohort import load_cohort
    from ..evaluation.splits import SettingNames, check_fold_count

    splits = config.splits
    names = SettingNames("splits.n_folds", "splits.group_by", "splits.group_by: null")
    if config.cohort.manifest is not None:
        check_fold_count(load_cohort(config.cohort.manifest), splits.n_folds, splits.group_by, names)
    elif config.cohort.phantom is not None and config.cohort.phantom.metastatic < splits.n_folds:
        m = config.cohort.phantom.metastatic
        raise ConfigError(f"cohort.phantom.metastatic: {m} metastatic cases for splits.n_folds={splits.n_folds}; "
                          f"lower splits.n_folds to at most {m}, or raise cohort.phantom.metastatic")


def _later_rank_by_environment() -> bool:
    """Whether a launcher (Lightning's for its ranks > 0, torchrun, SLURM, MPI) may have started this
    process as a rank other than 0 (then the trainer settings must be asked even with nothing to train)."""
    names = ("LOCAL_RANK", "RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK",
             "JSM_NAMESPACE_RANK")
    return any(os.environ.get(name, "0").strip() not in ("", "0") for name in names)
