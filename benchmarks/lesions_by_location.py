"""Detection and lesion Dice by where the true lesions sit, pooled over study runs.

Usage (runs of ``metsynth demo --seed N`` or ``metsynth experiment run``)::

    python benchmarks/lesions_by_location.py runs/demo runs/demo-seed1 runs/demo-seed2 runs/demo-seed3

Each run's predictions (``predictions/<model>/``) are scored again against its prepared cohort with
``metsynth.evaluation.evaluate_cohort`` (so runs evaluated before lesions had a location get one):
every true lesion is ``cortical`` (more than 5 % of the voxels around it outside the femur mask:
against or through the cortex) or ``medullary`` (``metsynth.bone.contact``). Prints, per model, the
lesions detected and the mean lesion Dice in each location, pooled over the runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from metsynth.evaluation.evaluate import EvaluationConfig, evaluate_cohort
from metsynth.layout import RunLayout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    tables = []
    for run in args.runs:
        layout = RunLayout(run)
        for folder in sorted((run / "predictions").iterdir()):
            if not any(folder.glob("*.nii.gz")):
                continue
            result = evaluate_cohort(folder, layout.prepared_manifest, EvaluationConfig(allow_missing=True),
                                     progress=False)
            les = result.lesions
            les = les[les["kind"] == "true"].assign(run=run.name, model=folder.name)
            tables.append(les)
    data = pd.concat(tables, ignore_index=True)
    data["detected"] = data["detected"].astype(bool)
    first = data[data["model"] == data["model"].iloc[0]]
    print(f"{len(first)} true lesions over {len(args.runs)} runs; "
          f"{(first['location'] == 'cortical').mean():.0%} cortical\n")
    print("| model | cortical: detected | cortical: lesion Dice | medullary: detected | medullary: lesion Dice |")
    print("|---|---|---|---|---|")
    for model, sub in data.groupby("model", sort=False):
        cells = []
        for where in ("cortical", "medullary"):
            part = sub[sub["location"] == where]
            cells += [f"{int(part['detected'].sum())}/{len(part)} ({part['detected'].mean():.2f})",
                      f"{part['dice'].mean():.3f}"]
        print(f"| {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
