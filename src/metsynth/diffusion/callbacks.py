"""The DDPM training's Lightning callbacks: the loss of every step (``loss.csv``, ``loss.png``, kept in
the checkpoint so a resumed run continues the curve) and ``last.ckpt`` every n steps, atomically."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from ..fileio import atomic_path, temp_path_for


class LossHistory(Callback):
    """Records the loss and learning rate of every optimizer step; writes loss.csv and loss.png.

    Its rows are saved in the Lightning checkpoint, so a resumed run continues the same curve.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.rows: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        return "LossHistory"

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        self.rows.append({
            "step": int(trainer.global_step),
            "epoch": int(trainer.current_epoch),
            "loss": float(loss.detach().float().cpu()),
            "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
        })

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.write_csv()

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.write_csv()
            self.write_png()

    def on_exception(self, trainer, pl_module, exception) -> None:
        if trainer.is_global_zero:
            self.write_csv()

    def write_csv(self) -> Path:
        path = self.out_dir / "loss.csv"
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["step", "epoch", "loss", "lr"])
            writer.writeheader()
            writer.writerows(self.rows)
        return path

    def write_png(self) -> Path | None:
        if not self.rows:
            return None
        return plot_loss(self.rows, self.out_dir / "loss.png")


class StepCheckpoint(Callback):
    """Saves ``last.ckpt`` (atomically) every n optimizer steps and after the last step.

    Saving at the end of a training batch is the state Lightning resumes from exactly (its
    end-of-fit and end-of-epoch states restart the epoch counters differently).
    """

    def __init__(self, path: str | os.PathLike, every_n_steps: int) -> None:
        self.path = Path(path)
        self.every_n_steps = int(every_n_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        final = (0 < trainer.max_steps <= step) or (
            trainer.is_last_batch and trainer.max_epochs is not None
            and trainer.current_epoch + 1 >= trainer.max_epochs)
        if step % self.every_n_steps == 0 or final:
            self.save(trainer)

    def save(self, trainer) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path_for(self.path)
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier("metsynth-checkpoint")


def plot_loss(rows: list[dict[str, Any]], path: Path) -> Path:
    """Loss per step (log scale) with a moving average, as a PNG (matplotlib Figure, no pyplot)."""
    import numpy as np
    from matplotlib.figure import Figure

    steps = np.array([r["step"] for r in rows], dtype=float)
    loss = np.array([r["loss"] for r in rows], dtype=float)
    fig = Figure(figsize=(6, 3.5), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, loss, lw=0.6, alpha=0.5, color="tab:blue", label="loss per step")
    window = max(1, len(loss) // 20)
    if window > 1:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, lw=1.5, color="tab:red", label=f"moving average ({window})")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("MSE of predicted noise")
    ax.set_title("DDPM training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
