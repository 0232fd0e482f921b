"""Where one U-Net training of a finished demo run spends its time, outside its steps.

    python benchmarks/profile_training.py RUN [SOURCES]

Trains the study's model on ``SOURCES`` (default ``real``) for fold 0 with the run's settings and
one torch thread, under cProfile, into a scratch model folder that is deleted afterwards; prints
the wall time, the training's own ``timing.json`` (steps, data wait) and the cumulative profile
of imports, logging, plotting, checkpoints and the training set (RESULTS.md, "where a training's
time goes").
"""

from __future__ import annotations

import cProfile
import json
import pstats
import shutil
import sys
import time
from pathlib import Path

OUTSIDE_STEPS = ("import|build_training_set|cache_volumes|result.py.*log|plot_curves|_draw|"
                 "model_checkpoint.py.*_save_checkpoint|export_weights|merge_logs")


def main(run: Path, sources: str) -> None:
    import torch

    from metsynth.experiment import ExperimentConfig
    from metsynth.experiment.training import _train_one
    from metsynth.stages import RunContext

    torch.set_num_threads(1)
    ctx = RunContext(run, ExperimentConfig.from_yaml(run / "config.yaml"), progress=False)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    out = _train_one(ctx, f"profile_{sources}", 0, sources, None)
    profile.disable()
    wall = time.perf_counter() - start
    timing = json.loads((out / "timing.json").read_text())
    shutil.rmtree(out.parent)
    print(f"wall {wall:.1f} s; timing.json: {timing}")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(OUTSIDE_STEPS, 30)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "real")
