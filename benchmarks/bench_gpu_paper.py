"""GPU timings of the paper presets (issue 14 item 5): DDPM step, harmonization per volume, U-Net
step and sliding-window inference, with peak GPU memory, extrapolated to the paper's totals.

What is timed (each with the project's own code, networks freshly initialised: timings do not
depend on the weights, no checkpoint is read or downloaded):

(a) **DDPM optimizer step**: :class:`metsynth.diffusion.train.DiffusionModule` of the ``paper``
    diffusion preset (MONAI DiffusionModelUNet 128/256/512, attention at the deepest level),
    ``training_step`` (noising, forward, MSE) + backward + its own Adam from
    ``configure_optimizers``, on one batch of the preset's size (1 x 48 x 96 x 96, z, y, x);
(b) **harmonization of one volume**, :func:`metsynth.diffusion.harmonize.harmonize_volume` with a
    :class:`~metsynth.diffusion.harmonize.Denoiser` around that network, the preset's DDIM settings
    (start timestep 40, 50 DDIM steps: 11 network evaluations per window, sliding-window batch 4),
    ``region: lesion`` and ``region: volume`` (the paper's), on a phantom femur (metastatic,
    realistic phantom) prepared as ``metsynth prepare`` does: femur crop + 10 mm, 0.85 mm, [-1, 1];
(c) **U-Net optimizer step**: :class:`metsynth.segmentation.train.SegmentationModule` of the
    ``paper`` segmentation preset (MONAI UNet 32..512, 2 residual units, Dice loss),
    ``training_step`` + backward + its SGD, batch 2 x 64 x 96 x 96 (96 x 96 x 64 as x, y, z);
(d) **sliding-window inference** of the same prepared volume with the preset's inference settings
    (overlap 0.5, window batch 2, Gaussian blending): :meth:`SegmentationModel.probabilities`
    (the network part) and :func:`metsynth.segmentation.inference.predict_volume` on the prepared
    volume (sliding window + threshold + post-processing).

Timing: ``torch.cuda.synchronize()`` around every timed call, warm-up calls excluded, median
(and min-max) of N calls; peak GPU memory is ``torch.cuda.max_memory_allocated`` over the timed
calls (reset after the warm-up; it includes the network, its gradients and optimizer state).
Mixed precision is ``torch.autocast`` (float16 with a GradScaler for the steps, as Lightning's
``16-mixed``); the harmonization uses the Denoiser's own ``precision``; the project's
segmentation inference has no precision setting, so the sliding window runs inside autocast.

Sizes: ``--scale paper`` (default) builds the presets exactly as configured; it refuses to run
on a CPU unless ``--allow-cpu`` is given (the paper network takes minutes per harmonized volume
there). ``--scale small`` keeps every other setting (levels, attention, residual units, batch sizes, DDIM
start 40 / 50 steps, inference overlap) but shrinks the channels (DDPM 8/16/32, U-Net 4..64), the
patches (DDPM 8 x 16 x 16, U-Net 16 x 32 x 32) and the phantom (the ``tiny`` phantom prepared at
3.4 mm, 4x the paper's voxel), and runs torch on one CPU thread (``--threads``; on a loaded 2-core
machine two OpenMP threads made these small convolutions 8-40x slower): a CPU smoke run of about
20 s. Its figures are not the paper's.

Usage::

    # on a GPU machine (a few minutes on one H100; nothing is downloaded)
    .venv/bin/python benchmarks/bench_gpu_paper.py --out runs/bench_gpu_paper
    # the CPU smoke run (seconds)
    .venv/bin/python benchmarks/bench_gpu_paper.py --scale small --device cpu --out /tmp/gpu_smoke

Prints a Markdown table and writes ``OUT/results.md`` and ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# The paper's totals used for the extrapolations (assumptions, overridable on the command line):
PAPER_HEALTHY = 26  # healthy femurs the DDPM is trained on (26 x 29 lesions x 10 repeats = 7540 attempts)
PAPER_VOLUMES = 5675  # synthetic volumes kept and harmonized
ROWS = ("ddpm_step", "harmonize_lesion", "harmonize_volume", "unet_step", "sliding_window", "predict_volume")
SCALES = ("paper", "small")


class Refused(SystemExit):
    """A run this script will not do (exit status 2, the message on stderr)."""

    def __init__(self, message: str) -> None:
        print(f"bench_gpu_paper: {message}", file=sys.stderr)
        super().__init__(2)


# ----------------------------------------------------------------------------- settings
def configs(scale: str):
    """(diffusion config, segmentation config, phantom preset, prepared spacing in mm)."""
    from metsynth.diffusion.presets import diffusion_config
    from metsynth.segmentation.presets import segmentation_config

    if scale == "paper":
        return diffusion_config("paper"), segmentation_config("paper"), "default", 0.85
    # the paper presets with channels / 8 and small patches; every other setting as configured
    ddpm = diffusion_config("paper", {"model": {"channels": [8, 16, 32], "num_head_channels": [0, 0, 32],
                                                "norm_num_groups": 8},
                                      "train": {"patch_size": [8, 16, 16]}})
    seg = segmentation_config("paper", {"network": {"channels": [4, 8, 16, 32, 64]}, "patch_size": [16, 32, 32]})
    return ddpm, seg, "tiny", 3.4


def default_precisions(device, seg_config) -> list[str]:
    """The presets' own precision (32: neither paper preset sets mixed precision), plus 16-mixed on a GPU."""
    own = "32" if str(seg_config.trainer.precision).startswith("32") else str(seg_config.trainer.precision)
    out = [own]
    if device.type == "cuda" and "16-mixed" not in out:
        out.append("16-mixed")
    return out


