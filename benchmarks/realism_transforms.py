"""Which transform of the synthesis gives its lesions away? One transform off at a time, lesion for lesion.

For each run, the run's own synthesis settings (``RUN/synthetic/config.yaml``: its seed, bank and
healthy femurs) are synthesized again with one transform switched off, into ``OUT/seedN/VARIANT``:

* ``nonoise``: no added Gaussian noise (``noise_std: [0, 0]``);
* ``noscale``: no scaling (``scale: [1, 1]``, ``anisotropy: 0``);
* ``norot``: no rotation;
* ``noellipse``: no ellipsoid crop;
* ``ident``: all of them off (the donor's lesion as it is, pasted with the run's edge and placement).

The same seed gives the same volume ids (same healthy femur, donor lesion and repeat), so
``metsynth realism --cohort RUN/prepared/cohort.yaml --set synthetic=RUN/synthetic --set VARIANT=...``
compares each variant with the run's synthetic set lesion for lesion: the features AUC change with
its paired 95% interval (features test only). Prints the change per run and variant, and writes each
run's realism.md under ``OUT/seedN/realism``.

    python benchmarks/realism_transforms.py OUT RUN [RUN ...]

About 1 min 30 s a run on 2 cores (5 s per synthesis of the demo's 200 volumes, the rest the realism
measure). Variants already synthesized are kept (a rerun resumes).
"""
import json
import subprocess
import sys
from pathlib import Path

import yaml

from metsynth.realism.paired import paired_cell

VARIANTS = {
    "nonoise": {"noise_std": [0, 0]},
    "noscale": {"scale": [1, 1], "anisotropy": 0},
    "norot": {"rotation_deg": [0, 0]},
    "noellipse": {"ellipsoid_probability": 0},
}
VARIANTS["ident"] = {k: v for changes in VARIANTS.values() for k, v in changes.items()}


def metsynth(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "metsynth"), "--quiet", *args], check=True,
                   stdout=subprocess.DEVNULL)


def main(out: Path, runs: list[Path]) -> None:
    table = {}
    for run in runs:
        settings = yaml.safe_load((run / "synthetic" / "config.yaml").read_text())["synthesis"]
        folder = out / run.name
        folder.mkdir(parents=True, exist_ok=True)
        sets = ["--set", f"synthetic={run / 'synthetic'}"]
        for name, changes in VARIANTS.items():
            config = folder / f"{name}.yaml"
            config.write_text(yaml.safe_dump({"synthesis": {**settings,
                                                            "transform": {**settings["transform"], **changes}}}))
            if not (folder / name / "index.csv").is_file():
                metsynth("synthesize", "--cohort", str(run / "prepared" / "cohort.yaml"), "--bank", str(run / "bank"),
                         "-o", str(folder / name), "--config", str(config), "-j", "2")
            sets += ["--set", f"{name}={folder / name}"]
        # the study's realism settings (its real sample: realism.roles, max_real_cases), the feature test only
        metsynth("realism", "--cohort", str(run / "prepared" / "cohort.yaml"), *sets, "-o", str(folder / "realism"),
                 "--config", str(run / "config.yaml"), "--no-cnn", "--force")
        report = json.loads((folder / "realism" / "realism.json").read_text())
        table[run.name] = {name: report["sets"][name].get("paired", {}) for name in VARIANTS}
        table[run.name]["synthetic"] = report["sets"]["synthetic"]["features"]["auc"]
    print("| run | synthetic | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    for name, row in table.items():
        cells = [paired_cell(row[v]) if row[v].get("delta_auc") is not None else "-" for v in VARIANTS]
        print(f"| {name} | {row['synthetic']:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(r) for r in sys.argv[2:]])
