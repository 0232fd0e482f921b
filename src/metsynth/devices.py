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


def check_trainer(accelerator: str = "auto", devices: int | str | list[int] = "auto", strategy: str = "auto",
                  num_nodes: int = 1, precision: str | int = "32-true") -> None:
    """Raise ConfigError (one line) if Lightning cannot run these trainer settings on this machine.

    Called before a training writes anything, so a run folder is never claimed by a training that
    cannot start (e.g. ``--accelerator gpu`` where there is no GPU). Uses Lightning's own check
    (the connector the Trainer builds), so the answer is the Trainer's.
    """
    try:
        from lightning.fabric.utilities.exceptions import MisconfigurationException
        from lightning.pytorch.trainer.connectors.accelerator_connector import _AcceleratorConnector
    except ImportError:  # another Lightning layout: the Trainer itself will tell
        return
    try:
        _AcceleratorConnector(accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
                              precision=precision)
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"trainer settings accelerator={accelerator!r}, devices={devices!r}, strategy={strategy!r}, "
                          f"precision={precision!r} cannot run here: {first} (`--accelerator auto` picks what "
                          "this machine has)") from None
