"""Training and fine-tuning of the 3D U-Net with Lightning.

:func:`train_segmentation` runs one training in a run folder::

    out/
      config.yaml          resolved SegmentationConfig
      training_set.json    every training and validation volume (and the test cases excluded)
      checkpoints/         best.ckpt (highest validation Dice), last.ckpt (for --resume)
      logs/metrics.csv     CSVLogger: train_loss, val_dice, lr, data_wait_share per epoch
      curves.png           loss and validation Dice per epoch
      timing.json          steps/s and the share of step time spent waiting for data
      model.pt, model.yaml the best weights as a plain state_dict with their settings: what
                           `metsynth predict` and `--init` read (torch.load(weights_only=True))
      result.json          written last: the training is complete (a rerun skips it)

The loss is MONAI's ``DiceLoss`` on the softmax of two output channels, lesion channel only
(``include_background=False``: a background term would reward predicting nothing) and pooled
over the batch (``batch=True``: patches without lesion do not give a noisy 0/0 Dice). Validation
Dice is computed on whole held-out real volumes by sliding-window inference.

Lightning does the loops, checkpoints, early stopping (on validation Dice) and logging;
``accelerator``, ``devices``, ``strategy``, ``num_nodes`` and ``precision`` go to the Trainer as
they are, so multi-GPU and multi-node (DDP, SLURM) need no code here. Both the Lightning
checkpoints and ``model.pt`` hold only tensors and plain Python data, and load with
``torch.load(..., weights_only=True)``; resuming passes ``weights_only=True`` to Lightning.
A resume first checks ``checkpoints/last.ckpt`` (:func:`metsynth.checkpoints.check_resume_checkpoint`): a damaged or
foreign one stops with a one-line error before anything in the run folder is written.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..checkpoints import check_resume_checkpoint
from ..errors import ConfigError, MetsynthError
from ..fileio import atomic_path, read_json, write_json
from ..progress import quiet
from .callbacks import CurvePlotter, DataWaitMonitor, history_from_csv, plot_curves
from .lightning_module import SegmentationModule
from .network import build_network, dice_of, export_weights, load_weights, sliding_window_logits
from .presets import SegmentationConfig, segmentation_config
from .run_folder import claim_run_dir, training_changes, training_folder
from .training_set import TrainingSet

log = logging.getLogger(__name__)

# Lightning warnings that are expected here (a resumed run reuses its folders; a one-volume
# validation set; the data pipeline deliberately uses few workers on small machines).
_EXPECTED_WARNINGS = (
    r"Checkpoint directory .* exists and is not empty",
    r"Experiment logs directory .* exists and is not empty",
    r".*isinstance\(treespec, LeafSpec\)",
    r"The '(train|val)_dataloader' does not have many workers",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"You defined a `validation_step` but have no `val_dataloader`",  # val_cases: 0
)
# Settings that may change between a run and its resume without changing the result's meaning.
try:  # Lightning is a hard dependency; the guard keeps `import metsynth.segmentation` light
    import lightning as L
except ImportError:  # pragma: no cover - depends on the installation
    L = None  # type: ignore[assignment]


def _remove_created(paths: list[Path]) -> None:
    """Remove what a refused training created (files, then folders, deepest first), if still there."""
    import shutil

    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as err:  # pragma: no cover - the error that stopped the training matters more
            log.warning("could not remove %s: %s", path, err)


@dataclass
class TrainResult:
    """What :func:`train_segmentation` produced (also saved as ``result.json``)."""

    out_dir: str
    model: str
    best_checkpoint: str | None
    last_checkpoint: str | None
    best_val_dice: float | None
    epochs: int
    steps: int
    stopped_early: bool
    seconds: float
    timing: dict[str, float]
    finetune: bool
    # patches per epoch and source, and with 'online' the share of online patches (PatchSampler.describe)
    sampling: dict[str, Any] | None = None
    # what it was trained on: torch, CPU and its instruction set, threads, device (devices.compute_environment)
    environment: dict[str, Any] | None = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainResult":
        return cls(**read_json(path))


def train_segmentation(
    training_set: TrainingSet,
    out_dir: str | os.PathLike,
    config: SegmentationConfig | None = None,
    *,
    init: str | os.PathLike | None = None,
    resume: bool = True,
    force: bool = False,
    progress: bool = True,
    extra_callbacks: list[Any] | None = None,
    replace_other: bool = False,
) -> TrainResult:
    """Train (or, with ``init``, fine-tune) a U-Net on ``training_set``; see the module docstring.

    ``init``: weights to start from (``model.pt`` or a ``.ckpt``); fine-tuning settings
    (``config.finetune``: lr 0.001, no decay, patience 25 in the paper preset) then replace the
    optimizer's. ``resume`` (default): an interrupted run in ``out_dir`` continues from
    ``checkpoints/last.ckpt`` (epoch, weights, optimizer, LR schedule, early-stopping state), and
    so does a finished one whose ``max_epochs``/``max_steps`` were raised; ``resume=False``
    starts over, discarding the old checkpoints. A finished run (``result.json``) with the same
    settings is returned as is. A folder holding another training is refused unless ``force`` or
    ``replace_other`` (:class:`metsynth.outdir.OutputFolder`), which start over there.
    ``extra_callbacks``: more Lightning callbacks (e.g. a profiler).
    """
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from ..devices import check_trainer, compute_environment, on_rank_zero

    config = config or segmentation_config("cpu")
    out = Path(out_dir)
    start = time.perf_counter()
    t = config.trainer
    check_trainer(t.accelerator, t.devices, t.strategy, t.num_nodes, t.precision)  # before anything is written
    finetune = init is not None
    init_state = _initial_weights(init, config) if init is not None else None  # also before anything is written
    folder = training_folder(out)
    result_file = folder.finished_file  # result.json, written last
    previous = out / "config.yaml"
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    cache_dir = Path(config.cache_dir) if config.cache_dir else out / "cache"
    # the training's files, before anything is written: all present; the real cases (few, and not
    # written by metsynth's own stages) read and checked too, unless already cached
    from .cache import check_training_volumes

    check_training_volumes(training_set.train + training_set.val, cache_dir, read=lambda v: v.source == "real")
    # what this call creates before the fit, removed again if the volumes turn out unusable (a cache
    # outside the folder is shared: another training, e.g. the other fold of a study, may be filling it)
    own_cache = cache_dir.resolve().is_relative_to(out.resolve())
    created = [p for p in (out, *([cache_dir] if own_cache else []), out / "config.yaml", out / "training_set.json",
                           out / "init.json") if not p.exists()]
    claimed: list[str] = []

    def claim() -> tuple[bool, Path | None]:
        claimed.append(folder.claim(lambda record: training_changes(out, config, training_set, init),
                                    force=force, replace_other=replace_other).state)
        finished = folder.finished()  # this training's (another's result was removed above)
        same_length = False
        if finished:
            old = segmentation_config(None, previous)
            same_length = (old.epoch_bound(finetune), old.max_steps) == (config.epoch_bound(finetune), config.max_steps)
        # the checkpoint this call resumes from (a finished run of the same length is returned as is)
        resume_from = last if resume and last.exists() and not (finished and same_length) else None
        claim_run_dir(out, config, training_set, init, resume=resume, resume_from=resume_from)
        return same_length, resume_from

    same_length, resume_from = on_rank_zero(claim)  # in a DDP study: decided and written by rank 0 alone
    if folder.finished() and (same_length or not resume):
        log.info("%s: training already complete (result.json); delete the folder to train it again", out)
        return TrainResult.load(result_file)

    online_source = None
    if "online" in training_set.sources:
        from .datasets import OnlineSource

        if not training_set.online:
            raise ConfigError("source 'online' needs its settings (bank, manifest) in the training set; "
                              "build it with build_training_set(..., bank=DIR)")
        online_source = OnlineSource(training_set.online, config.seed)

    from .datasets import PatchDataset, VolumeDataset, cache_volumes, patch_sampler
    from .prefetch import ThreadPrefetchLoader

    try:
        stems = cache_volumes(training_set.train + training_set.val, cache_dir,
                              workers=max(1, min(config.num_workers, 8)), progress=progress)
    except MetsynthError:  # an unusable volume (InputError, or TasksFailed from the unpacking workers)
        if claimed == ["new"]:  # a training that never started: leave no folder that looks like one
            _remove_created(created)
        raise
    train_stems = [stems[v.key] for v in training_set.train]
    val_stems = [stems[v.key] for v in training_set.val]

    lr, decay, patience = config.lr_schedule(training_set.sources, finetune)
    meta = {
        "config": config.model_dump(mode="json"),
        "lr": lr, "lr_decay": decay, "patience": patience, "finetune": finetune,
        "init": str(init) if init else None,
        "sources": list(training_set.sources), "fold": training_set.fold,
        "spacing": list(training_set.spacing) if training_set.spacing else None,
        "hu_window": list(training_set.hu_window) if training_set.hu_window else None,
    }
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = SegmentationModule(meta)
    if init_state is not None:
        module.net.load_state_dict(init_state, strict=True)
        log.info("fine-tuning from %s (lr %g, decay %g, patience %d)", init, lr, decay, patience)

    sampler = patch_sampler(training_set, config)
    sampling = sampler.describe([v.source for v in training_set.train])
    log.info("patches per epoch: %s%s", ", ".join(f"{n} {s}" for s, n in sampling["patches_per_epoch"].items()),
             f" (online share {sampling['online_share']:.2f}, {sampling['online_share_setting']})"
             if "online_share" in sampling else "")
    workers = config.num_workers
    loader_args: dict[str, Any] = {"num_workers": workers, "pin_memory": torch.cuda.is_available()}
    if workers > 0:
        loader_args.update(persistent_workers=True, prefetch_factor=4)
    train_loader = ThreadPrefetchLoader(  # without workers, patches are made in a thread ahead of the step
        PatchDataset(train_stems, config, online_source=online_source), batch_size=config.batch_size,
        sampler=sampler, **loader_args)
    val_loader = None
    if val_stems:
        val_loader = torch.utils.data.DataLoader(
            VolumeDataset(val_stems, [v.key for v in training_set.val]), batch_size=1,
            num_workers=min(workers, 1), persistent_workers=workers > 0)

    # last.ckpt every epoch: after validation when it runs every epoch (the saved state then includes
    # it), else at the end of each training epoch
    last_ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                                enable_version_counter=False,
                                save_on_train_epoch_end=val_loader is None or config.val_every_n_epochs != 1)
    checkpoint = last_ckpt
    callbacks: list[Any] = [last_ckpt]
    if val_loader is not None:
        checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_dice", mode="max", save_top_k=1,
                                     auto_insert_metric_name=False, enable_version_counter=False,
                                     save_on_train_epoch_end=False)
        # best before last: last.ckpt then records this epoch's best (a run killed between the two
        # saves redoes the epoch; the other order resumed with an outdated best model)
        callbacks.insert(0, checkpoint)
    waits = DataWaitMonitor()
    callbacks += [waits, CurvePlotter(out / "curves.png"), *(extra_callbacks or [])]
    if val_loader is not None:
        callbacks.append(EarlyStopping(monitor="val_dice", mode="max", patience=patience,
                                       check_on_train_epoch_end=False))
    tcfg = config.trainer
    trainer = L.Trainer(
        accelerator=tcfg.accelerator, devices=tcfg.devices, strategy=tcfg.strategy, num_nodes=tcfg.num_nodes,
        precision=tcfg.precision, deterministic=tcfg.deterministic, gradient_clip_val=tcfg.gradient_clip_val,
        max_epochs=config.epoch_bound(finetune),
        max_steps=config.max_steps, check_val_every_n_epoch=config.val_every_n_epochs,
        logger=CSVLogger(save_dir=out, name="", version="logs"), callbacks=callbacks,
        default_root_dir=out, num_sanity_val_steps=0, log_every_n_steps=tcfg.log_every_n_steps,
        enable_progress_bar=progress and not quiet(), enable_model_summary=False,
        use_distributed_sampler=False,
    )
    ckpt_path = None
    if resume_from is not None:
        ckpt_path = str(resume_from)
        log.info("resuming from %s", resume_from)
    elif resume:
        log.info("no %s to resume from: starting a new training", last)
    result_file.unlink(missing_ok=True)
    if ckpt_path is not None and trainer.is_global_zero:
        _set_aside_log(out / "logs")
    with warnings.catch_warnings():
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=ckpt_path,
                    weights_only=True if ckpt_path else None)

    best = checkpoint.best_model_path if checkpoint is not last_ckpt and checkpoint.best_model_path else None
    timing = waits.summary()
    if trainer.is_global_zero:
        source_ckpt = best if best and Path(best).exists() else str(last)
        model_path = export_weights(source_ckpt, out / "model.pt")
        metrics_csv = _merge_logs(out / "logs")
        if metrics_csv.exists():
            plot_curves(history_from_csv(metrics_csv), out / "curves.png")
        write_json(out / "timing.json", timing)
    else:  # pragma: no cover - multi-process only
        model_path = out / "model.pt"
    early = next((c for c in callbacks if isinstance(c, EarlyStopping)), None)
    score = checkpoint.best_model_score if best else None
    result = TrainResult(
        out_dir=str(out), model=str(model_path), best_checkpoint=best,
        last_checkpoint=str(last) if last.exists() else None,
        best_val_dice=float(score) if score is not None else None, epochs=int(trainer.current_epoch),
        steps=int(trainer.global_step), stopped_early=bool(early is not None and early.stopped_epoch > 0),
        seconds=time.perf_counter() - start, timing=timing, finetune=finetune, sampling=sampling,
        environment=compute_environment(trainer.strategy.root_device, trainer.world_size, tcfg.precision),
    )
    if trainer.is_global_zero:
        folder.mark_finished(asdict(result))
        log.info("trained %d epochs (%d steps), best val Dice %s, data-wait share %.1f%% -> %s",
                 result.epochs, result.steps, _fmt(result.best_val_dice), 100 * timing["data_wait_share"]
                 if not math.isnan(timing["data_wait_share"]) else float("nan"), model_path)
    return result


def _set_aside_log(log_dir: Path) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv: keep it as a numbered part."""
    current = log_dir / "metrics.csv"
    if current.exists():
        n = len(list(log_dir.glob("metrics-part*.csv")))
        current.rename(log_dir / f"metrics-part{n:03d}.csv")


