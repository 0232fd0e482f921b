"""Device selection shared by every stage that runs a network (DDPM, U-Net)."""

from __future__ import annotations

from .errors import ConfigError


def resolve_device(device: str | None = "auto"):
    """``auto`` -> cuda if available, else cpu; ``gpu``/``cuda``/``cuda:N`` -> that GPU (error if
    absent); ``cpu`` -> cpu. Returns a ``torch.device`` (``str()`` of it for picklable tasks)."""
    import torch

    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name in ("gpu", "cuda") or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: no CUDA GPU is available here; use --device cpu or auto")
        return torch.device("cuda" if name == "gpu" else name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device {device!r} is not supported; use auto, cpu, gpu or cuda:N")
