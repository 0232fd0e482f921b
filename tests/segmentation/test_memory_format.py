"""The U-Net's memory format (``trainer.memory_format``): channels-last (NDHWC) on a CPU by default,
where 3D convolutions with few channels run faster on it; the same network and masks either way."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from metsynth.devices import to_memory_format, uses_channels_last
from metsynth.errors import ConfigError
from metsynth.segmentation.presets import InferenceConfig
from metsynth.segmentation.train import train_segmentation
from metsynth.segmentation.volume_inference import SegmentationModel
from metsynth.volume import Volume

CL = torch.channels_last_3d


def _weight(net: torch.nn.Module) -> torch.Tensor:
    """A convolution weight whose two layouts differ (more than one input channel)."""
    return next(p for p in net.parameters() if p.dim() == 5 and p.shape[1] > 1)


def test_auto_is_channels_last_on_a_cpu_only():
    assert uses_channels_last("cpu") and uses_channels_last(torch.device("cpu"), "auto")
    assert not uses_channels_last("cuda:0") and not uses_channels_last(torch.device("cuda", 1))
    assert uses_channels_last("cuda", "channels_last") and not uses_channels_last("cpu", "contiguous")
    with pytest.raises(ConfigError, match="channels_last"):
        uses_channels_last("cpu", "nhwc")


def test_a_converted_module_keeps_its_parameters_and_tensors_follow():
    net = torch.nn.Conv3d(2, 4, 3)
    weight = net.weight
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    assert to_memory_format(net, True) is net and net.weight is weight  # the optimizer still holds it
    assert weight.is_contiguous(memory_format=CL) and not weight.is_contiguous()
    assert optimizer.param_groups[0]["params"][0] is weight
    x = torch.randn(1, 2, 5, 6, 7)
    assert to_memory_format(x, True).is_contiguous(memory_format=CL) and to_memory_format(x, False) is x
    flat = torch.randn(3, 4)
    assert to_memory_format(flat, True) is flat


class _Layouts(L.Callback):
    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(_weight(pl_module.net).is_contiguous(memory_format=CL))


@pytest.mark.parametrize("setting, channels_last", [("auto", True), ("contiguous", False)])
def test_training_runs_in_its_layout_and_exports_the_usual_one(trained_model, tmp_path, builders, setting,
                                                             channels_last):
    config = builders.overfit_config(max_epochs=2, patches_per_volume=2, trainer={"memory_format": setting})
    layouts = _Layouts()
    train_segmentation(trained_model["training_set"], tmp_path / "run", config, progress=False,
                       extra_callbacks=[layouts])
    assert layouts.seen == [channels_last] * 2
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["state_dict"]
    assert all(v.is_contiguous() for v in state.values())


def test_the_layout_is_a_resumable_setting_not_another_training(trained_model, tmp_path, builders):
    from metsynth.segmentation.run_folder import training_changes

    config = builders.overfit_config(max_epochs=1, patches_per_volume=2)
    ts = trained_model["training_set"]
    train_segmentation(ts, tmp_path / "run", config, progress=False)
    other = builders.overfit_config(max_epochs=1, patches_per_volume=2, trainer={"memory_format": "contiguous"})
    assert training_changes(tmp_path / "run", other, ts) == []


def test_inference_gives_the_same_mask_in_either_layout_and_window_batch(trained_model):
    model = SegmentationModel.load(trained_model["run"] / "model.pt", "cpu")
    # auto: contiguous (channels-last pays in the backward pass only)
    assert _weight(model.net).is_contiguous() and model.config.trainer.memory_format == "auto"
    image = Volume.read(trained_model["case"].image).array
    plain = model.probabilities(image, InferenceConfig(overlap=0.25, sw_batch_size=1))
    batched = model.probabilities(image, InferenceConfig(overlap=0.25, sw_batch_size=4))

    model.config = model.config.merged(trainer={**model.config.trainer.model_dump(), "memory_format": "channels_last"})
    to_memory_format(model.net, True)
    last = model.probabilities(image, InferenceConfig(overlap=0.25, sw_batch_size=4))
    for other in (batched, last):
        np.testing.assert_allclose(other, plain, atol=1e-5)
        assert ((other > 0.5) == (plain > 0.5)).all()
    assert (plain > 0.5).any()


def test_an_explicit_setting_is_the_inference_layout_too(trained_model, tmp_path):
    from metsynth.checkpoints import load_model, save_model

    state, meta, _ = load_model(trained_model["run"] / "model.pt", "unet")
    meta["config"]["trainer"]["memory_format"] = "channels_last"
    save_model(tmp_path / "model.pt", "unet", state, meta)
    assert _weight(SegmentationModel.load(tmp_path / "model.pt", "cpu").net).is_contiguous(memory_format=CL)


def test_auto_is_contiguous_on_several_ranks():
    assert not uses_channels_last("cpu", "auto", world_size=2)
    assert uses_channels_last("cpu", "channels_last", world_size=2)