def _merge_logs(log_dir: Path) -> Path:
    """Join the parts of a resumed training's log into ``metrics.csv`` (rows of an epoch that
    was redone after the resume are taken from the later part)."""
    import pandas as pd

    current = log_dir / "metrics.csv"
    parts = sorted(log_dir.glob("metrics-part*.csv")) + ([current] if current.exists() else [])
    if len(parts) < 2:
        return current
    tables = [pd.read_csv(p) for p in parts]
    kept = []
    for i, table in enumerate(tables):
        later = [t["epoch"].min() for t in tables[i + 1:] if len(t)]
        limit = min(later) if later else None
        kept.append(table if limit is None else table[table["epoch"] < limit])
    merged = pd.concat(kept, ignore_index=True)
    with atomic_path(current) as tmp:
        merged.to_csv(tmp, index=False)
    for p in parts[:-1] if parts[-1] == current else parts:
        p.unlink()
    return current


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _initial_weights(init: str | os.PathLike, config: SegmentationConfig) -> dict[str, Any]:
    """The weights ``--init`` names, read and checked against ``config``'s network (one-line errors)."""
    from ..errors import InputError

    try:
        state, init_meta = load_weights(init)
    except InputError as err:
        raise InputError(f"--init: {err}") from None
    try:
        build_network(config).load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(
            f"--init {init}: its network ({init_meta['config']['network']}) does not match this "
            f"config's ({config.network.model_dump()}); fine-tune with the same network settings "
            f"({str(err).splitlines()[0]})") from None
    return state


__all__ = [
    "CurvePlotter", "DataWaitMonitor", "SegmentationModule", "TrainResult", "build_network",
    "check_resume_checkpoint", "dice_of", "export_weights", "history_from_csv", "load_weights",
    "plot_curves", "sliding_window_logits", "train_segmentation", "training_changes", "training_folder",
]
