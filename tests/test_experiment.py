from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from metsynth.errors import ConfigError
from metsynth.experiment import ExperimentConfig, experiment_preset, load_experiment_config
from metsynth.layout import RunLayout

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["paper", "demo"])
def test_config_files_match_the_presets(name):
    on_disk = ExperimentConfig.from_yaml(REPO / "configs" / f"{name}.yaml")
    assert on_disk == experiment_preset(name), \
        f"configs/{name}.yaml drifted: regenerate it with `metsynth experiment init`"


def test_config_reference_is_current_and_complete():
    from metsynth.experiment import config_reference

    text = config_reference()
    assert (REPO / "docs" / "config.md").read_text() == text, \
        "docs/config.md is stale: run `metsynth experiment reference -o docs/config.md`"
    for key in ("`segmentation.overrides`", "`prepare.spacing`", "`optim.lr`", "`harmonize.start_timestep`",
                "`synthesis.transform.edge_filter_size`"):
        assert key in text, key
    paper = next(line for line in text.splitlines() if line.startswith("| `prepare.spacing`"))
    assert "[0.85, 0.85, 0.85]" in paper  # the paper's voxel size, in the paper column


def test_paper_preset_holds_the_papers_settings():
    from metsynth.experiment import diffusion_settings, segmentation_settings

    cfg = experiment_preset("paper")
    assert cfg.prepare.spacing == (0.85, 0.85, 0.85)
    assert cfg.synthesis.repeats == 10 and cfg.synthesis.min_lesion_mm3 == 16.0
    assert cfg.splits.n_folds == 5 and cfg.size_study == [100, 500, 2000]
    assert cfg.models == ["real", "synthetic", "synthetic_ft", "harmonized", "harmonized_ft"]
    seg = segmentation_settings(cfg)
    assert seg.network.channels == (32, 64, 128, 256, 512) or list(seg.network.channels) == [32, 64, 128, 256, 512]
    assert seg.optim.lr == 0.025 and seg.optim.momentum == 0.9
    diff = diffusion_settings(cfg)
    assert diff.noise.num_train_timesteps == 200
    assert diff.harmonize.start_timestep == 40 and diff.harmonize.ddim_steps == 50


def test_config_errors_are_clear(tmp_path):
    base = experiment_preset("tiny").model_dump(mode="json")
    with pytest.raises(ConfigError, match="unknown model 'synthetik'.*did you mean 'synthetic'"):
        ExperimentConfig.from_dict({**base, "models": ["real", "synthetik"]})
    with pytest.raises(ConfigError, match="'synthetic_ft' is fine-tuned from 'synthetic'"):
        ExperimentConfig.from_dict({**base, "models": ["real", "synthetic_ft"], "variability_model": "real"})
    with pytest.raises(ConfigError, match="exactly one of cohort.manifest"):
        ExperimentConfig.from_dict({**base, "cohort": {}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**base, "cohort": {"manifest": "data/cohort.yaml"}}))
    assert load_experiment_config(path).cohort.manifest == (tmp_path / "data" / "cohort.yaml").resolve()
    # an unknown stage is refused before the run folder is written (issue 16 item 16)
    from metsynth.experiment import run_experiment

    with pytest.raises(ConfigError, match="unknown stage 'bogus'"):
        run_experiment(experiment_preset("tiny"), tmp_path / "run", only=["bogus"], progress=False)
    with pytest.raises(ConfigError, match="did you mean 'realism'"):
        run_experiment(experiment_preset("tiny"), tmp_path / "run", until="realsm", progress=False)
    assert not (tmp_path / "run").exists()


