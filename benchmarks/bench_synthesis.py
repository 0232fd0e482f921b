"""Synthesis throughput on a phantom cohort prepared at 0.85 mm (issue 3).

Measures, per synthetic volume:

* compute only (transform, placement, blending; no file IO), on one core;
* the cost of writing the image and the label at gzip level 1, 6 and uncompressed;
* the end-to-end batch run (``run_synthesis``: compute + files + index) with 1 and 2 worker
  processes, in volumes (attempts) per second, and the scaling.

Usage::

    .venv/bin/python benchmarks/bench_synthesis.py [--work DIR] [--healthy 2] [--metastatic 3] [--repeats 4]

The phantom cohort, its prepared copy and the lesion bank are cached in ``--work`` (default
``runs/bench_synthesis``, git-ignored) and reused by later runs. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]


def build_phantom(work: Path, n_healthy: int, n_metastatic: int) -> Path:
    """Raw phantom cohort (default, realistic preset) -> prepared at 0.85 mm; returns the prepared manifest."""
    from metsynth.cohort import load_cohort
    from metsynth.prepare import PrepareConfig, prepare_cohort

    prepared = work / "prepared" / "cohort.yaml"
    if prepared.is_file():
        return prepared
    raw = work / "raw"
    manifest = raw / "cohort.yaml"
    if not manifest.is_file():
        try:
            from metsynth.phantom import generate_cohort

            generate_cohort(raw, n_healthy=n_healthy, n_metastatic=n_metastatic, n_test=0, seed=0, progress=True)
        except (ImportError, NotImplementedError, TypeError):
            from metsynth.phantom.case import generate_case

            cases = []
            for i in range(n_healthy + n_metastatic):
                role = "healthy" if i < n_healthy else "metastatic"
                cid = f"{'H' if role == 'healthy' else 'M'}{i:02d}"
                case = generate_case(cid, role, np.random.SeedSequence([0, i]))
                case.image.write(raw / "images" / f"{cid}.nii.gz")
                case.femur.write(raw / "femur" / f"{cid}.nii.gz")
                entry = {"id": cid, "image": f"images/{cid}.nii.gz", "femur_mask": f"femur/{cid}.nii.gz",
                         "role": role, "centre": case.centre, "side": case.side}
                if case.lesion is not None:
                    case.lesion.write(raw / "lesions" / f"{cid}.nii.gz")
                    entry["lesion_masks"] = [{"path": f"lesions/{cid}.nii.gz"}]
                cases.append(entry)
                print(f"phantom case {cid} ({role}): {case.image.shape}", flush=True)
            manifest.write_text(yaml.safe_dump({"name": "bench-phantom", "cases": cases}, sort_keys=False))
    prepare_cohort(load_cohort(manifest), work / "prepared", PrepareConfig(), progress=True)
    return prepared


def time_compute(manifest: Path, bank_dir: Path, repeats: int) -> dict:
    """Compute-only time per attempt (healthy case loaded once, bank patches in memory)."""
    from metsynth.cohort import load_cohort
    from metsynth.synthesis.bank import load_bank
    from metsynth.synthesis.compose import HealthyFemur, SynthesisConfig
    from metsynth.synthesis.run import synthesize_volume

    cohort = load_cohort(manifest)
    bank = load_bank(bank_dir)
    config = SynthesisConfig(repeats=repeats)
    arrays = {e.id: e.arrays() for e in bank.entries}
    times, cpu, load_times, kept, shapes = [], [], [], [], []
    results = []
    for case in cohort.by_role("healthy"):
        t0 = time.perf_counter()
        healthy = HealthyFemur.load(case)
        load_times.append(time.perf_counter() - t0)
        shapes.append(healthy.image.shape)
        for entry in bank.entries:
            for r in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                result, sidecar = synthesize_volume(healthy, entry, arrays[entry.id], config, r)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                kept.append(result.kept)
                if result.kept and len(results) < 6:
                    results.append((healthy, result))
    return {"times": times, "cpu": cpu, "load": load_times, "kept": kept, "shapes": shapes, "samples": results}


def time_large_lesions(manifest: Path, radii_mm=(5, 10, 15, 20), seeds: int = 10) -> dict:
    """Compute per attempt for ball-shaped lesions of growing radius (the phantom's are small)."""
    from types import SimpleNamespace

    from metsynth.cohort import load_cohort
    from metsynth.synthesis.compose import HealthyFemur, SynthesisConfig, synthesize_one

    healthy = HealthyFemur.load(load_cohort(manifest).by_role("healthy")[0])
    spacing = healthy.image.spacing
    out = {}
    for radius in radii_mm:
        r = radius / spacing[0]
        n = int(2 * r + 10)
        idx = np.indices((n, n, n)) - n // 2
        mask = (idx**2).sum(0) <= r * r
        image = np.random.default_rng(0).normal(-0.3, 0.03, mask.shape).astype(np.float32)
        entry = SimpleNamespace(id=f"ball{radius}", radius_mm=float(radius), intensity_robust_std=0.03,
                                spacing=list(spacing))
        times, methods = [], []
        for seed in range(seeds):
            t0 = time.perf_counter()
            result = synthesize_one(healthy, entry, image, mask, SynthesisConfig(), np.random.default_rng(seed))
            times.append(time.perf_counter() - t0)
            methods.append(result.provenance.get("placement", {}).get("method") or result.reason)
        out[radius] = {"mm3": float(mask.sum() * np.prod(spacing)), "median": statistics.median(times),
                       "max": max(times), "methods": methods}
    return out


def time_writes(samples, tmp: Path) -> dict:
    """Median seconds and mean size to write one image / one label, for each compression choice."""
    out = {}
    for what, index in (("image", 0), ("label", 1)):
        for name, level, suffix in (("none", None, ".nii"), ("gzip 1", 1, ".nii.gz"), ("gzip 6", 6, ".nii.gz")):
            seconds, sizes = [], []
            for k, (healthy, result) in enumerate(samples):
                array = (result.image, result.label)[index]
                vol = healthy.image.with_array(array)
                t0 = time.perf_counter()
                path = vol.write(tmp / f"{what}{k}{suffix}", compression_level=level)
                seconds.append(time.perf_counter() - t0)
                sizes.append(path.stat().st_size)
            out[(what, name)] = {"s": statistics.median(seconds), "mb": float(np.mean(sizes)) / 1e6}
    # SimpleITK's NIfTI writer ignores the gzip level (sizes above are identical for 1 and 6):
    # what a writer honouring it would cost, measured with zlib on the same image bytes
    import zlib

    data = samples[0][1].image.tobytes()
    for level in (1, 6):
        t0 = time.perf_counter()
        size = len(zlib.compress(data, level))
        out[("image", f"zlib {level} (bytes only)")] = {"s": time.perf_counter() - t0, "mb": size / 1e6}
    return out


def time_runs(manifest: Path, bank_dir: Path, repeats: int, tmp: Path, plan) -> dict:
    """End-to-end batch runs: ``plan`` lists (workers, image gzip level or None)."""
    from metsynth.synthesis.compose import SynthesisConfig
    from metsynth.synthesis.run import run_synthesis

    out = {}
    for workers, level in plan:
        run_dir = tmp / f"run-w{workers}-l{level}"
        shutil.rmtree(run_dir, ignore_errors=True)
        config = SynthesisConfig(repeats=repeats, image_compression_level=level)
        t0, c0 = time.perf_counter(), _cpu()
        summary = run_synthesis(manifest, bank_dir, run_dir, config, workers=workers, progress=False)
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
        out[(workers, level)] = {"s": seconds, "attempts": summary.attempts, "kept": summary.kept,
                                 "per_s": summary.attempts / seconds, "cpu_per_volume": cpu / summary.attempts,
                                 "dir": run_dir, "load": os.getloadavg()[0]}
    return out


def _compute_task(task: tuple) -> int:
    """Module level (picklable): all repeats of one (healthy, lesion) pair, compute only, no files."""
    from metsynth.synthesis.attempts import _cached_healthy, _cached_lesion, synthesize_volume
    from metsynth.synthesis.compose import SynthesisConfig

    case, bank_root, lesion_id, repeats = task
    healthy = _cached_healthy(case)
    entry, arrays = _cached_lesion(bank_root, lesion_id)
    config = SynthesisConfig()
    return sum(int(synthesize_volume(healthy, entry, arrays, config, r)[0].kept) for r in range(repeats))


def time_compute_scaling(manifest: Path, bank_dir: Path, repeats: int, workers_list=(1, 2)) -> dict:
    """The batch run's task structure through map_tasks, without writing (load + compute only)."""
    from metsynth.cohort import load_cohort
    from metsynth.parallel import map_tasks
    from metsynth.synthesis.bank import load_bank

    cohort, bank = load_cohort(manifest), load_bank(bank_dir)
    tasks = [(case, str(bank.root), e.id, repeats) for case in cohort.by_role("healthy") for e in bank.entries]
    out = {}
    for workers in workers_list:
        t0, c0 = time.perf_counter(), _cpu()
        attempts = len(tasks) * repeats
        sum(map_tasks(_compute_task, tasks, workers=workers, progress=False, key=lambda t: f"{t[0].id}__{t[2]}"))
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
        out[workers] = {"s": seconds, "per_s": attempts / seconds, "cpu_per_volume": cpu / attempts,
                        "attempts": attempts, "load": os.getloadavg()[0]}
    return out


def _burn(n: int) -> float:
    """A pure-CPU Python loop (module level, for the machine's own 1 -> 2 process scaling)."""
    x = 0
    for i in range(n):
        x += i * i
    return float(x)


def machine_scaling(n: int = 10_000_000) -> float:
    """Throughput of 2 busy processes over 1 on this machine now (2.0 on two idle cores)."""
    from metsynth.parallel import map_tasks

    rates = {}
    for workers in (1, 2):
        list(map_tasks(_burn, [1000] * workers, workers=workers, progress=False))  # start-up, not timed
        t0 = time.perf_counter()
        list(map_tasks(_burn, [n] * (2 * workers), workers=workers, progress=False))
        rates[workers] = 2 * workers / (time.perf_counter() - t0)
    return rates[2] / rates[1]


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_synthesis")
    parser.add_argument("--healthy", type=int, default=2)
    parser.add_argument("--metastatic", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--preview", type=int, default=0, help="Also write a preview montage of K volumes.")
    parser.add_argument("--plan", default="1:none,2:none,1:1,2:1,1:6",
                        help="Batch runs to time: WORKERS:IMAGE_GZIP_LEVEL pairs (level 'none' = uncompressed).")
    parser.add_argument("--only-runs", action="store_true", help="Skip the compute-only and write timings.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from metsynth.synthesis.bank import extract_bank

    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    manifest = build_phantom(args.work, args.healthy, args.metastatic)
    print(f"phantom cohort prepared: {manifest} ({time.perf_counter() - t0:.0f} s)", flush=True)
    bank = extract_bank(manifest, args.work / "bank", progress=False)
    print(f"bank: {len(bank.entries)} lesions ({[round(e.volume_mm3) for e in bank.entries]} mm^3), "
          f"{len(bank.skipped)} skipped", flush=True)

    plan = [(int(w), None if lv == "none" else int(lv))
            for w, lv in (item.split(":") for item in args.plan.split(",") if item)]
    compute = writes = None
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        if not args.only_runs:
            compute = time_compute(manifest, args.work / "bank", args.repeats)
            compute["large"] = time_large_lesions(manifest)
            writes = time_writes(compute["samples"], Path(tmp))
        machine = machine_scaling()
        scaling = time_compute_scaling(manifest, args.work / "bank", args.repeats)
        runs = time_runs(manifest, args.work / "bank", args.repeats, Path(tmp), plan)
        if args.preview:
            from metsynth.synthesis.qc import write_preview

            png = write_preview(next(iter(runs.values()))["dir"], args.preview, out_png=args.work / "preview.png")
            print(f"preview: {png}")

    print()
    print(f"Machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the end")
    print()
    print("| measure | value |")
    print("|---|---|")
    if compute is not None:
        report_compute(compute, writes)
    for workers, r in scaling.items():
        print(f"| compute only (load + synthesis, no files), {workers} worker(s) | {r['per_s']:.2f} volumes/s = "
              f"{r['per_s'] / workers:.2f} per worker; {r['cpu_per_volume']*1e3:.0f} ms CPU per volume "
              f"({r['attempts']} attempts, {r['s']:.1f} s, load avg {r['load']:.1f}) |")
    print(f"| machine check: 2 vs 1 busy processes (pure-Python loop) | x{machine:.2f} (x2.00 on two idle cores) |")
    if 1 in scaling and 2 in scaling:
        print(f"| scaling 1 -> 2 workers, compute only | x{scaling[2]['per_s'] / scaling[1]['per_s']:.2f} |")
    report_runs(runs)


def report_compute(compute: dict, writes: dict) -> None:
    times = np.asarray(compute["times"])
    shapes = ", ".join("x".join(map(str, s)) for s in compute["shapes"])
    print(f"| healthy volumes (z, y, x at 0.85 mm) | {shapes} |")
    print(f"| healthy case load + femur regions (once per worker and case) | "
          f"{statistics.median(compute['load']):.2f} s median |")
    cpu = np.asarray(compute["cpu"])
    print(f"| compute per attempt, 1 core, wall (median / mean / max) | {np.median(times)*1e3:.0f} / "
          f"{times.mean()*1e3:.0f} / {times.max()*1e3:.0f} ms |")
    print(f"| compute per attempt, CPU time (median / mean) | {np.median(cpu)*1e3:.0f} / {cpu.mean()*1e3:.0f} ms |")
    for radius, r in compute["large"].items():
        from collections import Counter

        methods = ", ".join(f"{n} {m}" for m, n in sorted(Counter(r["methods"]).items()))
        print(f"| compute per attempt, ball lesion r = {radius} mm ({r['mm3'] / 1000:.1f} cm^3), median / max | "
              f"{r['median']*1e3:.0f} / {r['max']*1e3:.0f} ms ({methods}) |")
    for (what, name), w in writes.items():
        print(f"| write one {what}, {name} | {w['s']*1e3:.0f} ms, {w['mb']:.3f} MB |")


def report_runs(runs: dict) -> None:
    for (workers, level), r in runs.items():
        image = "uncompressed" if level is None else f"gzip {level}"
        print(f"| batch run, {workers} worker(s), images {image}, labels gzip 1 | {r['per_s']:.2f} volumes/s "
              f"= {r['per_s'] / workers:.2f} per worker; {r['cpu_per_volume']*1e3:.0f} ms CPU per volume "
              f"({r['attempts']} attempts, {r['kept']} kept, {r['s']:.1f} s, load avg {r['load']:.1f}) |")
    for level in (None, 1):
        if (1, level) in runs and (2, level) in runs:
            image = "uncompressed" if level is None else f"gzip {level}"
            ratio = runs[(2, level)]["per_s"] / runs[(1, level)]["per_s"]
            print(f"| scaling 1 -> 2 workers (images {image}) | x{ratio:.2f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    main()
