"""Does the realism test learn the recipient femurs? A check of its folds.

The features test groups its folds by patient (real lesions) and donor case (generated ones): no
donor's lesion is on both sides of a split. A generated lesion also sits in a healthy recipient
femur (10 in the demo), and recipients are shared across folds: a classifier could learn their
bone (``grain_far``, ``ring_*``) and recognise them in the held-out fold. This script reruns the
features test of a run's synthetic and harmonized sets (``RUN/realism/features.csv``, the lesions
the realism stage measured) with the generated lesions grouped

* ``by_donor``: as the measure does (its AUC, to the last digit at seed 0);
* ``by_recipient``: by recipient femur only (donors shared across folds);
* ``block``: by both: donors and recipients each in 3 groups, 9 blocks; a block's lesions are scored
  by a classifier that saw neither their donors nor their recipients (nor the donors' own real
  lesions); real patients spread over the blocks;
* ``block_ctrl``: the same blocks and training sizes, but only the donors held out (training
  lesions drawn at random among the other donors' lesions, as many as ``block`` trains on).

``block_ctrl - block`` (``sharing_adds``) is what sharing the recipients adds, at equal training size;
``by_recipient`` against ``by_donor`` is what sharing the donors would add. ``block`` and
``block_ctrl`` are the mean of 5 draws of the blocks.

    python benchmarks/realism_recipients.py RUN [RUN ...]
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from metsynth.realism.c2st import _fractional_ranks, c2st, feature_scores
from metsynth.realism.features import FEATURES

NAMES = list(FEATURES)


def load(run: Path, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The real lesions and the set's, with each generated lesion's donor and recipient."""
    f = pd.read_csv(run / "realism" / "features.csv")
    real, gen = f[f.source == "real"].copy(), f[f.source == name].copy()
    index = pd.read_csv(run / name / "index.csv").set_index("volume_id")
    gen["donor"] = gen.group.values
    gen["recipient"] = index.loc[gen.key.str.split("/", n=1).str[1], "healthy_case"].values
    return real, gen


def _xy(real: pd.DataFrame, gen: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    x = np.vstack([real[NAMES].values, gen[NAMES].values]).astype(float)
    return x, np.r_[np.zeros(len(real)), np.ones(len(gen))].astype(int)


def grouped(real: pd.DataFrame, gen: pd.DataFrame, by: str, seed: int = 0) -> float:
    """The measure's test (5 folds, 3 repeats) with the generated lesions grouped ``by`` donor or recipient."""
    x, y = _xy(real, gen)
    groups = np.r_[real.group.values, gen[by].astype(str).values]  # a donor's real lesions share its group
    return c2st(x, y, groups, feature_scores, 5, 3, seed, 100).auc


def block(real: pd.DataFrame, gen: pd.DataFrame, seed: int, control: bool, kd: int = 3, kr: int = 3) -> float:
    rng = np.random.default_rng(seed)
    x, y = _xy(real, gen)
    donors, recipients, patients = (np.unique(v) for v in (gen.donor, gen.recipient, real.group))
    dfold = dict(zip(rng.permutation(donors), np.arange(len(donors)) % kd))
    rfold = dict(zip(rng.permutation(recipients), np.arange(len(recipients)) % kr))
    pfold = dict(zip(rng.permutation(patients), np.arange(len(patients)) % (kd * kr)))
    di, ri = gen.donor.map(dfold).values, gen.recipient.map(rfold).values
    blocks = real.group.map(pfold).values.copy()
    is_donor = real.group.isin(donors).values
    own_fold = real.group.map(dfold).values
    column = {p: int(rng.integers(kr)) for p in donors}
    for k in np.flatnonzero(is_donor):  # a donor's real lesions are held out with its generated ones
        blocks[k] = int(own_fold[k]) * kr + column[real.group.values[k]]
    total, nr = np.zeros(len(y)), len(real)
    for i in range(kd):
        for j in range(kr):
            b = i * kr + j
            test_r = np.flatnonzero(blocks == b)
            train_r = np.flatnonzero((blocks != b) & ~(is_donor & (own_fold == i)))
            test_g = np.flatnonzero((di == i) & (ri == j))
            train_g = np.flatnonzero((di != i) & (ri != j))
            if control:
                train_g = rng.choice(np.flatnonzero(di != i), len(train_g), replace=False)
            test, train = np.r_[test_r, nr + test_g], np.r_[train_r, nr + train_g]
            if len(test):
                total[test] += _fractional_ranks(feature_scores(x[train], y[train], x[test], seed + b))
    return float(roc_auc_score(y, total))


def main(runs: list[str]) -> None:
    rows = []
    for run in map(Path, runs):
        for name in ("synthetic", "harmonized"):
            if not (run / name / "index.csv").is_file():
                continue
            real, gen = load(run, name)
            rows.append({"run": run.name, "set": name, "lesions": len(gen), "donors": gen.donor.nunique(),
                         "recipients": gen.recipient.nunique(), "by_donor": grouped(real, gen, "donor"),
                         "by_recipient": grouped(real, gen, "recipient"),
                         "block": np.mean([block(real, gen, s, False) for s in range(5)]),
                         "block_ctrl": np.mean([block(real, gen, s, True) for s in range(5)])})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["sharing_adds"] = table.block_ctrl - table.block  # what recipients on both sides of a split add
    print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1:])
