"""Training the DDPM on patches of healthy femurs (a Lightning module and :func:`train_diffusion`).

The network learns to predict the noise added to a patch at a random timestep (epsilon
objective, mean squared error), as in Ho et al. and section 2.3.2 of the paper. Lightning runs
the loop, so ``accelerator``, ``devices``, ``strategy`` (DDP, SLURM) and ``precision`` are
Lightning's.

Run folder (``out_dir``)::

    diffusion.yaml          the resolved settings (a rerun with other model/noise/train settings is refused)
    checkpoints/last.ckpt   Lightning checkpoint (every n steps and at each epoch end): resume point
    loss.csv, loss.png      the loss of every optimizer step
    timing.json             steps and the share of step time spent waiting for patches (of the last run that stepped)
    model.pt                the exported weights (EMA if enabled, else final): a plain state_dict
    model.yaml              the settings the weights belong to (what ``metsynth harmonize`` reads)

A rerun of the same command resumes from ``last.ckpt`` (checked first: a damaged or foreign one
stops with a one-line error before anything in the run folder is written); raising ``max_steps`` or
``max_epochs`` continues a finished training. Resuming from a checkpoint written at an epoch
end reproduces the uninterrupted run exactly on CPU (patches, timesteps and noise are drawn per
(seed, epoch, sample), see :mod:`metsynth.diffusion.data`); from a mid-epoch checkpoint Lightning
restarts that epoch's samples (it warns). The loss record and the step checkpoints are Lightning
callbacks (:mod:`.callbacks`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from ..checkpoints import save_model
from ..cohort import Cohort, load_cohort
from ..devices import PRECISIONS, compute_environment, to_memory_format, uses_channels_last
from ..errors import ConfigError
from ..fileio import files_index, files_stamp, read_json, write_json
from ..progress import quiet
from ..segmentation.callbacks import DataWaitMonitor
from .callbacks import LossHistory, StepCheckpoint, plot_loss
from .data import EpochSampler, PatchDataset, ResumableLoader, load_training_cases
from .presets import DiffusionConfig, diffusion_config

log = logging.getLogger(__name__)

# Settings that may change between a run and its resumption (they do not change the model).
RESUMABLE_CHANGES = ("max_steps", "max_epochs", "checkpoint_every_n_steps", "log_every_n_steps", "num_workers",
                     "memory_format")


class DiffusionModule(L.LightningModule):
    """The denoising U-Net, its noise schedule, Adam with per-epoch exponential decay, optional EMA."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = DiffusionConfig.from_dict(config)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(self.cfg.train.seed)
            self.model = self.cfg.model.build()
        self.ema = None
        if self.cfg.train.ema_decay is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.train.ema_decay),
                                     use_buffers=True)
            self.ema.requires_grad_(False)
        self.noise_scheduler = self.cfg.noise.ddpm()
        self.channels_last = False  # set for the device the fit runs on (setup)

    def setup(self, stage: str) -> None:
        """The network's layout for the fit's device, before the strategy moves it there, wraps it (DDP's
        gradient buckets follow the parameters' strides) and builds the optimizer on its parameters."""
        self.channels_last = uses_channels_last(self.trainer.strategy.root_device, self.cfg.train.memory_format,
                                                 self.trainer.world_size)
        to_memory_format(self.model, self.channels_last)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.model(to_memory_format(x, self.channels_last), timesteps=timesteps)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x0, noise, t = batch["image"], batch["noise"], batch["timestep"]
        x_t = self.noise_scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)
        pred = self(x_t, t)
        loss = F.mse_loss(pred.float(), noise.float())
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x0.shape[0])
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:  # here, not in on_train_batch_end: checkpoints are saved before that hook
            self.ema.update_parameters(self.model)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.cfg.train.learning_rate)
        decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.cfg.train.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "epoch"}}

    def export_state_dict(self) -> tuple[dict[str, torch.Tensor], str]:
        """The weights to harmonize with: the EMA copy if there is one (and it was updated)."""
        if self.ema is not None and int(self.ema.n_averaged) > 0:
            return {k: v.detach().cpu().clone() for k, v in self.ema.module.state_dict().items()}, "ema"
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}, "final"


@dataclass
class TrainResult:
    out_dir: Path
    export: Path          # model.pt
    export_config: Path   # model.yaml
    checkpoint: Path      # checkpoints/last.ckpt
    steps: int
    epochs: int
    seconds: float
    loss_csv: Path
    final_loss: float | None


