"""The command line: `metsynth diffusion train`, `metsynth diffusion config`, `metsynth harmonize`."""

from __future__ import annotations

import csv
import json

import yaml
from typer.testing import CliRunner

from metsynth.cli import app

runner = CliRunner()


def test_help_explains_both_commands():
    result = runner.invoke(app, ["diffusion", "train", "--help"])
    assert result.exit_code == 0 and "--accelerator" in result.output and "--precision" in result.output
    result = runner.invoke(app, ["harmonize", "--help"])
    assert result.exit_code == 0 and "--start-timestep" in result.output and "--preview" in result.output


def test_config_prints_the_resolved_preset(tmp_path):
    result = runner.invoke(app, ["diffusion", "config", "--preset", "paper"])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.output)
    assert data["harmonize"]["start_timestep"] == 40 and data["model"]["channels"] == [128, 256, 512]
    override = tmp_path / "o.yaml"
    override.write_text(yaml.safe_dump({"diffusion": {"harmonize": {"start_timestep": 10}}}))
    result = runner.invoke(app, ["diffusion", "config", "--preset", "paper", "--config", str(override)])
    assert yaml.safe_load(result.output)["harmonize"]["start_timestep"] == 10


def test_train_then_harmonize_with_a_preview(tmp_path, prepared_cohort, builders):
    run = tmp_path / "ddpm"
    result = runner.invoke(app, ["--quiet", "diffusion", "train", str(prepared_cohort), "--out", str(run),
                                 "--preset", "tiny", "--max-steps", "2", "--accelerator", "cpu", "--devices", "1"])
    assert result.exit_code == 0, result.output
    assert "2 steps" in result.output and (run / "model.pt").is_file() and (run / "loss.png").is_file()

    src = builders.write_synthetic_set(tmp_path / "syn")
    out = tmp_path / "harm"
    result = runner.invoke(app, ["--quiet", "harmonize", str(src), "--checkpoint", str(run), "--out", str(out),
                                 "--start-timestep", "10", "--device", "cpu", "--preview", "2"])
    assert result.exit_code == 0, result.output
    assert "2 harmonized now" in result.output and (out / "preview.png").stat().st_size > 10_000
    with open(out / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["start_timestep"] for r in rows] == ["10", "10"]
    assert [r["ddim_steps"] for r in rows] == ["20", "20"]  # the tiny preset's, stored with the model
    pair = tmp_path / "harm2"
    result = runner.invoke(app, ["--quiet", "harmonize", str(src), "--checkpoint", str(run), "--out", str(pair),
                                 "--start-timestep", "10", "--draws", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads(next((pair / "sidecars").glob("*.json")).read_text())["harmonization"]
    assert sidecar["draws"] == 2 and sidecar["settings"]["draws"] == 2
    assert sidecar["network_evaluations_per_window"] == 2 * len(sidecar["timesteps"])


def test_user_errors_are_one_line_with_exit_code_2(tmp_path, builders):
    src = builders.write_synthetic_set(tmp_path / "syn")
    result = runner.invoke(app, ["harmonize", str(src), "--checkpoint", str(tmp_path / "missing.pt"),
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "error:" in result.output and "DDPM not found" in result.output
    result = runner.invoke(app, ["diffusion", "train", str(tmp_path), "--out", str(tmp_path / "t"),
                                 "--preset", "papr"])
    assert result.exit_code == 2 and "did you mean 'paper'" in result.output


def test_a_gpu_request_without_a_gpu_is_one_line(tmp_path, prepared_cohort):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = runner.invoke(app, ["--quiet", "diffusion", "train", str(prepared_cohort), "--out", str(tmp_path / "d"),
                                 "--preset", "tiny", "--max-steps", "1", "--accelerator", "gpu", "--devices", "1"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "cannot run here" in result.output
    assert "--accelerator auto" in result.output
    assert not (tmp_path / "d").exists(), "checked before the run folder is claimed"
    result = runner.invoke(app, ["--quiet", "train", str(prepared_cohort), "--out", str(tmp_path / "s"),
                                 "--preset", "tiny", "--accelerator", "gpu"])
    assert result.exit_code == 2 and "cannot run here" in result.output, result.output
    assert not (tmp_path / "s").exists()


def test_a_segmentation_model_given_to_harmonize_is_named_in_one_line(tmp_path, builders):
    """The U-Net of `metsynth train` (its model.yaml holds a segmentation config) is said to be one, not
    listed as a wall of unknown DDPM settings; nothing is written."""
    import torch

    from metsynth.checkpoints import save_model
    from metsynth.segmentation.presets import segmentation_config

    model = save_model(tmp_path / "unet" / "model.pt", "unet", {"w": torch.zeros(1)},
                       {"config": segmentation_config("tiny").model_dump(mode="json")})
    src = builders.write_synthetic_set(tmp_path / "syn")
    out = tmp_path / "o"
    result = runner.invoke(app, ["--quiet", "harmonize", str(src), "--checkpoint", str(model), "--out", str(out),
                                 "--device", "cpu"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown setting" not in errors[0]
    assert f"{model}: a segmentation model, not a DDPM (it is the 3D U-Net of `metsynth train`)" in errors[0]
    assert "`metsynth diffusion train`" in errors[0]
    assert not out.exists()
