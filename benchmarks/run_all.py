"""Run every benchmark in turn (``make bench``); each prints its own markdown table.

Each script measures speed as a ratio against a reference in the same run (this machine's
noise cancels out); the figures and the commands behind them are in ``benchmarks/RESULTS.md``.
This runner uses each script's quick settings; run a script alone for its full options.

Usage::

    .venv/bin/python benchmarks/run_all.py                 # all, about 15-25 min on 2 cores
    .venv/bin/python benchmarks/run_all.py metrics volume_io   # some
    .venv/bin/python benchmarks/run_all.py storage_paper       # benchmarks/storage_paper.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> arguments of its quick run
BENCHMARKS: dict[str, list[str]] = {
    "volume_io": [],
    "metrics": ["--monai-repeats", "1"],
    "synthesis": ["--repeats", "4"],
    "femur_seg": ["--phantom", "2"],
    "segmentation": ["--steps", "20", "--workers", "0", "2"],
    "parallel_trainings": ["--steps", "100"],
    "diffusion": ["--steps", "30", "--volumes", "1"],
    "storage_paper": ["--volumes", "2", "--read-repeats", "2"],
    "interpolation": ["--patches", "100"],
    "memory_format": ["--repeats", "3", "--steps", "10"],
    "input_checks": ["--files", "20", "--repeats", "2"],
}


def script(name: str) -> Path:
    """``bench_<name>.py``, or ``<name>.py`` for benchmarks named after what they extrapolate to."""
    prefixed = HERE / f"bench_{name}.py"
    return prefixed if prefixed.is_file() else HERE / f"{name}.py"


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        command = [sys.executable, str(script(name)), *BENCHMARKS[name]]
        print(f"\n## {name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        if subprocess.run(command).returncode != 0:
            failed.append(name)
        print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
