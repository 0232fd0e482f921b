"""Folds trained side by side: the patch-prefetch thread is off when their trainings fill every
core (it then only competes with them), on when a core is left."""

from __future__ import annotations

import pytest

from metsynth.experiment import ExperimentConfig, experiment_preset, training
from metsynth.segmentation import prefetch
from metsynth.stages import RunContext


@pytest.mark.parametrize("cores, spare", [(2, False), (8, False), (5, True)])
def test_prefetch_only_with_a_spare_core(tmp_path, monkeypatch, cores, spare):
    data = experiment_preset("tiny").model_dump(mode="json")
    data["parallel"] = {**data["parallel"], "trainings": 2}
    ctx = RunContext(tmp_path, ExperimentConfig.from_dict(data), progress=False)
    seen = []
    monkeypatch.setattr(training.os, "cpu_count", lambda: cores)
    monkeypatch.setattr("metsynth.parallel.map_tasks", lambda fn, tasks, **kw: seen.extend(tasks) or [])
    training._train_folds(ctx, {0: [("real", "real", None, None)], 1: [("real", "real", None, None)]})
    assert [t.prefetch for t in seen] == [spare, spare]

    monkeypatch.setattr(prefetch, "PREFETCH_DEPTH", 2)
    depths = []
    monkeypatch.setattr(training, "_train_jobs", lambda ctx, fold, jobs: depths.append(prefetch.PREFETCH_DEPTH) or [])
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)  # this test process keeps its threads
    training.run_fold_trainings(seen[0])
    assert depths == [2 if spare else 0]
    assert prefetch.PREFETCH_DEPTH == 2  # put back: the worker process may be kept for later tasks
