"""Validate and time the automatic femur segmentation (metsynth.bone).

1. Real CT: ../shared/data/real/totalsegmentator (TotalSegmentator's example CT, 3 mm, reference
   femur and hip masks; the left hip has a metal prosthesis). For the native CT and for the same
   CT resampled to a fine grid of about 512 x 512 x 300 voxels' size (linear image,
   nearest-neighbour masks; a runtime check, its Dice is not a fine-CT figure): Dice of each
   femur against the reference, overlap with the hip bone, runtime.
2. Built-in phantom (``--phantom N``): N metastatic cases of the default preset (0.7-1.25 mm
   voxels, one leg, pelvis across a joint space): Dice against the exact femur mask, fraction of
   lesion voxels inside the femur mask, overlap with the pelvis, runtime.

    .venv/bin/python benchmarks/bench_femur_seg.py [--fine-spacing 1 0.75 0.75] [--no-fine] [--phantom 6]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from metsynth.bone import FemurSegConfig, find_femurs, segment_bone
from metsynth.volume import Volume

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "totalsegmentator"
NAMES = ("femur_left", "femur_right", "hip_left", "hip_right")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total)


def resample(volume: Volume, spacing, order: int) -> Volume:
    zoom = np.asarray(volume.spacing) / np.asarray(spacing)
    array = ndi.zoom(volume.array.astype(np.float32 if order else np.uint8), zoom, order=order, grid_mode=True,
                     mode="grid-constant" if order == 0 else "nearest")
    new_spacing = np.asarray(volume.spacing) * np.asarray(volume.shape) / np.asarray(array.shape)
    # grid_mode keeps the field of view: the first voxel centre moves by half a new voxel inward.
    origin = volume.index_to_world((new_spacing / np.asarray(volume.spacing) - 1) / 2)
    if order:
        array = np.round(array).astype(np.int16)
    return Volume(array, tuple(new_spacing), tuple(origin), volume.direction.copy())


def score(name: str, image: Volume, refs: dict[str, np.ndarray], config: FemurSegConfig) -> None:
    t0 = time.perf_counter()
    found = find_femurs(image, config)
    seconds = time.perf_counter() - t0
    print(f"{name}: grid {image.shape} spacing {tuple(round(s, 3) for s in image.spacing)} mm, "
          f"find_femurs {seconds:.1f} s, sides found: {', '.join(found.masks)}")
    for side in ("right", "left"):
        mask = found.masks.get(side)
        if mask is None:
            print(f"  {side:5s}: not found")
            continue
        ref = refs[f"femur_{side}"]
        hip = refs[f"hip_{side}"] > 0
        extra_in_hip = float((mask.astype(bool) & hip).sum()) / max(1, int(ref.sum()))
        print(f"  {side:5s}: Dice {dice(mask, ref):.4f}   voxels {int(mask.sum())} vs reference {int(ref.sum())}"
              f"   in hip_{side}: {extra_in_hip:.1%} of the reference femur"
              + ("   (metal prosthesis side)" if side == "left" else ""))
    t0 = time.perf_counter()
    segment_bone(image, config)
    print(f"  segment_bone {time.perf_counter() - t0:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fine-spacing", type=float, nargs=3, default=(1.0, 0.75, 0.75),
                        help="(z, y, x) spacing of the fine-grid check, mm")
    parser.add_argument("--no-fine", action="store_true", help="skip the fine-grid check")
    parser.add_argument("--phantom", type=int, default=6, metavar="N",
                        help="number of default-preset phantom cases to score (0: none)")
    args = parser.parse_args()
    image = Volume.read(DATA / "example_ct.nii.gz")
    refs = {n: Volume.read(DATA / "example_seg" / f"{n}.nii.gz").array.astype(np.uint8) for n in NAMES}
    config = FemurSegConfig()
    score("native 3 mm", image, refs, config)
    if not args.no_fine:
        fine = resample(image, args.fine_spacing, order=1)
        fine_refs = {n: resample(image.with_array(r), args.fine_spacing, order=0).array for n, r in refs.items()}
        score("resampled fine", fine, fine_refs, config)
    if args.phantom:
        score_phantom(args.phantom, config)


def score_phantom(n: int, config: FemurSegConfig) -> None:
    from metsynth.phantom import TISSUES, PhantomConfig, generate_case

    pelvis_codes = [TISSUES["pelvis_cortical"], TISSUES["pelvis_trabecular"]]
    dices, coverages = [], []
    for seed in range(n):
        case = generate_case(f"M{seed:03d}", "metastatic", seed, PhantomConfig())
        t0 = time.perf_counter()
        found = find_femurs(case.image, config)
        seconds = time.perf_counter() - t0
        mask = found.masks.get(case.side)
        if mask is None:
            print(f"phantom {case.case_id}: {case.side} femur not found (found {list(found.masks)})")
            continue
        mask = mask.astype(bool)
        lesion = case.lesion.array.astype(bool)
        pelvis = np.isin(case.labels.array, pelvis_codes)
        dices.append(dice(mask, case.femur.array))
        coverages.append(float(mask[lesion].mean()))
        breaks = sum(bool(lesion_info["breaks_cortex"]) for lesion_info in case.lesions)
        print(f"phantom {case.case_id}: grid {case.image.shape} spacing {case.image.spacing} mm, {seconds:.1f} s, "
              f"Dice {dices[-1]:.4f}, lesion voxels inside {coverages[-1]:.1%} ({len(case.lesions)} lesions, "
              f"{breaks} breaking the cortex), pelvis voxels in the mask {int((mask & pelvis).sum())}"
              + (", head fitted" if case.side in found.heads else ""))
    if dices:
        print(f"phantom: Dice mean {np.mean(dices):.4f} (min {np.min(dices):.4f}), lesion coverage min "
              f"{np.min(coverages):.1%} over {len(dices)} cases")


if __name__ == "__main__":
    main()
