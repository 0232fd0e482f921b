"""Lightning callbacks of a training: the data-wait monitor (``timing.json``) and the training
curves (``curves.png``, redrawn from the logged history)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from ..fileio import atomic_path

try:  # Lightning is a hard dependency; the guard keeps `import metsynth.segmentation` light
    from lightning.pytorch.callbacks import Callback as _Callback
except ImportError:  # pragma: no cover - depends on the installation
    _Callback = object  # type: ignore[assignment,misc]


class DataWaitMonitor(_Callback):  # type: ignore[misc,valid-type]
    """Time spent waiting for a batch (fetch + transfer) versus in the step (forward, backward,
    optimizer), per epoch and in total; logs ``data_wait_share`` each epoch.

    The first batch of each epoch (worker start-up) is counted apart, in ``startup_s``, so the
    share describes the steady state. On CUDA the step end is synchronized for honest timing.
    """

    def __init__(self, sync_cuda: bool = True) -> None:
        super().__init__()
        self.sync_cuda = sync_cuda
        self.reset()

    def reset(self) -> None:
        self.wait_s = 0.0
        self.step_s = 0.0
        self.startup_s = 0.0
        self.steps = 0
        self._epoch_wait = 0.0
        self._epoch_step = 0.0
        self._last = None
        self._first = True
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = time.perf_counter()
        self._first = True
        self._epoch_wait = 0.0
        self._epoch_step = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last is not None:
            waited = now - self._last
            if self._first:
                self.startup_s += waited
            else:
                self.wait_s += waited
                self._epoch_wait += waited
        self._first = False
        self._start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.sync_cuda:
            import torch

            if torch.cuda.is_available() and pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        step = now - self._start
        self.step_s += step
        self._epoch_step += step
        self.steps += 1
        self._last = now

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        total = self._epoch_wait + self._epoch_step
        if total > 0:
            pl_module.log("data_wait_share", self._epoch_wait / total, on_step=False, on_epoch=True)
        self._last = None  # validation time is not data wait

    def summary(self) -> dict[str, float]:
        busy = self.wait_s + self.step_s
        return {
            "steps": self.steps,
            "step_s": self.step_s,
            "data_wait_s": self.wait_s,
            "startup_wait_s": self.startup_s,
            "data_wait_share": self.wait_s / busy if busy > 0 else float("nan"),
            "steps_per_s": self.steps / (busy + self.startup_s) if busy > 0 else float("nan"),
            "steady_steps_per_s": self.steps / busy if busy > 0 else float("nan"),
        }


class CurvePlotter(_Callback):  # type: ignore[misc,valid-type]
    """Redraws ``curves.png`` from the logged history after a validation or a training epoch, at
    most every ``min_interval_s`` seconds (rank zero only; the run's end draws the final one).

    A drawing costs ~0.4 s: on CPU runs whose epochs last a second it was a third of the training
    time; epochs of minutes (a GPU with the paper preset) still get a fresh plot after each.
    """

    def __init__(self, path: Path, min_interval_s: float = 30.0) -> None:
        super().__init__()
        self.path = Path(path)
        self.min_interval_s = min_interval_s
        self._last_draw = -math.inf
        self.history: dict[str, list[tuple[int, float]]] = {"train_loss": [], "val_dice": []}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get("train_loss_epoch")
        if value is not None:
            self.history["train_loss"].append((trainer.current_epoch, float(value)))
        if not trainer.val_dataloaders or trainer.sanity_checking:
            self._draw(trainer)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get("val_dice")
        if value is not None:
            self.history["val_dice"].append((trainer.current_epoch, float(value)))
        self._draw(trainer)

    def _draw(self, trainer) -> None:
        now = time.monotonic()
        if trainer.is_global_zero and now - self._last_draw >= self.min_interval_s:
            plot_curves(self.history, self.path)
            self._last_draw = now


def plot_curves(history: dict[str, list[tuple[int, float]]], path: str | os.PathLike) -> Path:
    """A PNG of the training Dice loss per epoch and, where the training validated, the validation
    Dice in a second panel (no empty panel when ``val_cases: 0``); integer epoch ticks
    (matplotlib, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = [("train_loss", "training Dice loss", "tab:blue")]
    if history.get("val_dice"):  # val_cases: 0 logs none (the epoch bound ends training)
        panels.append(("val_dice", "validation Dice", "tab:green"))
    fig = Figure(figsize=(4 * len(panels), 3.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, label, colour) in zip(axes, panels):
        points = history.get(key) or []
        if points:
            x, y = zip(*points)
            ax.plot(x, y, marker="o" if len(points) < 30 else None, ms=3, color=colour)
        else:
            ax.text(0.5, 0.5, f"no {label} logged yet", ha="center", va="center", color="0.4",
                    transform=ax.transAxes)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if key == "val_dice":
            ax.set_ylim(0, 1)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def history_from_csv(metrics_csv: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch train_loss and val_dice from a CSVLogger ``metrics.csv`` (all resumes included)."""
    import pandas as pd

    table = pd.read_csv(metrics_csv)
    out: dict[str, list[tuple[int, float]]] = {}
    for key, column in (("train_loss", "train_loss_epoch"), ("val_dice", "val_dice")):
        if column in table.columns:
            rows = table[["epoch", column]].dropna().groupby("epoch")[column].last()
            out[key] = [(int(e), float(v)) for e, v in rows.items()]
        else:
            out[key] = []
    return out
