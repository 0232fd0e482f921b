"""Does a DDPM that has seen lesions harmonize better? The run's DDPM against one trained on more roles.

    python benchmarks/realism_ddpm_roles.py RUN [--roles healthy,metastatic] [--steps N] [--lesion-centres MM]
                                                [--out DIR]

The demo's DDPM learns healthy femurs only (the paper's choice), so at a low start timestep it can
only pull a pasted lesion towards healthy bone. This trains a second DDPM with the run's own
settings (``RUN/diffusion/diffusion.yaml``) on the cases of ``--roles`` of the run's prepared
cohort, harmonizes the run's realism sample with it from start timesteps 2 and 5 (two antithetic
draws, as the demo), and measures the synthetic set, the run's own harmonized set and the two new
sets with the feature discriminator against the run's real lesions: each generated set's AUC, its
change against the synthetic set on the same lesions with the paired 95% interval, and the medians
of the features the DDPM moves. ``--lesion-centres MM`` draws the patches of the metastatic
cases around their lesions (centres within MM of a lesion mask) instead of anywhere in the femur.
Writes nothing into RUN.

Not a product setting: a DDPM trained on the metastatic cases has seen the lesions of every fold,
test folds included, so a study would need one DDPM per fold to keep its cross-validation
leak-free (issue 13; benchmarks/RESULTS.md, "a DDPM that has seen lesions").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

FEATURES_SHOWN = ("interior_mean", "contrast", "grain_interior", "grain_ring")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--roles", default="healthy,metastatic", help="cohort roles the second DDPM trains on")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the run's DDPM's)")
    parser.add_argument("--lesion-centres", type=float, default=None, metavar="MM",
                        help="metastatic cases: patch centres within MM of a lesion (default: anywhere in the femur)")
    parser.add_argument("--out", default=None, help="work folder (default: benchmarks/.cache/realism_ddpm_roles/<run>)")
    args = parser.parse_args()

    import numpy as np
    import yaml

    import metsynth.diffusion.train as train_module
    from metsynth.cohort import Cohort, load_cohort
    from metsynth.diffusion.data import centre_candidates, load_training_cases
    from metsynth.diffusion.harmonize import harmonize_config_for, harmonize_set
    from metsynth.diffusion.presets import DiffusionConfig
    from metsynth.experiment import ExperimentConfig
    from metsynth.realism.measure import measure_realism, realism_sample_size, sample_volume_ids
    from metsynth.volume import Volume

    run = Path(args.run)
    roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
    manifest = run / "prepared" / "cohort.yaml"
    config = DiffusionConfig.model_validate(yaml.safe_load((run / "diffusion" / "diffusion.yaml").read_text()))
    if args.steps:
        config = config.model_copy(update={"train": config.train.model_copy(update={"max_steps": args.steps})})
    work = Path(args.out or Path(__file__).parent / ".cache" / "realism_ddpm_roles" / run.resolve().name)
    near = "" if args.lesion_centres is None else f"_lesions{args.lesion_centres:g}mm"
    ddpm = work / f"ddpm_{'_'.join(roles)}_{config.train.max_steps}{near}"

    def cases(cohort, margin):
        """Every case of the asked roles (the training reads the healthy ones only); centres near lesions if asked."""
        out = load_training_cases(cohort, margin, roles=roles)
        if args.lesion_centres is not None:
            by_id = {case.id: case for case in (cohort if isinstance(cohort, Cohort) else load_cohort(cohort)).cases}
            for case in out:
                masks = [m.path for m in by_id[case.id].lesion_masks] if by_id[case.id].role == "metastatic" else []
                if masks:
                    lesion = np.any([Volume.read(m).array > 0 for m in masks], axis=0)
                    spacing = Volume.read(masks[0]).spacing
                    case.centres = centre_candidates(lesion, spacing, args.lesion_centres)
        return out

    train_module.load_training_cases = cases
    start = time.perf_counter()
    if not (ddpm / "model.pt").exists():
        train_module.train_diffusion(manifest, ddpm, config, accelerator="cpu", progress=False)
    print(f"DDPM on {'+'.join(roles)}{near}, {config.train.max_steps} steps: {time.perf_counter() - start:.0f} s")

    realism = ExperimentConfig.from_yaml(run / "config.yaml").realism
    realism = realism.model_copy(update={"cnn": False, "null_splits": 3})
    ids = sample_volume_ids(run / "synthetic", realism_sample_size(manifest, realism), realism.seed)
    sets = {"synthetic": run / "synthetic", "run's harmonized": run / "harmonized"}
    for t in (2, 5):
        harmonize = harmonize_config_for(ddpm / "model.pt", {"start_timestep": t, "draws": 2})
        out = ddpm / f"t{t}d2"
        harmonize_set(run / "synthetic", out, ddpm / "model.pt", harmonize, volume_ids=ids, workers=1, threads=2,
                      progress=False, device="cpu")
        sets[f"{'+'.join(roles)}, t = {t}"] = out
    report = measure_realism(manifest, sets, ddpm / "realism", realism, progress=False)
    print(f"{run}: {report['n_real']} real lesions; null real vs real {report['null_real']['features']['auc']:.2f}")
    header = ["set", "features AUC", "minus synthetic [paired 95%]", *FEATURES_SHOWN]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    real = None
    for name, entry in report["sets"].items():
        per = {row["feature"]: row for row in entry["features_table"]}
        real = real or {k: per[k]["real"] for k in FEATURES_SHOWN}
        paired = entry.get("paired") or {}
        change = (f"{paired['delta_auc']:+.3f} [{paired['ci95'][0]:+.2f}, {paired['ci95'][1]:+.2f}]"
                  if "delta_auc" in paired else "-")
        print(f"| {name} | {entry['features']['auc']:.3f} | {change} | "
              + " | ".join(f"{per[k]['generated']:.4f}" for k in FEATURES_SHOWN) + " |")
    print("| real | | | " + " | ".join(f"{real[k]:.4f}" for k in FEATURES_SHOWN) + " |")


if __name__ == "__main__":
    main()
