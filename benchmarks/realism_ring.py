"""Where the dark ring of pasted lesions comes from: the realism features of 60 kept synthetic
volumes' lesions measured on the healthy recipient before the paste and on the synthetic volume
after it, with the same label and femur mask (medians).

    python benchmarks/realism_ring.py RUN [N]

RUN is a demo run folder (``runs/demo-seed2``); compare with the real lesions' medians in
``RUN/realism/realism.md``. The ring is that of :func:`metsynth.realism.features.lesion_features`.
"""
import sys
from pathlib import Path

import pandas as pd

from metsynth.cohort import load_cohort
from metsynth.realism.features import lesion_features
from metsynth.synthesis.sets import read_set
from metsynth.volume import Volume


def main(run: Path, n: int) -> None:
    kept = read_set(run / "synthetic")
    sample = kept.sample(n=min(n, len(kept)), random_state=0)
    cases = {c.id: c for c in load_cohort(run / "prepared" / "cohort.yaml").cases}
    recipients: dict[str, tuple[Volume, object]] = {}
    rows = []
    for _, r in sample.iterrows():
        case = cases[r.healthy_case]
        if case.id not in recipients:
            recipients[case.id] = (Volume.read(case.image), Volume.read(case.femur_mask).array.astype(bool))
        healthy, femur = recipients[case.id]
        label = Volume.read(r.label).array.astype(bool)
        before = lesion_features(healthy.array, label, healthy.spacing, femur)
        after = lesion_features(Volume.read(r.image).array, label, healthy.spacing, femur)
        rows.append({f"{k} before": before[k] for k in ("ring_mean", "ring_std", "interior_mean")}
                    | {f"{k} after": after[k] for k in ("ring_mean", "ring_std", "interior_mean", "contrast")})
    print(f"{len(rows)} kept synthetic lesions of {run}, medians:")
    print(pd.DataFrame(rows).median().round(4).to_string())


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 60)
