"""The patch-prefetch thread (``segmentation/prefetch.py``) on and off, and the realism bootstrap's AUC.

    python benchmarks/bench_prefetch.py RUN [--fold 0] [--threads 1] [--side-by-side] [--sources real] [--constant]
                                            [--repeats 1] [--epochs N] [--study]
    python benchmarks/bench_prefetch.py --auc

RUN is a finished demo run (``make demo``: ``runs/demo``). Trains the study's model on ``--sources``
(``real``; ``online`` for the on-the-fly synthesis) for ``--fold`` with the study's settings, once
with the thread (2 batches ahead) and once without (depth 0), each into a scratch model folder that
is deleted afterwards; ``--side-by-side`` trains folds 0 and 1 at once in two processes, as the demo
does. Prints wall time, step time and data-wait share (``timing.json``) per run. ``--constant``: every
patch is the first one again (no data cost at all), so the share is the training loop's own floor.
``--repeats N`` alternates the two settings N times (this machine's speed drifts by 15 % within an
hour, so one pair of runs cannot tell a few per cent) and prints each round's wall time (the slower
of the side-by-side pair, start to end) and the paired difference; ``--epochs`` shortens each
training (the study's ``max_epochs`` otherwise). ``--study``: folds 0 and 1 through the study's own
``_train_folds`` instead (a pool of two spawned processes kept for the call, one torch thread each,
as the demo's train stage), the depth set in its workers; the wall time is that of the call.

``--auc``: ``realism.c2st.rank_auc`` against scikit-learn's ``roc_auc_score`` on the same bootstrap
resamples (ms per call, their ratio, the largest difference), then a whole interval of 1000 cluster
resamples by ``bootstrap_auc`` (one count-weighted product) against ranking every resample.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _study_config(run_dir: Path, epochs: int, **parallel):
    """The run's study settings, with ``epochs`` per training (0: the study's) and ``parallel`` overrides."""
    from metsynth.experiment import ExperimentConfig

    data = ExperimentConfig.from_yaml(run_dir / "config.yaml").model_dump(mode="json")
    data["parallel"].update(parallel)
    if epochs:
        data["segmentation"]["overrides"]["max_epochs"] = epochs
    return ExperimentConfig.from_dict(data)


def train_once(run: str, fold: int, depth: int, threads: int, sources: str, constant: bool = False,
               epochs: int = 0) -> dict:
    """One training in this process (the worker of ``main``); returns its timings."""
    import torch

    torch.set_num_threads(threads)
    from metsynth.experiment.training import _train_one
    from metsynth.segmentation import datasets, prefetch
    from metsynth.stages import RunContext

    if constant:  # the first patch over and over: what the loop itself costs between steps
        first = {}
        make = datasets.PatchDataset.__getitem__

        def replay(self, key):
            if "item" not in first:
                first["item"] = make(self, key)
            return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in first["item"].items()}

        datasets.PatchDataset.__getitem__ = replay

    prefetch.PREFETCH_DEPTH = depth
    run_dir = Path(run)
    ctx = RunContext(run_dir, _study_config(run_dir, epochs), progress=False)
    model = f"bench_prefetch_{sources}_d{depth}"
    start = time.perf_counter()
    out = _train_one(ctx, model, fold, sources, None)
    wall = time.perf_counter() - start
    timing = json.loads((out / "timing.json").read_text())
    shutil.rmtree(out)  # the scratch model's fold (the other fold may still be training beside it)
    if not any(out.parent.iterdir()):
        out.parent.rmdir()
    return {"depth": depth, "fold": fold, "wall_s": round(wall, 1), "step_s": round(timing["step_s"], 1),
            "data_wait_share": round(timing["data_wait_share"], 3)}


def _with_depth(depth: int, task):
    """The study's fold task with the prefetch depth set in its worker first (``--study``)."""
    from metsynth.experiment.training import run_fold_trainings
    from metsynth.segmentation import prefetch

    prefetch.PREFETCH_DEPTH = depth
    return run_fold_trainings(task)


def study_once(run: str, depth: int, sources: str, epochs: int, tag: str) -> dict:
    """Folds 0 and 1 trained by the study's ``_train_folds`` (the demo's path); wall time and timings."""
    import functools

    from metsynth.experiment import training
    from metsynth.parallel import reuse_workers
    from metsynth.stages import RunContext

    run_dir = Path(run)
    ctx = RunContext(run_dir, _study_config(run_dir, epochs, trainings=2), progress=False, force=True)
    task_fn = training.run_fold_trainings
    training.run_fold_trainings = functools.partial(_with_depth, depth)  # pickled by reference: spawn-safe
    model = f"bench_prefetch_study_{tag}"
    try:
        start = time.perf_counter()
        with reuse_workers():
            training._train_folds(ctx, {fold: [(model, sources, None, None)] for fold in (0, 1)})
        wall = time.perf_counter() - start
    finally:
        training.run_fold_trainings = task_fn
    folder = run_dir / "models" / model
    timings = [json.loads((folder / f"fold{fold}" / "timing.json").read_text()) for fold in (0, 1)]
    shutil.rmtree(folder)
    return {"wall_s": wall, "step_s": [round(t["step_s"], 1) for t in timings],
            "data_wait_share": [round(t["data_wait_share"], 3) for t in timings]}


