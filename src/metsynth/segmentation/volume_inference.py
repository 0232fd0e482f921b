"""Inference on one volume: sliding-window lesion probabilities, a mask on the input's grid.

A trained model knows the voxel size and HU window of the data it was trained on (from the
prepared cohort). :func:`predict_volume` brings any input to that space and back:

* a **raw CT** (HU, any spacing and orientation): cropped to the femur box (when a femur mask
  is given), resampled to the model's spacing, standardized, segmented; the lesion
  *probabilities* are resampled linearly onto the input's grid and thresholded there, so the
  mask has exactly the input's shape, spacing, origin and direction;
* a **prepared** image (already standardized at the model's spacing): segmented on its own grid
  (no resampling). :func:`restore_source_grid` maps such a result back onto the original scan's
  grid recorded by ``metsynth prepare`` (the manifest's ``source:``).

Post-processing (:mod:`.postprocess`) runs on the output grid, so its minimum lesion size is in
true mm^3 of that grid. :mod:`.inference` segments a whole cohort or a list of files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..devices import resolve_device, to_memory_format, uses_channels_last
from ..errors import InputError
from ..volume import Volume, as_mask, check_finite
from .patches import AIR
from .postprocess import PostprocessConfig, postprocess
from .presets import InferenceConfig, SegmentationConfig

log = logging.getLogger(__name__)

SPACING_TOL_MM = 1e-3
DEFAULT_CROP_MARGIN_MM = 10.0


@dataclass
class SegmentationModel:
    """A trained U-Net with the settings it was trained with."""

    net: Any
    config: SegmentationConfig
    spacing: tuple[float, float, float] | None
    hu_window: tuple[float, float] | None
    device: str = "cpu"
    meta: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = "auto") -> "SegmentationModel":
        """From ``model.pt`` (or a training folder, or a Lightning ``.ckpt``); weights_only loading."""
        from .network import build_network, load_weights

        state, meta = load_weights(path)
        config = SegmentationConfig.from_dict(meta["config"], source=f"{path} (model settings)")
        net = build_network(config)
        net.load_state_dict(state)
        device = str(resolve_device(device))
        net.to(device).eval()
        to_memory_format(net, _inference_channels_last(config, device))
        return cls(net=net, config=config, spacing=tuple(meta["spacing"]) if meta.get("spacing") else None,
                   hu_window=tuple(meta["hu_window"]) if meta.get("hu_window") else None,
                   device=device, meta=meta, path=str(path))

    def probabilities(self, array: np.ndarray, inference: InferenceConfig | None = None) -> np.ndarray:
        """Lesion probability (float32, same shape) of a standardized array at the model's spacing,
        by MONAI sliding-window inference with the training patch as window."""
        import torch

        from .network import sliding_window_logits

        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None].to(self.device)
        with torch.inference_mode():
            logits = sliding_window_logits(self.net, x, self.config, inference,
                                           channels_last=_inference_channels_last(self.config, self.device))
            prob = torch.softmax(logits.float(), dim=1)[0, 1]
        return prob.cpu().numpy().astype(np.float32)



class ModelEnsemble:
    """Several trained U-Nets used as one: the mean of their lesion probabilities, then one threshold and
    one post-processing (as nnU-Net ensembles its folds). The cross-validated study predicts each
    test-only case with its folds' models so; a vote of binary masks would, with two folds, keep only
    what both found (their intersection).

    The members must share the voxel size and HU window (folds of one study do); the first member's
    inference and post-processing settings are the ensemble's.
    """

    def __init__(self, members: list[SegmentationModel]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one model")
        first = members[0]
        for other in members[1:]:
            for what, a, b in (("voxel size", first.spacing, other.spacing),
                               ("HU window", first.hu_window, other.hu_window)):
                same = a == b if a is None or b is None else np.allclose(a, b, rtol=0, atol=SPACING_TOL_MM)
                if not same:
                    raise InputError(f"{other.path}: {what} {b} differs from {first.path}'s {a}; an ensemble "
                                     "averages models trained on the same prepared cohort (folds of one study)")
        self.members = list(members)
        self.config = first.config
        self.spacing = first.spacing
        self.hu_window = first.hu_window
        self.device = first.device
        self.meta = first.meta
        self.path = first.path

    def probabilities(self, array: np.ndarray, inference: InferenceConfig | None = None) -> np.ndarray:
        """The members' mean lesion probability (float32, same shape as ``array``)."""
        total = self.members[0].probabilities(array, inference)
        for member in self.members[1:]:
            total += member.probabilities(array, inference)
        return total / np.float32(len(self.members))


def _inference_channels_last(config: SegmentationConfig, device: str) -> bool:
    """Channels-last only where ``trainer.memory_format`` asks for it: ``auto`` runs inference contiguous,
    since without a backward pass channels-last is slower on a CPU (``bench_memory_format.py``: x1.12-1.23)."""
    fmt = config.trainer.memory_format
    return fmt != "auto" and uses_channels_last(device, fmt)


# ======================================================================= grids
def resample_linear(values: Volume, reference: Volume, default: float = 0.0) -> np.ndarray:
    """``values`` (float) linearly interpolated at ``reference``'s voxel centres (float32 array):
    :func:`metsynth.prepare.resample_image`, the one resampling path."""
    from ..prepare import resample_image

    return resample_image(values, reference, "linear", default).array


