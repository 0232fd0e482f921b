"""Online models in the study (issue 14 item 1): `online` trains on fresh synthetic volumes drawn
during training, `online_ft` fine-tunes it on the real cases; both are rows of Table 3, their
donors are the fold's real training cases only and their recipients never a tested patient."""

from __future__ import annotations

import json

from metsynth.evaluation.splits import load_splits
from metsynth.experiment import ExperimentConfig, experiment_preset, run_experiment
from metsynth.layout import RunLayout


def test_online_models_train_in_the_study_and_reach_table3(tmp_path):
    data = experiment_preset("tiny").model_dump(mode="json")
    data["models"] = ["real", "online", "online_ft"]
    data["variability_model"] = "real"
    data["size_study"] = []
    config = ExperimentConfig.from_dict(data)
    run = tmp_path / "run"
    run_experiment(config, run, until="stats", progress=False)
    layout = RunLayout(run)
    splits = load_splits(layout.splits)
    for fold in range(splits.n_folds):
        online = json.loads((layout.model_dir("online", fold) / "training_set.json").read_text())
        assert online["sources"] == ["online"] and online["online"] is not None
        donors = set(online["online"]["donor_cases"])
        assert donors and donors.isdisjoint(splits.excluded_from_training(fold))
        assert set(online["online"]["healthy_cases"]).isdisjoint(splits.excluded_from_training(fold))
        result = json.loads((layout.model_dir("online", fold) / "result.json").read_text())
        assert result["steps"] > 0
        ft = json.loads((layout.model_dir("online_ft", fold) / "init.json").read_text())
        assert ft["init"] == str(layout.model_dir("online", fold) / "model.pt")
    table = (layout.stats / "table3.md").read_text()
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["real (ref.)", "online", "online_ft"]


def test_the_demo_has_the_online_models_and_no_online_leaves_them_out():
    from typer.testing import CliRunner

    from metsynth.cli import app
    from metsynth.commands import demo_config

    online, plain = demo_config(seed=2, workers=1), demo_config(seed=2, workers=1, online=False)
    assert online.models == experiment_preset("demo").models  # the default demo is the preset's study
    assert online.models == [*plain.models, "online", "online_ft"]  # the offline models kept, in their order
    assert plain.models == ["real", "synthetic", "synthetic_ft", "harmonized", "harmonized_ft"]
    assert online.model_dump(exclude={"models"}) == plain.model_dump(exclude={"models"})
    assert online.seed == 2 and online.parallel.workers == 1
    assert ExperimentConfig.from_dict(plain.model_dump(mode="json")).models == plain.models  # a valid study
    text = CliRunner().invoke(app, ["demo", "--help"]).output
    assert "--no-online" in text and "online_ft" in text
