"""Where the dark ring of pasted lesions comes from.

1. The realism features of N kept synthetic volumes' lesions measured on the healthy recipient
   before the paste and on the synthetic volume after it, with the same label and femur mask
   (medians): what the paste itself changes.
2. Where the lesions sit: the share of each lesion's ring (the voxels within ``ring_mm`` = 3 mm
   outside its label, before the realism features cut it to the femur) that lies outside the
   femur mask, for the real lesions (the study's real sample: its metastatic and test cases'
   reference masks, realism.max_real_cases applied) and for the
   same synthetic lesions: 0 for a lesion deep in the bone, more for one against the cortex or
   through it.

    python benchmarks/realism_ring.py RUN [N]

RUN is a demo run folder (``runs/demo-seed2``); compare with the real lesions' medians in
``RUN/realism/realism.md``. The ring is that of :func:`metsynth.realism.features.lesion_features`.
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from metsynth.cohort import load_case, load_cohort
from metsynth.experiment import ExperimentConfig
from metsynth.realism.features import lesion_components, lesion_features
from metsynth.realism.measure import real_cases
from metsynth.synthesis.sets import read_set
from metsynth.volume import Volume

RING_MM = 3.0


def outside_share(label: np.ndarray, femur: np.ndarray, spacing) -> float:
    """Share of the ring (within RING_MM outside ``label``) that is not femur."""
    ring = ndimage.distance_transform_edt(~label, sampling=spacing) <= RING_MM
    ring &= ~label
    return float(np.count_nonzero(ring & ~femur) / max(int(ring.sum()), 1))


def contact_table(run: Path, synthetic: list[tuple[np.ndarray, np.ndarray, tuple]]) -> pd.DataFrame:
    real = []
    config = ExperimentConfig.from_yaml(run / "config.yaml").realism  # the study's real sample
    for case in real_cases(load_cohort(run / "prepared" / "cohort.yaml"), config):
        loaded = load_case(case)
        femur = loaded.femur.array.astype(bool)  # type: ignore[union-attr]
        for comp in lesion_components(loaded.lesion.array, 8):  # type: ignore[union-attr]
            real.append(outside_share(comp, femur, loaded.image.spacing))
    rows = {}
    for name, shares in (("real", real), ("synthetic", [outside_share(*s) for s in synthetic])):
        a = np.asarray(shares)
        rows[name] = {"lesions": len(a), "median": np.median(a), "mean": a.mean(), "share > 0.05": np.mean(a > 0.05)}
    return pd.DataFrame(rows).T


def main(run: Path, n: int) -> None:
    kept = read_set(run / "synthetic")
    sample = kept.sample(n=min(n, len(kept)), random_state=0)
    cases = {c.id: c for c in load_cohort(run / "prepared" / "cohort.yaml").cases}
    recipients: dict[str, tuple[Volume, object]] = {}
    rows, placed = [], []
    for _, r in sample.iterrows():
        case = cases[r.healthy_case]
        if case.id not in recipients:
            recipients[case.id] = (Volume.read(case.image), Volume.read(case.femur_mask).array.astype(bool))
        healthy, femur = recipients[case.id]
        label = Volume.read(r.label).array.astype(bool)
        before = lesion_features(healthy.array, label, healthy.spacing, femur)
        after = lesion_features(Volume.read(r.image).array, label, healthy.spacing, femur)
        comps = lesion_components(label, 8)
        if comps:
            placed.append((comps[0], femur, healthy.spacing))
        rows.append({f"{k} before": before[k] for k in ("ring_mean", "ring_std", "interior_mean")}
                    | {f"{k} after": after[k] for k in ("ring_mean", "ring_std", "interior_mean", "contrast")})
    print(f"{len(rows)} kept synthetic lesions of {run}, medians:")
    print(pd.DataFrame(rows).median().round(4).to_string())
    print(f"\nshare of each lesion's {RING_MM:g} mm ring outside the femur mask:")
    print(contact_table(run, placed).round(3).to_string())


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 60)
