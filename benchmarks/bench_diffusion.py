"""Diffusion harmonization speed on a phantom femur prepared at 0.85 mm (issue 5).

Measures, with the ``cpu`` preset (or ``--preset``):

* training throughput: optimizer steps per second (median interval between steps after a
  warm-up, so Lightning's start-up is excluded), and the wall time of the whole run;
* harmonization seconds per volume, ``region: lesion`` versus ``region: volume`` (the same
  synthetic volumes, network loaded once, no file IO), with the number of windows;
* a before/after montage (``harmonize_set --preview``) of three lesions.

Data (cached in ``--work``, default ``runs/bench_diffusion``, git-ignored): a phantom cohort (default,
realistic preset) -> ``prepare`` (0.85 mm, [-1, 1]) -> lesion bank -> ``synthesize`` (one
attempt per healthy femur x lesion). The DDPM is trained on the prepared healthy femurs for
``--steps`` steps (a rerun with more steps continues it).

Usage::

    .venv/bin/python benchmarks/bench_diffusion.py [--steps 300] [--volumes 3] [--preset cpu] [--device cpu]

Prints a Markdown table (and writes it to ``WORK/results.md``).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]


def build_data(work: Path, n_healthy: int, n_metastatic: int) -> tuple[Path, Path]:
    """(prepared manifest, synthetic set folder), built once."""
    from metsynth.cohort import load_cohort
    from metsynth.phantom import generate_cohort
    from metsynth.prepare import PrepareConfig, prepare_cohort
    from metsynth.synthesis.bank import extract_bank
    from metsynth.synthesis.compose import SynthesisConfig
    from metsynth.synthesis.run import run_synthesis

    prepared = work / "prepared" / "cohort.yaml"
    if not prepared.is_file():
        raw = generate_cohort(work / "raw", n_healthy=n_healthy, n_metastatic=n_metastatic, n_test=0, seed=0,
                              progress=True)
        prepare_cohort(load_cohort(raw), work / "prepared", PrepareConfig(), progress=True)
    synthetic = work / "synthetic"
    if not (synthetic / "index.csv").is_file():
        bank = extract_bank(prepared, work / "bank", progress=True)
        config = SynthesisConfig.preset("paper").merged(repeats=1)
        run_synthesis(prepared, bank, synthetic, config, progress=True)
    return prepared, synthetic


class StepTimer(L.Callback):
    """Wall-clock time at the end of every training batch."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, trainer, *args) -> None:
        self.times.append(time.perf_counter())


def bench_training(prepared: Path, run: Path, preset: str, steps: int, accelerator: str) -> dict:
    from metsynth.diffusion.presets import diffusion_config
    from metsynth.diffusion.train import train_diffusion

    config = diffusion_config(preset, train={"max_steps": steps})
    timer = StepTimer()
    start = time.perf_counter()
    result = train_diffusion(prepared, run, config, accelerator=accelerator, devices=1, progress=False,
                             callbacks=[timer])
    wall = time.perf_counter() - start
    intervals = [b - a for a, b in zip(timer.times, timer.times[1:])][5:]
    per_step = statistics.median(intervals) if intervals else float("nan")
    return {"steps_done_now": len(timer.times), "total_steps": result.steps, "wall_s": wall,
            "s_per_step": per_step, "steps_per_s": 1.0 / per_step if intervals else float("nan"),
            "batch": config.train.batch_size, "patch": config.train.patch_size, "final_loss": result.final_loss,
            "export": result.export}