def pick_device(args):
    import torch

    from metsynth.devices import resolve_device

    try:
        device = resolve_device(args.device)
    except Exception as err:  # noqa: BLE001 - ConfigError: no GPU where one was asked for
        raise Refused(str(err)) from None
    if device.type == "cpu" and args.scale == "paper" and not args.allow_cpu:
        raise Refused(
            f"--scale paper runs the paper's full sizes and the device is the CPU (CUDA available: "
            f"{torch.cuda.is_available()}); they take minutes per harmonized volume on a CPU: run it on a GPU machine "
            "(--device auto or cuda), or pass --allow-cpu to run them here anyway, or --scale small for the reduced "
            "CPU smoke run")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    threads = args.threads
    if threads is None and args.scale == "small" and device.type == "cpu":
        threads = 1
    if threads:
        torch.set_num_threads(threads)
    return device


# ----------------------------------------------------------------------------- data
def phantom_volume(preset: str, spacing: float, seed: int):
    """A metastatic phantom femur prepared in memory as ``metsynth prepare`` does it:
    (image in [-1, 1], lesion mask, femur mask, all on the prepared grid; the HU window)."""
    from metsynth.phantom import PhantomConfig, generate_case
    from metsynth.prepare import PrepareConfig, femur_crop_box, resample_image, resample_mask, standardize, target_grid

    prep = PrepareConfig(spacing=spacing)
    case = generate_case("bench_gpu_paper", "metastatic", seed, PhantomConfig.preset(preset))
    femur = case.femur.with_array(((case.femur.array > 0) | (case.lesion.array > 0)).astype(np.uint8))
    lo, hi = femur_crop_box(femur, prep.crop_margin_mm)
    image, femur, lesion = case.image.crop(lo, hi), femur.crop(lo, hi), case.lesion.crop(lo, hi)
    grid = target_grid(image, prep.spacing)
    hu = resample_image(image, grid, prep.interpolation)
    return (hu.with_array(standardize(hu.array, prep.hu_window)), resample_mask(lesion, grid),
            resample_mask(femur, grid), prep.hu_window)


# ----------------------------------------------------------------------------- timing
def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(fn: Callable[[], Any], device, warmup: int, repeats: int) -> dict[str, Any]:
    """``warmup`` untimed calls, then ``repeats`` timed ones (synchronized): seconds and peak memory."""
    import torch

    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "times_s": times,
            "warmup": warmup, "repeats": repeats, "peak_gpu_bytes": peak}


