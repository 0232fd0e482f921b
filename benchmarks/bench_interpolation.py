"""Rotated-patch resampling: scipy's ``affine_transform`` (what ``extract_patch`` does) against
torch's ``grid_sample`` (trilinear, float32), one thread, the demo's 32^3 patches.

Issue 14 item 3: what is left of the demo's data-wait share is the image's trilinear resampling of
the rotated or scaled patches; this measures whether another interpolator would be cheaper. Both
sample the same points (``align_corners=True``, constant air outside); the largest difference of
their values is printed (grid_sample computes in float32, so the bits differ).

Usage::

    .venv/bin/python benchmarks/bench_interpolation.py [--patches 200] [--repeats 3] [--size 32]

Prints ms per patch (medians of interleaved repeats) and the ratio grid_sample / scipy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()

    import torch
    from scipy import ndimage

    from metsynth.segmentation.datasets import AIR
    from metsynth.synthesis.transforms import rotation_matrix

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    volume = rng.uniform(-1, 1, (120, 80, 80)).astype(np.float32)
    size = np.array([args.size] * 3)
    half = (size - 1) / 2.0
    center = np.array(volume.shape) // 2
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in size], indexing="ij"), -1).reshape(-1, 3)
    draws = [(tuple(rng.uniform(-15, 15, 3)), float(rng.uniform(0.85, 1.15))) for _ in range(args.patches)]

    def block(angles, scale):
        matrix = rotation_matrix(angles) / scale
        reach = np.abs(matrix) @ half
        lo = np.floor(center - reach).astype(int) - 1
        hi = np.ceil(center + reach).astype(int) + 2
        return matrix, volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], (center - lo) - matrix @ half

    def with_scipy(angles, scale):
        matrix, b, offset = block(angles, scale)
        return ndimage.affine_transform(b, matrix, offset=offset, output_shape=tuple(size), order=1,
                                        mode="constant", cval=AIR, prefilter=False)

    def with_torch(angles, scale):
        matrix, b, offset = block(angles, scale)
        coords = grid @ matrix.T + offset
        norm = coords / (np.array(b.shape) - 1) * 2 - 1
        g = torch.from_numpy(np.ascontiguousarray(norm[:, ::-1], dtype=np.float32)).reshape(1, *size, 3)
        shifted = torch.from_numpy(b - np.float32(AIR))[None, None]  # zero padding = air
        out = torch.nn.functional.grid_sample(shifted, g, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out[0, 0].numpy() + np.float32(AIR)

    times = {"scipy affine_transform": [], "torch grid_sample": []}
    funcs = {"scipy affine_transform": with_scipy, "torch grid_sample": with_torch}
    for r in range(args.repeats):
        for name in (list(funcs) if r % 2 == 0 else list(funcs)[::-1]):
            t0 = time.perf_counter()
            for angles, scale in draws:
                funcs[name](angles, scale)
            times[name].append((time.perf_counter() - t0) / len(draws) * 1e3)
    diff = max(float(np.abs(with_scipy(a, s) - with_torch(a, s)).max()) for a, s in draws[:20])
    ms = {name: statistics.median(v) for name, v in times.items()}
    for name, value in ms.items():
        print(f"{name}: {value:.2f} ms a {args.size}^3 patch")
    print(f"grid_sample / affine_transform: x{ms['torch grid_sample'] / ms['scipy affine_transform']:.2f}; "
          f"largest difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
