"""SDEdit refinement: the network's noise estimate window by window, noising to ``start_timestep``
and DDIM back to 0 (:func:`refine_array`), and one volume refined in its lesion boxes or whole
(:func:`harmonize_volume`) with the noise of its own seed (:func:`volume_seed`)."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ..errors import InputError
from ..volume import Volume, check_finite
from .denoiser import Denoiser
from .presets import HarmonizeConfig
from .regions import Box, feather_weight, lesion_boxes
from .schedule import ddim_timesteps, sdedit

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- refinement
def predict_noise_tiled(denoiser: Denoiser, x, t: int, config: HarmonizeConfig):
    """The network's noise estimate over a (1, 1, Z, Y, X) tensor, window by window (Gaussian blend)."""
    from monai.inferers import sliding_window_inference

    patch = tuple(denoiser.config.train.patch_size)
    if tuple(x.shape[2:]) == patch:
        return denoiser.predict(x, t)
    return sliding_window_inference(
        x, roi_size=patch, sw_batch_size=config.sw_batch_size, predictor=lambda w: denoiser.predict(w, t),
        overlap=config.overlap, mode="gaussian", sigma_scale=config.sigma_scale, padding_mode="replicate",
        sw_device=x.device, device=x.device, progress=False,
    )


def count_windows(shape, patch, overlap: float) -> int:
    """Number of sliding windows MONAI uses over ``shape`` (for logs and benchmarks)."""
    n = 1
    for size, p in zip(shape, patch):
        if size <= p:
            continue
        stride = max(int(p * (1 - overlap)), 1)
        n *= math.ceil((size - p) / stride) + 1
    return n


def refine_array(array: np.ndarray, denoiser: Denoiser, config: HarmonizeConfig, generator) -> np.ndarray:
    """SDEdit on a 3D float array in [-1, 1]: noise to ``start_timestep``, DDIM back to 0.

    With ``config.draws > 1`` the result is the mean of that many runs whose start noise comes in
    antithetic pairs (``eps``, ``-eps``; an odd last draw is a fresh one). What the denoiser does
    not take out of the noise it was given is, to first order, linear in that noise, so a pair
    cancels it, while the correction the network makes to the image (its move towards the
    images it was trained on) is the same in both runs and stays. The runs go through the
    network as one batch (on a CPU a batch of two windows costs about what one does, see
    :meth:`Denoiser.predict`). ``draws = 1`` consumes the generator exactly as before (same bytes).
    """
    import torch

    timesteps = ddim_timesteps(denoiser.config.noise.num_train_timesteps, config.ddim_steps, config.start_timestep)
    x0 = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    noises = []
    for draw in range(config.draws):  # on the CPU: same bytes anywhere
        noises.append(torch.randn(x0.shape, generator=generator, dtype=torch.float32) if draw % 2 == 0
                      else -noises[-1])
    noise = torch.cat(noises)
    device = denoiser.device
    with torch.no_grad():
        out = sdedit(
            x0.expand(config.draws, *x0.shape[1:]).to(device), lambda x, t: predict_noise_tiled(denoiser, x, t, config),
            timesteps, denoiser.alphas_cumprod, noise.to(device), eta=config.eta, clip_sample=config.clip_sample,
            generator=generator,
        )
    return out[:, 0].float().mean(dim=0).cpu().numpy()


def volume_seed(run_seed: int, volume_id: str) -> int:
    """The seed of one volume's noise: ``SeedSequence([run_seed, stable_hash(volume_id)])``."""
    from ..synthesis.attempts import stable_hash

    seq = np.random.SeedSequence([int(run_seed), stable_hash(volume_id)])
    return int(seq.generate_state(1, dtype=np.uint64)[0])


def harmonize_volume(image: Volume, label: Volume | None, denoiser: Denoiser, config: HarmonizeConfig,
                     seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Refine one volume; returns the new array (float32, same grid) and what was done."""
    import torch

    check_finite(image)
    arr = np.asarray(image.array, dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1.001 or hi > 1.001:
        raise InputError(f"{image.name}: intensities span [{lo:g}, {hi:g}], not [-1, 1]; harmonize volumes made "
                         "from a prepared cohort (standardized by `metsynth prepare`)")
    patch = tuple(denoiser.config.train.patch_size)
    timesteps = ddim_timesteps(denoiser.config.noise.num_train_timesteps, config.ddim_steps, config.start_timestep)
    generator = torch.Generator().manual_seed(int(seed))
    info: dict[str, Any] = {"timesteps": timesteps, "draws": config.draws,
                            "network_evaluations_per_window": len(timesteps) * config.draws}
    if config.region == "volume":
        out = refine_array(arr, denoiser, config, generator)
        info["boxes"] = [Box((0, 0, 0), tuple(arr.shape)).to_dict()]  # type: ignore[arg-type]
        info["windows"] = count_windows(arr.shape, patch, config.overlap)
        return np.clip(out, -1, 1).astype(np.float32), info
    if label is None:
        raise InputError(f"{image.name}: region 'lesion' needs the volume's label file")
    if label.shape != image.shape:
        raise InputError(f"{label.name}: label shape {label.shape} differs from its image {image.shape}")
    boxes = lesion_boxes(label.array, image.spacing, config.lesion_margin_mm, config.feather_mm, patch)
    if not boxes:
        log.warning("%s: the label has no lesion voxel; the volume is copied unchanged", image.name)
    out = arr.copy()
    windows = 0
    for box in boxes:
        region = arr[box.slices]
        refined = np.clip(refine_array(region, denoiser, config, generator), -1, 1)
        weight = feather_weight(box, arr.shape, image.spacing, config.feather_mm)
        out[box.slices] = (weight * refined + (1.0 - weight) * region).astype(np.float32)
        windows += count_windows(box.shape, patch, config.overlap)
    info["boxes"] = [b.to_dict() for b in boxes]
    info["windows"] = windows
    return out, info