def autocast(device, precision: str):
    import torch

    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def optimizer_step_fn(module, batch: dict, optimizer, device, precision: str) -> Callable[[], None]:
    """One Lightning-like optimizer step: zero_grad, training_step under autocast, backward, step."""
    import torch

    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = module.training_step(batch, 0)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        ema = getattr(module, "ema", None)
        if ema is not None:  # as DiffusionModule.optimizer_step (the paper preset has none)
            ema.update_parameters(module.model)

    return step


# ----------------------------------------------------------------------------- the measurements
def bench_ddpm_step(cfg, device, precision: str, warmup: int, repeats: int) -> dict[str, Any]:
    import torch

    from metsynth.diffusion.train import DiffusionModule

    module = DiffusionModule(cfg.model_dump(mode="json")).to(device).train()
    optimizer = module.configure_optimizers()["optimizer"]
    train = cfg.train
    shape = (train.batch_size, 1, *train.patch_size)
    gen = torch.Generator().manual_seed(0)
    batch = {"image": (torch.rand(shape, generator=gen) * 2 - 1).to(device),
             "noise": torch.randn(shape, generator=gen).to(device),
             "timestep": torch.randint(0, cfg.noise.num_train_timesteps, (train.batch_size,), generator=gen).to(device)}
    result = measure(optimizer_step_fn(module, batch, optimizer, device, precision), device, warmup, repeats)
    result["what"] = (f"forward + backward + Adam, batch {train.batch_size} x {'x'.join(map(str, train.patch_size))} "
                      f"(z, y, x), {sum(p.numel() for p in module.model.parameters()) / 1e6:.1f} M parameters")
    del module, optimizer, batch
    free(device)
    return result


def bench_harmonization(cfg, device, precision: str, image, lesion, warmup: int, repeats: int) -> dict[str, dict]:
    import torch

    from metsynth.diffusion.harmonize import Denoiser, harmonize_volume, volume_seed
    from metsynth.diffusion.schedule import ddim_timesteps

    torch.manual_seed(cfg.train.seed)
    model = cfg.model.build().to(device).eval()
    denoiser = Denoiser(model, cfg, Path("<freshly initialised network>"), "untrained", "final", device, precision)
    timesteps = ddim_timesteps(cfg.noise.num_train_timesteps, cfg.harmonize.ddim_steps, cfg.harmonize.start_timestep)
    seed = volume_seed(cfg.harmonize.seed, "bench_gpu_paper")
    out: dict[str, dict] = {}
    for region in ("lesion", "volume"):
        settings = cfg.harmonize.merged(region=region)
        info: dict[str, Any] = {}

        def run() -> None:
            info.update(harmonize_volume(image, lesion, denoiser, settings, seed)[1])

        if region == "volume":  # warm up on one window batch only (a whole-volume run costs a timed one)
            with torch.no_grad():
                denoiser.predict(torch.zeros(settings.sw_batch_size, 1, *cfg.train.patch_size, device=device), 0)
            result = measure(run, device, 0, repeats)
        else:
            result = measure(run, device, warmup, repeats)
        boxes = info["boxes"]
        result.update(windows=info["windows"], evaluations=info["windows"] * len(timesteps), timesteps=timesteps,
                      boxes=[[b - a for a, b in zip(box["lo"], box["hi"])] for box in boxes],
                      sw_batch_size=settings.sw_batch_size)
        result["what"] = (f"{'x'.join(map(str, image.shape))} volume, {len(boxes)} box(es) "
                          f"{' + '.join('x'.join(map(str, b)) for b in result['boxes'])}: {info['windows']} window(s) "
                          f"x {len(timesteps)} DDIM steps (start {settings.start_timestep}, {settings.ddim_steps} "
                          f"steps), window batch {settings.sw_batch_size}")
        out[f"harmonize_{region}"] = result
    model = denoiser = None  # drop the network before free(device) (not del: the closure above reads them)
    free(device)
    return out


