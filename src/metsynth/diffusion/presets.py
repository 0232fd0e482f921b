"""Settings of the diffusion stage, and the named presets ``paper``, ``cpu`` and ``tiny``.

``paper`` follows section 2.3.2 of Saillard et al.:

* MONAI ``DiffusionModelUNet``, 3 levels with 128, 256 and 512 channels, attention only at the
  deepest level with 512 features (``attention_levels = (False, False, True)``,
  ``num_head_channels = (0, 0, 512)``: one head of 512 channels; MONAI's middle block always
  has attention too). Residual blocks per level are not in the paper: MONAI's default 2;
* patches of 96 x 96 x 48 voxels, read as x x y x z, i.e. ``patch_size = (48, 96, 96)`` in our
  array order ``(z, y, x)``;
* T = 200 training timesteps, betas linear from 1e-4 to 2e-3, epsilon prediction;
* Adam, learning rate 1e-4, exponential decay 0.999 per epoch, batch size 1;
  5000 epochs of one patch per healthy femur;
* harmonization: DDIM with 50 steps over the full 0..T range (stride 4), started at
  lambda = 10.

**Reading lambda = 10.** The paper denoises "until a timestep lambda" after DDIM reduced the
200 steps to 50, so lambda = 10 can mean ten *DDIM* steps (stride 4: the volume is noised to
training timestep t = 40 and denoised through 40, 36, ..., 4, 0) or training timestep 10. The
``paper`` preset takes the first reading: ``start_timestep = 40``, ``ddim_steps = 50``. The
other reading is ``start_timestep = 10`` with the same ``ddim_steps = 50``, which runs
10, 8, 4, 0 (the noised volume enters at exactly t = 10, then follows the stride-4 grid)::

    metsynth harmonize SYNTH --checkpoint model.pt --out OUT --start-timestep 10

or in YAML ``harmonize: {start_timestep: 10}``. See :func:`metsynth.diffusion.schedule.ddim_timesteps`.

Settings the paper does not state are chosen here and marked "not in the paper". Presets are
overridable from YAML: :func:`diffusion_config` deep-merges a mapping (or a YAML file) into the
named preset, validating every key.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..config import Settings, deep_merge, resolve_preset
from ..devices import MEMORY_FORMAT_HELP, MemoryFormat


class ModelConfig(Settings):
    """MONAI ``DiffusionModelUNet`` (3D, one channel in and out, predicts the added noise)."""

    channels: tuple[int, ...] = Field((128, 256, 512), description="Feature channels per level.")
    attention_levels: tuple[bool, ...] = Field(
        (False, False, True), description="Self-attention per level (MONAI's middle block always has it).")
    num_head_channels: tuple[int, ...] = Field(
        (0, 0, 512), description="Channels per attention head per level (0 where no attention; the "
                                 "last value is used by the middle block and must be > 0).")
    num_res_blocks: int = Field(2, ge=1, description="Residual blocks per level (not in the paper; MONAI's default).")
    norm_num_groups: int = Field(32, ge=1, description="GroupNorm groups; must divide every channel count.")

    @model_validator(mode="after")
    def _consistent(self) -> "ModelConfig":
        n = len(self.channels)
        if n < 2:
            raise ValueError(f"channels needs at least 2 levels, got {self.channels}")
        if len(self.attention_levels) != n or len(self.num_head_channels) != n:
            raise ValueError(
                f"attention_levels {self.attention_levels} and num_head_channels {self.num_head_channels} "
                f"need one value per level of channels {self.channels}")
        bad = [c for c in self.channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(
                f"norm_num_groups={self.norm_num_groups} does not divide channels {bad}; choose a "
                "norm_num_groups that divides every channel count (e.g. 8 for 16/32/64)")
        for level, (att, heads, ch) in enumerate(zip(self.attention_levels, self.num_head_channels, self.channels)):
            needs = att or level == n - 1
            if needs and (heads <= 0 or ch % heads):
                raise ValueError(
                    f"num_head_channels[{level}]={heads} must be > 0 and divide channels[{level}]={ch} "
                    "(levels with attention, and the deepest level, which feeds the middle block)")
        return self

    @property
    def downsampling(self) -> int:
        """Factor by which the U-Net shrinks a patch (patch sides must be multiples of it)."""
        return 2 ** (len(self.channels) - 1)

    def build(self):
        """A freshly initialised network (uses torch's global RNG: seed it around this call)."""
        from monai.networks.nets import DiffusionModelUNet

        return DiffusionModelUNet(
            spatial_dims=3, in_channels=1, out_channels=1,
            channels=tuple(self.channels), attention_levels=tuple(self.attention_levels),
            num_head_channels=tuple(self.num_head_channels), num_res_blocks=self.num_res_blocks,
            norm_num_groups=self.norm_num_groups,
        )


class NoiseConfig(Settings):
    """The forward (noising) process: T timesteps and its beta schedule."""

    num_train_timesteps: int = Field(200, ge=2, description="T, the number of training timesteps.")
    schedule: Literal["linear_beta", "scaled_linear_beta"] = Field("linear_beta", description="MONAI beta schedule.")
    beta_start: float = Field(1e-4, gt=0, lt=1, description="beta_1.")
    beta_end: float = Field(2e-3, gt=0, lt=1, description="beta_T.")

    @model_validator(mode="after")
    def _ordered(self) -> "NoiseConfig":
        if self.beta_end < self.beta_start:
            raise ValueError(f"beta_end {self.beta_end} must be >= beta_start {self.beta_start}")
        return self

    def ddpm(self):
        """MONAI ``DDPMScheduler`` used for training (``add_noise``)."""
        from monai.networks.schedulers import DDPMScheduler

        return DDPMScheduler(num_train_timesteps=self.num_train_timesteps, schedule=self.schedule,
                             beta_start=self.beta_start, beta_end=self.beta_end)

    def alphas_cumprod(self):
        """``alpha_bar[t]`` for t = 0..T-1 (float64 copy of MONAI's float32 values)."""
        import torch

        return self.ddpm().alphas_cumprod.to(torch.float64)


class TrainConfig(Settings):
    """Training on patches of healthy femurs (``metsynth diffusion train``)."""

    patch_size: tuple[int, int, int] = Field(
        (48, 96, 96), description="Training patch and harmonization window, (z, y, x) voxels.")
    batch_size: int = Field(1, ge=1, description="Patches per optimizer step.")
    learning_rate: float = Field(1e-4, gt=0, description="Adam's initial learning rate.")
    lr_decay: float = Field(0.999, gt=0, le=1, description="ExponentialLR gamma, applied once per epoch.")
    max_epochs: int = Field(5000, ge=1, description="Epochs (one epoch = patches_per_case patches of every case).")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimizer steps (-1: no limit).")
    patches_per_case: int = Field(1, ge=1, description="Patches per healthy case per epoch (not in the paper).")
    mask_margin_mm: float = Field(
        10.0, ge=0, description="Patch centres are drawn within the femur mask grown by this margin (mm).")
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="Exponential moving average of the weights (None: off; not in the paper). "
                                      "The export then holds the EMA weights.")
    max_timestep: int | None = Field(
        None, ge=0, description="Draw training timesteps in 0..max_timestep only (None: all of 0..T-1, the paper). "
        "SDEdit harmonization never runs above its start timestep, so a network trained only there spends all "
        "its steps on the noise levels it is used at (not in the paper; the demo's choice, docs/realism.md).")
    checkpoint_every_n_steps: int = Field(
        100, ge=1, description="Save last.ckpt every n optimizer steps (and at each epoch end).")
    log_every_n_steps: int = Field(
        10, ge=1, description="Lightning logging interval (the loss CSV records every step).")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (patches are cheap: 0 is usually fine).")
    memory_format: MemoryFormat = Field("auto", description=MEMORY_FORMAT_HELP + " Also the DDPM's harmonizations.")
    seed: int = Field(0, description="Seed of the initial weights, patch positions, timesteps and noise.")

    @field_validator("patch_size")
    @classmethod
    def _positive(cls, value):
        if min(value) < 4:
            raise ValueError(f"patch_size must be at least 4 voxels per axis, got {value}")
        return value


