"""Realism of harmonized lesions per SDEdit variant, on a finished study run (e.g. the demo).

    python benchmarks/realism_harmonize.py RUN [--variants t2d1,t2d2,t5d2,...] [--out DIR]

Each variant ``t<T>d<D>`` (optionally followed by ``+setting=value`` harmonize settings, e.g.
``t2d2+blend=lesion+lesion_margin_mm=0``) harmonizes the run's realism sample (the volume ids the realism measure
draws) from start timestep T with D averaged antithetic SDEdit draws (``harmonize.draws``), with
the run's own DDPM, and measures every set with the feature discriminator (the CNN is left out to
keep it fast) against the run's real lesions. Prints features AUC with its 95% interval, the
null control, and the medians of the features that gave the harmonized lesions away
(interior_std, grain_interior, grain_ring, contrast). Writes nothing into RUN.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

FEATURES_SHOWN = ("interior_std", "grain_interior", "grain_ring", "grain_ratio", "contrast", "edge_inner")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--variants", default="t2d1,t2d2,t5d2,t10d2")
    parser.add_argument("--out", default=None, help="work folder (default: benchmarks/.cache/realism_harmonize/<run>)")
    parser.add_argument("--time", type=int, default=0, metavar="N",
                        help="only time draws=1 against draws=2 on N volumes (interleaved, one thread, no file IO)")
    args = parser.parse_args()
    if args.time:
        return time_draws(Path(args.run), args.time)

    from metsynth.diffusion.harmonize import harmonize_config_for, harmonize_set
    from metsynth.experiment import ExperimentConfig
    from metsynth.realism.measure import measure_realism, realism_sample_size, sample_volume_ids

    run = Path(args.run)
    work = Path(args.out or Path(__file__).parent / ".cache" / "realism_harmonize" / run.resolve().name)
    manifest = run / "prepared" / "cohort.yaml"
    checkpoint = run / "diffusion" / "model.pt"
    synthetic = run / "synthetic"
    # the study's real sample (its realism.roles and max_real_cases), the feature test only
    config = ExperimentConfig.from_yaml(run / "config.yaml").realism.model_copy(update={"cnn": False, "null_splits": 3})
    ids = sample_volume_ids(synthetic, realism_sample_size(manifest, config), config.seed)
    sets = {"synthetic": synthetic}
    seconds = {}
    for variant in args.variants.split(","):
        m = re.fullmatch(r"t(\d+)d(\d+)((?:\+\w+=[\w.]+)*)", variant)
        if not m:
            raise SystemExit(f"variant {variant!r}: expected t<T>d<D>[+setting=value...], e.g. t2d2+blend=lesion")
        t, draws = int(m.group(1)), int(m.group(2))
        extra = dict(kv.split("=", 1) for kv in m.group(3).split("+") if kv)
        cfg = harmonize_config_for(checkpoint, {"start_timestep": t, "draws": draws, **extra})
        start = time.perf_counter()
        harmonize_set(synthetic, work / variant, checkpoint, cfg, volume_ids=ids, workers=1, threads=2,
                      progress=False, device="cpu")
        seconds[variant] = time.perf_counter() - start
        sets[variant] = work / variant
    report = measure_realism(manifest, sets, work / "realism", config, progress=False)
    real = report["null_real"]["features"]
    print(f"{run}: {report['n_real']} real lesions; null real-vs-real features AUC {real['auc']:.2f}")
    header = ["set", "AUC", "95% CI", "s"] + list(FEATURES_SHOWN)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    real_medians = None
    for name, entry in report["sets"].items():
        f = entry["features"]
        per = {row["feature"]: row for row in entry["features_table"]}
        if real_medians is None:
            real_medians = {k: per[k]["real"] for k in FEATURES_SHOWN}
        cells = [name, f"{f['auc']:.2f}", f"{f['ci95'][0]:.2f}-{f['ci95'][1]:.2f}",
                 f"{seconds.get(name, 0):.0f}"] + [f"{per[k]['generated']:.4f}" for k in FEATURES_SHOWN]
        print("| " + " | ".join(cells) + " |")
    print("| real | | | | " + " | ".join(f"{real_medians[k]:.4f}" for k in FEATURES_SHOWN) + " |")
    (work / "summary.json").write_text(json.dumps({"run": str(run), "seconds": seconds,
                                                   "auc": {n: e["features"]["auc"] for n, e in report["sets"].items()}},
                                                  indent=1))


def time_draws(run: Path, n: int) -> None:
    """Seconds per volume of ``draws`` 1 and 2 at the run's start timestep, interleaved; their ratio."""
    import torch

    from metsynth.diffusion.harmonize import harmonize_volume, load_denoiser
    from metsynth.volume import Volume

    torch.set_num_threads(1)
    checkpoint = run / "diffusion" / "model.pt"
    denoiser = load_denoiser(checkpoint, device="cpu")
    base = denoiser.config.harmonize
    images = sorted((run / "synthetic" / "images").glob("*.nii*"))[:n]
    times: dict[int, list[float]] = {1: [], 2: []}
    for path in images:
        image = Volume.read(path)
        label = Volume.read(run / "synthetic" / "labels" / (path.name.split(".nii")[0] + ".nii.gz"))
        for draws in (1, 2, 2, 1):  # ABBA: drift in the machine's speed cancels
            start = time.perf_counter()
            harmonize_volume(image, label, denoiser, base.merged(draws=draws), seed=0)
            times[draws].append(time.perf_counter() - start)
    one, two = (float(np.median(times[d])) for d in (1, 2))
    print(f"{run}: {len(images)} volumes, start t={base.start_timestep}, one thread: draws=1 {one:.3f} s, "
          f"draws=2 {two:.3f} s per volume (ratio {two / one:.2f})")


if __name__ == "__main__":
    main()
