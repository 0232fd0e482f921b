"""A study's segmentation and diffusion sections: preset + overrides as written, resolved into typed settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from metsynth.config import read_yaml
from metsynth.devices import LightningDevices
from metsynth.diffusion.presets import diffusion_config
from metsynth.errors import ConfigError
from metsynth.experiment import (
    ExperimentConfig,
    TrainerSpec,
    build_stages,
    diffusion_settings,
    experiment_preset,
    load_experiment_config,
    segmentation_settings,
)
from metsynth.segmentation.presets import TrainerConfig, segmentation_config

REPO = Path(__file__).resolve().parents[1]
STUDIES = ["paper", "demo", "tiny", "configs/paper.yaml", "configs/demo.yaml"]


def study(name: str) -> ExperimentConfig:
    return load_experiment_config(REPO / name) if name.endswith(".yaml") else experiment_preset(name)


def old_segmentation_settings(cfg: ExperimentConfig):
    """What ``segmentation_settings`` computed before the sections were typed: the study's trainer
    spliced into the overrides, the study's seed as a default, resolved again on every call."""
    t = cfg.trainer
    overrides = dict(cfg.segmentation.overrides)
    overrides["trainer"] = {**overrides.get("trainer", {}), "accelerator": t.accelerator, "devices": t.devices,
                            "strategy": t.strategy, "num_nodes": t.num_nodes, "precision": t.precision}
    overrides.setdefault("seed", cfg.seed)
    return segmentation_config(cfg.segmentation.preset, overrides)


def with_changes(name: str, **sections) -> ExperimentConfig:
    data = study(name).model_dump(mode="json")
    data.update(sections)
    return ExperimentConfig.from_dict(data, source="study.yaml")


@pytest.mark.parametrize("name", STUDIES)
def test_resolved_sections_are_the_settings_of_before(name):
    cfg = study(name)
    assert segmentation_settings(cfg).model_dump() == old_segmentation_settings(cfg).model_dump()
    assert cfg.segmentation_settings.model_dump(mode="json") == old_segmentation_settings(cfg).model_dump(mode="json")
    old_diffusion = diffusion_config(cfg.diffusion.preset, cfg.diffusion.overrides)
    assert diffusion_settings(cfg).model_dump() == old_diffusion.model_dump()
    assert cfg.diffusion.settings.model_dump(mode="json") == old_diffusion.model_dump(mode="json")
    assert cfg.segmentation.settings.model_dump() == \
        segmentation_config(cfg.segmentation.preset, cfg.segmentation.overrides).model_dump()


def test_resolved_sections_are_the_settings_of_before_with_every_precedence():
    cfg = with_changes(
        "tiny", seed=7, trainer={"accelerator": "gpu", "devices": 2, "strategy": "ddp", "precision": "16-mixed"},
        segmentation={"preset": "cpu", "overrides": {"seed": 3, "trainer": {"deterministic": True}}})
    assert cfg.segmentation_settings.model_dump() == old_segmentation_settings(cfg).model_dump()


