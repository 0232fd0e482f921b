"""What the edge model does to realism: the paper's mean-filter blend against ``edge_model: donor``.

Usage (demo runs made by ``metsynth demo --seed N --out DIR``, whose synthesis uses the donor model)::

    python benchmarks/realism_edges.py runs/demo runs/demo-seed1 runs/demo-seed2

For each run, the same bank and healthy femurs are synthesized again with the paper's mean filter
(``RUN/bench_mean_filter/``, made once), and both sets are measured against the run's real lesions
with the realism measure (features and CNN). Prints per run the C2ST AUCs and, for the features
that separate either set most, the median of real, mean-filter and donor lesions with each
feature's AUC alone; then the range over the runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def measure(run: Path) -> dict:
    from metsynth.experiment import ExperimentConfig
    from metsynth.layout import RunLayout
    from metsynth.realism.measure import measure_realism
    from metsynth.synthesis.run import run_synthesis

    layout = RunLayout(run)
    config = ExperimentConfig.from_yaml(layout.config)
    synthesis = config.synthesis.merged(seed=config.seed)
    paper = synthesis.model_copy(
        update={"transform": synthesis.transform.model_copy(update={"edge_model": "mean_filter"})})
    folder = run / "bench_mean_filter"
    if not (folder / "index.csv").is_file():
        run_synthesis(layout.prepared_manifest, layout.bank, folder, paper, progress=False)
    realism = config.realism.model_copy(update={"cnn_sets": None})
    return measure_realism(layout.prepared_manifest, {"mean_filter": folder, "donor": layout.synthetic},
                           run / "bench_realism_edges", realism, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="demo run folders")
    args = parser.parse_args()
    reports = {run: measure(run) for run in args.runs}
    print("| run | real lesions | mean filter: features AUC | CNN AUC | donor: features AUC | CNN AUC "
          "| null real vs real (features) |")
    print("|---|---|---|---|---|---|---|")
    for run, rep in reports.items():
        m, d = rep["sets"]["mean_filter"], rep["sets"]["donor"]
        cells = [f"{t['auc']:.2f} [{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}]" for t in
                 (m["features"], m["cnn"], d["features"], d["cnn"])]
        print(f"| {run} | {rep['n_real']} | " + " | ".join(cells) + f" | {rep['null_real']['features']['auc']:.2f} |")
    for key in ("features", "cnn"):
        for name in ("mean_filter", "donor"):
            values = [rep["sets"][name][key]["auc"] for rep in reports.values()]
            print(f"\n{name} {key} AUC over {len(values)} runs: {min(values):.2f}-{max(values):.2f}", end="")
    print("\n")
    first = next(iter(reports.values()))
    top = [r["feature"] for r in first["sets"]["mean_filter"]["features_table"][:5]]
    top += [r["feature"] for r in first["sets"]["donor"]["features_table"][:3] if r["feature"] not in top]
    print("| feature | real (median) | mean filter | AUC alone | donor | AUC alone |")
    print("|---|---|---|---|---|---|")
    for feat in top:
        rows = {name: [next(r for r in rep["sets"][name]["features_table"] if r["feature"] == feat)
                       for rep in reports.values()] for name in ("mean_filter", "donor")}

        def span(values, fmt="{:.3g}"):
            lo, hi = min(values), max(values)
            return fmt.format(lo) if np.isclose(lo, hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"

        print(f"| {feat} | {span([r['real'] for r in rows['donor']])} | "
              f"{span([r['generated'] for r in rows['mean_filter']])} | "
              f"{span([r['auc'] for r in rows['mean_filter']], '{:.2f}')} | "
              f"{span([r['generated'] for r in rows['donor']])} | "
              f"{span([r['auc'] for r in rows['donor']], '{:.2f}')} |")


if __name__ == "__main__":
    main()