def bench_harmonization(synthetic: Path, export: Path, n_volumes: int, device: str) -> tuple[list[dict], dict]:
    """Lesion mode on ``n_volumes`` volumes; volume mode on the first one (its cost does not depend
    on the lesions: the same windows are refined whatever the label)."""
    from metsynth.diffusion.harmonize import harmonize_volume, load_denoiser, read_synthetic_set, volume_seed
    from metsynth.volume import Volume

    denoiser = load_denoiser(export, device)
    items = [i for i in read_synthetic_set(synthetic)[0] if i.kept][:n_volumes]
    rows, whole = [], {}
    for k, item in enumerate(items):
        image, label = Volume.read(item.image), Volume.read(item.label)
        regions = ("lesion", "volume") if k == 0 else ("lesion",)
        for region in regions:
            cfg = denoiser.config.harmonize.merged(region=region)
            start = time.perf_counter()
            _, info = harmonize_volume(image, label, denoiser, cfg, volume_seed(0, item.volume_id))
            seconds = time.perf_counter() - start
            if region == "lesion":
                boxes = [tuple(b - a for a, b in zip(box["lo"], box["hi"])) for box in info["boxes"]]
                lesion_mm3 = float((label.array > 0).sum() * label.voxel_volume_mm3)
                rows.append({"volume": item.volume_id, "shape": image.shape, "lesion_mm3": lesion_mm3,
                             "boxes": boxes, "seconds": seconds, "windows": info["windows"]})
                print(rows[-1], flush=True)
            else:
                whole = {"volume": item.volume_id, "shape": image.shape, "seconds": seconds, "windows": info["windows"]}
                print(whole, flush=True)
    return rows, whole


def summary_timesteps(export: Path) -> list[int]:
    from metsynth.diffusion.harmonize import checkpoint_settings
    from metsynth.diffusion.schedule import ddim_timesteps

    cfg = checkpoint_settings(export)
    return ddim_timesteps(cfg.noise.num_train_timesteps, cfg.harmonize.ddim_steps, cfg.harmonize.start_timestep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_diffusion")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=300, help="total training steps (a rerun continues)")
    parser.add_argument(
        "--volumes", type=int, default=3,
        help="synthetic volumes timed in lesion mode (the first one also in volume mode)")
    parser.add_argument("--healthy", type=int, default=3)
    parser.add_argument("--metastatic", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preview", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    args.work.mkdir(parents=True, exist_ok=True)
    prepared, synthetic = build_data(args.work, args.healthy, args.metastatic)
    train = bench_training(prepared, args.work / f"ddpm-{args.preset}", args.preset, args.steps, args.accelerator)
    rows, whole = bench_harmonization(synthetic, train["export"], args.volumes, args.device)

    from metsynth.diffusion.harmonize import harmonize_set

    out = args.work / f"harmonized-{args.preset}"
    summary = harmonize_set(synthetic, out, train["export"], workers=1, device=args.device, progress=False,
                            preview=args.preview, force=True, limit=max(args.preview, 1))

    load = os.getloadavg()
    lines = [
        f"Machine: {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, load average "
        f"{load[0]:.1f} at the end (other jobs running), device {args.device}; preset `{args.preset}`.",
        "",
        f"Training: batch {train['batch']} x patch {tuple(train['patch'])} (z, y, x): "
        f"**{train['steps_per_s']:.2f} steps/s** ({train['s_per_step']:.2f} s/step, median after warm-up); "
        f"{train['steps_done_now']} steps in {train['wall_s']:.0f} s wall this run, {train['total_steps']} in total, "
        f"last loss {train['final_loss']:.4f}.",
        "",
        "| volume | shape (z, y, x) | lesion mm3 | lesion box(es) | lesion mode s (windows) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['volume']} | {tuple(r['shape'])} | {r['lesion_mm3']:.0f} | {r['boxes']} | "
                     f"{r['seconds']:.1f} ({r['windows']}) |")
    lesion = statistics.mean(r["seconds"] for r in rows)
    n_steps = len(summary_timesteps(train["export"]))
    lines += [
        "",
        f"Volume mode on {whole['volume']} {tuple(whole['shape'])}: **{whole['seconds']:.0f} s** "
        f"({whole['windows']} windows); lesion mode mean **{lesion:.1f} s** per volume: "
        f"**{whole['seconds'] / lesion:.0f}x** faster in wall time; in network evaluations (windows): "
        f"{whole['windows'] / statistics.mean(r['windows'] for r in rows):.0f}x fewer. Seconds per window and DDIM "
        f"step: lesion {statistics.mean(r['seconds'] / r['windows'] for r in rows) / n_steps:.2f}, "
        f"volume {whole['seconds'] / whole['windows'] / n_steps:.2f} (the load varied).",
    ]
    lines += ["", f"harmonize_set (lesion mode, {summary.volumes} volumes, files included): "
                  f"{summary.seconds:.1f} s; flagged {len(summary.flagged)}; preview: {summary.preview}"]
    text = "\n".join(lines)
    (args.work / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
