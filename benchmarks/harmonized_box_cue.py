"""Does a model trained on box-harmonized volumes use the harmonized box as a cue?

Usage (a study run with the ``synthetic`` and ``harmonized`` models, e.g. ``metsynth demo``)::

    python benchmarks/harmonized_box_cue.py runs/demo /tmp/box-cue

The Diffusion set is harmonized in a box around each lesion (``harmonize.region: lesion``), so its
bone is smoothed there and nowhere else. A model that learnt "a lesion sits in a smoother patch"
would segment a real scan better once the same box is harmonized around its true lesion. This
harmonizes the run's test-only cases that way (with the run's DDPM and the harmonization settings
stored with it, seed 0; ``region`` lesion and volume) and prints the mean Dice of the Synthetic and the Diffusion models
(both folds together, as the study predicts test-only cases) on the scans as they are and
harmonized. RESULTS.md, "The DDPM over the whole volume".
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from metsynth.cohort import load_cohort
from metsynth.segmentation.inference import predict_cohort
from metsynth.volume import Volume


def harmonized_cohort(run: Path, out: Path, name: str, images: Path | None) -> Path:
    """The run's test-only cases as a prepared manifest, their images replaced by ``images/<id>.*``."""
    base = run / "prepared"
    raw = yaml.safe_load((base / "cohort.yaml").read_text())
    cases = []
    for case in raw["cases"]:
        if case["role"] != "test":
            continue
        case = dict(case)
        for key in ("image", "femur_mask"):
            if case.get(key):
                case[key] = str((base / case[key]).resolve())
        case["lesion_masks"] = [dict(a, path=str((base / a["path"]).resolve())) for a in case.get("lesion_masks", [])]
        if images is not None:
            case["image"] = str(next(images.glob(case["id"] + ".*")))
        cases.append(case)
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**raw, "cases": cases}, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    run, out = args.run, args.out
    out.mkdir(parents=True, exist_ok=True)
    cases = [c for c in load_cohort(run / "prepared" / "cohort.yaml").cases if c.role == "test"]
    if not cases:
        sys.exit(f"{run}: no test-only cases")
    # the test cases as a set: each "synthetic volume" is a real scan and its reference lesion
    setdir = out / "set"
    setdir.mkdir(exist_ok=True)
    rows = ["volume_id,donor_case,healthy_case,kept,image,label"]
    rows += [f"{c.id},{c.id},{c.id},true,{c.image},{c.reference_lesion().path}" for c in cases]
    (setdir / "index.csv").write_text("\n".join(rows) + "\n")
    metsynth = Path(sys.executable).with_name("metsynth")
    for region in ("lesion", "volume"):
        subprocess.run([str(metsynth), "-q", "harmonize", str(setdir), "-c", str(run / "diffusion" / "model.pt"),
                        "-o", str(out / region), "--region", region], check=True)
    manifests = {"as scanned": harmonized_cohort(run, out, "orig", None),
                 "lesion box harmonized": harmonized_cohort(run, out, "lesion", out / "lesion" / "images"),
                 "whole volume harmonized": harmonized_cohort(run, out, "volume", out / "volume" / "images")}
    dice = {}
    for model in ("synthetic", "harmonized"):
        folds = sorted((run / "models" / model).glob("fold*/model.pt"))
        for name, manifest in manifests.items():
            pred = out / "pred" / f"{model}_{name.split()[0]}"
            predict_cohort(folds, manifest, pred, device="cpu", progress=False, replace_other=True)
            for case in cases:
                truth = Volume.read(case.reference_lesion().path).array > 0
                mask = Volume.read(pred / f"{case.id}.nii.gz").array > 0
                dice[(model, name, case.id)] = 2 * (truth & mask).sum() / max(truth.sum() + mask.sum(), 1)
    table = pd.Series(dice).unstack(level=[0, 1])
    table.to_csv(out / "dice.csv")
    print("| model | " + " | ".join(manifests) + " |")
    print("|---|" + "---|" * len(manifests))
    for model, label in (("synthetic", "Synthetic"), ("harmonized", "Diffusion")):
        print(f"| {label} | " + " | ".join(f"{table[(model, name)].mean():.3f}" for name in manifests) + " |")


if __name__ == "__main__":
    main()
