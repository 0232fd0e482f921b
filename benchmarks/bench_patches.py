"""What a training's data costs, piece by piece, on a finished demo run (its unpacked-volume cache).

    python benchmarks/bench_patches.py RUN [--patches 2000] [--repeats 3]

RUN is a finished demo run (``make demo``: ``runs/demo``). Prints, as medians of interleaved
repeats in this one process (ratios within the run: the machine is noisy):

1. ``extract_patch`` per patch with the preset's augmentation (half of the patches lesion-centred);
2. for the rotated/scaled lesion-centred patches, the label transformed only where its lesion
   reaches (what ``extract_patch`` does) against the whole block (what it did before), and
   whether the two labels are equal on every patch;
3. opening a cached volume (``open_cached``: the cost of each reopening the patch dataset's
   bounded cache avoids) against a patch;
4. for the on-the-fly synthesis, loading a healthy femur (``HealthyFemur.load``) against one
   fresh synthetic volume with every femur already loaded (what the dataset's cache of healthy
   femurs saves per volume), and unpacking that volume for its patches.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, items, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        runs.append((time.perf_counter() - start) / len(items) * 1e3)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--patches", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from scipy import ndimage

    from metsynth.experiment import ExperimentConfig
    from metsynth.segmentation.cache import open_cached
    from metsynth.segmentation.patches import (
        _padded_block,
        _reaching,
        draw_patch_params,
        extract_patch,
        patch_rng,
        rotation_matrix,
    )

    run = Path(args.run)
    seg = ExperimentConfig.from_yaml(run / "config.yaml").segmentation_settings
    size = tuple(seg.patch_size)
    stems = sorted(str(p)[:-5] for p in (run / "cache").glob("*.json"))
    if not stems:
        raise SystemExit(f"{run}/cache holds no unpacked volume: run the study's train stage first")
    volumes = [open_cached(s) for s in stems]
    work = []
    for i in range(args.patches):
        v = volumes[i % len(volumes)]
        work.append((v, draw_patch_params(v, size, i % 2 == 0, seg.augment, patch_rng(seg.seed, 0, i))))
    patch_ms = _median_ms(lambda w: extract_patch(w[0].image, w[0].label, w[1], size), work, args.repeats)
    print(f"{len(stems)} cached volumes, {args.patches} patches of {size}")
    print(f"1. extract_patch: {patch_ms:.2f} ms a patch")

    # 2. the label of the rotated/scaled lesion-centred patches: where the lesion reaches vs the whole block
    blocks = []
    for v, p in work:
        if p.is_spatially_plain or not p.positive:
            continue
        matrix = rotation_matrix(p.angles_deg) / p.scale
        half = (np.asarray(size) - 1) / 2.0
        reach = np.abs(matrix) @ half
        lo = np.floor(np.asarray(p.center) - reach).astype(int) - 1
        hi = np.ceil(np.asarray(p.center) + reach).astype(int) + 2
        blocks.append((_padded_block(v.label, lo, hi, 0), matrix, (np.asarray(p.center) - lo) - matrix @ half))
    out = np.asarray(size)

    def whole(b):
        return ndimage.affine_transform(b[0].astype(np.float32), b[1], offset=b[2], output_shape=size, order=1,
                                        mode="constant", cval=0.0, prefilter=False) >= 0.5

    def reached(b):
        lbl = np.zeros(size, bool)
        sub = _reaching(b[0], b[1], b[2], out)
        if sub is not None:
            s_lo, s_hi = sub
            part = ndimage.affine_transform(b[0].astype(np.float32), b[1], offset=b[2] + b[1] @ s_lo,
                                            output_shape=tuple(s_hi - s_lo), order=1, mode="constant", cval=0.0,
                                            prefilter=False)
            lbl[s_lo[0]:s_hi[0], s_lo[1]:s_hi[1], s_lo[2]:s_hi[2]] = part >= 0.5
        return lbl

    equal = all(np.array_equal(whole(b), reached(b)) for b in blocks)
    w_ms, r_ms = (_median_ms(f, blocks, args.repeats) for f in (whole, reached))
    print(f"2. label of {len(blocks)} rotated lesion-centred patches: whole block {w_ms:.2f} ms, where the lesion "
          f"reaches {r_ms:.2f} ms (x{w_ms / r_ms:.1f}); equal on every patch: {equal}")

    open_ms = _median_ms(open_cached, stems, args.repeats)
    print(f"3. open_cached: {open_ms:.2f} ms a volume ({open_ms / patch_ms:.2f} of a patch)")

    # 4. the online synthesis: a healthy femur's load against a fresh volume with every femur loaded
    from metsynth.synthesis.compose import HealthyFemur, SynthesisConfig
    from metsynth.synthesis.dataset import SyntheticLesionDataset

    cfg = ExperimentConfig.from_yaml(run / "config.yaml")
    manifest = run / "prepared" / "cohort.yaml"
    dataset = SyntheticLesionDataset(manifest, run / "bank", SynthesisConfig.from_dict(cfg.synthesis.model_dump()),
                                     length=1, seed=0)
    load_ms = _median_ms(HealthyFemur.load, dataset.healthy, args.repeats)
    for case in dataset.healthy:  # every femur loaded: a sample is the synthesis alone
        dataset._get_healthy(case)
    sample_ms = _median_ms(lambda j: dataset.sample(j, 0), list(range(40)), args.repeats)
    samples = [dataset.sample(j, 0) for j in range(40)]

    def unpack(sample) -> None:  # what the patch dataset does with a fresh volume (PatchDataset._volume)
        label = (np.asarray(sample["label"]) > 0).astype(np.uint8)
        np.asarray(sample["image"], np.float32)
        np.argwhere(label).astype(np.int32)

    unpack_ms = _median_ms(unpack, samples, args.repeats)
    print(f"4. online synthesis: HealthyFemur.load {load_ms:.1f} ms, a fresh volume with the femurs loaded "
          f"{sample_ms:.1f} ms, its unpacking for the patches {unpack_ms:.2f} ms ({len(dataset.healthy)} healthy "
          f"femurs, cache of {dataset.cache_size})")


if __name__ == "__main__":
    main()