def empty_grid(shape, spacing, origin, direction) -> Volume:
    """A zero uint8 volume with the given geometry (a resampling reference)."""
    return Volume(np.zeros(tuple(int(s) for s in shape), dtype=np.uint8), spacing, origin, np.asarray(direction))


def sub_grid(grid: Volume, lo, hi) -> Volume:
    """The box ``[lo, hi)`` of ``grid`` as its own (empty) grid with the right origin."""
    lo = np.asarray(lo, dtype=int)
    hi = np.asarray(hi, dtype=int)
    origin = grid.index_to_world(lo.astype(np.float64))
    return empty_grid(hi - lo, grid.spacing, origin, grid.direction)


def _needs_resampling(image: Volume, spacing) -> bool:
    return spacing is not None and not np.allclose(image.spacing, spacing, atol=SPACING_TOL_MM, rtol=0)


# ======================================================================= one volume
@dataclass
class Prediction:
    """A predicted mask on the output grid, its probability map (same grid, inside ``box``)."""

    mask: Volume
    probability: np.ndarray | None
    box: tuple[tuple[int, int, int], tuple[int, int, int]]
    raw_voxels: int  # foreground voxels before post-processing


def predict_volume(
    model: SegmentationModel,
    image: Volume,
    femur: Volume | None = None,
    *,
    standardized: bool = False,
    postprocess_config: PostprocessConfig | None = None,
    inference: InferenceConfig | None = None,
    crop_margin_mm: float = DEFAULT_CROP_MARGIN_MM,
    keep_probability: bool = False,
) -> Prediction:
    """Segment lesions in ``image`` and return a uint8 mask on exactly ``image``'s grid.

    ``standardized=False``: ``image`` is in HU and is clipped/scaled with the model's HU window.
    ``femur`` (on ``image``'s grid) restricts inference to the femur box (+ ``crop_margin_mm``)
    and enables the ``keep_in_femur`` post-processing step.
    """
    from ..prepare import resample_image, standardize, target_grid

    check_finite(image, "image")
    inf = inference or model.config.inference
    post = postprocess_config if postprocess_config is not None else model.config.postprocess
    if femur is not None:
        femur = as_mask(femur, image, what="femur mask")
    lo = np.zeros(3, dtype=int)
    hi = np.asarray(image.shape)
    if femur is not None and femur.array.any():
        from ..prepare import femur_crop_box

        lo, hi = femur_crop_box(femur, crop_margin_mm)
    work = image.crop(lo, hi)
    box_grid = sub_grid(image, lo, hi)
    if _needs_resampling(work, model.spacing):
        grid = target_grid(work, model.spacing)
        if standardized:
            net_in = resample_image(work, grid, "linear", default=AIR)
        else:
            net_in = resample_image(work, grid, "linear")
    else:
        grid = work
        net_in = work.with_array(np.asarray(work.array, dtype=np.float32))
    array = net_in.array
    if not standardized:
        if model.hu_window is None:
            log.warning("%s: the model has no HU window (trained on an unprepared cohort): using intensities as "
                        "they are",
                        image.name)
        else:
            array = standardize(array, model.hu_window)
    prob = model.probabilities(array, inf)
    if grid is not work:
        prob = resample_linear(grid.with_array(prob), box_grid, default=0.0)
    raw = prob >= inf.threshold
    full = np.zeros(image.shape, dtype=np.uint8)
    full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = raw
    mask_box = box_grid.with_array(raw.astype(np.uint8))
    femur_box = femur.crop(lo, hi) if femur is not None else None
    if femur_box is not None:
        femur_box = mask_box.with_array(femur_box.array)
    cleaned = postprocess(mask_box, femur_box, post)
    full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = cleaned.array
    mask = image.with_array(full)
    return Prediction(mask=mask, probability=prob if keep_probability else None,
                      box=(tuple(int(v) for v in lo), tuple(int(v) for v in hi)),  # type: ignore[arg-type]
                      raw_voxels=int(raw.sum()))


def restore_source_grid(mask_or_prob: Volume, source: dict[str, Any], threshold: float = 0.5,
                        femur: Volume | None = None, postprocess_config: PostprocessConfig | None = None) -> Volume:
    """Map a result on a prepared grid back onto the original scan's grid (``case.source``).

    ``mask_or_prob`` is a probability map or a binary mask on the prepared grid; it is resampled
    linearly inside the crop box recorded by ``prepare`` and thresholded; outside the box the
    mask is 0. ``femur`` (prepared grid) is mapped the same way for post-processing.
    """
    try:
        grid = empty_grid(source["shape"], source["spacing"], source["origin"], source["direction"])
        lo, hi = (np.asarray(v, dtype=int) for v in source["crop_box"])
    except KeyError as err:
        raise InputError(f"case source record lacks {err}; re-run `metsynth prepare` to record the original "
                         "grid") from None
    box = sub_grid(grid, lo, hi)
    values = resample_linear(mask_or_prob.with_array(np.asarray(mask_or_prob.array, np.float32)), box)
    mask_box = box.with_array((values >= threshold).astype(np.uint8))
    femur_box = None
    if femur is not None:
        femur_box = box.with_array((resample_linear(femur, box) >= 0.5).astype(np.uint8))
    if postprocess_config is not None:
        mask_box = postprocess(mask_box, femur_box, postprocess_config)
    full = np.zeros(grid.shape, dtype=np.uint8)
    full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = mask_box.array
    return grid.with_array(full)