@pytest.mark.parametrize("name", ["demo", "paper"])
def test_the_sections_dump_as_the_file_says_them(name):
    """The stages' fingerprints hold these dumps: the same file gives the same fingerprints as before."""
    raw = read_yaml(REPO / "configs" / f"{name}.yaml")
    cfg = study(f"configs/{name}.yaml")
    assert cfg.segmentation.model_dump(mode="json") == raw["segmentation"]
    assert cfg.diffusion.model_dump(mode="json") == raw["diffusion"]
    assert cfg.trainer.model_dump() == raw["trainer"]
    stages = {s.name: s.config(None) for s in build_stages(cfg)}
    assert stages["diffusion"] == [raw["seed"], raw["diffusion"], raw["trainer"]]
    assert stages["train"] == [raw["seed"], raw["models"], raw["segmentation"], raw["trainer"]]
    # the realism stage records what it measures: a run measured before a feature existed measures again
    from metsynth.realism.features import FEATURES
    from metsynth.realism.measure import DONOR_REFERENCE

    # realism.max_real_cases is recorded where it is set (the demo's {test: 24}), left out where it is not (the
    # paper's {}), so that a run made before it existed does not measure again
    caps = raw["realism"]["max_real_cases"]
    assert caps == ({"test": 24} if name == "demo" else {})
    recorded = {k: v for k, v in raw["realism"].items() if k != "max_real_cases" or caps}
    assert stages["realism"] == {**recorded, "features": list(FEATURES), "donor_reference": DONOR_REFERENCE}
    assert ("max_real_cases" in stages["realism"]) == bool(caps)
    assert "surface_contact" in stages["realism"]["features"]
    # the bank's record is its settings; a study matching donors' surface contact extracts its bank again
    matching = raw["synthesis"]["placement"]["match_donor_contact"]  # the demo's 16, the paper's 0
    assert stages["bank"] == ({**raw["bank"], "surface_contact": True} if matching else raw["bank"])
    data = cfg.model_dump(mode="json")
    data["synthesis"]["placement"]["match_donor_contact"] = 8
    matched = {s.name: s.config(None) for s in build_stages(ExperimentConfig.from_dict(data))}
    assert matched["bank"] == {**raw["bank"], "surface_contact": True}
    # a setting added later is in the synthesis stage's record only when set: older runs stay done
    assert stages["synthesize"][1]["placement"].get("match_donor_contact", 0) == matching
    assert ("match_donor_contact" in stages["synthesize"][1]["placement"]) == bool(matching)
    assert matched["synthesize"][1]["placement"]["match_donor_contact"] == 8


def test_an_override_typo_names_its_key_path():
    with pytest.raises(ConfigError, match=r"unknown setting 'segmentation\.overrides\.network\.chanels'; "
                                          r"did you mean 'channels'\?"):
        with_changes("demo", segmentation={"preset": "cpu", "overrides": {"network": {"chanels": [8, 16]}}})
    with pytest.raises(ConfigError, match=r"unknown setting 'segmentation\.overrides\.optm'; did you mean 'optim'"):
        with_changes("demo", segmentation={"preset": "cpu", "overrides": {"optm": {"lr": 0.1}}})
    with pytest.raises(ConfigError, match=r"'diffusion\.overrides\.train\.max_steps': Input should be a valid "
                                          r"integer.*\(got 'many'\)"):
        with_changes("demo", diffusion={"preset": "tiny", "overrides": {"train": {"max_steps": "many"}}})
    with pytest.raises(ConfigError, match=r"'diffusion\.overrides': .*start_timestep 500 must be <= T - 1 = 199"):
        with_changes("demo", diffusion={"preset": "tiny", "overrides": {"harmonize": {"start_timestep": 500}}})
    with pytest.raises(ConfigError, match=r"'segmentation\.preset': .*unknown segmentation preset 'papr'.*"
                                          r"did you mean 'paper'"):
        with_changes("demo", segmentation={"preset": "papr"})
    with pytest.raises(ConfigError, match=r"study\.yaml: unknown setting 'diffusion\.overrides\.modle'; "
                                          r"did you mean 'model'"):
        with_changes("demo", diffusion={"preset": "tiny", "overrides": {"modle": {}}})


def test_the_studys_trainer_section_wins_over_the_segmentation_presets():
    cfg = with_changes("tiny", seed=7, trainer={"accelerator": "gpu", "devices": 2, "strategy": "ddp",
                                                "precision": "16-mixed"},
                       segmentation={"preset": "tiny", "overrides": {"trainer": {"deterministic": True}}})
    seg = cfg.segmentation_settings
    assert cfg.segmentation.settings.trainer.accelerator == "cpu"  # the tiny preset's, alone
    assert (seg.trainer.accelerator, seg.trainer.devices, seg.trainer.strategy, seg.trainer.num_nodes,
            seg.trainer.precision) == ("gpu", 2, "ddp", 1, "16-mixed")  # the study's
    assert seg.trainer.deterministic is True  # the overrides'
    assert seg.trainer.log_every_n_steps == 1  # the preset's
    assert seg.seed == 7  # the study's seed...
    assert with_changes("tiny", seed=7, segmentation={"preset": "tiny", "overrides": {"seed": 3}}) \
        .segmentation_settings.seed == 3  # ...unless the overrides set one
    assert TrainerConfig(accelerator="cpu", gradient_clip_val=1.0).on_devices(cfg.trainer) == \
        TrainerConfig(accelerator="gpu", devices=2, strategy="ddp", precision="16-mixed", gradient_clip_val=1.0)
    # one definition of the device fields: the study's trainer section is LightningDevices itself
    assert TrainerSpec is LightningDevices and type(cfg.trainer) is LightningDevices
    assert issubclass(TrainerConfig, LightningDevices)


