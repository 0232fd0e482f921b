"""The study's size-study models: the ceiling counts kept volumes however ``kept`` is spelled, and
only a typed NotEnoughVolumes (never another error that happens to say "only") makes a fold train
on every allowed volume."""

from __future__ import annotations

from pathlib import Path

import pytest

from metsynth.errors import ConfigError
from metsynth.experiment import ExperimentConfig, training
from metsynth.synthesis.sets import NotEnoughVolumes


class _Ctx:
    def __init__(self, run: Path, sizes):
        self.run_dir = run
        self.config = ExperimentConfig.from_dict({"cohort": {"manifest": "cohort.yaml"},
                                                  "size_study": list(sizes)})


def _index(folder: Path, kept: list[str]) -> None:
    folder.mkdir(parents=True)
    rows = [f"v{i},H00,M01,img{i}.nii.gz,lab{i}.nii.gz,{k}" for i, k in enumerate(kept)]
    (folder / "index.csv").write_text("volume_id,healthy_case,donor_case,image,label,kept\n" + "\n".join(rows) + "\n")


def test_size_study_ceiling_counts_every_spelling_of_kept(tmp_path, monkeypatch):
    _index(tmp_path / "synthetic", ["true", "y", "t", "1", "false", "n", "no", "f"])
    monkeypatch.setattr(training, "_layout", lambda ctx: training.RunLayout(tmp_path))
    ctx = _Ctx(tmp_path, [2, 4, 5])
    # 4 kept: 2 is a size-study model, 4 and 5 are the full set (the 'synthetic' model) or more
    assert training.size_study_sizes(ctx) == [2]


def test_only_not_enough_volumes_falls_back_to_every_volume(monkeypatch):
    calls = []

    def fake(ctx, model, fold, sources, base, limit=None):
        calls.append(limit)
        if limit is not None:
            raise NotEnoughVolumes(limit, 3, fold)
        return Path("trained")

    monkeypatch.setattr(training, "_train_one", fake)
    assert training._train_size_model(None, 10, 1) == Path("trained")
    assert calls == [10, None]

    def other_error(ctx, model, fold, sources, base, limit=None):
        raise ConfigError("the only cohort given has no healthy case")  # says "only", is not about volumes

    monkeypatch.setattr(training, "_train_one", other_error)
    with pytest.raises(ConfigError, match="no healthy case"):
        training._train_size_model(None, 10, 1)
