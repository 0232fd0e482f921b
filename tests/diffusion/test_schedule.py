"""Timestep sequences and SDEdit/DDIM arithmetic (no network: an oracle denoiser)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metsynth.diffusion.presets import NoiseConfig, diffusion_config
from metsynth.diffusion.schedule import ddim_step, ddim_timesteps, noise_to, sdedit
from metsynth.errors import ConfigError

ALPHAS = NoiseConfig().alphas_cumprod()  # T = 200, linear betas 1e-4 .. 2e-3


def test_paper_preset_sequence_is_ten_steps_of_stride_4_from_40():
    cfg = diffusion_config("paper")
    seq = ddim_timesteps(cfg.noise.num_train_timesteps, cfg.harmonize.ddim_steps, cfg.harmonize.start_timestep)
    assert seq == [40, 36, 32, 28, 24, 20, 16, 12, 8, 4, 0]
    assert len(seq) - 1 == 10  # ten DDIM strides of 4 training timesteps


def test_other_reading_of_lambda_enters_at_exactly_t10():
    assert ddim_timesteps(200, 50, 10) == [10, 8, 4, 0]
    assert ddim_timesteps(200, 200, 10) == list(range(10, -1, -1))
    assert ddim_timesteps(200, 50, 0) == [0]
    assert ddim_timesteps(200, 50, 199) [:2] == [199, 196]


def test_monai_set_timesteps_grid_is_not_the_stride_its_step_assumes():
    """The MONAI 1.6.1 fact that makes us build the sequence ourselves."""
    from monai.networks.schedulers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=200, schedule="linear_beta", beta_start=1e-4, beta_end=2e-3)
    sched.set_timesteps(50)
    gaps = set((sched.timesteps[:-1] - sched.timesteps[1:]).tolist())
    assert gaps == {4, 5}  # rounded linspace
    assert 200 // sched.num_inference_steps == 4  # what step() assumes


@pytest.mark.parametrize("steps, start, match", [
    (0, 10, "ddim_steps"), (201, 10, "ddim_steps"), (50, 200, "start_timestep"), (50, -1, "start_timestep"),
])
def test_bad_sequence_settings_are_named(steps, start, match):
    with pytest.raises(ConfigError, match=match):
        ddim_timesteps(200, steps, start)


@settings(max_examples=60, deadline=None)
@given(big_t=st.integers(2, 1000), data=st.data())
def test_sequence_properties(big_t, data):
    steps = data.draw(st.integers(1, big_t))
    start = data.draw(st.integers(0, big_t - 1))
    seq = ddim_timesteps(big_t, steps, start)
    stride = big_t // steps
    assert seq[0] == start and seq[-1] == 0
    assert all(a > b for a, b in zip(seq, seq[1:]))
    assert all(t % stride == 0 for t in seq[1:])  # only the entry point may be off the grid
    assert all(t <= (steps - 1) * stride for t in seq[1:])


def test_noise_to_matches_monai_add_noise():
    ddpm = NoiseConfig().ddpm()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand((1, 1, 4, 5, 6), generator=gen) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen)
    for t in (0, 10, 40, 199):
        ours = noise_to(x0, eps, t, ALPHAS)
        theirs = ddpm.add_noise(x0, eps, torch.tensor([t]))
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("clip", [True, False])
def test_ddim_step_matches_monai_on_the_stride_grid(clip):
    from monai.networks.schedulers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=200, schedule="linear_beta", beta_start=1e-4, beta_end=2e-3,
                          clip_sample=clip)
    sched.set_timesteps(50)  # stride 4 in step()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((1, 1, 4, 4, 4), generator=gen) * 0.8
    eps = torch.randn(x.shape, generator=gen)
    for t in (40, 4, 0):  # t = 0 steps to the clean image (alpha_bar = 1)
        theirs, theirs_x0 = sched.step(eps, t, x)
        ours, ours_x0 = ddim_step(x, eps, t, t - 4, ALPHAS, clip_sample=clip)
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ours_x0, theirs_x0, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("start", [0, 1, 7, 10, 40, 123, 199])
@pytest.mark.parametrize("ddim_steps", [50, 200, 7])
@pytest.mark.parametrize("clip", [True, False])
def test_oracle_denoiser_recovers_x0(start, ddim_steps, clip):
    """A denoiser that returns exactly the added noise must bring x0 back from any start."""
    gen = torch.Generator().manual_seed(start * 1000 + ddim_steps)
    x0 = torch.rand((1, 1, 6, 7, 8), generator=gen) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen)
    calls = []

    def oracle(x_t, t):
        calls.append(t)
        return eps

    seq = ddim_timesteps(200, ddim_steps, start)
    out = sdedit(x0, oracle, seq, ALPHAS, eps, clip_sample=clip)
    assert calls == seq
    assert torch.max(torch.abs(out - x0)).item() < 1e-5


def test_sdedit_noises_to_the_first_timestep():
    x0 = torch.zeros((1, 1, 2, 2, 2))
    eps = torch.ones_like(x0)
    seen = {}

    def record(x_t, t):
        seen.setdefault("first", x_t.clone())
        return eps

    sdedit(x0, record, [40, 20, 0], ALPHAS, eps)
    expected = (1 - float(ALPHAS[40])) ** 0.5
    assert torch.allclose(seen["first"], torch.full_like(x0, expected), atol=1e-7)


def test_sdedit_rejects_a_non_decreasing_sequence():
    x = torch.zeros((1, 1, 2, 2, 2))
    with pytest.raises(ConfigError, match="decreasing"):
        sdedit(x, lambda x_t, t: x_t, [0, 4], ALPHAS, x)


def test_eta_draws_from_the_given_generator():
    x = torch.zeros((1, 1, 3, 3, 3))
    eps = torch.zeros_like(x)
    a, _ = ddim_step(x, eps, 40, 20, ALPHAS, eta=1.0, generator=torch.Generator().manual_seed(3))
    b, _ = ddim_step(x, eps, 40, 20, ALPHAS, eta=1.0, generator=torch.Generator().manual_seed(3))
    c, _ = ddim_step(x, eps, 40, 20, ALPHAS, eta=0.0)
    assert torch.equal(a, b) and not torch.equal(a, c)
