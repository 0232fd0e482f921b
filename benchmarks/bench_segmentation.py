"""Segmentation speed: training steps/s and data-wait share (``cpu`` preset), patch sampling, and
sliding-window inference over a femur volume.

Data: a phantom cohort of realistic size (``PhantomConfig()``: 200 x 160 x 180 mm at 0.7-1.25 mm)
prepared like real data (``metsynth prepare``: femur crop + 10 mm, 0.85 mm isotropic, [-1, 1]).
It is made once into ``--data`` (default: a temporary folder) and reused when the folder exists.

1. **Training** (:func:`metsynth.segmentation.train.train_segmentation`, the ``cpu`` preset, real
   source): ``--steps`` optimizer steps for each DataLoader worker count in ``--workers``. The
   ``DataWaitMonitor`` callback splits the time of every step into waiting for the batch
   (fetch + transfer) and the step itself (forward, backward, optimizer); the first batch of an
   epoch (worker start-up) is reported apart. Validation is not timed.
2. **Patch sampling** alone: one patch of the ``cpu`` (48^3) and ``paper`` (64 x 96 x 96) sizes,
   plain and with every augmentation switched on, from a memory-mapped cached volume.
3. **Sliding-window inference** over the largest prepared femur volume: the ``cpu`` preset's
   network (and with ``--paper`` the paper's 5-level network, slow on a CPU), weights untrained
   (the time does not depend on them); plus :func:`predict_volume` on the original HU scan
   (femur crop, resampling to 0.85 mm and back, post-processing).

Usage::

    .venv/bin/python benchmarks/bench_segmentation.py                      # ~3-6 min on 2 cores
    .venv/bin/python benchmarks/bench_segmentation.py --data /tmp/segbench --workers 0 1 2 --paper
    .venv/bin/python benchmarks/bench_segmentation.py --gpu-paper-step     # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_data(folder: Path, n_cases: int) -> Path:
    from metsynth.cohort import load_cohort
    from metsynth.phantom import PhantomConfig, generate_cohort
    from metsynth.prepare import PrepareConfig, prepare_cohort

    prepared = folder / "prepared" / "cohort.yaml"
    if prepared.exists():
        return prepared
    start = time.perf_counter()
    raw = generate_cohort(folder / "phantom", n_healthy=0, n_metastatic=n_cases, seed=0, config=PhantomConfig())
    prepare_cohort(load_cohort(raw), folder / "prepared", PrepareConfig(), progress=False)
    print(f"data: {n_cases} phantom cases made and prepared in {time.perf_counter() - start:.0f} s")
    return prepared


def bench_training(manifest: Path, out: Path, steps: int, workers: int) -> dict:
    from metsynth.segmentation.datasets import build_training_set
    from metsynth.segmentation.presets import segmentation_config
    from metsynth.segmentation.train import train_segmentation

    config = segmentation_config("cpu", {"max_steps": steps, "max_epochs": 10_000, "num_workers": workers,
                                         "val_every_n_epochs": 10_000, "trainer": {"accelerator": "cpu"},
                                         "cache_dir": str(out / "cache")})
    ts = build_training_set(manifest, "real", val_cases=1)
    result = train_segmentation(ts, out / f"train-w{workers}", config, force=True, progress=False)
    t = result.timing
    return {"workers": workers, "steps": t["steps"], "steady_steps_per_s": t["steady_steps_per_s"],
            "step_ms": 1000 * t["step_s"] / t["steps"], "wait_ms": 1000 * t["data_wait_s"] / t["steps"],
            "data_wait_share": t["data_wait_share"], "startup_s": t["startup_wait_s"],
            "patches_per_step": config.batch_size, "patch": list(config.patch_size)}


def bench_patches(manifest: Path, out: Path, repeats: int = 30) -> list[dict]:
    from metsynth.segmentation.datasets import (
        build_training_set,
        cache_volume,
        draw_patch_params,
        extract_patch,
        open_cached,
    )
    from metsynth.segmentation.presets import AugmentConfig

    ts = build_training_set(manifest, "real", val_cases=0)
    cached = open_cached(cache_volume(ts.train[0], out / "cache"))
    rows = []
    full = AugmentConfig(rotate_prob=1.0, scale_prob=1.0, noise_prob=1.0, contrast_prob=1.0)
    for name, size in (("cpu", (48, 48, 48)), ("paper", (64, 96, 96))):
        for aug_name, aug in (("plain", AugmentConfig(enabled=False)), ("all augmentations", full)):
            rng = np.random.default_rng(0)
            times = []
            for i in range(repeats):
                params = draw_patch_params(cached, size, i % 2 == 0, aug, rng)
                t0 = time.perf_counter()
                extract_patch(cached.image, cached.label, params, size)
                times.append(time.perf_counter() - t0)
            rows.append({"patch": f"{name} {size}", "augment": aug_name, "median_ms": 1000 * float(np.median(times))})
    return rows


def bench_inference(manifest: Path, presets: list[str]) -> list[dict]:
    import torch

    from metsynth.cohort import load_cohort
    from metsynth.segmentation.inference import SegmentationModel, predict_volume
    from metsynth.segmentation.presets import segmentation_config
    from metsynth.segmentation.train import build_network
    from metsynth.volume import Volume

    cohort = load_cohort(manifest)
    case = max(cohort.cases, key=lambda c: np.prod(Volume.read(c.image).shape))
    image = Volume.read(case.image)
    rows = []
    for preset in presets:
        config = segmentation_config(preset)
        torch.manual_seed(0)
        model = SegmentationModel(net=build_network(config).eval(), config=config, spacing=cohort.prepared.spacing,
                                  hu_window=cohort.prepared.hu_window)
        model.probabilities(np.full((config.patch_size), -1, np.float32))  # warm-up
        t0 = time.perf_counter()
        model.probabilities(image.array)
        sw = time.perf_counter() - t0
        row = {"preset": preset, "volume": "x".join(map(str, image.shape)),
               "mm": "x".join(f"{s * n:.0f}" for s, n in zip(image.spacing, image.shape)),
               "window": "x".join(map(str, config.patch_size)), "overlap": config.inference.overlap,
               "sliding_window_s": sw, "threads": torch.get_num_threads()}
        if preset == "cpu":
            raw = Volume.read(case.source["image"])
            femur_raw = None
            from metsynth.prepare import resample_mask
            from metsynth.segmentation.inference import empty_grid
            grid = empty_grid(raw.shape, raw.spacing, raw.origin, raw.direction)
            femur_prep = Volume.read(case.femur_mask)
            lo, hi = case.source["crop_box"]
            femur_raw_box = resample_mask(femur_prep, grid.crop(lo, hi))
            femur_raw = np.zeros(raw.shape, np.uint8)
            femur_raw[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = femur_raw_box.array
            t0 = time.perf_counter()
            pred = predict_volume(model, raw, raw.with_array(femur_raw))
            row["raw_scan"] = "x".join(map(str, raw.shape)) + " @ " + "x".join(f"{s:.2f}" for s in raw.spacing)
            row["predict_raw_s"] = time.perf_counter() - t0
            assert pred.mask.same_grid(raw)
        rows.append(row)
    return rows


def bench_gpu_paper_step(steps: int = 30) -> dict:
    """Forward + backward + SGD step of the paper preset on random 64x96x96 patches (batch 2)."""
    import torch
    from monai.losses import DiceLoss

    from metsynth.segmentation.presets import segmentation_config
    from metsynth.segmentation.train import build_network

    config = segmentation_config("paper")
    device = "cuda"
    net = build_network(config).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9)
    loss_fn = DiceLoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    x = torch.randn(config.batch_size, 1, *config.patch_size, device=device)
    y = (torch.rand(config.batch_size, 1, *config.patch_size, device=device) > 0.9).float()
    out = {}
    for precision in ("32", "16-mixed"):
        for i in range(steps + 5):
            if i == 5:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.float16, enabled=precision != "32"):
                loss = loss_fn(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        out[precision] = (time.perf_counter() - t0) / steps
    return {"device": torch.cuda.get_device_name(), "step_s": out, "batch": config.batch_size,
            "patch": list(config.patch_size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="Folder for the phantom data (kept between runs).")
    parser.add_argument("--cases", type=int, default=4, help="Phantom cases (one is held out for validation).")
    parser.add_argument("--steps", type=int, default=40, help="Training steps per worker setting.")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts.")
    parser.add_argument(
        "--paper", action="store_true", help="Also time the paper network's sliding window (CPU: minutes).")
    parser.add_argument("--gpu-paper-step", action="store_true", help="Only: the paper preset's step time on a GPU.")
    parser.add_argument("--parts", nargs="+", default=["training", "patches", "inference"],
                        choices=["training", "patches", "inference"], help="Which benchmarks to run.")
    parser.add_argument("--json", type=Path, default=None, help="Write all figures to this JSON file.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore")
    if args.gpu_paper_step:
        print(json.dumps(bench_gpu_paper_step(), indent=2))
        return
    load = os.getloadavg()[0]
    data = args.data or Path(tempfile.mkdtemp(prefix="segbench-"))
    manifest = make_data(data, args.cases)
    figures: dict = {"load_average": load, "cpus": os.cpu_count()}
    figures["training"] = [bench_training(manifest, data, args.steps, w) for w in args.workers] \
        if "training" in args.parts else []
    figures["patches"] = bench_patches(manifest, data) if "patches" in args.parts else []
    figures["inference"] = bench_inference(manifest, ["cpu"] + (["paper"] if args.paper else [])) \
        if "inference" in args.parts else []
    figures["load_average_end"] = os.getloadavg()[0]

    print(f"\nload average {load:.1f} -> {figures['load_average_end']:.1f} on {os.cpu_count()} CPUs\n")
    print("| workers | steady steps/s | step (ms) | data wait (ms/step) | data-wait share | worker start-up (s) |")
    print("|---|---|---|---|---|---|")
    for r in figures["training"]:
        print(f"| {r['workers']} | {r['steady_steps_per_s']:.2f} | {r['step_ms']:.0f} | {r['wait_ms']:.1f} | "
              f"{100 * r['data_wait_share']:.1f}% | {r['startup_s']:.2f} |")
    print("\n| patch | augmentation | median ms per patch |\n|---|---|---|")
    for r in figures["patches"]:
        print(f"| {r['patch']} | {r['augment']} | {r['median_ms']:.1f} |")
    print("\n| network | volume (voxels, mm) | window | overlap | sliding window (s) | predict on the raw scan (s) |")
    print("|---|---|---|---|---|---|")
    for r in figures["inference"]:
        raw = f"{r['predict_raw_s']:.1f} ({r['raw_scan']})" if "predict_raw_s" in r else "-"
        print(f"| {r['preset']} | {r['volume']} ({r['mm']}) | {r['window']} | {r['overlap']} | "
              f"{r['sliding_window_s']:.2f} | {raw} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
