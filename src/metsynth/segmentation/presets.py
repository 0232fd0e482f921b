"""Settings of the segmentation stage, and the named presets ``paper``, ``cpu`` and ``tiny``.

``paper`` follows section 2.4 of Saillard et al.:

* MONAI ``UNet``, 5 levels with 32, 64, 128, 256, 512 channels (strides 2);
* patches of 96 x 96 x 64 voxels, read as x x y x z, i.e. ``patch_size = (64, 96, 96)`` in our
  array order ``(z, y, x)``;
* Dice loss; SGD with momentum 0.9, initial learning rate 0.025, exponential decay 0.999 per
  epoch for real data and 0.99 for the synthetic and harmonized ("diffusion") sets; early
  stopping on validation Dice with a patience of 200 epochs;
* fine-tuning (``--init``): learning rate 0.001, no decay, patience 25 epochs.

"Exponential decay g" is implemented as :class:`torch.optim.lr_scheduler.ExponentialLR` with
``gamma = g``, stepped once per training epoch (``lr_epoch = lr * g ** epoch``). Patience counts
validation checks; with ``val_every_n_epochs = 1`` (the presets) that is epochs.

Settings the paper does not state are chosen here and marked "not in the paper": residual
units, batch size, patches per volume, augmentation ranges, epoch length.

Presets are overridable from YAML: :func:`segmentation_config` deep-merges a mapping (or a YAML
file) into the named preset, validating every key.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..config import Settings, deep_merge, resolve_preset
from ..devices import MEMORY_FORMAT_HELP, LightningDevices, MemoryFormat
from .postprocess import PostprocessConfig

Source = Literal["real", "synthetic", "harmonized", "online"]
SOURCES = ("real", "synthetic", "harmonized", "online")


class NetworkConfig(Settings):
    """The MONAI ``UNet`` (3D, one input channel, two output classes: background, lesion)."""

    channels: tuple[int, ...] = Field((32, 64, 128, 256, 512), description="Feature channels per level.")
    strides: tuple[int, ...] | None = Field(
        None, description="Down-sampling strides between levels (default: 2 everywhere, len(channels)-1 values).")
    num_res_units: int = Field(2, ge=0, description="Residual units per block (not in the paper; MONAI's usual 2).")
    norm: Literal["instance", "batch"] = Field("instance", description="Normalization layer.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout probability.")

    @model_validator(mode="after")
    def _check_levels(self) -> "NetworkConfig":
        if len(self.channels) < 2:
            raise ValueError(f"channels needs at least 2 levels, got {self.channels}")
        if self.strides is not None and len(self.strides) != len(self.channels) - 1:
            raise ValueError(f"strides needs len(channels)-1 = {len(self.channels) - 1} values, got {self.strides}")
        return self

    @property
    def resolved_strides(self) -> tuple[int, ...]:
        return self.strides if self.strides is not None else (2,) * (len(self.channels) - 1)


class AugmentConfig(Settings):
    """Random augmentation of training patches (drawn per patch from a seeded generator).

    Ranges are not in the paper ("flips, rotations, scaling, Gaussian noise addition, and
    contrast enhancement"); the defaults are the common nnU-Net/MONAI choices.
    """

    enabled: bool = Field(True, description="Switch all augmentation off (e.g. for the overfit check).")
    flip_prob: float = Field(0.5, ge=0, le=1, description="Probability of a flip along each axis in flip_axes.")
    flip_axes: tuple[int, ...] = Field((0, 1, 2), description="Array axes (0=z, 1=y, 2=x) that may be flipped.")
    rotate_prob: float = Field(0.3, ge=0, le=1, description="Probability of a random rotation.")
    rotate_deg: float = Field(15.0, ge=0, le=180, description="Rotation range (+-) about each axis, degrees.")
    scale_prob: float = Field(0.3, ge=0, le=1, description="Probability of a random isotropic scaling.")
    scale_range: tuple[float, float] = Field((0.85, 1.15), description="Zoom factor range (>1 enlarges).")
    noise_prob: float = Field(0.2, ge=0, le=1, description="Probability of additive Gaussian noise.")
    noise_std: tuple[float, float] = Field(
        (0.0, 0.05), description="Noise std range, in standardized units ([-1, 1] = HU window).")
    contrast_prob: float = Field(0.2, ge=0, le=1, description="Probability of a gamma contrast change.")
    gamma_range: tuple[float, float] = Field((0.7, 1.5), description="Gamma range of the contrast change.")

    @field_validator("flip_axes")
    @classmethod
    def _axes(cls, value):
        if any(a not in (0, 1, 2) for a in value):
            raise ValueError(f"flip_axes must be among 0, 1, 2 (z, y, x), got {value}")
        return value

    @field_validator("scale_range", "noise_std", "gamma_range")
    @classmethod
    def _ordered(cls, value):
        if value[0] > value[1] or value[0] < 0:
            raise ValueError(f"range must be (low, high) with 0 <= low <= high, got {value}")
        return value


class OptimConfig(Settings):
    """SGD with momentum and a per-epoch exponential learning-rate decay; early stopping."""

    lr: float = Field(0.025, gt=0, description="Initial learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay (not in the paper).")
    lr_decay_real: float = Field(
        0.999, gt=0, le=1, description="ExponentialLR gamma per epoch when training on real data only.")
    lr_decay_synthetic: float = Field(
        0.99, gt=0, le=1,
        description="ExponentialLR gamma per epoch when synthetic, harmonized or online data are in the training set.")
    patience: int = Field(200, ge=1, description="Early stopping: validation checks without a better val Dice.")


class FinetuneConfig(Settings):
    """Used instead of :class:`OptimConfig`'s lr/decay/patience when training starts from ``--init``."""

    lr: float = Field(0.001, gt=0, description="Learning rate of fine-tuning.")
    lr_decay: float = Field(1.0, gt=0, le=1, description="ExponentialLR gamma per epoch (1 = no decay).")
    patience: int = Field(25, ge=1, description="Early-stopping patience of fine-tuning (validation checks).")
    max_epochs: int | None = Field(None, ge=1, description="Upper bound on fine-tuning epochs (None: max_epochs). "
                                   "Bounds fine-tuning where no validation cases stop it early (not in the paper).")


class InferenceConfig(Settings):
    """Sliding-window inference over whole volumes (MONAI ``sliding_window_inference``)."""

    overlap: float = Field(0.5, ge=0, lt=1, description="Overlap of neighbouring windows (fraction).")
    sw_batch_size: int = Field(2, ge=1, description="Windows per forward pass (on a CPU, 4 windows of 32^3 at once "
                                                    "take ~0.4x the time of one at a time, the same masks).")
    blend: Literal["gaussian", "constant"] = Field("gaussian", description="How overlapping windows are blended.")
    threshold: float = Field(0.5, gt=0, lt=1, description="Lesion probability threshold.")


class TrainerConfig(LightningDevices):
    """Passed to ``lightning.Trainer`` as is: where it runs (:class:`metsynth.devices.LightningDevices`)
    and how a U-Net training steps."""

    deterministic: bool | str = Field(False, description="torch deterministic algorithms (slower on GPU).")
    gradient_clip_val: float | None = Field(
        None, gt=0, description="Clip the gradient norm to this value (None: no clipping, the paper). A Dice-loss "
        "training whose step sends every prediction to background stays there (loss 1.0); clipping prevents that step.")
    log_every_n_steps: int = Field(10, ge=1, description="How often step metrics are logged.")
    memory_format: MemoryFormat = Field("auto", description=MEMORY_FORMAT_HELP + " The model's inference follows an "
                                        "explicit setting; auto runs it contiguous (without a backward pass "
                                        "channels-last is slower there).")

    def on_devices(self, devices: LightningDevices) -> "TrainerConfig":
        """These settings, run where ``devices`` says: its device fields (accelerator, devices,
        strategy, num_nodes, precision) replace these. A study's ``trainer`` section takes this way
        over every U-Net training's preset and overrides (the one place of that precedence)."""
        return self.merged(**{name: getattr(devices, name) for name in LightningDevices.model_fields})


class SegmentationConfig(Settings):
    """Everything that defines a segmentation training and its inference."""

    preset: str = Field("custom", description="Name of the preset this config started from (informative).")
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    patch_size: tuple[int, int, int] = Field(
        (64, 96, 96), description="Training patch and inference window, (z, y, x) voxels.")
    batch_size: int = Field(2, ge=1, description="Patches per training step (not in the paper).")
    patches_per_volume: int = Field(
        4, ge=1, description="Patches drawn per training volume per epoch (epoch length; not in the paper).")
    patches_per_epoch: int | None = Field(
        None, ge=1, description="Fixed epoch length in patches whatever the number of training volumes (as nnU-Net's "
        "250 iterations): real-only and synthetic trainings then get the same compute per epoch and the same "
        "validation cadence. None: patches_per_volume x volumes (not in the paper).")
    online_volumes_per_epoch: int = Field(
        200, ge=1, description="Fresh synthetic volumes per epoch for the 'online' source.")
    online_share: float | None = Field(
        None, gt=0, lt=1, description="Share of an epoch's patches drawn from the fresh 'online' volumes when 'online' "
        "is mixed with real, synthetic or harmonized volumes (e.g. 0.5: half online, half from the listed volumes, "
        "whose count then follows from the online part, online_volumes_per_epoch x patches_per_volume). None: "
        "proportional, as in an offline mix: each fresh volume counts like one listed volume, every volume gives "
        "patches_per_volume patches (with patches_per_epoch: that many patches, split in the same proportion). "
        "The share drawn is recorded in result.json (sampling). Not used without 'online' or without another source.")
    pos_fraction: float = Field(
        0.5, ge=0, le=1, description="Share of patches centred on a lesion voxel (the rest on background).")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    max_epochs: int = Field(5000, ge=1, description="Upper bound on epochs (early stopping usually ends first).")
    max_steps: int = Field(-1, description="Upper bound on optimizer steps (-1: none).")
    val_every_n_epochs: int = Field(1, ge=1, description="Validation (whole held-out real volumes) every n epochs.")
    val_cases: int = Field(
        3, ge=0, description="Real training-fold cases held out for validation (early stopping, best checkpoint).")
    num_workers: int = Field(
        4, ge=0, description="DataLoader worker processes (0: patches made in a thread of the training process, "
                             "2 batches ahead of the step; timing.json's data_wait_share says whether the steps "
                             "wait for them).")
    cache_dir: str | None = Field(
        None, description="Where volumes are unpacked to .npy for fast patch reads (default: <out>/cache).")
    seed: int = Field(0, description="Seed of weights, patch sampling, augmentation and the validation hold-out.")
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig)

    @field_validator("patch_size")
    @classmethod
    def _positive_patch(cls, value):
        if min(value) < 8:
            raise ValueError(f"patch_size must be at least 8 voxels per axis, got {value}")
        return value

    @model_validator(mode="after")
    def _patch_fits_network(self) -> "SegmentationConfig":
        factor = 1
        for s in self.network.resolved_strides:
            factor *= s
        bad = [p for p in self.patch_size if p % factor]
        if bad:
            raise ValueError(
                f"patch_size {self.patch_size} must be divisible by {factor} (the product of the "
                f"network's strides {self.network.resolved_strides}) on every axis")
        return self

    def epoch_bound(self, finetune: bool) -> int:
        """The ``max_epochs`` of a training (fine-tuning may have its own)."""
        if finetune and self.finetune.max_epochs is not None:
            return self.finetune.max_epochs
        return self.max_epochs

    def lr_schedule(self, sources: tuple[str, ...], finetune: bool) -> tuple[float, float, int]:
        """(learning rate, per-epoch decay gamma, patience) for a training on ``sources``."""
        if finetune:
            return self.finetune.lr, self.finetune.lr_decay, self.finetune.patience
        real_only = set(sources) <= {"real"}
        decay = self.optim.lr_decay_real if real_only else self.optim.lr_decay_synthetic
        return self.optim.lr, decay, self.optim.patience


