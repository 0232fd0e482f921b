from __future__ import annotations

import pytest

from metsynth.errors import ConfigError
from metsynth.stages import RunContext, Stage, run_stages


def make_chain(log, fail_at=None):
    def step(name):
        def run(ctx):
            if fail_at == name:
                raise RuntimeError(f"crash in {name}")
            log.append(name)
            ctx.path(f"{name}.out").write_text(name)
        return run

    return [
        Stage("a", step("a"), config=lambda ctx: ctx.config["a"]),
        Stage("b", step("b"), needs=("a",), config=lambda ctx: ctx.config["b"]),
        Stage("c", step("c"), needs=("b",)),
        Stage("d", step("d"), needs=("a",)),
    ]


def test_rerun_skips_finished_stages(tmp_path):
    log: list[str] = []
    ctx = RunContext(tmp_path, {"a": 1, "b": 1})
    statuses = [r.status for r in run_stages(make_chain(log), ctx)]
    assert statuses == ["done"] * 4 and log == ["a", "b", "c", "d"]
    log.clear()
    assert [r.status for r in run_stages(make_chain(log), ctx)] == ["skipped"] * 4 and log == []


def test_config_change_reruns_the_stage_and_downstream_only(tmp_path):
    log: list[str] = []
    run_stages(make_chain(log), RunContext(tmp_path, {"a": 1, "b": 1}))
    log.clear()
    run_stages(make_chain(log), RunContext(tmp_path, {"a": 1, "b": 2}))
    assert log == ["b", "c"]


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    log: list[str] = []
    ctx = RunContext(tmp_path, {"a": 1, "b": 1})
    with pytest.raises(RuntimeError, match="crash in c"):
        run_stages(make_chain(log, fail_at="c"), ctx)
    assert log == ["a", "b"]
    log.clear()
    run_stages(make_chain(log), ctx)
    assert log == ["c", "d"]


def test_until_and_only(tmp_path):
    log: list[str] = []
    ctx = RunContext(tmp_path, {"a": 1, "b": 1})
    run_stages(make_chain(log), ctx, until="b")
    assert log == ["a", "b"]
    log.clear()
    run_stages(make_chain(log), ctx, only=["d"])
    assert log == ["d"]
    with pytest.raises(ConfigError, match="unknown stage 'bb'.*did you mean 'b'"):
        run_stages(make_chain(log), ctx, until="bb")


def test_only_refuses_missing_inputs(tmp_path):
    with pytest.raises(ConfigError, match="stage 'c' needs the outputs of b"):
        run_stages(make_chain([]), RunContext(tmp_path, {"a": 1, "b": 1}), only=["c"])
