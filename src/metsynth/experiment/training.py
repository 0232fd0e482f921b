"""The segmentation trainings of the study: every model of every fold (the ``train`` stage) and the
size-study models (``size_study``), folds in parallel worker processes on a CPU-only machine."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..layout import RunLayout, size_model
from ..stages import RunContext
from .config import MODEL_RECIPES, ExperimentConfig, segmentation_settings, study_world

log = logging.getLogger(__name__)


def _layout(ctx: RunContext) -> RunLayout:
    return RunLayout(ctx.run_dir)


def _claim(ctx: RunContext) -> dict[str, bool]:
    """How every stage claims its folder (:class:`metsynth.outdir.OutputFolder`): the study owns
    its run folder, so a stage replaces what an earlier run of the study made there with other
    settings (``replace_other``), but writes into a folder of other files only with the user's
    ``--force``."""
    return {"force": ctx.force, "replace_other": True}


def _train(ctx: RunContext, fn, *args, **kwargs):
    """A training: on every rank of a DDP study (rank 0 hands the call to the others), else here."""
    ranks = ctx.extra.get("ranks")
    return fn(*args, **kwargs) if ranks is None else ranks.call(fn, *args, **kwargs)


def _train_one(ctx: RunContext, model: str, fold: int, sources: str, init_model: str | None,
               limit: int | None = None) -> Path:
    from ..cohort import load_cohort
    from ..seeds import fold_seed
    from ..segmentation.datasets import build_training_set
    from ..segmentation.train import train_segmentation

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    seg = segmentation_settings(cfg)
    if seg.cache_dir is None:  # one unpacked copy of each volume for every model and fold (keyed by path)
        seg = seg.merged(cache_dir=str(layout.cache))
    training_set = build_training_set(
        load_cohort(layout.prepared_manifest), sources, fold=fold, splits=layout.splits,
        synthetic=layout.synthetic, harmonized=layout.harmonized if layout.harmonized.exists() else None,
        limit=limit, val_cases=seg.val_cases, seed=fold_seed(cfg.seed, fold),
        bank=layout.bank, synthesis=cfg.synthesis.model_dump(mode="json"),  # read by the 'online' source only
    )
    out = layout.model_dir(model, fold)
    init = layout.model_dir(init_model, fold) / "model.pt" if init_model else None
    # a training of other settings or inputs (the study's changed since) is trained again
    _train(ctx, train_segmentation, training_set, out, seg, init=init, resume=True, **_claim(ctx),
           progress=ctx.progress)
    return out


def _folds(ctx: RunContext) -> int:
    from ..evaluation.splits import load_splits

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
    from ..devices import torch_threads
    from ..logs import configure_logging

    configure_logging(task.log_level)
    # set for this task and put back after it: the process may be kept for later tasks (parallel.reuse_workers)
    with torch_threads(task.threads):
        ctx = RunContext(Path(task.run_dir), ExperimentConfig.from_dict(task.config), progress=False,
                         force=task.force)
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
    from ..devices import resolve_device

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
    from ..parallel import map_tasks

    threads = max(1, (os.cpu_count() or 1) // processes)
    config = cfg.model_dump(mode="json")
    level = logging.getLogger("metsynth").getEffectiveLevel()
    # each training makes its patches in a thread ahead of its steps (segmentation.prefetch), also when
    # the folds fill every core: the steps then wait 4-5 % of their time for data instead of 12-13 %
    # (28 % for online models) in the same wall time, x0.96-1.04 over 3 alternated rounds on 2 cores
    # (benchmarks/bench_prefetch.py --side-by-side --repeats 3; benchmarks/RESULTS.md, 2026-12-07)
    tasks = [FoldTrainings(str(ctx.run_dir), config, fold, tuple(fold_jobs), threads, ctx.force, level)
             for fold, fold_jobs in jobs.items()]
    log.info("training %d folds at once, %d torch thread(s) each", processes, threads)
    for _ in map_tasks(run_fold_trainings, tasks, workers=processes, progress=ctx.progress, desc="folds trained"):
        pass


def size_study_sizes(ctx: RunContext) -> list[int]:
    """The sizes of Table 2 smaller than the synthetic set (the full set is the 'synthetic' model)."""
    from ..synthesis.sets import count_kept

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
    from ..synthesis.sets import NotEnoughVolumes

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
