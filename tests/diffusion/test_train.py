"""DDPM training: the loss falls, outputs are complete, and an interrupted run resumes exactly."""

from __future__ import annotations

import csv
import json

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
    timing = json.loads((trained.out_dir / "timing.json").read_text())
    assert timing["steps"] == 6 and timing["step_s"] > 0
    assert 0 <= timing["data_wait_share"] < 1  # measured, not a placeholder
    assert timing["data_wait_s"] + timing["step_s"] <= trained.seconds


def test_export_is_plain_weights_with_its_settings(trained, tiny_config):
    saved = torch.load(trained.export, map_location="cpu", weights_only=True)
    assert saved["format"] == "metsynth-model/2" and saved["network"] == "ddpm"
    state = saved["state_dict"]
    info = yaml.safe_load(trained.export_config.read_text())
    assert info["format"] == "metsynth-model/2" and info["network"] == "ddpm" and info["weights"] == "ema"
    assert info["trained"]["steps"] == 6 and info["trained"]["cases"] == ["H00", "H01"]
    env = info["trained"]["environment"]  # the machine setting the weights came from
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["precision"] == "32-true"
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
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
    a = torch.load(trained.export, weights_only=True)["state_dict"]
    b = torch.load(resumed.export, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical to the uninterrupted run
    assert _rows(out / "loss.csv") == _rows(trained.loss_csv)

    # more steps continue the same run; other model settings are refused, --force starts over
    longer = tiny_config.merged(train={**tiny_config.train.model_dump(), "max_steps": 7})
    more = train_diffusion(prepared_cohort, out, longer, accelerator="cpu", devices=1, progress=False)
    assert more.steps == 7 and len(_rows(out / "loss.csv")) == 7
    assert json.loads((out / "timing.json").read_text())["steps"] == 1  # this run's steps
    again = train_diffusion(prepared_cohort, out, longer, accelerator="cpu", devices=1, progress=False)
    assert again.steps == 7 and json.loads((out / "timing.json").read_text())["steps"] == 1  # kept, not NaN
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
    with pytest.raises(ConfigError, match=r"holds files that are not a DDPM training \(notes.txt; no diffusion.yaml\)"):
        train_diffusion(prepared_cohort, foreign, tiny_config, progress=False)


def test_healthy_cases_written_again_make_another_training(tmp_path, builders, tiny_config):
    from helpers import written_again
    from metsynth.cohort import load_cohort

    cohort = builders.write_prepared_cohort(tmp_path / "cohort", n_healthy=1)  # its own copy
    config = tiny_config.merged(train={"max_steps": 2})
    first = train_diffusion(cohort, tmp_path / "run", config, accelerator="cpu", devices=1, progress=False)
    again = train_diffusion(cohort, tmp_path / "run", config, accelerator="cpu", devices=1, progress=False)
    assert again.steps == first.steps  # the same training: resumed at its end, nothing to do
    image = load_cohort(cohort).cases[0].image
    written_again(image)
    with pytest.raises(ConfigError, match=rf"\({image.parent.name}/{image.name}: written again since \(modified "):
        train_diffusion(cohort, tmp_path / "run", config, accelerator="cpu", devices=1, progress=False)
    stamp = (tmp_path / "run" / "model.pt").stat().st_mtime_ns
    redone = train_diffusion(cohort, tmp_path / "run", config, accelerator="cpu", devices=1, progress=False,
                             force=True)
    assert redone.steps == 2 and (tmp_path / "run" / "model.pt").stat().st_mtime_ns != stamp


# ------------------------------------------------------------------ a bad checkpoint on resume
def _hashes(folder):
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_cli_run(tmp_path_factory, prepared_cohort):
    """A finished two-step `metsynth diffusion train` run of the tiny preset."""
    from typer.testing import CliRunner

    from metsynth.cli import app

    args = ["--quiet", "diffusion", "train", str(prepared_cohort), "--preset", "tiny", "--accelerator", "cpu",
            "--devices", "1"]
    run = tmp_path_factory.mktemp("ddpm-resume") / "run"
    result = CliRunner().invoke(app, [*args, "--out", str(run), "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    return run, args


@pytest.mark.parametrize("how", ["truncated", "garbage", "weights only"])
def test_resume_from_a_bad_checkpoint_changes_nothing(finished_cli_run, tmp_path, how):
    import shutil

    from typer.testing import CliRunner

    from metsynth.cli import app

    finished, args = finished_cli_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    last = run / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes({"truncated": data[: len(data) // 2], "garbage": bytes(range(256)) * 64,
                      "weights only": (run / "model.pt").read_bytes()}[how])
    before = _hashes(run)
    assert {"diffusion.yaml", "inputs.json", "loss.csv", "model.pt", "checkpoints/last.ckpt"} <= set(before)
    result = CliRunner().invoke(app, [*args, "--out", str(run), "--max-steps", "3"])  # continues from last.ckpt
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.output
    assert str(last) in error[0] and "delete it" in error[0]
    assert _hashes(run) == before


def test_checkpoint_of_another_model_is_refused(finished_cli_run, tiny_config):
    from metsynth.diffusion.train import DiffusionModule, check_resume_checkpoint
    from metsynth.errors import InputError

    last = finished_cli_run[0] / "checkpoints" / "last.ckpt"
    tiny = DiffusionConfig.from_yaml(finished_cli_run[0] / "diffusion.yaml")
    check_resume_checkpoint(last, DiffusionModule(tiny.model_dump(mode="json")))  # its own model: fine
    wider = tiny.merged(model={**tiny.model.model_dump(), "channels": [8, 16, 32]})
    with pytest.raises(InputError, match="weights (are not of|do not fit) this model"):
        check_resume_checkpoint(last, DiffusionModule(wider.model_dump(mode="json")))


def test_a_nan_healthy_image_writes_nothing_and_the_corrected_rerun_trains(tmp_path, builders, tiny_config):
    """A healthy image with NaN is refused in one line before the run folder exists; the rerun on the
    corrected file is not refused as "another training"."""
    import numpy as np
    from typer.testing import CliRunner

    from metsynth.cli import app
    from metsynth.cohort import load_cohort
    from metsynth.volume import Volume

    cohort = builders.write_prepared_cohort(tmp_path / "cohort", n_healthy=1)
    image = load_cohort(cohort).by_role("healthy")[0].image
    good = image.read_bytes()
    vol = Volume.read(image)
    array = vol.array.astype(np.float32)
    array[2, 3, 4] = np.nan
    vol.with_array(array).write(image)
    out = tmp_path / "run"
    args = ["--quiet", "diffusion", "train", str(cohort), "--preset", "tiny", "--accelerator", "cpu", "--devices", "1",
            "--max-steps", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(image) in errors[0] and "NaN" in errors[0]
    assert not out.exists()
    image.write_bytes(good)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "model.pt").is_file()


def test_a_folder_whose_training_never_started_is_taken_over(tmp_path, prepared_cohort, tiny_config):
    """diffusion.yaml and inputs.json without checkpoints or weights (an earlier version stopped on its
    inputs after writing them) are no training: the corrected training runs there."""
    from metsynth.fileio import write_json

    run = tmp_path / "run"
    run.mkdir()
    tiny_config.merged(train={"learning_rate": 0.5}).to_yaml(run / "diffusion.yaml")
    write_json(run / "inputs.json", {"healthy_files": "stale"})
    result = train_diffusion(prepared_cohort, run, tiny_config.merged(train={"max_steps": 1}), accelerator="cpu",
                             devices=1, progress=False)
    assert result.steps == 1 and (run / "model.pt").is_file()