def bench_unet_step(cfg, device, precision: str, warmup: int, repeats: int) -> dict[str, Any]:
    import torch

    from metsynth.segmentation.train import SegmentationModule

    lr, decay, _ = cfg.lr_schedule(("real",), False)
    torch.manual_seed(cfg.seed)
    module = SegmentationModule({"config": cfg.model_dump(mode="json"), "lr": lr, "lr_decay": decay})
    module = module.to(device).train()
    optimizer = module.configure_optimizers()["optimizer"]
    shape = (cfg.batch_size, 1, *cfg.patch_size)
    gen = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(shape, generator=gen).to(device),
             "label": (torch.rand(shape, generator=gen) > 0.9).float().to(device)}
    result = measure(optimizer_step_fn(module, batch, optimizer, device, precision), device, warmup, repeats)
    result["what"] = (f"forward + backward + SGD, batch {cfg.batch_size} x {'x'.join(map(str, cfg.patch_size))} "
                      f"(z, y, x), {sum(p.numel() for p in module.net.parameters()) / 1e6:.1f} M parameters")
    del module, optimizer, batch
    free(device)
    return result


def bench_inference(cfg, device, precision: str, image, femur, hu_window, warmup: int,
                    repeats: int) -> dict[str, dict]:
    import torch

    from metsynth.diffusion.harmonize import count_windows
    from metsynth.segmentation.inference import SegmentationModel, predict_volume
    from metsynth.segmentation.train import build_network

    torch.manual_seed(cfg.seed)
    model = SegmentationModel(net=build_network(cfg).to(device).eval(), config=cfg, spacing=tuple(image.spacing),
                              hu_window=tuple(hu_window), device=str(device))
    inf = cfg.inference
    windows = count_windows(image.shape, cfg.patch_size, inf.overlap)  # MONAI's count
    common = (f"{'x'.join(map(str, image.shape))} volume, window {'x'.join(map(str, cfg.patch_size))}, "
              f"overlap {inf.overlap}, window batch {inf.sw_batch_size}, {inf.blend}: {windows} windows")

    def sliding() -> None:
        with autocast(device, precision):
            model.probabilities(image.array)

    def predict() -> None:
        with autocast(device, precision):
            predict_volume(model, image, femur, standardized=True)

    out = {"sliding_window": measure(sliding, device, warmup, repeats),
           "predict_volume": measure(predict, device, warmup, repeats)}
    out["sliding_window"].update(windows=windows, what=f"SegmentationModel.probabilities: {common}")
    out["predict_volume"].update(windows=windows, what=f"predict_volume (standardized, femur mask): {common} "
                                                       "+ threshold + post-processing")
    model = None  # drop the network before free(device) (not del: the closures above read it)
    free(device)
    return out


