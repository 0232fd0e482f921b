"""Timestep sequences and the SDEdit arithmetic: noise an image to ``t``, denoise it with DDIM.

Notation (MONAI's indexing): ``alpha_bar[t]`` for ``t = 0..T-1`` is the cumulative product of
``1 - beta`` up to and including step ``t``; ``t = 0`` is the least noisy level, and a DDIM step
from ``t = 0`` lands on the clean image (``alpha_bar = 1``, MONAI's ``set_alpha_to_one``).

Why not ``DDIMScheduler.set_timesteps`` / ``step``: in MONAI 1.6.1, ``set_timesteps(50)`` over
T = 200 builds a rounded ``linspace`` (gaps of 4 and 5) while ``step()`` assumes a fixed stride
``T // 50 = 4`` for the previous timestep, and ``DiffusionInferer.sample`` has no start
timestep. Here the sequence is explicit, each step names both of its timesteps, and
:func:`ddim_step` is checked against ``DDIMScheduler.step`` on the stride grid in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import ConfigError


def ddim_timesteps(num_train_timesteps: int, ddim_steps: int, start_timestep: int) -> list[int]:
    """The decreasing training timesteps at which the network is evaluated.

    The DDIM grid over the full range has stride ``s = T // ddim_steps``: ``0, s, 2s, ...,
    (ddim_steps - 1) s``. Only grid points at or below ``start_timestep`` are run; when
    ``start_timestep`` is not on the grid, it is prepended, so the noised image enters at exactly
    ``start_timestep`` and the first step is shorter than ``s``.

    >>> ddim_timesteps(200, 50, 40)     # the paper preset: lambda = 10 DDIM steps of stride 4
    [40, 36, 32, 28, 24, 20, 16, 12, 8, 4, 0]
    >>> ddim_timesteps(200, 50, 10)     # the other reading: lambda = training timestep 10
    [10, 8, 4, 0]

    ``len(result)`` network evaluations are made; the last one (at t = 0) returns the clean image.
    """
    if num_train_timesteps < 1:
        raise ConfigError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    if not 1 <= ddim_steps <= num_train_timesteps:
        raise ConfigError(f"ddim_steps must be in 1..{num_train_timesteps} (T), got {ddim_steps}")
    if not 0 <= start_timestep <= num_train_timesteps - 1:
        raise ConfigError(
            f"start_timestep must be in 0..{num_train_timesteps - 1} (T - 1), got {start_timestep}")
    stride = num_train_timesteps // ddim_steps
    grid = [i * stride for i in range(ddim_steps) if i * stride <= start_timestep]
    if grid[-1] != start_timestep:
        grid.append(start_timestep)
    return grid[::-1]


def noise_to(x0: torch.Tensor, noise: torch.Tensor, t: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Equation (2) of the paper: ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps``."""
    abar = float(alphas_cumprod[t])
    return x0 * abar ** 0.5 + noise * (1.0 - abar) ** 0.5


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, alphas_cumprod: torch.Tensor,
              eta: float = 0.0, clip_sample: bool = True,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update from ``t`` to ``t_prev`` (``t_prev < 0``: to the clean image).

    Returns ``(x_{t_prev}, predicted x0)``; formulas (12) and (16) of Song et al. (DDIM), as in
    MONAI's ``DDIMScheduler.step`` but with the previous timestep given explicitly. With
    ``eta > 0`` fresh noise is drawn from ``generator`` on the CPU (same bytes on any device).
    """
    abar_t = float(alphas_cumprod[t])
    abar_prev = float(alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
    x0 = (x_t - (1.0 - abar_t) ** 0.5 * eps) / abar_t ** 0.5
    if clip_sample:
        x0 = torch.clamp(x0, -1.0, 1.0)
    variance = (1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)
    std = eta * max(variance, 0.0) ** 0.5
    direction = max(1.0 - abar_prev - std ** 2, 0.0) ** 0.5 * eps
    x_prev = abar_prev ** 0.5 * x0 + direction
    if eta > 0:
        fresh = torch.randn(x_t.shape, generator=generator, dtype=torch.float32).to(x_t.device, x_t.dtype)
        x_prev = x_prev + std * fresh
    return x_prev, x0


def sdedit(x0: torch.Tensor, predict_eps: Callable[[torch.Tensor, int], torch.Tensor], timesteps: Sequence[int],
           alphas_cumprod: torch.Tensor, noise: torch.Tensor, eta: float = 0.0, clip_sample: bool = True,
           generator: torch.Generator | None = None,
           callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Noise ``x0`` to ``timesteps[0]`` with ``noise``, then denoise through ``timesteps`` to t = -1.

    ``predict_eps(x_t, t)`` returns the network's noise estimate for the whole tensor (tiling,
    if any, happens inside it). ``callback(t, x)`` is called after each step (progress).
    """
    timesteps = list(timesteps)
    if not timesteps or any(b >= a for a, b in zip(timesteps, timesteps[1:])):
        raise ConfigError(f"timesteps must be a non-empty decreasing sequence, got {timesteps}")
    x = noise_to(x0, noise, timesteps[0], alphas_cumprod)
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        eps = predict_eps(x, t)
        x, _ = ddim_step(x, eps, t, t_prev, alphas_cumprod, eta=eta, clip_sample=clip_sample, generator=generator)
        if callback is not None:
            callback(t, x)
    return x


__all__ = ["ddim_step", "ddim_timesteps", "noise_to", "sdedit"]
