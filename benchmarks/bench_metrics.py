"""Speed, memory and agreement of metsynth's metrics against MONAI 1.6, in the same run.

Cases (masks generated once with a fixed seed, saved as .npy in a temporary folder):

* ``a``: 512 x 512 x 300 voxels at 0.7 mm (array ``[z, y, x]`` = 300 x 512 x 512), two large
  overlapping irregular blobs (prediction vs truth), ~5 million voxels each;
* ``b``: a femur-sized volume, 400 x 256 x 256 at (1.0, 0.8, 0.8) mm, four small true lesions;
  the prediction finds three of them (shifted, resized), misses one and adds a false positive
  far away along the shaft.

metsynth computes Dice, HD, HD95 and ASSD in one call (:func:`compute_metrics`); MONAI needs
``compute_dice`` + ``compute_hausdorff_distance`` (twice: max and 95th percentile) +
``compute_average_surface_distance``; both figures are reported (MONAI's four calls, which give
the same outputs, and its single HD call). MONAI uses ``torch.set_num_threads(cpu_count)``
(override with the environment variable ``BENCH_MONAI_THREADS``); metsynth runs its default,
one thread. Each implementation runs in its own subprocess, so its peak
memory is the growth of the resident set over the loaded inputs (Linux ``VmHWM`` after resetting
it through ``/proc/self/clear_refs``); metsynth's Python-level peak (tracemalloc, numpy arrays) is
reported too. Times are the best of ``--repeats`` runs for metsynth and of ``--monai-repeats``
runs for MONAI. Values must agree to 1e-5 relative.

Usage::

    .venv/bin/python benchmarks/bench_metrics.py            # both cases, prints a markdown table
    .venv/bin/python benchmarks/bench_metrics.py --cases b --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = {
    "a": {"shape": (300, 512, 512), "spacing": (0.7, 0.7, 0.7),
          "title": "512x512x300 @ 0.7 mm, two large overlapping blobs"},
    "b": {"shape": (400, 256, 256), "spacing": (1.0, 0.8, 0.8),
          "title": "femur-sized 256x256x400 @ 1.0x0.8x0.8 mm, 4 small lesions (1 missed, 1 FP)"},
}
METRICS = ("dice", "hd", "hd95", "assd")


# ------------------------------------------------------------------------------- data
def _blob(shape, centre, radii, rng, roughness=0.15, box_margin=1.3):
    """Boolean ellipsoid with a smooth random boundary (low-resolution noise, upsampled)."""
    from scipy import ndimage

    mask = np.zeros(shape, dtype=bool)
    lo = [max(0, int(c - r * box_margin)) for c, r in zip(centre, radii)]
    hi = [min(s, int(c + r * box_margin) + 1) for s, c, r in zip(shape, centre, radii)]
    sub = tuple(hi_ - lo_ for lo_, hi_ in zip(lo, hi))
    coarse = rng.standard_normal((6, 6, 6)).astype(np.float32)
    noise = ndimage.zoom(coarse, [s / 6 for s in sub], order=1, grid_mode=True, mode="nearest")[
        : sub[0], : sub[1], : sub[2]]
    grids = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    q = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = q < (1 + roughness * noise) ** 2
    return mask


def make_case(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = CASES[name]["shape"]
    if name == "a":
        truth = _blob(shape, (150, 240, 250), (95, 125, 115), rng)
        truth |= _blob(shape, (170, 300, 300), (70, 90, 100), rng)
        pred = _blob(shape, (154, 236, 256), (92, 128, 112), rng)
        pred |= _blob(shape, (165, 306, 296), (74, 86, 104), rng)
        return pred.astype(np.uint8), truth.astype(np.uint8)
    truth = np.zeros(shape, dtype=bool)
    pred = np.zeros(shape, dtype=bool)
    lesions = [((60, 120, 130), (6, 8, 8)), ((95, 140, 110), (4, 5, 5)),
               ((180, 128, 128), (9, 11, 10)), ((300, 120, 135), (3, 4, 4))]
    for i, (c, r) in enumerate(lesions):
        truth |= _blob(shape, c, r, rng, roughness=0.2)
        if i != 1:  # lesion 1 is missed
            c2 = tuple(ci + int(rng.integers(-2, 3)) for ci in c)
            r2 = tuple(ri * float(rng.uniform(0.8, 1.2)) for ri in r)
            pred |= _blob(shape, c2, r2, rng, roughness=0.2)
    pred |= _blob(shape, (370, 150, 120), (4, 5, 5), rng)  # false positive far down the shaft
    return pred.astype(np.uint8), truth.astype(np.uint8)


# ------------------------------------------------------------------------------- workers
def _status() -> tuple[int, int]:
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                fields[key] = int(value.split()[0])  # kB
    return fields["VmRSS"], fields["VmHWM"]


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def run_metsynth(pred, truth, spacing, repeats):
    import tracemalloc

    from metsynth.evaluation.metrics import compute_metrics

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = compute_metrics(pred, truth, spacing)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    compute_metrics(pred, truth, spacing)
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"values": {m: getattr(r, m) for m in METRICS}, "time_s": min(times), "times_s": times,
            "tracemalloc_peak_mb": py_peak / 2**20}


def run_monai(pred, truth, spacing, repeats):
    import warnings

    import torch
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    warnings.simplefilter("ignore")
    torch.set_num_threads(int(os.environ.get("BENCH_MONAI_THREADS", os.cpu_count() or 1)))
    p = torch.as_tensor(pred[None, None])
    t = torch.as_tensor(truth[None, None])
    sp = list(spacing)
    calls = {
        "dice": lambda: compute_dice(p, t, include_background=True, ignore_empty=False),
        "hd": lambda: compute_hausdorff_distance(p, t, include_background=True, spacing=sp),
        "hd95": lambda: compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=sp),
        "assd": lambda: compute_average_surface_distance(p, t, include_background=True, symmetric=True, spacing=sp),
    }
    values, per_call = {}, {}
    for name, fn in calls.items():
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        values[name] = float(out.reshape(-1)[0])
        per_call[name] = best
    return {"values": values, "time_s": sum(per_call.values()), "per_call_s": per_call}


def worker(impl: str, folder: Path, case: str, repeats: int) -> None:
    pred = np.load(folder / f"{case}_pred.npy")
    truth = np.load(folder / f"{case}_truth.npy")
    spacing = CASES[case]["spacing"]
    rss0, _ = _status()
    can_reset = _reset_peak()
    out = (run_metsynth if impl == "metsynth" else run_monai)(pred, truth, spacing, repeats)
    rss1, hwm = _status()
    out["peak_rss_growth_mb"] = (hwm - rss0) / 1024 if can_reset else None
    print(json.dumps(out))


# ------------------------------------------------------------------------------- driver
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="a,b", help="comma-separated: a, b")
    ap.add_argument("--repeats", type=int, default=3, help="metsynth runs per case (best is reported)")
    ap.add_argument("--monai-repeats", type=int, default=1, help="MONAI runs per call (best is reported)")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--_worker", nargs=3, metavar=("IMPL", "FOLDER", "CASE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        impl, folder, case = args._worker
        worker(impl, Path(folder), case, args.repeats if impl == "metsynth" else args.monai_repeats)
        return 0

    results = {}
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        folder = Path(tmp)
        for case in args.cases.split(","):
            t0 = time.perf_counter()
            pred, truth = make_case(case)
            np.save(folder / f"{case}_pred.npy", pred)
            np.save(folder / f"{case}_truth.npy", truth)
            info = {"pred_voxels": int(pred.sum()), "truth_voxels": int(truth.sum()),
                    "generate_s": time.perf_counter() - t0}
            del pred, truth
            for impl in ("metsynth", "monai"):
                cmd = [sys.executable, __file__, "--_worker", impl, str(folder), case,
                       "--repeats", str(args.repeats), "--monai-repeats", str(args.monai_repeats)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stderr)
                    return proc.returncode
                info[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
            ours, ref = info["metsynth"]["values"], info["monai"]["values"]
            info["max_rel_diff"] = max(abs(ours[m] - ref[m]) / max(abs(ref[m]), 1e-12) for m in METRICS)
            info["equal_1e-5"] = info["max_rel_diff"] <= 1e-5
            info["speedup_vs_all_four"] = info["monai"]["time_s"] / info["metsynth"]["time_s"]
            info["speedup_vs_one_hd_call"] = info["monai"]["per_call_s"]["hd"] / info["metsynth"]["time_s"]
            results[case] = info
    load = os.getloadavg()
    print(format_markdown(results))
    print(f"machine: {os.cpu_count()} cores; load average before/after: {load0[0]:.1f} / {load[0]:.1f} "
          "(other processes slow MONAI's memory-bound steps far more than metsynth)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["equal_1e-5"] for r in results.values()) else 1


def format_markdown(results: dict) -> str:
    lines = [
        "| case | metsynth (4 metrics) | MONAI dice+HD+HD95+ASSD | MONAI HD alone | speedup (vs 4 calls / vs HD alone) "
        "| peak RSS growth metsynth / MONAI | tracemalloc peak metsynth | max rel. diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, r in results.items():
        ms, mo = r["metsynth"], r["monai"]
        mem = lambda x: "n/a" if x is None else f"{x:.0f} MB"  # noqa: E731
        lines.append(
            f"| {case}: {CASES[case]['title']} | {ms['time_s']:.3f} s | {mo['time_s']:.2f} s | "
            f"{mo['per_call_s']['hd']:.2f} s | {r['speedup_vs_all_four']:.1f}x / {r['speedup_vs_one_hd_call']:.1f}x | "
            f"{mem(ms['peak_rss_growth_mb'])} / {mem(mo['peak_rss_growth_mb'])} | {ms['tracemalloc_peak_mb']:.0f} MB | "
            f"{r['max_rel_diff']:.1e} |"
        )
    lines.append("")
    for case, r in results.items():
        v = r["metsynth"]["values"]
        lines.append(f"values {case}: " + ", ".join(f"{m}={v[m]:.6g}" for m in METRICS)
                     + f" (pred {r['pred_voxels']} voxels, truth {r['truth_voxels']} voxels)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
