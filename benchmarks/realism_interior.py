"""Why pasted interiors read brighter than their donors', and two tries at it (not kept).

Usage (demo runs made by ``metsynth demo --seed N --out DIR``)::

    python benchmarks/realism_interior.py RUN0 RUN1 RUN2 RUN3

For each run, the run's bank and healthy femurs are synthesized again three ways, into
``RUN/bench_interior/<variant>/`` (made once), and each set is measured against the run's real
lesions with the realism features (no CNN):

* ``as_is``: the run's own synthesis settings (a check: its AUC is the run's synthetic AUC);
* ``fill2``: the donor's edge voxels filled from its interior eroded by two voxels, not one, so
  the carried values hold none of the donor's own edge blur;
* ``core``: the blending weight set to exactly 1 on the pasted label eroded by one voxel (the
  interior the ``interior_mean`` feature reads), so the Gaussian edge cannot brighten it.

Prints per run and variant the features AUC and the interior mean (median) of real, donor and
pasted lesions; and, measured during the ``as_is`` synthesis, the blending weight inside that
interior (each pasted lesion's mean, their median), the cause the two variants address.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

_CROSS = ndi.generate_binary_structure(3, 1)


def _fill_deeper(image, mask):
    mask = np.asarray(mask).astype(bool)
    interior = ndi.binary_erosion(mask, structure=_CROSS, iterations=2)
    if not interior.any():
        interior = ndi.binary_erosion(mask, structure=_CROSS)
    if not interior.any():
        interior = mask
    nearest = ndi.distance_transform_edt(~interior, return_distances=False, return_indices=True)
    return np.asarray(image, dtype=np.float32)[tuple(nearest)]


def synthesize(run: Path, variant: str, weights: list[float]) -> Path:
    import metsynth.synthesis.compose as compose
    import metsynth.synthesis.transforms as transforms
    from metsynth.experiment import ExperimentConfig
    from metsynth.layout import RunLayout
    from metsynth.synthesis.run import run_synthesis

    folder = run / "bench_interior" / variant
    if (folder / "index.csv").is_file():
        return folder
    layout = RunLayout(run)
    config = ExperimentConfig.from_yaml(layout.config)
    original_fill, original_weights = transforms.fill_from_interior, compose.gaussian_weights

    def measured(mask, sigma_mm, spacing):
        alpha = original_weights(mask, sigma_mm, spacing)
        core = ndi.binary_erosion(np.asarray(mask).astype(bool), structure=_CROSS)
        if core.sum() >= 4:
            weights.append(float(alpha[core].mean()))
        if variant == "core":
            alpha[core] = 1.0
        return alpha

    compose.gaussian_weights = measured
    if variant == "fill2":
        transforms.fill_from_interior = _fill_deeper
    try:
        run_synthesis(layout.prepared_manifest, layout.bank, folder, config.synthesis.merged(seed=config.seed),
                      progress=False)
    finally:
        transforms.fill_from_interior, compose.gaussian_weights = original_fill, original_weights
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="demo run folders")
    args = parser.parse_args()
    from metsynth.experiment import ExperimentConfig
    from metsynth.layout import RunLayout
    from metsynth.realism.measure import measure_realism

    print("| run | variant | features AUC | interior_mean: real | donors (real) | pasted | weight inside, median "
          "over lesions of its mean (as_is) |")
    print("|---|---|---|---|---|---|---|")
    for run in args.runs:
        layout = RunLayout(run)
        config = ExperimentConfig.from_yaml(layout.config)
        weights: list[float] = []
        sets = {v: synthesize(run, v, weights if v == "as_is" else []) for v in ("as_is", "fill2", "core")}
        realism = config.realism.model_copy(update={"cnn": False, "donor_null_splits": 0})
        report = measure_realism(layout.prepared_manifest, sets, run / "bench_interior" / "realism", realism,
                                 progress=False)
        header, *lines = (run / "bench_interior" / "realism" / "features.csv").read_text().splitlines()
        rows = [line.split(",") for line in lines]
        col = header.split(",").index("interior_mean")
        donors = {r[1] for r in rows if r[2] == "as_is"}
        real = [float(r[col]) for r in rows if r[2] == "real"]
        donor_real = [float(r[col]) for r in rows if r[2] == "real" and r[1] in donors]
        for v in sets:
            pasted = [float(r[col]) for r in rows if r[2] == v]
            weight = f"{np.median(weights):.3f}" if v == "as_is" and weights else ""
            print(f"| {run.name} | {v} | {report['sets'][v]['features']['auc']:.2f} | {np.median(real):.4f} | "
                  f"{np.median(donor_real):.4f} | {np.median(pasted):.4f} | {weight} |")


if __name__ == "__main__":
    main()