def test_the_overrides_may_not_set_what_the_studys_trainer_section_decides():
    with pytest.raises(ConfigError, match=r"'segmentation\.overrides\.trainer\.accelerator': .*set "
                                          r"trainer\.accelerator \(top level of the study\) instead \(got 'gpu'\)"):
        with_changes("tiny", segmentation={"preset": "tiny", "overrides": {"trainer": {"accelerator": "gpu"}}})


@pytest.mark.parametrize("name", ["paper", "demo", "tiny"])
def test_a_study_round_trips_through_yaml(name, tmp_path):
    cfg = experiment_preset(name)
    cfg.to_yaml(tmp_path / "study.yaml")
    again = ExperimentConfig.from_yaml(tmp_path / "study.yaml")
    assert again == cfg
    assert again.model_dump() == cfg.model_dump()
    assert again.segmentation_settings == cfg.segmentation_settings
    assert again.diffusion_settings == cfg.diffusion_settings
    assert yaml.safe_load((tmp_path / "study.yaml").read_text())["segmentation"] == \
        cfg.segmentation.model_dump(mode="json")


def test_the_resolved_settings_follow_the_section_and_are_copies():
    cfg = experiment_preset("demo")
    assert cfg.segmentation.settings.max_epochs == 60
    cfg.segmentation_settings.max_epochs = 3  # a copy: the study is unchanged
    cfg.segmentation.settings.max_epochs = 3
    assert cfg.segmentation_settings.max_epochs == 60
    cfg.segmentation.overrides["max_epochs"] = 9  # changed in place: resolved again
    assert cfg.segmentation_settings.max_epochs == 9
    cfg.segmentation = {"preset": "paper"}  # assigned: validated and resolved
    assert cfg.segmentation_settings.network.channels == (32, 64, 128, 256, 512)
    copied = cfg.model_copy(update={"diffusion": cfg.diffusion.model_copy(update={"preset": "paper"})})
    assert copied.diffusion_settings.preset == "paper"
    with pytest.raises(ValueError, match=r"segmentation\.overrides\.max_epoch\n.*Extra inputs"):  # pydantic's
        cfg.segmentation = {"preset": "paper", "overrides": {"max_epoch": 3}}


def test_a_sweep_drawn_from_the_realism_sample_records_what_sizes_that_sample():
    """With sweep.volumes set the sweep takes its volumes from the realism sample: changing what
    decides that sample redoes the sweep (else it stays on the old volumes and the realism stage
    finds too few of them). Without it the record is as before, so older runs stay done."""
    def sweep_record(**changes):
        data = experiment_preset("tiny").model_dump(mode="json")
        for section, values in changes.items():
            data[section].update(values)
        return {s.name: s.config(None) for s in build_stages(ExperimentConfig.from_dict(data))}["sweep"]

    assert len(sweep_record()) == 4 and sweep_record() == sweep_record(realism={"roles": ["test"]})
    subset = sweep_record(sweep={"volumes": 8})
    assert subset[-1] == {"sample": {"max_per_set": None, "roles": ["metastatic", "test"], "min_lesion_voxels": 8}}
    assert subset != sweep_record(sweep={"volumes": 8}, realism={"roles": ["test"]})
    assert subset != sweep_record(sweep={"volumes": 8}, realism={"max_per_set": 30})
    # realism.max_real_cases sizes the sample whether or not sweep.volumes is set, so it is in the record when set
    capped = sweep_record(realism={"max_real_cases": {"test": 1}})
    assert capped != sweep_record() and capped[-1]["sample"]["max_real_cases"] == {"test": 1}
    assert capped != sweep_record(realism={"max_real_cases": {"test": 2}})


