"""The noise-prediction network harmonization uses: reading a DDPM checkpoint (an exported
``model.pt`` or a Lightning ``.ckpt``, ``weights_only``) into a :class:`Denoiser`, once per worker
process (:func:`cached_denoiser`)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import read_yaml
from ..devices import resolve_device, to_memory_format, uses_channels_last
from ..errors import ConfigError, InputError
from ..fileio import file_sha256
from .presets import DiffusionConfig

PRECISIONS = ("32", "16-mixed", "bf16-mixed")


# ----------------------------------------------------------------------------- the network
@dataclass
class Denoiser:
    """A loaded noise-prediction network with what it was trained with."""

    model: Any  # torch.nn.Module, eval mode, on ``device``
    config: DiffusionConfig
    path: Path
    sha256: str
    weights: str  # "ema" or "final"
    device: Any  # torch.device
    precision: str = "32"
    channels_last: bool = False  # windows go through the network channels-last (metsynth.devices.uses_channels_last)
    _alphas: Any = field(default=None, repr=False)

    @property
    def alphas_cumprod(self):
        if self._alphas is None:
            self._alphas = self.config.noise.alphas_cumprod()
        return self._alphas

    def predict(self, x, t: int):
        """Noise estimate for a batch of windows ``x`` (B, 1, *patch) at timestep ``t``."""
        import torch

        n = x.shape[0]
        if n == 1 and x.device.type == "cpu":
            # Batch-1 3D convolutions with few channels hit a slow CPU path: a batch of two
            # copies is ~3x faster than one window alone (GroupNorm: samples stay independent).
            return self.predict(torch.cat([x, x]), t)[:1]
        timesteps = torch.full((n,), int(t), dtype=torch.long, device=x.device)
        x = to_memory_format(x, self.channels_last)
        with torch.no_grad():
            if self.precision != "32" and x.device.type == "cuda":
                dtype = torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16
                with torch.autocast("cuda", dtype=dtype):
                    return self.model(x, timesteps=timesteps).float()
            return self.model(x, timesteps=timesteps)


def _from_lightning(ckpt: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The DDPM's weights (the EMA copy when it was updated) and settings out of a training checkpoint."""
    config = (ckpt.get("hyper_parameters") or {}).get("config")
    if config is None:
        raise InputError("Lightning checkpoint without the metsynth settings (hyper_parameters.config)")
    state = ckpt["state_dict"]
    ema = {k[len("ema.module."):]: v for k, v in state.items() if k.startswith("ema.module.")}
    n_avg = state.get("ema.n_averaged")
    if ema and (n_avg is None or int(n_avg) > 0):
        return ema, {"weights": "ema", "config": config}
    return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}, {"weights": "final",
                                                                                       "config": config}


def read_checkpoint(checkpoint: str | os.PathLike) -> tuple[dict[str, Any], DiffusionConfig, str]:
    """(state_dict, settings, weights kind) of an exported ``model.pt`` or a Lightning ``.ckpt``
    (:func:`metsynth.checkpoints.load_model`, ``weights_only``)."""
    from ..checkpoints import load_model

    state, meta, path = load_model(checkpoint, "ddpm", from_lightning=_from_lightning)
    if not isinstance(meta.get("config"), dict):
        raise InputError(f"{path}: not a metsynth DDPM description (no settings 'config')")
    config = DiffusionConfig.from_dict(meta["config"], source=str(path), error=InputError)
    if not all(hasattr(v, "shape") for v in state.values()):
        raise InputError(f"{path}: expected a state_dict (name -> tensor)")
    return state, config, str(meta.get("weights", "final"))


def checkpoint_settings(checkpoint: str | os.PathLike) -> DiffusionConfig:
    """The settings stored with a checkpoint (reads only model.yaml for an exported model.pt)."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "model.pt"
    yaml_path = path.with_suffix(".yaml")
    if path.suffix == ".pt" and path.is_file() and yaml_path.is_file():
        info = read_yaml(yaml_path, error=InputError)
        if isinstance(info, dict) and info.get("network") not in (None, "ddpm"):  # e.g. the U-Net of `metsynth train`
            from ..checkpoints import wrong_network

            raise wrong_network(path, info.get("network"), "ddpm")
        if isinstance(info, dict) and info.get("format") == "metsynth-unet/1":
            from ..checkpoints import wrong_network

            raise wrong_network(path, "unet", "ddpm")
        if "config" in info:
            return DiffusionConfig.from_dict(info["config"], source=str(yaml_path), error=InputError)
    return read_checkpoint(path)[1]


def load_denoiser(checkpoint: str | os.PathLike, device: str | None = "auto", precision: str = "32") -> Denoiser:
    """Load weights safely (``weights_only=True``) into a freshly built network, in eval mode."""
    if str(precision) not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not supported; use one of {', '.join(PRECISIONS)}")
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "model.pt"
    state, config, kind = read_checkpoint(path)
    model = config.model.build()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"{path}: weights do not fit the network described by its settings "
                         f"({len(missing)} missing, {len(unexpected)} unexpected tensors, e.g. "
                         f"{(list(missing) + list(unexpected))[:3]})")
    torch_device = resolve_device(device)
    model = model.to(torch_device).eval()
    channels_last = uses_channels_last(torch_device, config.train.memory_format)
    to_memory_format(model, channels_last)
    return Denoiser(model, config, path, file_sha256(path), kind, torch_device, str(precision), channels_last)


_DENOISERS: dict[tuple[Any, ...], Denoiser] = {}
_CACHE_LOCK = threading.Lock()  # Dask runs several tasks in threads of one process


def cached_denoiser(checkpoint: str, device: str, precision: str) -> Denoiser:
    """Load the network once per worker process (the last one used is kept)."""
    path = Path(checkpoint)
    stamp = path.stat().st_mtime_ns if path.is_file() else None
    key = (str(checkpoint), stamp, device, precision)
    with _CACHE_LOCK:
        if key not in _DENOISERS:
            _DENOISERS.clear()
            _DENOISERS[key] = load_denoiser(checkpoint, device, precision)
        return _DENOISERS[key]
