"""The DDPM's memory format (``train.memory_format``): channels-last on a CPU by default, in its
training and its harmonizations; the same network either way."""

from __future__ import annotations

import dataclasses

import lightning as L
import pytest
import torch

from metsynth.diffusion.denoiser import load_denoiser
from metsynth.diffusion.train import train_diffusion

CL = torch.channels_last_3d


def _weight(net: torch.nn.Module) -> torch.Tensor:
    return next(p for p in net.parameters() if p.dim() == 5 and p.shape[1] > 1)


class _Layouts(L.Callback):
    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.seen.append(_weight(pl_module.model).is_contiguous(memory_format=CL))


@pytest.mark.parametrize("setting, channels_last", [("auto", True), ("contiguous", False)])
def test_training_runs_in_its_layout_and_exports_the_usual_one(tmp_path, prepared_cohort, tiny_config, setting,
                                                             channels_last):
    config = tiny_config.merged(train={**tiny_config.train.model_dump(), "max_steps": 2, "memory_format": setting})
    layouts = _Layouts()
    result = train_diffusion(prepared_cohort, tmp_path / "run", config, accelerator="cpu", devices=1,
                             progress=False, callbacks=[layouts])
    assert layouts.seen == [channels_last] * 2
    state = torch.load(result.export, map_location="cpu", weights_only=True)["state_dict"]
    assert all(v.is_contiguous() for v in state.values())


def test_harmonization_windows_give_the_same_noise_estimate_in_either_layout(trained):
    fast = load_denoiser(trained.export, "cpu")
    assert fast.channels_last and _weight(fast.model).is_contiguous(memory_format=CL)
    plain = dataclasses.replace(load_denoiser(trained.export, "cpu"), channels_last=False)
    plain.model.to(memory_format=torch.contiguous_format)
    windows = torch.randn((2, 1, *fast.config.train.patch_size), generator=torch.Generator().manual_seed(0))
    for n in (1, 2):
        torch.testing.assert_close(fast.predict(windows[:n], 5), plain.predict(windows[:n], 5), atol=1e-5, rtol=0)
