"""map_tasks: in-process, local processes (spawn) and a Dask cluster give the same results;
a failing task is reported by its key and does not stop the others."""

from __future__ import annotations

import logging
import os
import time

import pytest

from metsynth.errors import ConfigError
from metsynth.parallel import TaskFailure, TasksFailed, map_tasks, reuse_workers, task_key


def square(task: dict) -> tuple[str, int]:  # module level: picklable for spawn workers
    if task["x"] < 0:
        raise ValueError(f"negative input {task['x']}")
    return task["key"], task["x"] ** 2


def pid_of(task) -> int:
    time.sleep(0.05)  # long enough for both workers to take tasks
    return os.getpid()


def die(task) -> None:
    os._exit(3)  # a worker killed mid-task (out of memory, a signal)


TASKS = [{"key": f"t{i}", "x": i} for i in range(6)]
EXPECTED = {f"t{i}": i * i for i in range(6)}


def test_inline_results_and_keys():
    assert dict(map_tasks(square, TASKS, progress=False)) == EXPECTED
    assert task_key({"key": "a"}) == "a"
    assert task_key(3) == "3"


def test_failure_is_reported_and_others_continue(caplog):
    tasks = TASKS[:3] + [{"key": "bad-one", "x": -1}] + TASKS[3:]
    results = {}
    with caplog.at_level(logging.ERROR, logger="metsynth.parallel"):
        with pytest.raises(TasksFailed, match=r"1 of 7 tasks failed \(bad-one: ValueError: negative input -1\)"):
            for key, value in map_tasks(square, tasks, progress=False):
                results[key] = value
    assert results == EXPECTED  # every other task ran
    assert "bad-one" in caplog.text


def test_a_single_or_every_task_failing_is_said_as_such(caplog):
    """One task failing is the command's own error, said once; every task failing leaves no 'others'."""
    with caplog.at_level(logging.ERROR, logger="metsynth.parallel"):
        with pytest.raises(TasksFailed) as one:
            list(map_tasks(square, [{"key": "only", "x": -1}], desc="predict", progress=False))
    assert str(one.value) == ("predict failed (only: ValueError: negative input -1): fix the cause and rerun the "
                              "same command")
    assert "task only failed" not in caplog.text  # not printed twice
    with pytest.raises(TasksFailed, match=r"^all 2 tasks failed \(a: .*; b: .*\): fix the cause") as both:
        list(map_tasks(square, [{"key": "a", "x": -1}, {"key": "b", "x": -2}], progress=False))
    assert "others" not in str(both.value)


def test_failures_collected_without_raising():
    mapping = map_tasks(square, [{"key": "bad", "x": -2}, {"key": "ok", "x": 2}], progress=False,
                        raise_on_failure=False)
    assert list(mapping) == [("ok", 4)]
    assert len(mapping.failures) == 1
    failure = mapping.failures[0]
    assert isinstance(failure, TaskFailure)
    assert failure.key == "bad" and "ValueError" in failure.error and "Traceback" in failure.traceback


def test_process_pool_matches_inline():
    tasks = TASKS + [{"key": "bad", "x": -1}]
    mapping = map_tasks(square, tasks, workers=2, progress=False, raise_on_failure=False)
    assert dict(mapping) == EXPECTED
    assert [f.key for f in mapping.failures] == ["bad"]


def test_dask_local_cluster_matches_inline():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            mapping = map_tasks(square, TASKS + [{"key": "bad", "x": -3}], scheduler=client, progress=False,
                                raise_on_failure=False)
            assert dict(mapping) == EXPECTED
            assert [f.key for f in mapping.failures] == ["bad"]


def test_bad_settings():
    with pytest.raises(ConfigError, match="workers must be a whole number >= 1, got 0"):
        map_tasks(square, TASKS, workers=0)
    with pytest.raises(ConfigError, match="scheduler must be an address"):
        list(map_tasks(square, TASKS, scheduler=42, progress=False))


def test_unreachable_scheduler_is_a_clear_error():
    pytest.importorskip("distributed")
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"):
            list(map_tasks(square, TASKS, scheduler="tcp://127.0.0.1:9", progress=False))


def test_reuse_workers_keeps_the_processes_between_calls_and_closes_them_after():
    with reuse_workers():
        first = set(map_tasks(pid_of, range(6), workers=2, progress=False))
        with reuse_workers():  # a nested block shares the pools
            second = set(map_tasks(pid_of, range(6), workers=2, progress=False))
        third = set(map_tasks(pid_of, range(6), workers=2, progress=False))
        assert second <= first and third <= first and os.getpid() not in first
    for pid in first:  # closed (and reaped) when the block ended
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    outside = [set(map_tasks(pid_of, range(4), workers=2, progress=False)) for _ in range(2)]
    assert not outside[0] & outside[1]  # without the block: new processes for each call


def test_a_dead_worker_does_not_break_the_later_calls_of_a_block():
    with reuse_workers():
        broken = map_tasks(die, [1], workers=2, progress=False, raise_on_failure=False)
        assert list(broken) == [] and "BrokenProcessPool" in broken.failures[0].error
        assert dict(map_tasks(square, TASKS, workers=2, progress=False)) == EXPECTED
