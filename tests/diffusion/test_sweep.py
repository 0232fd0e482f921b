"""The start-timestep sweep (Figure 4): the same volumes from several start timesteps."""

from __future__ import annotations

import csv
import json

import pytest

from metsynth.diffusion.harmonize import harmonize_set
from metsynth.diffusion.presets import diffusion_config
from metsynth.diffusion.sweep import SweepConfig, sweep_start_timesteps, sweep_table
from metsynth.errors import ConfigError


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_sweep_harmonizes_the_listed_volumes_from_each_timestep(tmp_path, builders, trained):
    src = builders.write_synthetic_set(tmp_path / "syn", n_volumes=3)
    out = tmp_path / "sweep"
    sets = sweep_start_timesteps(src, trained.export, out, ["syn000", "syn002"], (0, 5, 10), progress=False)
    assert sets == {0: src, 5: out / "t5", 10: out / "t10"}
    assert not (out / "t0").exists(), "timestep 0 is the synthetic set itself, not a copy"
    for t in (5, 10):
        done = sorted(p.stem for p in (out / f"t{t}" / "sidecars").glob("*.json"))
        assert done == ["syn000", "syn002"], "only the listed volumes are harmonized"
        for vid in done:
            h = json.loads((out / f"t{t}" / "sidecars" / f"{vid}.json").read_text())["harmonization"]
            assert h["start_timestep"] == t and h["timesteps"][0] == t
        index = {r["volume_id"]: r for r in _rows(out / f"t{t}" / "index.csv")}
        assert set(index) == {"syn000", "syn002"}
    table = sweep_table(sets)
    assert [r["timestep"] for r in table] == [0, 5, 10]
    assert table[0]["contrast_kept"] == 1.0
    for row in table[1:]:
        assert row["lesions"] == 2 and 0.5 < row["contrast_kept"] <= 1.5
        assert row["contrast_kept_p10"] <= row["contrast_kept"]
    # a rerun resumes: nothing is harmonized again
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    sweep_start_timesteps(src, trained.export, out, ["syn000", "syn002"], (0, 5, 10), progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == before
    # another sample (the realism sample changed size): the sets are its volumes, not those of both samples
    sets = sweep_start_timesteps(src, trained.export, out, ["syn001", "syn002"], (0, 5), progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz") if p in before} == before, "syn002 kept"
    assert {r["volume_id"] for r in _rows(out / "t5" / "index.csv")} == {"syn001", "syn002"}
    assert {r["volume_id"] for r in _rows(out / "t5" / "consistency.csv")} <= {"syn001", "syn002"}
    assert sweep_table(sets)[1]["lesions"] == 2


def test_unknown_volumes_and_timesteps_beyond_the_training_are_refused_before_writing(tmp_path, builders, trained,
                                                                                      prepared_cohort):
    src = builders.write_synthetic_set(tmp_path / "syn", n_volumes=2)
    with pytest.raises(ConfigError, match="syn777"):
        harmonize_set(src, tmp_path / "h", trained.export, volume_ids=["syn000", "syn777"], progress=False)
    assert not (tmp_path / "h").exists()
    with pytest.raises(ConfigError, match="T - 1"):
        sweep_start_timesteps(src, trained.export, tmp_path / "sweep", ["syn000"], (5, 500), progress=False)
    assert not (tmp_path / "sweep").exists(), "every timestep is checked before the first is harmonized"
    with pytest.raises(ValueError, match="non-negative"):
        SweepConfig(timesteps=(-1, 5))
    assert SweepConfig(timesteps=(10, 0, 10)).timesteps == (0, 10)


def test_a_network_trained_on_low_timesteps_refuses_to_start_above_them():
    with pytest.raises(Exception, match="max_timestep"):
        diffusion_config("tiny", {"train": {"max_timestep": 10}, "harmonize": {"start_timestep": 20}})
    config = diffusion_config("tiny", {"train": {"max_timestep": 20}, "harmonize": {"start_timestep": 20}})
    assert config.train.max_timestep == 20


def test_training_timesteps_stay_below_max_timestep(prepared_cohort):
    from metsynth.cohort import load_cohort
    from metsynth.diffusion.data import PatchDataset, load_training_cases

    cases = load_training_cases(load_cohort(prepared_cohort), 5.0)
    limited = PatchDataset(cases, (16, 16, 16), 4, 200, seed=0, max_timestep=7)
    full = PatchDataset(cases, (16, 16, 16), 4, 200, seed=0)
    drawn = [int(limited[i]["timestep"]) for i in range(40)]
    assert max(drawn) <= 7 and len(set(drawn)) > 3
    assert max(int(full[i]["timestep"]) for i in range(40)) > 7
