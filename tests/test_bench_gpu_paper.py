"""CPU smoke test of benchmarks/bench_gpu_paper.py (issue 14 item 5): ``--scale small`` runs every
measurement (DDPM step, harmonization in lesion and volume mode, U-Net step, sliding window,
predict_volume) in seconds and writes the table; ``--scale paper`` refuses a CPU."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu_paper.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_gpu_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_scale_refuses_a_cpu(tmp_path, capsys):
    bench = load_script()
    with pytest.raises(SystemExit) as exc:
        bench.main(["--scale", "paper", "--device", "cpu", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--allow-cpu" in err and "--scale small" in err
    assert not (tmp_path / "results.json").exists()


def test_small_scale_times_every_row_on_cpu(tmp_path, capsys):
    bench = load_script()
    out = tmp_path / "out"
    assert bench.main(["--scale", "small", "--device", "cpu", "--repeats", "2", "--volume-repeats", "1",
                       "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["scale"] == "small" and list(results["runs"]) == ["32"]
    rows = results["runs"]["32"]
    assert set(rows) == set(bench.ROWS)
    for name, row in rows.items():
        assert row["median_s"] > 0 and math.isfinite(row["median_s"]), name
        assert row["min_s"] <= row["median_s"] <= row["max_s"], name
        assert row["peak_gpu_bytes"] is None, name  # on a CPU
    # the preset's DDIM settings: noised to t = 40, 11 evaluations per window (40, 36, ..., 0)
    assert rows["harmonize_volume"]["timesteps"] == list(range(40, -1, -4))
    assert rows["harmonize_volume"]["windows"] > rows["harmonize_lesion"]["windows"] >= 1
    assert rows["ddpm_step"]["total_s"] > 0 and "130,000 steps" in rows["ddpm_step"]["total"]
    assert rows["harmonize_volume"]["total_s"] > 0 and "5,675 volumes" in rows["harmonize_volume"]["total"]

    table = (out / "results.md").read_text()
    assert "not** the paper's figures" in table
    for label in bench.LABELS.values():
        assert sum(line.startswith(f"| {label} | 32 |") for line in table.splitlines()) == 1, label
    assert table in capsys.readouterr().out
