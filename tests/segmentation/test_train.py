"""Training: overfitting one case, checkpoints, fine-tuning, resume, logs, curves, data-wait timing."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from metsynth.errors import ConfigError
from metsynth.segmentation.train import load_weights, train_segmentation


def test_tiny_model_overfits_one_phantom_case(trained_model):
    result = trained_model["result"]
    assert trained_model["initial_dice"] < 0.3
    assert result.best_val_dice is not None and result.best_val_dice > 0.7
    assert not result.finetune


def test_run_folder_has_logs_curves_timing_and_model(trained_model):
    run = trained_model["run"]
    for name in ("config.yaml", "training_set.json", "curves.png", "timing.json", "model.pt", "model.yaml",
                 "result.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "logs/metrics.csv"):
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "logs" / "metrics.csv")
    assert {"train_loss_epoch", "val_dice", "lr", "data_wait_share"} <= set(metrics.columns)
    assert metrics["val_dice"].dropna().iloc[-1] > metrics["val_dice"].dropna().iloc[0]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    timing = json.loads((run / "timing.json").read_text())
    assert timing["steps"] == trained_model["result"].steps > 0
    assert 0.0 <= timing["data_wait_share"] < 1.0
    assert timing["step_s"] > 0 and timing["steps_per_s"] > 0
    # what it was trained on, so that numbers that do not repeat on another machine can be traced
    env = json.loads((run / "result.json").read_text())["environment"]
    assert env == trained_model["result"].environment
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["world_size"] == 1
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and env["torch_threads"] >= 1


@pytest.mark.parametrize("name", ["checkpoints/best.ckpt", "checkpoints/last.ckpt", "model.pt"])
def test_checkpoints_load_with_weights_only(trained_model, name):
    path = trained_model["run"] / name
    obj = torch.load(path, map_location="cpu", weights_only=True)  # raises if anything but data is pickled
    assert isinstance(obj, dict)
    state, meta = load_weights(path)
    assert meta["config"]["preset"] == "tiny"
    assert any(k.endswith("weight") for k in state)


def test_best_checkpoint_and_model_pt_hold_the_same_weights(trained_model):
    run = trained_model["run"]
    best, _ = load_weights(run / "checkpoints" / "best.ckpt")
    exported, _ = load_weights(run / "model.pt")
    assert best.keys() == exported.keys()
    assert all(torch.equal(best[k], exported[k]) for k in best)


def test_finished_run_is_skipped(trained_model):
    again = train_segmentation(trained_model["training_set"], trained_model["run"], trained_model["config"],
                               progress=False)
    assert again.steps == trained_model["result"].steps and again.seconds == trained_model["result"].seconds


def test_fine_tuning_starts_from_the_init_weights_with_its_own_schedule(trained_model, tmp_path, builders):
    config = builders.overfit_config(max_epochs=1, patches_per_volume=2, val_every_n_epochs=1,
                                     finetune={"lr": 1e-12, "lr_decay": 1.0, "patience": 3})
    result = train_segmentation(trained_model["training_set"], tmp_path / "ft", config,
                                init=trained_model["run"] / "model.pt", progress=False)
    assert result.finetune
    tuned, meta = load_weights(result.model)
    assert (meta["lr"], meta["lr_decay"], meta["patience"], meta["finetune"]) == (1e-12, 1.0, 3, True)
    start, _ = load_weights(trained_model["run"] / "model.pt")
    # lr ~ 0: the fine-tuned weights are the init weights (instance-norm statistics aside)
    assert all(torch.allclose(tuned[k].float(), start[k].float(), atol=1e-6) for k in start)
    assert result.best_val_dice > 0.7  # the init's skill is there from the first epoch


def test_fine_tuning_has_its_own_epoch_bound_and_epochs_a_fixed_length(trained_model, tmp_path, builders):
    # no validation: only the bounds stop it; 6 patches per epoch in batches of 2 -> 3 steps per epoch
    config = builders.overfit_config(max_epochs=5, val_cases=0, patches_per_epoch=6, batch_size=2,
                                     finetune={"max_epochs": 2})
    ts = trained_model["training_set"]
    ts_noval = dataclasses.replace(ts, train=ts.train + ts.val, val=[])
    tuned = train_segmentation(ts_noval, tmp_path / "ft", config, init=trained_model["run"] / "model.pt",
                               progress=False)
    assert (tuned.epochs, tuned.steps) == (2, 6)
    scratch = train_segmentation(ts_noval, tmp_path / "scratch", config.merged(max_epochs=3), progress=False)
    assert (scratch.epochs, scratch.steps) == (3, 9)


def test_fine_tuning_refuses_another_network(trained_model, tmp_path, builders):
    config = builders.overfit_config(max_epochs=1, network={"channels": [8, 16, 32]})
    with pytest.raises(ConfigError, match="does not match"):
        train_segmentation(trained_model["training_set"], tmp_path / "ft", config,
                           init=trained_model["run"] / "model.pt", progress=False)


class _StopAt(Callback):
    """Fails when the given epoch starts (an interruption)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_interrupted_training_resumes_from_last_checkpoint(trained_model, tmp_path, builders):
    config = builders.overfit_config(max_epochs=3, patches_per_volume=2, val_every_n_epochs=1)
    ts = trained_model["training_set"]
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="interrupted"):
        train_segmentation(ts, out, config, progress=False, extra_callbacks=[_StopAt(2)])
    saved = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 1 and not (out / "result.json").exists()
    result = train_segmentation(ts, out, config, progress=False)
    assert result.epochs == 3 and result.steps == 3 * 1  # 2 patches / batch 2 = 1 step per epoch
    epochs = pd.read_csv(out / "logs" / "metrics.csv")["epoch"].dropna().unique().tolist()
    assert epochs == [0, 1, 2]  # the resumed run appended epoch 2 to the first run's log