def test_folds_train_at_once_only_on_a_local_cpu_run():
    from metsynth.experiment import training_processes

    base = experiment_preset("tiny").model_dump(mode="json")

    def processes(n_folds=2, **changes):
        data = {**base, **{k: {**base[k], **v} for k, v in changes.items()}}
        return training_processes(ExperimentConfig.from_dict(data), n_folds)

    assert processes(trainer={"accelerator": "cpu"}) == 2
    assert processes(trainer={"accelerator": "cpu"}, parallel={"trainings": 8}) == 2  # no more than the folds
    assert processes(trainer={"accelerator": "cpu"}, parallel={"trainings": 1}) == 1
    assert processes(n_folds=1, trainer={"accelerator": "cpu"}) == 1
    assert processes(trainer={"accelerator": "gpu"}) == 1  # GPUs: one training at a time, Lightning spreads it
    assert processes(trainer={"accelerator": "cpu"}, parallel={"scheduler": "tcp://127.0.0.1:8786"}) == 1


def final_metrics(run_dir: Path) -> pd.DataFrame:
    layout = RunLayout(run_dir)
    frames = [pd.read_csv(layout.evaluation(m) / "metrics.csv").assign(model=m) for m in layout.evaluated_models()]
    return pd.concat(frames).sort_values(["model", "case_id"]).reset_index(drop=True)


