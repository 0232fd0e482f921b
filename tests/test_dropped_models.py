"""A model taken out of a study's ``models:`` (or a size out of ``size_study:``) keeps its folders,
but is no row of the study's tables or of its report: ``metsynth demo --no-online`` after a demo
with the online models printed them in Table 3 still."""

from __future__ import annotations

import shutil

import yaml

from metsynth.experiment import ExperimentConfig, experiment_preset
from metsynth.layout import RunLayout, study_models
from metsynth.report.data import RunData
from test_report import run_dir  # noqa: F401 - a fixture: evaluation/ of real, synthetic, harmonized_ft, size_100


def _copy_with_stale_models(source, tmp_path) -> RunLayout:
    layout = RunLayout(tmp_path / "run")
    shutil.copytree(source, layout.root, ignore=shutil.ignore_patterns("report"))
    for stale in ("online", "size_7"):  # what an earlier setting evaluated
        shutil.copytree(layout.evaluation("real"), layout.evaluation(stale))
    (layout.evaluation("mine")).mkdir(parents=True)  # a user's own model, no study's name: kept
    shutil.copy(layout.evaluation("real") / "metrics.csv", layout.evaluation("mine") / "metrics.csv")
    return layout


def test_study_models_are_the_models_and_their_size_study():
    assert study_models(["real", "synthetic"], [40, 100]) == {"real", "synthetic", "size_40", "size_100", "size_all"}
    assert study_models(["real", "harmonized"], [40]) == {"real", "harmonized"}  # no Synthetic, no size study


def test_the_layout_leaves_out_study_models_the_settings_do_not_make(run_dir, tmp_path):  # noqa: F811
    layout = _copy_with_stale_models(run_dir, tmp_path)
    assert set(layout.evaluated_models()) >= {"online", "size_7", "mine"}  # everything on disk
    kept = layout.evaluated_models(study_models(["real", "synthetic", "harmonized_ft"], [100]))
    assert kept == ["real", "synthetic", "harmonized_ft", "size_100", "mine"]


def test_stats_stage_and_report_show_only_the_configured_models(run_dir, tmp_path):  # noqa: F811
    from metsynth.experiment.pipeline import _stage_stats
    from metsynth.stages import RunContext

    layout = _copy_with_stale_models(run_dir, tmp_path)
    config = experiment_preset("tiny").merged(models=["real", "synthetic", "harmonized", "harmonized_ft"],
                                                 size_study=[100])
    layout.config.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    _stage_stats(RunContext(layout.root, ExperimentConfig.from_yaml(layout.config), progress=False))
    table3 = (layout.stats / "table3.md").read_text()
    assert "| real (ref.) |" in table3 and "| harmonized_ft |" in table3
    assert "| online |" not in table3
    table2 = (layout.stats / "table2.md").read_text()
    assert "size_100" in table2 and "size_7" not in table2

    run = RunData(layout.root)
    assert "online" not in run.evaluated and "size_7" not in run.evaluated and "mine" in run.evaluated
    assert run.paper_models == ["real", "synthetic", "harmonized_ft"]
    assert set(run.results["model"]) == set(run.evaluated)


def test_report_draws_no_training_curves_of_a_dropped_model(run_dir, tmp_path):  # noqa: F811
    from metsynth.report.sections.qc import _training_curves

    layout = _copy_with_stale_models(run_dir, tmp_path)
    png = next(run_dir.glob("models/*/fold*/curves.png"), None)
    for model in ("real", "online"):
        (layout.model_dir(model, 0)).mkdir(parents=True, exist_ok=True)
        if png is not None:
            shutil.copy(png, layout.model_dir(model, 0) / "curves.png")
        else:
            (layout.model_dir(model, 0) / "curves.png").write_bytes(_tiny_png())
    layout.config.write_text(yaml.safe_dump({"name": "s", "models": ["real"], "size_study": []}))
    html = _training_curves(RunData(layout.root))
    assert "Real, fold0" in html and "Online" not in html
    layout.config.write_text(yaml.safe_dump({"name": "s"}))  # no models: in the config: every folder shown
    assert "Online, fold0" in _training_curves(RunData(layout.root))


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_hand_written_config_without_a_size_study_hides_no_size_model(run_dir, tmp_path):  # noqa: F811
    layout = _copy_with_stale_models(run_dir, tmp_path)
    layout.config.write_text(yaml.safe_dump({"name": "mine", "models": ["real", "synthetic"]}))
    run = RunData(layout.root)
    assert {"size_100", "size_7", "real", "synthetic"} <= set(run.evaluated)
    assert "harmonized_ft" not in run.evaluated and "online" not in run.evaluated


def test_figure5_shows_no_dropped_model(run_dir, tmp_path, monkeypatch):  # noqa: F811
    from metsynth.report import figures
    from metsynth.report.sections.examples import examples_section

    drawn = []
    draw = figures.segmentation_examples
    monkeypatch.setattr(figures, "segmentation_examples",
                        lambda ex, models, *a: drawn.append(models) or draw(ex, models, *a))
    layout = _copy_with_stale_models(run_dir, tmp_path)
    shutil.copytree(layout.predictions("real"), layout.predictions("online"))
    layout.config.write_text(yaml.safe_dump({"name": "s", "models": ["real", "synthetic"], "size_study": [100]}))
    examples_section(RunData(layout.root))
    layout.config.write_text(yaml.safe_dump({"name": "s"}))  # no models: every prediction folder is shown
    examples_section(RunData(layout.root))
    assert drawn[0] == [m for m in ("real", "synthetic") if layout.predictions(m).is_dir()] and "online" in drawn[1]