class HarmonizeConfig(Settings):
    """SDEdit-style refinement: noise to ``start_timestep``, denoise with DDIM."""

    start_timestep: int = Field(
        40, ge=0, description="Training timestep (0..T-1) the volume is noised to. The paper's lambda = 10 "
                              "read as ten DDIM steps of stride 4 gives 40; read as a training timestep, 10.")
    ddim_steps: int = Field(
        50, ge=1, description="DDIM steps over the full 0..T range (stride T // ddim_steps); only those at "
                              "or below start_timestep are run.")
    eta: float = Field(0.0, ge=0, description="DDIM stochasticity (0: deterministic DDIM, as in the paper).")
    draws: int = Field(
        1, ge=1, description="SDEdit runs averaged per region, their noise drawn in antithetic pairs (eps, -eps). "
                             "1: the paper's single run, which leaves the noise the denoiser does not take out "
                             "in the image; 2: one pair, which cancels it to first order, so the DDPM's correction "
                             "stays and its leftover noise goes (the draws share one batch: on a CPU two "
                             "windows cost about what one does).")
    clip_sample: bool = Field(True, description="Clip each predicted x0 to [-1, 1] (MONAI's default).")
    region: Literal["lesion", "volume"] = Field(
        "lesion", description="lesion: refine a box around each lesion and blend it back (much cheaper, "
                              "the rest of the femur is untouched); volume: tile the whole volume.")
    lesion_margin_mm: float = Field(5.0, ge=0, description="Box margin around each lesion (mm) refined at full weight.")
    feather_mm: float = Field(
        3.0, ge=0, description="Width (mm) over which a lesion box blends into the original image.")
    overlap: float = Field(0.25, ge=0, lt=1, description="Overlap of neighbouring windows (fraction of the patch).")
    sw_batch_size: int = Field(
        2, ge=1, description="Windows per forward pass (batch >= 2 is ~3x faster per window on CPU).")
    sigma_scale: float = Field(0.125, gt=0, description="Gaussian blending weight's sigma as a fraction of the window.")
    seed: int = Field(0, description="Run seed; each volume's noise comes from (seed, volume id).")
    ring_mm: float = Field(3.0, gt=0, description="Consistency check: width of the bone ring around each lesion (mm).")
    min_contrast_ratio: float = Field(
        0.5, ge=0, description="Consistency check: flag a lesion whose contrast to its ring falls below this "
                               "fraction of its contrast before harmonization.")
    min_contrast: float = Field(
        0.02, ge=0, description="Consistency check: lesions with a smaller contrast before (standardized units) "
                                "are reported but not judged.")
    min_lesion_voxels: int = Field(
        8, ge=1, description="Consistency check: label components with fewer voxels (fragments) are reported "
                             "but not judged.")
    drop_inconsistent: bool = Field(
        False, description="Mark volumes flagged by the consistency check as not kept (kept=false in index.csv), "
                           "so segmentation training skips them; by default they are only flagged.")
    image_storage: Literal["float32", "int16"] = Field(
        "float32", description="Voxel type of the harmonized images (.nii.gz, gzip level 1). float32: the "
                               "values as computed. int16: one HU per step of the HU window the synthetic set's "
                               "cohort was prepared with (its config.yaml), round-trip error <= 0.5 HU, with "
                               "NIfTI scl_slope/scl_inter so every NIfTI reader returns the float values; about "
                               "40 % of the float32 bytes (benchmarks/RESULTS.md, 'Storage at paper scale'). A "
                               "set without that record gets a step of 2^-14 of [-1, 1]. Paper preset: int16.")
    image_layout: Literal["whole", "changed_box"] = Field(
        "whole", description="How each harmonized image is laid out on disk. whole (default): the whole volume. "
                             "changed_box: only the box where it differs from its synthetic image (region "
                             "'lesion' changes the lesion's neighbourhood only), with a <id>.base.json record "
                             "naming that image and its SHA-256; metsynth reads the whole volume back, so the "
                             "synthetic set must stay where it is. A volume changed over more than half its "
                             "voxels (region 'volume') is written whole.")


