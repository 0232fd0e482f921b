"""The Lightning module: Dice loss on patches, sliding-window validation Dice on whole held-out
volumes, SGD with an exponential learning-rate decay."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..devices import to_memory_format
from .network import build_network, dice_of, sliding_window_logits
from .presets import SegmentationConfig

try:  # Lightning is a hard dependency; the guard keeps `import metsynth.segmentation` light
    import lightning as L
except ImportError:  # pragma: no cover - depends on the installation
    L = None  # type: ignore[assignment]


class SegmentationModule(L.LightningModule if L is not None else object):  # type: ignore[misc]
    """Dice loss on patches, sliding-window validation Dice on whole held-out volumes."""

    def __init__(self, meta: dict[str, Any]) -> None:
        super().__init__()
        # meta: plain data only (config dump, lr schedule, data geometry) -> weights_only-safe
        self.save_hyperparameters({"meta": meta})
        self.config = SegmentationConfig.from_dict(meta["config"], source="checkpoint config")
        self.lr = float(meta["lr"])
        self.lr_decay = float(meta["lr_decay"])
        self.net = build_network(self.config)
        from monai.losses import DiceLoss

        self.loss_fn = DiceLoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
        self._val_dice: list[float] = []
        self.channels_last = False  # set for the device the fit runs on (setup)

    def setup(self, stage: str) -> None:
        """The network's layout for the fit's device, before the strategy moves it there, wraps it (DDP's
        gradient buckets follow the parameters' strides) and builds the optimizer on its parameters."""
        from ..devices import uses_channels_last

        trainer = self.trainer
        self.channels_last = uses_channels_last(trainer.strategy.root_device, self.config.trainer.memory_format,
                                                trainer.world_size)
        to_memory_format(self.net, self.channels_last)

    def forward(self, x):
        return self.net(to_memory_format(x, self.channels_last))

    def training_step(self, batch, batch_idx):
        logits = self(batch["image"])
        loss = self.loss_fn(logits, batch["label"].float())
        bs = batch["image"].shape[0]
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_dice = []

    def validation_step(self, batch, batch_idx):
        logits = sliding_window_logits(self.net, batch["image"], self.config, channels_last=self.channels_last)
        pred = logits.argmax(1, keepdim=True)
        for i in range(pred.shape[0]):
            self._val_dice.append(dice_of(pred[i], batch["label"][i] > 0))

    def on_validation_epoch_end(self) -> None:
        if self._val_dice:
            self.log("val_dice", float(np.mean(self._val_dice)), prog_bar=True, sync_dist=True)

    def on_train_epoch_start(self) -> None:
        opt = self.optimizers()
        if not isinstance(opt, list):
            self.log("lr", opt.param_groups[0]["lr"], on_step=False, on_epoch=True)

    def configure_optimizers(self):
        import torch

        optim = self.config.optim
        opt = torch.optim.SGD(self.net.parameters(), lr=self.lr, momentum=optim.momentum,
                              weight_decay=optim.weight_decay)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.lr_decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch", "frequency": 1}}