def test_killed_between_the_two_checkpoint_saves_resumes_to_the_same_model(trained_model, tmp_path, builders,
                                                                          monkeypatch):
    """best.ckpt and last.ckpt are written one after the other at each validation; a kill between
    them must not leave last.ckpt recording an outdated best model."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    config = builders.overfit_config(max_epochs=2, patches_per_volume=8, val_every_n_epochs=1)
    ts = trained_model["training_set"]
    whole = train_segmentation(ts, tmp_path / "whole", config, progress=False)
    scores = pd.read_csv(tmp_path / "whole" / "logs" / "metrics.csv")["val_dice"].dropna().tolist()
    assert len(scores) == 2 and scores[1] > scores[0], "the case needs a better model at the last epoch"

    saves: list[str] = []
    original = ModelCheckpoint._save_checkpoint

    def killed_at_the_fourth_save(self, trainer, filepath):  # epoch 1: the second of its two saves
        saves.append(filepath)
        if len(saves) == 4:
            raise RuntimeError("killed")
        original(self, trainer, filepath)

    monkeypatch.setattr(ModelCheckpoint, "_save_checkpoint", killed_at_the_fourth_save)
    with pytest.raises(RuntimeError, match="killed"):
        train_segmentation(ts, tmp_path / "killed", config, progress=False)
    monkeypatch.setattr(ModelCheckpoint, "_save_checkpoint", original)
    resumed = train_segmentation(ts, tmp_path / "killed", config, progress=False)

    assert resumed.best_val_dice == whole.best_val_dice
    (a, _), (b, _) = load_weights(tmp_path / "whole"), load_weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_raising_max_epochs_continues_a_finished_run(trained_model, tmp_path, builders):
    ts = trained_model["training_set"]
    first = train_segmentation(ts, tmp_path / "run", builders.overfit_config(max_epochs=1, patches_per_volume=2),
                               progress=False)
    longer = train_segmentation(ts, tmp_path / "run", builders.overfit_config(max_epochs=2, patches_per_volume=2),
                                progress=False)
    assert (first.epochs, first.steps) == (1, 1) and (longer.epochs, longer.steps) == (2, 2)


def test_folder_of_another_training_is_refused(trained_model, tmp_path, builders):
    ts = trained_model["training_set"]
    train_segmentation(ts, tmp_path / "run", builders.overfit_config(max_epochs=1, patches_per_volume=2),
                       progress=False)
    other = builders.overfit_config(max_epochs=1, patches_per_volume=2, seed=5)
    with pytest.raises(ConfigError, match="other settings.*seed"):
        train_segmentation(ts, tmp_path / "run", other, progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"files that are not a segmentation training \(file.txt; no config.yaml\)"):
        train_segmentation(ts, tmp_path / "junk", other, progress=False)


def test_a_training_on_rewritten_files_or_initial_weights_is_another_training(trained_model, tmp_path, builders):
    import os
    import shutil

    from metsynth.segmentation.train import training_changes

    # copies: the session's trained model and its case stay untouched
    one = trained_model["training_set"].train[0]
    (tmp_path / "data").mkdir()
    image, label = shutil.copy(one.image, tmp_path / "data" / "image.nii.gz"), \
        shutil.copy(one.label, tmp_path / "data" / "label.nii.gz")
    ts = dataclasses.replace(trained_model["training_set"],
                             train=[dataclasses.replace(one, image=str(image), label=str(label))], val=[])
    init = shutil.copy(trained_model["run"] / "model.pt", tmp_path / "init.pt")
    config = builders.overfit_config(max_epochs=1, val_cases=0, patches_per_epoch=2, batch_size=2,
                                     finetune={"max_epochs": 1})
    run = tmp_path / "ft"
    train_segmentation(ts, run, config, init=init, progress=False)
    assert training_changes(run, config, ts, init) == []  # the same training: a rerun skips it

    st = os.stat(label)
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # an earlier stage wrote the mask again
    assert "rewritten" in " ".join(training_changes(run, config, ts, init))
    with pytest.raises(ConfigError, match="files of its training set were rewritten"):
        train_segmentation(ts, run, config, init=init, progress=False)
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert training_changes(run, config, ts, init) == []

    with open(init, "ab") as handle:  # the model it was fine-tuned from was trained again
        handle.write(b"\0")
    assert "initial weights" in " ".join(training_changes(run, config, ts, init))
    retrained = train_segmentation(ts, run, config, init=init, force=True, progress=False)
    assert retrained.finetune and training_changes(run, config, ts, init) == []


def test_learning_rate_decays_exponentially_per_epoch(trained_model, tmp_path, builders):
    config = builders.overfit_config(max_epochs=3, patches_per_volume=2, optim={"lr": 0.1, "lr_decay_real": 0.5})
    train_segmentation(trained_model["training_set"], tmp_path / "run", config, progress=False)
    lrs = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")["lr"].dropna().tolist()
    assert lrs == pytest.approx([0.1, 0.05, 0.025])


def test_data_wait_monitor_separates_waiting_from_compute():
    import time
    from types import SimpleNamespace

    from metsynth.segmentation.train import DataWaitMonitor

    logged = {}
    module = SimpleNamespace(device=torch.device("cpu"), log=lambda k, v, **kw: logged.__setitem__(k, v))
    monitor = DataWaitMonitor()
    monitor.on_train_epoch_start(None, module)
    for i in range(4):
        time.sleep(0.06)  # waiting for the batch (the first one counts as start-up)
        monitor.on_train_batch_start(None, module, None, i)
        time.sleep(0.02)  # the step
        monitor.on_train_batch_end(None, module, None, None, i)
    monitor.on_train_epoch_end(None, module)
    summary = monitor.summary()
    assert summary["steps"] == 4 and summary["startup_wait_s"] >= 0.06
    assert summary["data_wait_s"] >= 3 * 0.06 and summary["step_s"] >= 4 * 0.02
    assert 0.6 < summary["data_wait_share"] < 0.85 and logged["data_wait_share"] == pytest.approx(
        summary["data_wait_share"])


def test_curve_plotter_draws_at_most_once_per_interval_and_keeps_every_epoch(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import metsynth.segmentation.callbacks as callbacks_module
    from metsynth.segmentation.train import CurvePlotter

    drawn = []
    monkeypatch.setattr(callbacks_module, "plot_curves",  # where CurvePlotter looks it up
                        lambda history, path: drawn.append([e for e, _ in history["train_loss"]]))
    trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False, val_dataloaders=None,
                              current_epoch=0, callback_metrics={})

    def run_epochs(plotter, n):
        for epoch in range(n):
            trainer.current_epoch = epoch
            trainer.callback_metrics = {"train_loss_epoch": torch.tensor(1.0 / (epoch + 1))}
            plotter.on_train_epoch_end(trainer, None)
        return plotter

    throttled = run_epochs(CurvePlotter(tmp_path / "a.png", min_interval_s=3600.0), 5)
    assert drawn == [[0]]  # the first epoch draws; the next four fall inside the interval
    assert [e for e, _ in throttled.history["train_loss"]] == [0, 1, 2, 3, 4]  # nothing lost for the final plot
    drawn.clear()
    run_epochs(CurvePlotter(tmp_path / "b.png", min_interval_s=0.0), 3)
    assert drawn == [[0], [0, 1], [0, 1, 2]]
    trainer.is_global_zero = False
    drawn.clear()
    run_epochs(CurvePlotter(tmp_path / "c.png", min_interval_s=0.0), 2)
    assert drawn == []  # only rank zero draws


def test_early_stopping_on_validation_dice(trained_model, tmp_path, builders):
    # a learning rate of ~0 keeps the validation Dice flat: patience 1 stops after the second epoch
    config = builders.overfit_config(max_epochs=6, patches_per_volume=2, val_every_n_epochs=1,
                                     optim={"lr": 1e-12, "patience": 1})
    result = train_segmentation(trained_model["training_set"], tmp_path / "run", config, progress=False)
    assert result.stopped_early and result.epochs == 2


def test_trainer_flags_pass_to_lightning(trained_model, tmp_path, builders):
    config = builders.overfit_config(max_epochs=1, patches_per_volume=2, val_every_n_epochs=1,
                                     trainer={"precision": "bf16-mixed", "accelerator": "cpu", "devices": 1})
    result = train_segmentation(trained_model["training_set"], tmp_path / "run", config, progress=False)
    assert result.steps == 1
    assert json.loads((tmp_path / "run" / "result.json").read_text())["steps"] == 1
    assert "bf16-mixed" in (tmp_path / "run" / "config.yaml").read_text()


# ------------------------------------------------------------------ online mixed with real volumes
class _ConstantOnline:
    """Stands in for OnlineSource: constant-intensity volumes, so their patches are recognisable."""

    def __init__(self, settings, seed):
        pass

    def __call__(self, epoch, volume):
        import numpy as np

        label = np.zeros((40, 40, 40), np.uint8)
        label[18:22, 18:22, 18:22] = 1
        return np.full((40, 40, 40), 0.25, np.float32), label


class _CountSources(Callback):
    def __init__(self):
        self.drawn = {"real": 0, "online": 0}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        for image in batch["image"]:
            self.drawn["online" if bool((image == 0.25).all()) else "real"] += 1


def test_real_and_online_training_draws_both_in_the_stated_share(tmp_path, builders, monkeypatch):
    import metsynth.segmentation.datasets as datasets
    from metsynth.segmentation.datasets import build_training_set

    monkeypatch.setattr(datasets, "OnlineSource", _ConstantOnline)
    manifest = builders.write_prepared_cohort(tmp_path / "cohort", n_metastatic=1, n_healthy=0)
    ts = dataclasses.replace(build_training_set(manifest, "real", val_cases=0), sources=("real", "online"),
                             online={"bank": "stand-in"})
    # one real volume; online part 2 fresh volumes x 2 patches; share 0.25: 12 real patches per epoch
    config = builders.overfit_config(max_epochs=1, val_cases=0, patches_per_volume=2, online_volumes_per_epoch=2,
                                     online_share=0.25)
    counter = _CountSources()
    result = train_segmentation(ts, tmp_path / "run", config, progress=False, extra_callbacks=[counter])
    assert counter.drawn == {"real": 12, "online": 4} and result.steps == 8
    saved = json.loads((tmp_path / "run" / "result.json").read_text())["sampling"]
    assert saved == result.sampling and saved["patches_per_epoch"] == {"real": 12, "online": 4}
    assert (saved["online_share"], saved["online_share_setting"]) == (0.25, 0.25)
    assert "online_share: 0.25" in (tmp_path / "run" / "config.yaml").read_text()


# ------------------------------------------------------------------ a bad checkpoint on resume
def _hashes(folder):
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _spoil(ckpt, how):
    data = ckpt.read_bytes()
    if how == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        ckpt.write_bytes(bytes(range(256)) * 64)
    else:  # a readable file that is not a Lightning training checkpoint: exported weights
        ckpt.write_bytes((ckpt.parent.parent / "model.pt").read_bytes())


@pytest.fixture(scope="module")
def finished_cli_run(tmp_path_factory, builders):
    """A finished one-epoch `metsynth train` run of the tiny preset (seconds)."""
    from typer.testing import CliRunner

    from metsynth.cli import app

    root = tmp_path_factory.mktemp("seg-resume")
    manifest = builders.write_prepared_cohort(root / "cohort", n_metastatic=2, n_healthy=0)
    args = ["--quiet", "train", str(manifest), "--preset", "tiny", "--val-cases", "0", "--accelerator", "cpu"]
    result = CliRunner().invoke(app, [*args, "--out", str(root / "run"), "--max-epochs", "1"])
    assert result.exit_code == 0, result.output
    return root / "run", args


@pytest.mark.parametrize("how", ["truncated", "garbage", "weights only"])
def test_resume_from_a_bad_checkpoint_changes_nothing(finished_cli_run, tmp_path, how):
    import shutil

    from typer.testing import CliRunner

    from metsynth.cli import app

    finished, args = finished_cli_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    _spoil(run / "checkpoints" / "last.ckpt", how)
    before = _hashes(run)
    assert {"config.yaml", "result.json", "logs/metrics.csv", "checkpoints/last.ckpt"} <= set(before)
    # --max-epochs 2: a finished run continues from last.ckpt
    result = CliRunner().invoke(app, [*args, "--out", str(run), "--max-epochs", "2"])
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.output
    assert str(run / "checkpoints" / "last.ckpt") in error[0] and "delete it" in error[0]
    assert _hashes(run) == before
    if how == "truncated":  # the fix it names works: without the checkpoint the training starts over
        (run / "checkpoints" / "last.ckpt").unlink()
        result = CliRunner().invoke(app, [*args, "--out", str(run), "--max-epochs", "2"])
        assert result.exit_code == 0, result.output
        assert json.loads((run / "result.json").read_text())["epochs"] == 2


def test_checkpoint_of_another_network_is_refused(finished_cli_run):
    from metsynth.errors import InputError
    from metsynth.segmentation.presets import segmentation_config
    from metsynth.segmentation.train import build_network, check_resume_checkpoint

    last = finished_cli_run[0] / "checkpoints" / "last.ckpt"
    net = build_network(segmentation_config("tiny"))
    shapes = {f"net.{k}": v.shape for k, v in net.state_dict().items()}
    assert check_resume_checkpoint(last, shapes, optimizer_params=len(list(net.parameters())))["epoch"] == 0
    wider = build_network(segmentation_config("tiny", {"network": {"channels": [8, 16, 32]}}))
    with pytest.raises(InputError, match="do not fit this model"):
        check_resume_checkpoint(last, {f"net.{k}": v.shape for k, v in wider.state_dict().items()},
                                optimizer_params=len(list(wider.parameters())))
    with pytest.raises(InputError, match="no state of the callback"):
        check_resume_checkpoint(last, shapes, optimizer_params=len(list(net.parameters())), callbacks=("Other",))


def test_a_missing_init_is_one_line_and_writes_nothing(tmp_path, prepared_cohort):
    from typer.testing import CliRunner

    from metsynth.cli import app

    out = tmp_path / "finetuned"
    result = CliRunner().invoke(app, ["--quiet", "train", str(prepared_cohort), "-o", str(out), "--sources", "real",
                                      "--init", str(tmp_path / "missing" / "model.pt"), "--preset", "tiny",
                                      "--max-epochs", "1"])
    assert result.exit_code != 0
    assert "--init:" in result.output and "segmentation model not found" in result.output
    assert "Traceback (most recent call last)" not in result.output
    assert sum(line.startswith("error:") for line in result.output.splitlines()) == 1
    assert not out.exists()


def _train_cli(manifest, out, *extra):
    from typer.testing import CliRunner

    from metsynth.cli import app

    return CliRunner().invoke(app, ["--quiet", "train", str(manifest), "-o", str(out), "--preset", "tiny",
                                    "--val-cases", "0", "--accelerator", "cpu", "--max-epochs", "1", *extra])


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_a_missing_training_file_is_one_line_and_writes_nothing(tmp_path, builders):
    manifest = builders.write_prepared_cohort(tmp_path / "cohort", n_metastatic=2, n_healthy=0)
    (manifest.parent / "images" / "M01.nii.gz").unlink()
    out = tmp_path / "run"
    error = _one_error_line(_train_cli(manifest, out))
    assert str(manifest.parent / "images" / "M01.nii.gz") in error and "real/M01" in error and "not found" in error
    assert not out.exists()


@pytest.mark.parametrize("spoil", ["nan image", "label of another grid"])
def test_an_unusable_real_case_writes_nothing_and_the_corrected_rerun_trains(tmp_path, builders, spoil):
    import numpy as np

    from metsynth.volume import Volume

    manifest = builders.write_prepared_cohort(tmp_path / "cohort", n_metastatic=2, n_healthy=0)
    image, label = manifest.parent / "images" / "M01.nii.gz", manifest.parent / "lesions" / "M01.nii.gz"
    target = image if spoil == "nan image" else label
    good = target.read_bytes()
    vol = Volume.read(target)
    if spoil == "nan image":
        array = vol.array.astype(np.float32)
        array[1, 2, 3] = np.nan
        vol.with_array(array).write(target)
    else:
        vol.crop(np.zeros(3, int), np.asarray(vol.shape) - 1).write(target)
    out = tmp_path / "run"
    error = _one_error_line(_train_cli(manifest, out))
    assert str(target) in error and "real/M01" in error
    if spoil != "nan image":  # the label's values first, as the sentence names it, in ITK's (x, y, z) order
        shape = tuple(reversed(Volume.read(target).shape))
        assert f"shape (x, y, z) voxels: label {shape}".replace(",)", ")") in error.replace(",)", ")")
    assert not out.exists()
    target.write_bytes(good)  # corrected: the rerun trains
    result = _train_cli(manifest, out)
    assert result.exit_code == 0, result.output
    assert (out / "result.json").is_file()


def test_an_unusable_synthetic_volume_leaves_no_training_folder(tmp_path, builders):
    import numpy as np

    from metsynth.errors import MetsynthError
    from metsynth.segmentation.datasets import build_training_set
    from metsynth.volume import Volume

    manifest = builders.write_prepared_cohort(tmp_path / "cohort", n_metastatic=2, n_healthy=1)
    syn = builders.write_synthetic_set(tmp_path / "syn", manifest, donors=["M01"], per_donor=1)
    ts = build_training_set(manifest, "synthetic,real", synthetic=syn, val_cases=0, seed=0)
    bad = next(v for v in ts.train if v.source == "synthetic")
    vol = Volume.read(bad.image)
    array = vol.array.astype(np.float32)
    array[0, 0, 0] = np.inf
    vol.with_array(array).write(bad.image)
    out = tmp_path / "run"
    with pytest.raises(MetsynthError, match="NaN or infinite"):  # found while unpacking (not read before)
        train_segmentation(ts, out, builders.overfit_config(max_epochs=1, val_cases=0), progress=False)
    assert not out.exists()


def test_a_folder_whose_training_never_started_is_not_another_training(tmp_path, trained_model, builders):
    """A folder left by an earlier version that stopped on unusable volumes (config.yaml, training_set.json,
    init.json, cache/; no checkpoint) does not block the corrected training."""
    from metsynth.fileio import write_json
    from metsynth.segmentation.run_folder import training_changes, training_started

    run = tmp_path / "run"
    (run / "cache").mkdir(parents=True)
    builders.overfit_config(max_epochs=3, seed=99).to_yaml(run / "config.yaml")
    write_json(run / "init.json", {"init": None, "init_sha256": None, "files": "0123"})
    config = builders.overfit_config(max_epochs=1, patches_per_volume=2)
    assert not training_started(run) and training_changes(run, config, trained_model["training_set"]) == []
    result = train_segmentation(trained_model["training_set"], run, config, progress=False)
    assert result.epochs == 1 and training_started(run)


def test_an_online_training_of_other_synthesis_settings_or_a_rewritten_bank_is_another_training(trained_model,
                                                                                                   tmp_path):
    """The on-the-fly synthesis is part of what an online model was trained on: a study whose
    placement changed once kept its online models (and rewrote their training_set.json)."""
    import os
    import shutil

    from metsynth.segmentation.presets import segmentation_config
    from metsynth.segmentation.run_folder import claim_run_dir, training_changes

    run = tmp_path / "online"
    shutil.copytree(trained_model["run"], run)
    config = segmentation_config(None, run / "config.yaml")
    bank = tmp_path / "bank"
    bank.mkdir()
    (bank / "bank.json").write_text("{}")
    recipe = {"synthesis": {"placement": {"match_donor_contact": 0}}, "donor_cases": ["M001"],
              "healthy_cases": ["H001"]}
    ts = dataclasses.replace(trained_model["training_set"],
                             online={"manifest": str(tmp_path / "cohort.yaml"), "bank": str(bank), **recipe})
    claim_run_dir(run, config, ts, None, resume=True)  # what a training writes before it starts
    assert json.loads((run / "init.json").read_text())["bank"]
    assert training_changes(run, config, ts) == []

    moved = tmp_path / "moved" / "bank"
    shutil.copytree(bank, moved)  # a moved run: other paths, the same bank file
    assert training_changes(run, config, dataclasses.replace(
        ts, online={"manifest": str(tmp_path / "moved" / "cohort.yaml"), "bank": str(moved), **recipe})) == []

    # the same settings written in full (a record of a later version, or defaults spelt out) are the same
    from metsynth.synthesis.compose import SynthesisConfig

    full = {**recipe, "synthesis": SynthesisConfig().model_dump(mode="json")}
    assert training_changes(run, config, dataclasses.replace(ts, online={**ts.online, **full})) == []
    placed = {**recipe, "synthesis": {"placement": {"match_donor_contact": 16}}}
    changes = training_changes(run, config, dataclasses.replace(ts, online={**ts.online, **placed}))
    assert changes and "on-the-fly synthesis" in changes[0] and "match_donor_contact" in changes[0]
    other_donors = {**recipe, "donor_cases": ["M002"]}
    assert "donor_cases" in " ".join(training_changes(run, config, dataclasses.replace(
        ts, online={**ts.online, **other_donors})))

    st = os.stat(bank / "bank.json")
    os.utime(bank / "bank.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the bank extracted again
    assert "rewritten" in " ".join(training_changes(run, config, ts))
