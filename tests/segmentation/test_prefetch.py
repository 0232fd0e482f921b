"""Patches made in a thread ahead of the step (num_workers 0): the same batches in the same order,
so the same weights, errors reach the training loop, and a loop that stops early ends the thread."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from metsynth.segmentation import prefetch
from metsynth.segmentation.prefetch import ThreadPrefetchLoader


class _Items(torch.utils.data.Dataset):
    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at, self.threads = n, fail_at, set()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.threads.add(threading.current_thread().name)
        if i == self.fail_at:
            raise ValueError(f"item {i} is broken")
        return torch.full((2,), float(i))


def test_batches_come_in_order_from_a_thread_ahead():
    data = _Items(10)
    batches = list(ThreadPrefetchLoader(data, batch_size=3, depth=2))
    plain = list(torch.utils.data.DataLoader(_Items(10), batch_size=3))
    assert len(batches) == len(plain) == 4
    assert all(torch.equal(a, b) for a, b in zip(batches, plain))
    assert data.threads == {"metsynth-patches"}  # made in the prefetch thread, not in the step's
    assert list(ThreadPrefetchLoader(_Items(4), batch_size=2, depth=0))[1].tolist() == [[2.0, 2.0], [3.0, 3.0]]


def test_an_error_reaches_the_loop_and_an_early_stop_ends_the_thread():
    with pytest.raises(ValueError, match="item 4 is broken"):
        list(ThreadPrefetchLoader(_Items(9, fail_at=4), batch_size=2))
    before = {t for t in threading.enumerate() if t.name == "metsynth-patches"}
    iterator = iter(ThreadPrefetchLoader(_Items(100), batch_size=1, depth=2))
    next(iterator)
    iterator.close()  # what a training stopped by max_steps does with its loader
    deadline = time.time() + 5
    while {t for t in threading.enumerate() if t.name == "metsynth-patches"} - before and time.time() < deadline:
        time.sleep(0.01)
    assert not {t for t in threading.enumerate() if t.name == "metsynth-patches" and t.is_alive()} - before


def test_a_training_gives_the_same_weights_with_and_without_the_thread(tmp_path, builders, monkeypatch):
    from metsynth.segmentation.datasets import build_training_set
    from metsynth.segmentation.train import load_weights, train_segmentation

    manifest = builders.write_prepared_cohort(tmp_path / "cohort", n_metastatic=2, n_healthy=1)
    config = builders.overfit_config(max_epochs=2, augment={"enabled": True})
    training_set = build_training_set(manifest, "real", val_cases=0, seed=0)
    states = {}
    for depth in (2, 0):
        monkeypatch.setattr(prefetch, "PREFETCH_DEPTH", depth)
        result = train_segmentation(training_set, tmp_path / f"depth{depth}", config, progress=False)
        states[depth] = load_weights(result.model)[0]
    assert states[2].keys() == states[0].keys()
    assert all(torch.equal(states[2][k], states[0][k]) for k in states[0])