def run_cli(config: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "metsynth.cli", "-q", "experiment", "run", str(config), "--run-dir", str(run_dir),
           *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.slow
def test_tiny_study_killed_and_resumed_gives_the_same_metrics(tmp_path):
    config = tmp_path / "tiny.yaml"
    experiment_preset("tiny").to_yaml(config)
    run_dir = tmp_path / "run"
    layout = RunLayout(run_dir)
    proc = run_cli(config, run_dir)
    deadline = time.time() + 600
    # kill (SIGKILL, no clean-up) once the segmentation training is under way
    while not list((run_dir / "models").glob("*/fold*/checkpoints/*.ckpt")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (layout.stages / "train.json").exists()
    resumed = run_cli(config, run_dir)
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out
    assert "cohort       skipped" in out and "report       done" in out
    assert (layout.report / "index.html").exists()
    # the realism stage measured the synthetic, harmonized and sweep sets and drew Figure 4
    realism = json.loads((layout.realism / "realism.json").read_text())
    assert {"synthetic", "harmonized", "t10"} <= set(realism["sets"]) and realism["chosen_timestep"] == 20
    assert [r["timestep"] for r in realism["sweep"]] == [0, 10, 20]
    assert (layout.realism / "figure4.png").is_file() and (layout.realism / "figure4_lesions.png").is_file()
    assert "Start timestep of the harmonization (Figure 4)" in (layout.report / "index.html").read_text()
    resumed_metrics = final_metrics(run_dir)
    assert set(resumed_metrics["model"]) >= {"real", "synthetic", "synthetic_ft", "harmonized", "harmonized_ft"}

    # the same study trained without interruption (earlier stages reused): same numbers
    for sub in ("models", "predictions", "evaluation", "stats"):
        subprocess.run(["rm", "-rf", str(run_dir / sub)], check=True)
    for stage in ("train", "size_study", "predict", "evaluate", "stats", "variability", "report"):
        (layout.stages / f"{stage}.json").unlink()
    fresh = run_cli(config, run_dir)
    out, _ = fresh.communicate(timeout=900)
    assert fresh.returncode == 0, out
    # a model whose training was killed resumed from its last epoch checkpoint: the same numbers
    pd.testing.assert_frame_equal(final_metrics(run_dir), resumed_metrics, check_exact=True)

    # a rerun of a finished study does nothing
    again = run_cli(config, run_dir)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and out.count("skipped") == len(list(layout.stages.glob("*.json"))), out

    # an edited setting reruns its stage and what follows; outputs of the old settings are replaced,
    # also those of later stages whose own settings did not change (they were made from the old files)
    ddpm_before = (layout.diffusion / "model.pt").read_bytes()
    edited = experiment_preset("tiny").model_dump(mode="json")
    edited["segmentation"]["overrides"]["optim"] = {"lr": 0.02}
    edited["prepare"]["crop_margin_mm"] = 6.0
    ExperimentConfig.from_dict(edited).to_yaml(config)
    rerun = run_cli(config, run_dir)
    out, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, out
    assert "prepare      done" in out and "train        done" in out and "predict      done" in out, out
    assert yaml.safe_load((layout.model_dir("real", 0) / "config.yaml").read_text())["optim"]["lr"] == 0.02
    assert yaml.safe_load((layout.prepared / "prepare.yaml").read_text())["crop_margin_mm"] == 6.0
    assert (layout.diffusion / "model.pt").read_bytes() != ddpm_before, "the DDPM learns the new crops"

    # an edited synthesis setting: the models trained on (or fine-tuned from ones trained on) the
    # rewritten synthetic volumes are trained again, the real-only model is kept
    def model_times():
        return {m: (layout.model_dir(m, 0) / "model.pt").stat().st_mtime_ns
                for m in ("real", "synthetic", "synthetic_ft", "harmonized", "harmonized_ft")}

    before = model_times()
    edited["synthesis"]["transform"]["noise_std"] = [0.5, 0.6]
    ExperimentConfig.from_dict(edited).to_yaml(config)
    rerun = run_cli(config, run_dir)
    out, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, out
    assert "prepare      skipped" in out and "synthesize   done" in out and "train        done" in out, out
    after = model_times()
    assert after["real"] == before["real"], "the real-only model did not need training again"
    assert all(after[m] != before[m] for m in ("synthetic", "synthetic_ft", "harmonized", "harmonized_ft")), out


def test_folds_train_one_at_a_time_when_each_training_runs_on_several_ranks():
    from metsynth.experiment import training_processes

    data = experiment_preset("tiny").model_dump(mode="json")
    data["trainer"].update(accelerator="cpu", devices=2, strategy="ddp")
    # parallel.trainings: 2 in the tiny preset; DDP trains each model on both ranks, one model at a time
    assert training_processes(ExperimentConfig.from_dict(data), 2) == 1


def test_a_demo_folder_of_another_cohort_is_refused_naming_the_change_and_force_accepts_it(tmp_path, monkeypatch):
    """After an update that changed the demo's cohort (24 test-only cases, then 60), `make demo` on the old
    runs/demo is refused with what changed and the way out; nothing is written. `metsynth demo --force` runs it."""
    from typer.testing import CliRunner

    import metsynth.experiment as experiment
    from metsynth.cli import app
    from metsynth.commands import demo_config

    run = tmp_path / "runs" / "demo"
    old = demo_config().model_dump(mode="json")
    old["cohort"]["phantom"]["test"] = 24
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    before = (run / "config.yaml").read_text()
    result = CliRunner().invoke(app, ["--quiet", "demo", "--out", str(run)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "holds a study of another cohort (cohort.phantom.test: 24 -> 60)" in text and "--force" in text
    assert (run / "config.yaml").read_text() == before and sorted(p.name for p in run.iterdir()) == ["config.yaml"]

    asked = {}
    monkeypatch.setattr(experiment, "run_experiment", lambda config, out, **kw: asked.update(kw, out=out) or [])
    assert CliRunner().invoke(app, ["--quiet", "demo", "--out", str(run), "--force"]).exit_code == 0
    assert asked["force"] is True and asked["out"] == run
    # a config.yaml an update can no longer read (a setting it removed) is refused, and --force writes over it
    monkeypatch.undo()
    old["realism"]["retired_setting"] = 1
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    result = CliRunner().invoke(app, ["--quiet", "demo", "--out", str(run)])
    assert result.exit_code == 2 and "retired_setting" in result.output
    monkeypatch.setattr("metsynth.experiment.run.run_stages", lambda stages, ctx, **kw: [])
    assert CliRunner().invoke(app, ["--quiet", "demo", "--out", str(run), "--force"]).exit_code == 0
    assert "retired_setting" not in (run / "config.yaml").read_text()
    assert "--force" in CliRunner().invoke(app, ["demo", "--help"]).output
