"""Folds at once on a CPU (``parallel.trainings``): training throughput of N one-thread processes
against one process with N torch threads, on the demo's network and patches.

Each process runs ``--steps`` optimizer steps (SGD, Dice+CE-like loss: cross-entropy) of the
``demo`` preset's U-Net (channels 8-16-32) on a batch of two 32^3 patches; the figure is optimizer
steps per second summed over the processes, so the ratio is what ``parallel.trainings: N`` gains
on this machine (both measured in the same run, back to back).

Usage::

    .venv/bin/python benchmarks/bench_parallel_trainings.py            # N = the cores; ~1 min on 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time


def train_steps(args: tuple[int, int]) -> float:
    """Seconds for ``steps`` steps with ``threads`` torch threads (after 5 warm-up steps)."""
    threads, steps = args
    import torch

    from metsynth.experiment import experiment_preset, segmentation_settings
    from metsynth.segmentation.train import build_network

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = segmentation_settings(experiment_preset("demo"))
    net = build_network(config)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(2, 1, *config.patch_size)
    y = torch.randint(0, 2, (2, *config.patch_size))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    n = args.processes
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1) as pool:  # a fresh process, like the parallel case
        one = pool.map(train_steps, [(n, args.steps)])[0]
    with spawn.Pool(n) as pool:
        many = pool.map(train_steps, [(1, args.steps)] * n)
    one_rate = args.steps / one
    many_rate = sum(args.steps / s for s in many)
    print(f"1 process x {n} threads: {one_rate:.1f} steps/s ({1000 * one / args.steps:.1f} ms/step)")
    print(f"{n} processes x 1 thread: {many_rate:.1f} steps/s in all "
          f"({', '.join(f'{1000 * s / args.steps:.1f}' for s in many)} ms/step each)")
    print(f"ratio (folds at once / one at a time): {many_rate / one_rate:.2f}x")


if __name__ == "__main__":
    main()
