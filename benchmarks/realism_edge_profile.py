"""The lesion edge, layer by layer: real lesions against each generated set of a run.

Usage (a demo run made by ``metsynth demo --seed N --out DIR``; extra sets as NAME=FOLDER)::

    python benchmarks/realism_edge_profile.py RUN [NAME=FOLDER ...]

For every lesion the realism measure reads (the real ones, and the same sample of volumes from
the run's synthetic set and each extra set), the mean intensity of each voxel layer around its
mask: layer 0 is the mask's boundary (the voxels that one face-connected erosion removes), -1 to
-3 the next layers inward, 1 to 4 the layers outward (inside the femur). Normalized per lesion so
that the deepest interior layer reads 0 and layer 4 reads 1. Prints the median over the lesions
of each set: where a generated edge is wider or narrower than a real one, and on which side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

_CROSS = ndi.generate_binary_structure(3, 1)
LAYERS = range(-3, 5)


def edge_profile(image: np.ndarray, mask: np.ndarray, femur: np.ndarray | None) -> dict[int, float] | None:
    """Layer -> normalized mean intensity (module docstring); None for a lesion too thin to have the layers."""
    mask = np.asarray(mask).astype(bool)
    where = np.argwhere(mask)
    lo = np.maximum(where.min(axis=0) - 6, 0)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, where.max(axis=0) + 7))
    img, m = np.asarray(image[box], dtype=np.float32), mask[box]
    fem = np.ones_like(m) if femur is None else np.asarray(femur[box]).astype(bool) | m
    layers, inner, outer = {}, m.copy(), m.copy()
    for depth in range(4):
        eroded = ndi.binary_erosion(inner, _CROSS)
        layers[-depth] = inner & ~eroded
        inner = eroded
    for step in range(1, 5):
        dilated = ndi.binary_dilation(outer, _CROSS)
        layers[step] = dilated & ~outer & fem
        outer = dilated
    means = {d: float(img[v].mean()) for d, v in layers.items() if v.sum() >= 3}
    if -2 not in means or 4 not in means:
        return None
    deep, bone = means.get(-3, means[-2]), means[4]
    return {d: (v - deep) / (bone - deep) for d, v in means.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a demo run folder")
    parser.add_argument("sets", nargs="*", help="more sets to profile, NAME=FOLDER")
    args = parser.parse_args()
    import metsynth.realism.measure as measure
    from metsynth.experiment import ExperimentConfig
    from metsynth.layout import RunLayout

    profiles: dict[str, list[dict[int, float]]] = {}
    current = ["real"]
    features = measure.lesion_features

    def recording(image, mask, spacing, femur=None, ring_mm=3.0):  # the measure's own lesions, profiled on the way
        profile = edge_profile(image, mask, femur)
        if profile is not None:
            profiles.setdefault(current[0], []).append(profile)
        return features(image, mask, spacing, femur, ring_mm)

    measure.lesion_features = recording
    layout = RunLayout(args.run)
    config = ExperimentConfig.from_yaml(layout.config).realism
    real = measure.real_lesions(layout.prepared_manifest, config)
    ids = measure.sample_volume_ids(layout.synthetic, len(real), config.seed)
    sets = [("synthetic", layout.synthetic)] + [(s.split("=", 1)[0], Path(s.split("=", 1)[1])) for s in args.sets]
    for name, folder in sets:
        current[0] = name
        measure.generated_lesions(folder, layout.prepared_manifest, name, ids, config)
    print("| set | lesions | " + " | ".join(f"layer {d}" for d in LAYERS) + " |")
    print("|---|---|" + "---|" * len(LAYERS))
    for name, rows in profiles.items():
        cells = [f"{np.nanmedian([r.get(d, np.nan) for r in rows]):.3f}" for d in LAYERS]
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
