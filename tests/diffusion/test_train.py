"""DDPM training: the loss falls, outputs are complete, and an interrupted run resumes exactly."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
import yaml

from metsynth.diffusion.presets import DiffusionConfig
from metsynth.diffusion.train import train_diffusion
from metsynth.errors import ConfigError


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_tiny_model_trains_and_its_loss_falls(trained, tiny_config):
    assert trained.steps == tiny_config.train.max_steps == 6
    rows = _rows(trained.loss_csv)
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    losses = [float(r["loss"]) for r in rows]
    assert sum(losses[-2:]) / 2 < 0.95 * sum(losses[:2]) / 2, losses
    assert (trained.out_dir / "loss.png").stat().st_size > 1000


def test_export_is_plain_weights_with_its_settings(trained, tiny_config):
    state = torch.load(trained.export, map_location="cpu", weights_only=True)
    info = yaml.safe_load(trained.export_config.read_text())
    assert info["format"] == "metsynth-ddpm/1" and info["weights"] == "ema"
    assert info["trained"]["steps"] == 6 and info["trained"]["cases"] == ["H00", "H01"]
    config = DiffusionConfig.from_dict(info["config"])
    assert config == tiny_config
    net = config.model.build()
    net.load_state_dict(state)  # strict: every tensor fits
    # the Lightning checkpoint also loads with weights_only=True and holds the same EMA weights
    ckpt = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
    ema = {k[len("ema.module."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("ema.module.")}
    assert all(torch.equal(ema[k], v) for k, v in state.items())
    final = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    assert any(not torch.equal(final[k], v) for k, v in state.items() if v.is_floating_point())


class Interrupt(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 3:  # mid-epoch: 2 steps per epoch
            raise RuntimeError("simulated interruption")


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, prepared_cohort, tiny_config, trained):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated interruption"):
        train_diffusion(prepared_cohort, out, tiny_config, accelerator="cpu", devices=1, progress=False,
                        callbacks=[Interrupt()])
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "model.pt").exists()
    assert len(_rows(out / "loss.csv")) == 3
    resumed = train_diffusion(prepared_cohort, out, tiny_config, accelerator="cpu", devices=1, progress=False)
    assert resumed.steps == 6
    a = torch.load(trained.export, weights_only=True)
    b = torch.load(resumed.export, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical to the uninterrupted run
    assert _rows(out / "loss.csv") == _rows(trained.loss_csv)

    # more steps continue the same run; other model settings are refused, --force starts over
    longer = tiny_config.merged(train={**tiny_config.train.model_dump(), "max_steps": 7})
    more = train_diffusion(prepared_cohort, out, longer, accelerator="cpu", devices=1, progress=False)
    assert more.steps == 7 and len(_rows(out / "loss.csv")) == 7
    other = tiny_config.merged(train={**tiny_config.train.model_dump(), "learning_rate": 0.1, "max_steps": 1})
    with pytest.raises(ConfigError, match="learning_rate"):
        train_diffusion(prepared_cohort, out, other, accelerator="cpu", devices=1, progress=False)
    fresh = train_diffusion(prepared_cohort, out, other, accelerator="cpu", devices=1, progress=False, force=True)
    assert fresh.steps == 1 and len(_rows(out / "loss.csv")) == 1


def test_bad_precision_and_foreign_folders_are_refused(tmp_path, prepared_cohort, tiny_config):
    with pytest.raises(ConfigError, match="precision"):
        train_diffusion(prepared_cohort, tmp_path / "a", tiny_config, precision="8", progress=False)
    foreign = tmp_path / "b"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a metsynth DDPM training"):
        train_diffusion(prepared_cohort, foreign, tiny_config, progress=False)


def test_healthy_cases_written_again_make_another_training(tmp_path, builders, tiny_config):
    from metsynth.cohort import load_cohort

    from helpers import written_again

    cohort = builders.write_prepared_cohort(tmp_path / "cohort", n_healthy=1)  # its own copy
    config = tiny_config.merged(train={"max_steps": 2})
    first = train_diffusion(cohort, tmp_path / "run", config, accelerator="cpu", devices=1, progress=False)
    again = train_diffusion(cohort, tmp_path / "run", config, accelerator="cpu", devices=1, progress=False)
    assert again.steps == first.steps  # the same training: resumed at its end, nothing to do
    written_again(load_cohort(cohort).cases[0].image)
    with pytest.raises(ConfigError, match="healthy cases' files were written again"):
        train_diffusion(cohort, tmp_path / "run", config, accelerator="cpu", devices=1, progress=False)
    stamp = (tmp_path / "run" / "model.pt").stat().st_mtime_ns
    redone = train_diffusion(cohort, tmp_path / "run", config, accelerator="cpu", devices=1, progress=False,
                             force=True)
    assert redone.steps == 2 and (tmp_path / "run" / "model.pt").stat().st_mtime_ns != stamp
