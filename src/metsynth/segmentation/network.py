"""The segmentation network: the 3D U-Net, its Dice, its sliding-window logits, and its weights
(``model.pt`` written and read through :mod:`metsynth.checkpoints`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..checkpoints import load_model, save_model
from ..devices import to_memory_format
from ..errors import InputError
from .patches import AIR
from .presets import InferenceConfig, SegmentationConfig


def build_network(config: SegmentationConfig):
    """MONAI ``UNet``: 3D, 1 input channel (CT), 2 output channels (background, lesion)."""
    from monai.networks.nets import UNet

    net = config.network
    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=tuple(net.channels),
                strides=net.resolved_strides, num_res_units=net.num_res_units, norm=net.norm,
                dropout=net.dropout)


def dice_of(pred, truth) -> float:
    """Dice of two binary tensors (validation): :func:`metsynth.evaluation.metrics.dice_score`,
    1.0 when both are empty."""
    from ..evaluation.metrics import dice_score

    flat = (1, 1, -1)  # a count: the shape does not matter, channel axes included
    return dice_score(pred.detach().bool().cpu().numpy().reshape(flat),
                      truth.detach().bool().cpu().numpy().reshape(flat))


def sliding_window_logits(net, image, config: SegmentationConfig, inference: InferenceConfig | None = None,
                          channels_last: bool = False):
    """Logits ``[B, 2, z, y, x]`` of whole volumes ``image [B, 1, z, y, x]`` (standardized), window by
    window with ``inference`` (default: ``config``'s); ``channels_last``: ``net`` runs on channels-last
    windows (:func:`metsynth.devices.uses_channels_last`)."""
    from monai.inferers import sliding_window_inference

    inf = inference or config.inference
    predictor = (lambda window: net(to_memory_format(window, True))) if channels_last else net
    return sliding_window_inference(image, roi_size=tuple(config.patch_size), sw_batch_size=inf.sw_batch_size,
                                    predictor=predictor, overlap=inf.overlap, mode=inf.blend, cval=AIR)


def _from_lightning(ckpt: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The U-Net's weights and settings out of one of its training's Lightning checkpoints."""
    meta = ckpt["hyper_parameters"].get("meta")
    if meta is None:
        raise InputError("a Lightning checkpoint, but not of a metsynth segmentation model (no meta); give the "
                         "model.pt of `metsynth train`")
    meta = {k: v for k, v in meta.items() if k != "format"}  # checkpoints before metsynth-model/2 carried one
    return {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}, meta


def load_weights(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict of the UNet, meta)`` from ``model.pt`` (or its folder) or a Lightning
    ``.ckpt``, loaded with ``torch.load(weights_only=True)`` (:func:`metsynth.checkpoints.load_model`)."""
    state, meta, _ = load_model(path, "unet", from_lightning=_from_lightning)
    return state, meta


def export_weights(checkpoint: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write a checkpoint's UNet weights and settings as ``model.pt`` (+ ``model.yaml``)."""
    state, meta = load_weights(checkpoint)
    return save_model(path, "unet", state, meta)