PRESETS: dict[str, dict[str, Any]] = {
    # Section 2.4 of the paper (a GPU with >= 16 GB).
    "paper": {
        "preset": "paper",
        "network": {"channels": [32, 64, 128, 256, 512], "num_res_units": 2},
        "patch_size": [64, 96, 96],
        "batch_size": 2,
        "optim": {"lr": 0.025, "momentum": 0.9, "lr_decay_real": 0.999, "lr_decay_synthetic": 0.99, "patience": 200},
        "finetune": {"lr": 0.001, "lr_decay": 1.0, "patience": 25},
        "max_epochs": 5000,
        "num_workers": 6,
    },
    # A laptop CPU: a smaller network and patches, short patience; same optimizer.
    "cpu": {
        "preset": "cpu",
        "network": {"channels": [8, 16, 32, 64], "num_res_units": 1},
        "patch_size": [48, 48, 48],
        "batch_size": 2,
        "patches_per_volume": 4,
        "online_volumes_per_epoch": 20,
        "optim": {"patience": 20},
        "finetune": {"patience": 10},
        "max_epochs": 100,
        "val_cases": 2,
        "num_workers": 2,
        "inference": {"overlap": 0.25, "sw_batch_size": 4},
        # Without it, one demo training in twelve (seed 1, Diffusion fold 1) took a step that sent
        # every prediction to background at epoch 52 and stayed there (Dice loss 1.0); clipped, the
        # same training (same bytes in, same seed) went on to loss 0.60.
        "trainer": {"gradient_clip_val": 1.0},
    },
    # Tests: a few thousand parameters, 32^3 patches, seconds per epoch.
    "tiny": {
        "preset": "tiny",
        "network": {"channels": [4, 8, 16], "num_res_units": 0},
        "patch_size": [32, 32, 32],
        "batch_size": 2,
        "patches_per_volume": 2,
        "online_volumes_per_epoch": 2,
        "optim": {"lr": 0.05, "patience": 5},
        "finetune": {"patience": 3},
        "max_epochs": 3,
        "val_cases": 1,
        "num_workers": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "log_every_n_steps": 1},
        "inference": {"overlap": 0.25, "sw_batch_size": 4},
        "postprocess": {"min_lesion_mm3": 0.0},
    },
}




DEFAULT_PRESET = "cpu"


def segmentation_config(preset: str | None = None, overrides: dict[str, Any] | str | os.PathLike | None = None,
                        **changes: Any) -> SegmentationConfig:
    """The named preset, with a mapping or a YAML file of overrides, then keyword changes.

    ``segmentation_config("paper", "my.yaml", seed=3)``. Without ``preset``, the overrides'
    own ``preset:`` key picks the base (so a saved ``config.yaml`` reloads as itself), else
    ``cpu``. Unknown keys raise :class:`ConfigError` with a suggestion.
    """
    return resolve_preset(SegmentationConfig, PRESETS, preset, overrides, changes, "segmentation", DEFAULT_PRESET)


__all__ = [
    "AugmentConfig", "FinetuneConfig", "InferenceConfig", "NetworkConfig", "OptimConfig", "PRESETS",
    "SOURCES", "SegmentationConfig", "Source", "TrainerConfig", "deep_merge", "segmentation_config",
]