def test_a_section_is_read_from_a_study_config_or_a_flat_file_and_an_empty_one_is_the_defaults(tmp_path):
    from metsynth.config import read_section

    study = tmp_path / "study.yaml"
    study.write_text("name: x\nrealism:\n  seed: 3\n")
    flat = tmp_path / "flat.yaml"
    flat.write_text("seed: 4\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("name: x\nrealism:\n")
    assert read_section(study, "realism") == {"seed": 3}
    assert read_section(flat, "realism") == {"seed": 4}
    assert read_section(empty, "realism") == {} and read_section(None, "realism") == {}


def test_what_would_fail_mid_study_is_refused_when_read_or_before_the_run_folder_is_touched(tmp_path):
    """A precision no training takes and a negative size are refused when the config is read; a
    manifest that does not exist and more folds than the cohort's patient groups before anything in
    the run folder changes (they used to surface at their stage, after config.yaml had been rewritten,
    and a manifest typo read as 'another cohort')."""
    from helpers import write_tiny_cohort
    from metsynth.errors import InputError
    from metsynth.experiment import run_experiment

    base = experiment_preset("tiny").model_dump(mode="json")
    for key, value, says in (("trainer", {"precision": "32bit"}, r"'trainer.precision': '32bit' is not a precision"),
                             ("size_study", [-4], r"'size_study.0': Input should be greater than 0")):
        with pytest.raises(ConfigError, match=says):
            ExperimentConfig.from_dict({**base, key: value}, source="study.yaml")
    manifest = write_tiny_cohort(tmp_path / "cohort", n_healthy=1, n_metastatic=3)
    good = ExperimentConfig.from_dict({**base, "cohort": {"manifest": str(manifest)}, "splits": {"n_folds": 2}})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    good.to_yaml(run_dir / "config.yaml")  # a study already there
    before = (run_dir / "config.yaml").read_bytes()
    typo_cohort = good.cohort.model_copy(update={"manifest": manifest.with_name("cohrt.yaml")})
    typo = good.model_copy(update={"cohort": typo_cohort})
    with pytest.raises(InputError, match="cohrt.yaml: cohort manifest not found"):
        run_experiment(typo, run_dir, progress=False)
    too_many = good.model_copy(update={"splits": good.splits.model_copy(update={"n_folds": 5})})
    with pytest.raises(ConfigError, match=r"has 3 patient groups for splits\.n_folds=5; lower splits\.n_folds to at "
                                          r"most 3"):
        run_experiment(too_many, run_dir, progress=False)
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]
    assert (run_dir / "config.yaml").read_bytes() == before
    phantom = ExperimentConfig.from_dict({**base, "splits": {"n_folds": 5}})
    with pytest.raises(ConfigError, match=r"cohort\.phantom\.metastatic: \d metastatic cases for splits\.n_folds=5"):
        run_experiment(phantom, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


def test_init_with_a_manifest_writes_a_study_of_that_cohort(tmp_path):
    """`experiment init --manifest`: the study reads the user's cohort (path relative to the YAML), no
    phantom section to delete by hand; a manifest that does not exist is said at once, nothing written."""
    from typer.testing import CliRunner

    from helpers import write_tiny_cohort
    from metsynth.cli import app

    manifest = write_tiny_cohort(tmp_path / "data", n_healthy=1, n_metastatic=2)
    out = tmp_path / "studies" / "mine.yaml"
    result = CliRunner().invoke(app, ["experiment", "init", "--preset", "tiny", "-o", str(out), "-m", str(manifest)])
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(out.read_text())
    assert written["cohort"] == {"manifest": "../data/cohort.yaml", "phantom": None}
    assert load_experiment_config(out).cohort.manifest == manifest.resolve()
    missing = tmp_path / "studies" / "other.yaml"
    result = CliRunner().invoke(app, ["experiment", "init", "-o", str(missing), "-m", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "cohort manifest not found" in result.output and not missing.exists()