def train_diffusion(
    cohort: Cohort | str | os.PathLike,
    out_dir: str | os.PathLike,
    config: DiffusionConfig | None = None,
    *,
    accelerator: str = "auto",
    devices: int | str = "auto",
    precision: str | int = "32",
    strategy: str = "auto",
    num_nodes: int = 1,
    resume: bool = True,
    force: bool = False,
    progress: bool = True,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    replace_other: bool = False,
) -> TrainResult:
    """Train (or resume training) the DDPM on the healthy cases of a prepared cohort.

    ``resume=False`` starts from scratch even if ``last.ckpt`` exists (it is replaced).
    ``force`` (or ``replace_other``, for a caller owning the folder) allows a run folder holding a
    training with other model/noise/train settings or healthy files (its checkpoints and weights are
    deleted; :class:`metsynth.outdir.OutputFolder`). Returns where the exported weights are.
    """
    from ..devices import check_trainer, on_rank_zero

    config = config or diffusion_config()
    out_dir = Path(out_dir)
    precision = _precision(precision)
    check_trainer(accelerator, devices, strategy, num_nodes, precision)  # before anything is written
    if not isinstance(cohort, Cohort):
        cohort = load_cohort(cohort)
    # the healthy cases' files as they are now: a preparation that wrote them again makes this another training
    healthy_paths = [p for case in cohort.by_role("healthy") for p in (case.image, case.femur_mask)]
    train = config.train
    # the healthy cases read and checked (finite, in [-1, 1], femur mask on the grid) before anything is written
    cases = load_training_cases(cohort, train.mask_margin_mm)
    module = DiffusionModule(config.model_dump(mode="json"))  # before the run folder: a resume checks against it
    checkpoint_dir = out_dir / "checkpoints"
    last = checkpoint_dir / "last.ckpt"

    def claim() -> bool:
        resumes = _claim_run_dir(out_dir, config, healthy_paths, force, module=module, replace_other=replace_other,
                                 resume_from=last if resume and last.exists() else None)
        if not resume and last.exists():
            shutil.rmtree(checkpoint_dir)
        return resumes

    resumes = on_rank_zero(claim)  # in a DDP study: decided and written by rank 0 alone, for every rank

    dataset = PatchDataset(cases, train.patch_size, train.patches_per_case,
                           config.noise.num_train_timesteps, seed=train.seed, max_timestep=train.max_timestep)
    sampler = EpochSampler(len(dataset), seed=train.seed)
    loader = ResumableLoader(
        dataset, batch_size=train.batch_size, sampler=sampler, num_workers=train.num_workers,
        persistent_workers=train.num_workers > 0, drop_last=False,
    )
    log.info("DDPM training on %d healthy case(s): %d patches of %s per epoch, batch %d",
             len(cases), len(dataset), train.patch_size, train.batch_size)

    history = LossHistory(out_dir)
    checkpoint = StepCheckpoint(last, train.checkpoint_every_n_steps)
    waits = DataWaitMonitor()  # the segmentation trainings' monitor: is the denoiser ever starved?
    ckpt_path = str(last) if resumes and last.exists() else None
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    with _lightning_chatter_off():
        trainer = L.Trainer(
            accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
            precision=precision, max_epochs=train.max_epochs, max_steps=train.max_steps,
            callbacks=[history, checkpoint, waits, *callbacks], logger=False, enable_checkpointing=False,
            enable_progress_bar=progress and not quiet(), enable_model_summary=False,
            log_every_n_steps=train.log_every_n_steps, default_root_dir=out_dir, num_sanity_val_steps=0,
        )
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path, weights_only=True)
    seconds = time.perf_counter() - start
    export, export_config = out_dir / "model.pt", out_dir / "model.yaml"
    if trainer.is_global_zero:
        if waits.steps:  # a rerun of a finished training takes no step: the record of the last one stays
            write_json(out_dir / "timing.json", waits.summary())
        export_weights(module, config, export, export_config,
                       trained={"steps": int(trainer.global_step), "epochs": int(trainer.current_epoch),
                                "cases": [c.id for c in cases],
                                "environment": compute_environment(trainer.strategy.root_device, trainer.world_size,
                                                                   precision)})
    final_loss = history.rows[-1]["loss"] if history.rows else None
    return TrainResult(out_dir, export, export_config, last, int(trainer.global_step),
                       int(trainer.current_epoch), seconds, out_dir / "loss.csv", final_loss)


