"""The study's prediction stage on a CPU: one process with every core's threads against the kept
worker processes (``parallel.reuse_workers``) with one thread each, on a finished demo run.

    python benchmarks/bench_predict_workers.py RUN [--models real synthetic harmonized_ft] [--repeats 2]

RUN is a finished demo run (``make demo``: ``runs/demo``). Each repeat predicts every fold of the
given models on its held-out cases (the study's ``predictions/<model>/fold<k>/cases.yaml``) into a
temporary folder, both ways in alternating order, the pool warmed first; prints the seconds of each
repeat, their ratio, and how many mask voxels differ between the two ways.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--models", nargs="+", default=["real", "synthetic", "harmonized_ft"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from metsynth.parallel import reuse_workers
    from metsynth.segmentation.inference import predict_cohort
    from metsynth.volume import Volume

    tmp = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    folds = sorted({p.parent.name for m in args.models
                    for p in (args.run / "predictions" / m).glob("fold*/cases.yaml")})

    def predict(workers: int, tag: str) -> float:
        start = time.perf_counter()
        for model in args.models:
            for fold in folds:
                out = tmp / tag / model / fold
                shutil.rmtree(out, ignore_errors=True)
                predict_cohort(args.run / "models" / model / fold / "model.pt",
                               args.run / "predictions" / model / fold / "cases.yaml", out, workers=workers,
                               progress=False)
        return time.perf_counter() - start

    try:
        with reuse_workers():
            predict(2, "warm")  # the worker processes import torch and load the models once
            seconds: dict[int, list[float]] = {1: [], 2: []}
            for r in range(args.repeats):
                for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
                    seconds[workers].append(predict(workers, f"w{workers}"))
        differing = sum(int((Volume.read(p).array != Volume.read(tmp / "w2" / p.relative_to(tmp / "w1")).array).sum())
                        for p in (tmp / "w1").rglob("*.nii.gz"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    one, two = (statistics.median(seconds[w]) for w in (1, 2))
    print(f"1 process, every core's threads: {', '.join(f'{s:.1f}' for s in seconds[1])} s")
    print(f"2 kept processes, 1 thread each: {', '.join(f'{s:.1f}' for s in seconds[2])} s")
    print(f"ratio (medians): x{two / one:.2f}; mask voxels that differ: {differing}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
