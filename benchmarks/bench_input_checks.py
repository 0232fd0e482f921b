"""What the input checks cost, each against the way it would otherwise be done, in the same run.

    .venv/bin/python benchmarks/bench_input_checks.py [--files 40] [--repeats 3]

1. ``check_3d_header`` (predict's check of every input before any is predicted) on NIfTI files:
   the 348-byte header read directly against SimpleITK's ``ReadImageInformation`` (which probes
   every image format first), on the default phantom's images written as .nii.gz.
2. ``check_lesion_on_femur`` (cohort check, prepare) on a scan of 300 x 512 x 512 voxels with a
   lesion in the femur and two stray marks in opposite corners (the case it exists to refuse):
   each mark measured in its own box against one distance map over the box around every mark.
   Peak memory of each, from tracemalloc (numpy's buffers are traced).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    headers(args.files, args.repeats)
    lesion_check(args.repeats)


def headers(n: int, repeats: int) -> None:
    import SimpleITK as sitk

    from metsynth.phantom import PhantomConfig, generate_case
    from metsynth.volume import check_3d_header

    def probe(path: Path) -> None:  # the reference: what check_3d_header did before its NIfTI path
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        assert reader.GetDimension() == 3

    with tempfile.TemporaryDirectory() as tmp:
        image = generate_case("H001", "healthy", 0, PhantomConfig()).image
        files = []
        for k in range(n):
            path = Path(tmp) / f"case{k:03d}.nii.gz"
            image.write(path)
            files.append(path)
        times: dict[str, list[float]] = {"header read directly": [], "SimpleITK ReadImageInformation": []}
        for _ in range(repeats):  # interleaved: drift in the machine's speed falls on both
            for name, fn in (("header read directly", check_3d_header), ("SimpleITK ReadImageInformation", probe)):
                start = time.perf_counter()
                for path in files:
                    fn(path)
                times[name].append((time.perf_counter() - start) / n)
    direct, reference = (min(v) for v in times.values())
    print(f"\n### check_3d_header, {n} phantom images ({image.shape}, .nii.gz), best of {repeats}\n")
    print("| method | ms per file |\n|---|---|")
    for name, values in times.items():
        print(f"| {name} | {min(values) * 1000:.2f} |")
    print(f"\nratio direct / SimpleITK: x{direct / reference:.3f}")


def lesion_check(repeats: int) -> None:
    from scipy import ndimage

    from metsynth.cohort import Case, check_lesion_on_femur
    from metsynth.errors import InputError
    from metsynth.volume import Volume

    shape, spacing = (300, 512, 512), (1.0, 0.7, 0.7)
    bone = np.zeros(shape, np.uint8)
    bone[50:250, 200:300, 200:300] = 1
    marks = np.zeros(shape, np.uint8)
    marks[100:110, 220:230, 220:230] = 1  # the lesion, in the femur
    marks[2:4, 2:4, 2:4] = 1  # stray marks in two opposite corners
    marks[296:298, 508:510, 508:510] = 1
    scan = Volume(np.zeros(shape, np.int16), spacing)
    lesion, femur = scan.with_array(marks), scan.with_array(bone)
    case = Case.model_validate({"id": "M1", "image": "/scan.nii.gz", "role": "metastatic",
                                "lesion_masks": [{"path": "/lesion.nii.gz"}]})

    def per_mark() -> None:
        try:
            check_lesion_on_femur(case, case.lesion_masks[0], lesion, femur, "bench")
        except InputError:
            return
        raise AssertionError("the stray marks were not refused")

    def one_map() -> None:  # the reference: one distance map over the box around every mark
        where = np.argwhere(marks)
        pad = np.ceil(10.0 / np.asarray(spacing)).astype(int) + 1
        lo, hi = np.maximum(where.min(0) - pad, 0), np.minimum(where.max(0) + pad + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        labels, n = ndimage.label(marks[box], structure=np.ones((3, 3, 3), bool))
        distance = ndimage.distance_transform_edt(~bone[box].astype(bool), sampling=spacing)
        gaps = ndimage.minimum(distance, labels, index=np.arange(1, n + 1))
        assert np.max(gaps) > 10

    results = {}
    for name, fn in (("each mark in its own box", per_mark), ("one map over every mark's box", one_map)):
        best, peak = np.inf, 0
        for _ in range(repeats):
            tracemalloc.start()
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
            peak = max(peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        results[name] = (best, peak)
    print(f"\n### check_lesion_on_femur, {shape} voxels, a lesion and two stray marks, best of {repeats}\n")
    print("| method | seconds | peak memory (GB) |\n|---|---|---|")
    for name, (seconds, peak) in results.items():
        print(f"| {name} | {seconds:.2f} | {peak / 1e9:.2f} |")
    (a, pa), (b, pb) = results.values()
    print(f"\nratio own boxes / one map: time x{a / b:.3f}, memory x{pa / pb:.3f}")


if __name__ == "__main__":
    main()