def export_weights(module: DiffusionModule, config: DiffusionConfig, path: Path, yaml_path: Path,
                   trained: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write the weights and settings as ``model.pt`` + ``model.yaml`` (:func:`metsynth.checkpoints.save_model`;
    ``yaml_path`` must be ``path`` with the suffix .yaml)."""
    if yaml_path != path.with_suffix(".yaml"):
        raise ValueError(f"{yaml_path}: the settings go beside the weights, as {path.with_suffix('.yaml').name}")
    state, kind = module.export_state_dict()
    meta = {"weights": kind, "trained": trained or {}, "config": config.model_dump(mode="json")}
    save_model(path, "ddpm", state, meta)
    return path, yaml_path


def _claim_run_dir(out_dir: Path, config: DiffusionConfig, healthy_paths: list, force: bool, *,
                   module: DiffusionModule | None = None, resume_from: Path | None = None,
                   replace_other: bool = False) -> bool:
    """Save diffusion.yaml and inputs.json; refuse a folder holding another training
    (:class:`metsynth.outdir.OutputFolder`). With ``resume_from`` (the checkpoint to resume from),
    check it against ``module`` first, before anything is written. Returns whether the training
    resumes from it (``force`` or ``replace_other`` over another training deletes it)."""
    from ..outdir import FILE_INDEX, OutputFolder, file_changes

    inputs = out_dir / "inputs.json"
    healthy_files, healthy_index = files_stamp(healthy_paths), files_index(healthy_paths)

    def changes(record: Path) -> list[str]:
        if not any((out_dir / name).exists() for name in folder.outputs):
            return []  # settings recorded, but no step taken (an earlier version stopped on its inputs)
        diff = _training_diff(DiffusionConfig.from_yaml(record), config)
        recorded = read_json(inputs) if inputs.exists() else {}
        if recorded.get("healthy_files") is not None and recorded["healthy_files"] != healthy_files:
            old_index = recorded.get(FILE_INDEX)
            old_index = old_index.get("healthy_files") if isinstance(old_index, dict) else None
            named = file_changes(old_index, healthy_index) if isinstance(old_index, dict) else []
            diff += named or ["the healthy cases' files were written again since"]
        return diff

    folder = OutputFolder(out_dir, "a DDPM training", "diffusion.yaml",
                          outputs=("checkpoints", "loss.csv", "loss.png", "model.pt", "model.yaml"))
    claim = folder.claim(changes, force=force, replace_other=replace_other)
    resumes = resume_from is not None and claim.state != "replaced"
    if resumes and module is not None:
        check_resume_checkpoint(resume_from, module)
    config.to_yaml(folder.record_file)
    write_json(inputs, {"healthy_files": healthy_files, FILE_INDEX: {"healthy_files": healthy_index}})
    return resumes


def check_resume_checkpoint(path: Path, module: DiffusionModule) -> None:
    """A one-line :class:`~metsynth.errors.InputError` unless ``path`` is a Lightning checkpoint
    this training can resume from: readable with ``torch.load(weights_only=True)``, with
    Lightning's training state and the loss history, and weights that fit ``module``
    (:func:`metsynth.checkpoints.check_resume_checkpoint` does the checks)."""
    from ..checkpoints import check_resume_checkpoint as check

    check(path, {k: v.shape for k, v in module.state_dict().items()},
          optimizer_params=len(list(module.model.parameters())), callbacks=(LossHistory(path.parent).state_key,),
          run=path.parent.parent)


def _training_diff(a: DiffusionConfig, b: DiffusionConfig) -> list[str]:
    da, db = a.model_dump(mode="json"), b.model_dump(mode="json")
    changes = []
    for section in ("model", "noise", "train"):
        for key, value in da[section].items():
            if section == "train" and key in RESUMABLE_CHANGES:
                continue
            if db[section].get(key) != value:
                changes.append(f"{section}.{key}: {value} -> {db[section].get(key)}")
    return changes


def _precision(value: str | int) -> str:
    key = str(value)
    if key not in PRECISIONS:
        raise ConfigError(f"precision {value!r} is not supported; use 32, 16-mixed or bf16-mixed")
    return PRECISIONS[key]


@contextlib.contextmanager
def _lightning_chatter_off():
    """Lightning's info lines (GPU available, tips) only in --verbose; its own deprecation noise off."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning", "lightning.pytorch.utilities.rank_zero",
             "lightning.fabric.utilities.rank_zero")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    if not log.isEnabledFor(logging.DEBUG):
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def steps_per_epoch(n_cases: int, config: DiffusionConfig) -> int:
    return math.ceil(n_cases * config.train.patches_per_case / config.train.batch_size)


__all__ = ["DiffusionModule", "LossHistory", "TrainResult", "export_weights", "plot_loss",
           "steps_per_epoch", "train_diffusion"]