class DiffusionConfig(Settings):
    """Everything that defines a DDPM, its training and the harmonization it is used for."""

    preset: str = Field("custom", description="Name of the preset this config started from (informative).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    harmonize: HarmonizeConfig = Field(default_factory=HarmonizeConfig)

    @model_validator(mode="after")
    def _consistent(self) -> "DiffusionConfig":
        factor = self.model.downsampling
        bad = [p for p in self.train.patch_size if p % factor]
        if bad:
            raise ValueError(
                f"train.patch_size {self.train.patch_size} must be divisible by {factor} on every axis "
                f"(the U-Net has {len(self.model.channels)} levels)")
        check_harmonize(self.harmonize, self.noise, self.train)
        return self


def check_harmonize(harmonize: HarmonizeConfig, noise: NoiseConfig, train: TrainConfig | None = None) -> None:
    """Raise ValueError if the harmonization settings do not fit the model's noise schedule (and,
    with ``train``, the timesteps it was trained on)."""
    big_t = noise.num_train_timesteps
    if train is not None and train.max_timestep is not None and harmonize.start_timestep > train.max_timestep:
        raise ValueError(f"harmonize.start_timestep {harmonize.start_timestep} is above train.max_timestep "
                         f"{train.max_timestep}: the network never learned to denoise from there; start at most "
                         f"at {train.max_timestep} or retrain with a larger train.max_timestep")
    if harmonize.start_timestep > big_t - 1:
        raise ValueError(f"harmonize.start_timestep {harmonize.start_timestep} must be <= T - 1 = {big_t - 1}")
    if harmonize.ddim_steps > big_t:
        raise ValueError(f"harmonize.ddim_steps {harmonize.ddim_steps} must be <= T = {big_t}")


PRESETS: dict[str, dict[str, Any]] = {
    # Section 2.3.2 of the paper (a GPU; the paper used a 24 GB RTX A5000 for one week).
    "paper": {
        "preset": "paper",
        "model": {"channels": [128, 256, 512], "attention_levels": [False, False, True],
                  "num_head_channels": [0, 0, 512], "num_res_blocks": 2, "norm_num_groups": 32},
        "noise": {"num_train_timesteps": 200, "schedule": "linear_beta", "beta_start": 1e-4, "beta_end": 2e-3},
        "train": {"patch_size": [48, 96, 96], "batch_size": 1, "learning_rate": 1e-4, "lr_decay": 0.999,
                  "max_epochs": 5000, "patches_per_case": 1, "ema_decay": None, "num_workers": 4},
        # lambda = 10 read as ten DDIM steps of stride 4 (see the module docstring); the paper
        # harmonized whole volumes.
        "harmonize": {"start_timestep": 40, "ddim_steps": 50, "region": "volume", "sw_batch_size": 4,
                      "image_storage": "int16"},
    },
    # A laptop CPU: trains in minutes on 2 cores (~1 s per step); same noise process.
    "cpu": {
        "preset": "cpu",
        "model": {"channels": [16, 32, 64], "attention_levels": [False, False, True],
                  "num_head_channels": [0, 0, 64], "num_res_blocks": 1, "norm_num_groups": 8},
        "noise": {"num_train_timesteps": 200, "schedule": "linear_beta", "beta_start": 1e-4, "beta_end": 2e-3},
        "train": {"patch_size": [24, 48, 48], "batch_size": 2, "learning_rate": 5e-4, "lr_decay": 0.999,
                  "max_epochs": 1000, "max_steps": 300, "patches_per_case": 4, "ema_decay": 0.99,
                  "checkpoint_every_n_steps": 50},
        "harmonize": {"start_timestep": 40, "ddim_steps": 50, "region": "lesion", "sw_batch_size": 2},
    },
    # Tests: ~0.2 M parameters, 16 x 32 x 32 patches, a fraction of a second per step.
    "tiny": {
        "preset": "tiny",
        "model": {"channels": [8, 16, 16], "attention_levels": [False, False, False],
                  "num_head_channels": [0, 0, 16], "num_res_blocks": 1, "norm_num_groups": 8},
        "noise": {"num_train_timesteps": 200, "schedule": "linear_beta", "beta_start": 1e-4, "beta_end": 2e-3},
        "train": {"patch_size": [16, 32, 32], "batch_size": 2, "learning_rate": 2e-3, "lr_decay": 1.0,
                  "max_epochs": 50, "max_steps": 4, "patches_per_case": 2, "checkpoint_every_n_steps": 1,
                  "log_every_n_steps": 1},
        "harmonize": {"start_timestep": 20, "ddim_steps": 20, "region": "lesion", "lesion_margin_mm": 3.0,
                      "feather_mm": 2.0, "sw_batch_size": 2},
    },
}

DEFAULT_PRESET = "cpu"


def diffusion_config(preset: str | None = None, overrides: dict[str, Any] | str | os.PathLike | None = None,
                     **changes: Any) -> DiffusionConfig:
    """The named preset, with a mapping or a YAML file of overrides, then keyword changes.

    ``diffusion_config("paper", "my.yaml", harmonize={"start_timestep": 10})``. Without
    ``preset``, the overrides' own ``preset:`` key picks the base (so a saved config reloads
    as itself), else ``cpu``. Unknown keys raise :class:`ConfigError` with a suggestion.
    """
    return resolve_preset(DiffusionConfig, PRESETS, preset, overrides, changes, "diffusion", DEFAULT_PRESET)


__all__ = [
    "DEFAULT_PRESET", "DiffusionConfig", "HarmonizeConfig", "ModelConfig", "NoiseConfig", "PRESETS",
    "TrainConfig", "check_harmonize", "deep_merge", "diffusion_config",
]