def auc_timing(n: int = 120, resamples: int = 300) -> None:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from metsynth.realism.c2st import rank_auc

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(int)
    scores = rng.normal(size=n) + 0.5 * y
    picks = [i for i in (rng.integers(0, n, n) for _ in range(resamples)) if 0 < y[i].sum() < n]
    start = time.perf_counter()
    a = [roc_auc_score(y[i], scores[i]) for i in picks]
    sk = time.perf_counter() - start
    start = time.perf_counter()
    b = [rank_auc(y[i], scores[i]) for i in picks]
    ours = time.perf_counter() - start
    print("| roc_auc_score ms/call | rank_auc ms/call | ratio | largest difference |\n|---|---|---|---|")
    print(f"| {sk / len(picks) * 1e3:.3f} | {ours / len(picks) * 1e3:.3f} | {sk / ours:.1f} | "
          f"{max(abs(u - v) for u, v in zip(a, b)):.1e} |")
    bootstrap_timing(y, scores)


def bootstrap_timing(y, scores, groups: int = 40, n_boot: int = 1000, repeats: int = 3) -> None:
    """A whole cluster-bootstrap interval: ``bootstrap_auc`` (one count-weighted product) against
    ranking each resample with ``rank_auc`` (what it did before), from the same draws."""
    import numpy as np

    from metsynth.realism.c2st import bootstrap_auc, rank_auc

    group = np.random.default_rng(1).integers(0, groups, len(y))
    names, inverse = np.unique(group, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    print(f"\n| interval of {n_boot} cluster resamples, {len(y)} samples in {len(names)} groups | "
          "ranked (ms) | product (ms) | ratio | same interval |\n|---|---|---|---|---|")
    for r in range(repeats):
        start = time.perf_counter()
        draws = np.random.default_rng(r)
        picks = (np.concatenate([members[g] for g in draws.integers(0, len(names), len(names))])
                 for _ in range(n_boot))
        ranked = np.percentile([rank_auc(y[i], scores[i]) for i in picks if 0 < y[i].sum() < len(i)], [2.5, 97.5])
        middle = time.perf_counter()
        product = bootstrap_auc(y, scores, n_boot, r, group)
        end = time.perf_counter()
        print(f"| repeat {r} | {(middle - start) * 1e3:.1f} | {(end - middle) * 1e3:.1f} | "
              f"{(end - middle) / (middle - start):.3f} | {bool(np.allclose(ranked, product, atol=1e-12))} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--side-by-side", action="store_true", help="folds 0 and 1 at once, as the demo")
    parser.add_argument("--sources", default="real")
    parser.add_argument("--constant", action="store_true", help="every patch the first one: the loop's floor")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of (without, with), alternated")
    parser.add_argument("--epochs", type=int, default=0, help="epochs per training (0: the study's)")
    parser.add_argument("--study", action="store_true", help="folds 0 and 1 through the study's own _train_folds")
    parser.add_argument("--auc", action="store_true")
    parser.add_argument("--worker", nargs=2, type=int, metavar=("FOLD", "DEPTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.auc:
        return auc_timing()
    if args.run is None:
        parser.error("give RUN (a finished demo run) or --auc")
    if args.worker:
        print(json.dumps(train_once(args.run, args.worker[0], args.worker[1], args.threads, args.sources,
                                    args.constant, args.epochs)))
        return
    folds = [0, 1] if args.side_by_side else [args.fold]
    print("| round | prefetch depth | fold | wall (s) | step (s) | data-wait share |\n|---|---|---|---|---|---|")
    walls: dict[int, list[float]] = {0: [], 2: []}
    for round_ in range(args.repeats):
        for depth in (0, 2):
            if args.study:
                r = study_once(args.run, depth, args.sources, args.epochs, f"r{round_}d{depth}")
                print(f"| {round_} | {depth} | 0, 1 | {r['wall_s']:.1f} | {r['step_s']} | {r['data_wait_share']} |",
                      flush=True)
                walls[depth].append(r["wall_s"])
                continue
            start = time.perf_counter()
            procs = [subprocess.Popen([sys.executable, __file__, args.run, "--threads", str(args.threads),
                                       "--sources", args.sources, "--epochs", str(args.epochs),
                                       "--worker", str(fold), str(depth)] + (["--constant"] if args.constant else []),
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for fold in folds]
            for proc in procs:
                out, _ = proc.communicate()
                r = json.loads(out.strip().splitlines()[-1])
                print(f"| {round_} | {r['depth']} | {r['fold']} | {r['wall_s']} | {r['step_s']} | "
                      f"{r['data_wait_share']:.1%} |")
            walls[depth].append(time.perf_counter() - start)
    if args.repeats > 1:
        import numpy as np

        diff = np.array(walls[2]) / np.array(walls[0])
        print(f"\nwall per round (processes started to all ended): without {np.round(walls[0], 1).tolist()}, "
              f"with {np.round(walls[2], 1).tolist()}; with / without per round: {np.round(diff, 3).tolist()}, "
              f"median {np.median(diff):.3f}, range {diff.min():.3f}-{diff.max():.3f}")

if __name__ == "__main__":
    main()