# ----------------------------------------------------------------------------- totals
def hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def extrapolate(rows: dict[str, dict], ddpm_cfg, seg_cfg, healthy: int, volumes: int) -> None:
    """Adds ``total`` (a sentence) and ``total_s`` to the rows where a paper total makes sense."""
    from metsynth.diffusion.train import steps_per_epoch

    per_epoch = steps_per_epoch(healthy, ddpm_cfg)
    steps = ddpm_cfg.train.max_epochs * per_epoch
    r = rows["ddpm_step"]
    r["total_s"] = r["median_s"] * steps
    r["total"] = (f"{ddpm_cfg.train.max_epochs} epochs x {per_epoch} steps ({healthy} healthy femurs x "
                  f"{ddpm_cfg.train.patches_per_case} patch / batch {ddpm_cfg.train.batch_size}) = {steps:,} steps: "
                  f"{hours(r['total_s'])}")
    for region in ("lesion", "volume"):
        r = rows[f"harmonize_{region}"]
        r["total_s"] = r["median_s"] * volumes
        r["per_evaluation_s"] = r["median_s"] / r["evaluations"]
        r["total"] = (f"{volumes:,} volumes of this size: {hours(r['total_s'])} "
                      f"({1000 * r['per_evaluation_s']:.1f} ms per window evaluation)")
    r = rows["unet_step"]
    unet_steps = -(-volumes * seg_cfg.patches_per_volume // seg_cfg.batch_size)
    r["total_s"] = r["median_s"] * unet_steps
    r["total"] = (f"one epoch over {volumes:,} synthetic volumes x {seg_cfg.patches_per_volume} patches / batch "
                  f"{seg_cfg.batch_size} = {unet_steps:,} steps: {hours(r['total_s'])}; "
                  f"1000 steps: {hours(1000 * r['median_s'])}")
    for name in ("sliding_window", "predict_volume"):
        r = rows[name]
        r["total"] = f"{1000 * r['median_s'] / r['windows']:.1f} ms per window"


# ----------------------------------------------------------------------------- report
LABELS = {
    "ddpm_step": "(a) DDPM optimizer step",
    "harmonize_lesion": "(b) harmonization, lesion mode",
    "harmonize_volume": "(b) harmonization, volume mode",
    "unet_step": "(c) U-Net optimizer step",
    "sliding_window": "(d) sliding window",
    "predict_volume": "(d) predict_volume",
}


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        f"Device: {env['device_name']} ({env['device']}); torch {env['torch']}, CUDA {env['cuda']}, "
        f"cudnn.benchmark {env['cudnn_benchmark']}; scale `{results['scale']}`"
        + (" (reduced sizes: **not** the paper's figures)" if results["scale"] != "paper" else " (the paper presets)")
        + f"; phantom volume {results['volume']['shape']} at {results['volume']['spacing_mm']} mm; "
        f"{env['when']}. Command: `{results['command']}`.",
        "",
        "| measurement | precision | one call | median s (min-max) | peak GPU memory | extrapolated |",
        "|---|---|---|---|---|---|",
    ]
    for precision, rows in results["runs"].items():
        for name in ROWS:
            r = rows[name]
            peak = f"{r['peak_gpu_bytes'] / 2**30:.2f} GiB" if r.get("peak_gpu_bytes") is not None else "- (cpu)"
            lines.append(f"| {LABELS[name]} | {precision} | {r['what']} | {r['median_s']:.4g} "
                         f"({r['min_s']:.4g}-{r['max_s']:.4g}), n={r['repeats']} | {peak} | {r.get('total', '-')} |")
    lines += ["", "Assumptions: " + " ".join(results["assumptions"])]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=SCALES, default="paper",
                        help="paper: the presets as configured (a GPU); small: reduced sizes (a CPU smoke run).")
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N.")
    parser.add_argument("--allow-cpu", action="store_true", help="Run --scale paper on a CPU anyway (hours).")
    parser.add_argument("--precision", nargs="+", choices=("32", "16-mixed", "bf16-mixed"), default=None,
                        help="Precisions to time (default: the presets' own, 32, plus 16-mixed on a GPU).")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed calls before each measurement "
                        "(default 3 at paper scale, 1 small; volume-mode harmonization warms up on one window batch).")
    parser.add_argument("--repeats", type=int, default=None,
                        help="Timed optimizer steps (median; default 20, small 3).")
    parser.add_argument("--volume-repeats", type=int, default=None,
                        help="Timed harmonizations and inferences per volume (median; default 3, small 2).")
    parser.add_argument("--phantom-seed", type=int, default=0, help="Seed of the phantom femur.")
    parser.add_argument("--paper-healthy", type=int, default=PAPER_HEALTHY,
                        help="Healthy femurs the paper's DDPM is trained on (sets steps per epoch).")
    parser.add_argument("--paper-volumes", type=int, default=PAPER_VOLUMES, help="Harmonized volumes in the paper.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own; 1 for --scale small on a CPU).")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True.")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_gpu_paper",
                        help="Folder for results.md and results.json.")
    args = parser.parse_args(argv)
    small = args.scale == "small"
    args.warmup = args.warmup if args.warmup is not None else (1 if small else 3)
    args.repeats = args.repeats if args.repeats is not None else (3 if small else 20)
    args.volume_repeats = args.volume_repeats if args.volume_repeats is not None else (2 if small else 3)
    if args.warmup < 0 or args.repeats < 1 or args.volume_repeats < 1:
        parser.error("--warmup must be >= 0, --repeats and --volume-repeats >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*self\.log\(\).*")  # training_step outside a Trainer
            warnings.filterwarnings("ignore", category=FutureWarning)
            return run(args, argv)
    finally:  # a caller (the smoke test) keeps its own thread count
        torch.set_num_threads(threads)


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    import torch

    device = pick_device(args)  # refuses before anything heavy is built
    ddpm_cfg, seg_cfg, phantom_preset, spacing = configs(args.scale)
    precisions = args.precision or default_precisions(device, seg_cfg)
    if device.type == "cpu" and any(p != "32" for p in precisions):
        raise Refused(f"precisions {precisions}: mixed precision is timed on a GPU only; use --precision 32 on a CPU")

    start = time.perf_counter()
    image, lesion, femur, hu_window = phantom_volume(phantom_preset, spacing, args.phantom_seed)
    print(f"phantom femur {image.shape} at {spacing} mm ({int(lesion.array.sum())} lesion voxels) made in "
          f"{time.perf_counter() - start:.1f} s; device {device}", flush=True)

    runs: dict[str, dict[str, dict]] = {}
    for precision in precisions:
        rows: dict[str, dict] = {}
        rows["ddpm_step"] = bench_ddpm_step(ddpm_cfg, device, precision, args.warmup, args.repeats)
        print(f"[{precision}] DDPM step {rows['ddpm_step']['median_s']:.4g} s", flush=True)
        rows.update(bench_harmonization(ddpm_cfg, device, precision, image, lesion, min(args.warmup, 1),
                                        args.volume_repeats))
        print(f"[{precision}] harmonization lesion {rows['harmonize_lesion']['median_s']:.4g} s, volume "
              f"{rows['harmonize_volume']['median_s']:.4g} s", flush=True)
        rows["unet_step"] = bench_unet_step(seg_cfg, device, precision, args.warmup, args.repeats)
        print(f"[{precision}] U-Net step {rows['unet_step']['median_s']:.4g} s", flush=True)
        rows.update(bench_inference(seg_cfg, device, precision, image, femur, hu_window, min(args.warmup, 1),
                                    args.volume_repeats))
        print(f"[{precision}] sliding window {rows['sliding_window']['median_s']:.4g} s", flush=True)
        extrapolate(rows, ddpm_cfg, seg_cfg, args.paper_healthy, args.paper_volumes)
        runs[precision] = rows

    cuda = device.type == "cuda"
    results = {
        "scale": args.scale,
        "command": " ".join(["benchmarks/bench_gpu_paper.py", *(sys.argv[1:] if argv is None else argv)]),
        "environment": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
            "when": time.strftime("%Y-%m-%d %H:%M"),
        },
        "volume": {"shape": list(image.shape), "spacing_mm": spacing, "phantom_preset": phantom_preset,
                   "seed": args.phantom_seed, "lesion_voxels": int(lesion.array.sum())},
        "presets": {"diffusion": ddpm_cfg.model_dump(mode="json"), "segmentation": seg_cfg.model_dump(mode="json")},
        "assumptions": [
            f"DDPM training: {args.paper_healthy} healthy femurs (26 x 29 lesions x 10 repeats = 7540 synthesis "
            "attempts in the paper's setting), one patch each per epoch (the preset's patches_per_case), "
            "optimizer step time only (data loading overlapped by the preset's 4 workers; no checkpoint or "
            "logging cost).",
            f"Harmonization: {args.paper_volumes} kept synthetic volumes, each the size of this phantom femur "
            "(scale by the number of window evaluations for other sizes: the per-evaluation time is given).",
            f"U-Net: the preset's epoch length (patches_per_volume x volumes / batch) over the {args.paper_volumes} "
            "synthetic volumes; the number of epochs is set by early stopping, so no training total is given; "
            "no data-loading wait, no validation.",
            "Sliding window: per prepared volume (this phantom's size); inference has no paper-wide count.",
            "Networks freshly initialised (timings do not depend on the weights); inputs random for the steps.",
        ],
        "runs": runs,
    }
    text = markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "results.md").write_text(text + "\n")
    print(text)
    print(f"\nwritten: {args.out / 'results.md'}, {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
