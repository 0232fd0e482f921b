"""Classifier two-sample tests (C2ST): can a classifier tell set A from set B?

A classifier is trained to separate two samples and scored on held-out data; its ROC AUC is
0.5 when the sets cannot be told apart and 1 when they always can (Lopez-Paz & Oquab, ICLR
2017). Here:

* the folds are grouped (scikit-learn's ``StratifiedGroupKFold``): lesions of one group (a
  patient, or the donor case a synthetic lesion was cut from) are never on both sides of a split,
  so the classifier cannot score by recognising a donor it saw in training;
* cross-validation is repeated ``repeats`` times with other fold assignments and each lesion's
  held-out scores are averaged, which takes out most of the luck of one split;
* the 95% interval is a cluster bootstrap over those held-out scores: whole groups are
  resampled, since the lesions cut from one donor are near-copies (it shows how much the AUC
  would move with other patients and donors of the same kind, not with other classifier
  trainings);
* two discriminators: gradient-boosted trees on :mod:`.features` (interpretable) and a small
  MONAI 3D CNN on lesion-centred patches trained from scratch (:func:`cnn_scores`);
* a test that cannot measure anything says so (:attr:`C2STResult.not_meaningful`): when a fold's
  classifier gives all its held-out lesions one score it has learned nothing (the trees need
  ``2 * MIN_SAMPLES_LEAF`` training lesions to make a single split; a tiny cohort's folds hold
  fewer), and those lesions are ranked as ties: with every fold so, the AUC is 0.5 with a
  zero-width interval by construction, which would read as "cannot be told apart". The number is
  then kept out of reports (``to_dict`` gives ``auc`` and ``ci95`` None with the reason).

Everything is seeded: the same input gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: the smallest leaf of :func:`feature_scores`' trees: a split needs twice as many training lesions
MIN_SAMPLES_LEAF = 5

__all__ = ["MIN_SAMPLES_LEAF", "C2STResult", "bootstrap_auc", "bootstrap_auc_difference", "c2st", "cnn_scores",
           "feature_scores", "grouped_folds", "rank_auc"]


@dataclass
class C2STResult:
    """One two-sample test: AUC, its bootstrap 95% interval, and the sample sizes.

    ``folds``/``folds_asked``: the folds of each cross-validation and those asked for (fewer when
    a set has fewer groups); ``fits``: classifiers trained (folds x repeats), ``constant_fits``:
    those that gave all their held-out lesions one score (learned nothing), ``min_train``: the
    smallest training fold.
    """

    auc: float
    ci: tuple[float, float]
    n_a: int
    n_b: int
    groups: int
    scores: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    folds: int = 0
    folds_asked: int = 0
    fits: int = 0
    constant_fits: int = 0
    min_train: int = 0

    @property
    def not_meaningful(self) -> str | None:
        """Why the AUC measures nothing (None: it does): some classifier learned nothing."""
        if not self.constant_fits:
            return None
        return (f"the classifier learned nothing in {self.constant_fits} of {self.fits} folds (all its held-out "
                f"scores equal; training folds of as few as {self.min_train} lesion(s)), so the AUC is pulled to "
                "0.5 by construction")

    def to_dict(self) -> dict:
        out = {"auc": round(self.auc, 4), "ci95": [round(self.ci[0], 4), round(self.ci[1], 4)],
               "n_a": self.n_a, "n_b": self.n_b, "groups": self.groups}
        if self.folds and self.folds < self.folds_asked:
            out["folds"] = self.folds
        reason = self.not_meaningful
        if reason is not None:
            out.update(auc=None, ci95=None, not_meaningful=reason)
        return out

    def __str__(self) -> str:
        if self.not_meaningful is not None:
            return "not meaningful"
        return f"{self.auc:.2f} [{self.ci[0]:.2f}, {self.ci[1]:.2f}]"


def grouped_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, grouped folds (fewer when there are fewer groups of a class than ``n_splits``)."""
    from sklearn.model_selection import StratifiedGroupKFold

    per_class = min(len(np.unique(groups[y == c])) for c in (0, 1))
    k = max(2, min(n_splits, per_class))
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def rank_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of ``scores`` for ``y == 1`` as the Mann-Whitney statistic (tied scores count one
    half): the value of scikit-learn's ``roc_auc_score`` without its input validation, which
    cost most of the bootstrap's time (1000 resamples per test)."""
    from scipy.stats import rankdata

    positive = np.asarray(y) == 1
    n1 = int(positive.sum())
    n0 = len(positive) - n1
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def bootstrap_auc(y: np.ndarray, scores: np.ndarray, n_boot: int = 1000, seed: int = 0,
                  groups: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile 95% interval of the AUC over bootstrap resamples.

    With ``groups``, whole groups are resampled (a cluster bootstrap): lesions of one donor are
    near-copies of each other, so resampling them one by one would pretend to far more
    independent samples than there are. Without, the samples are resampled within each class.

    A resample is a count per sample (how often it was drawn), and its AUC the Mann-Whitney
    statistic with those counts as weights, ``c_pos @ W @ c_neg / (n_pos n_neg)``, ``W`` holding 1
    for each (positive, negative) pair the positive wins and 1/2 for a tie: all resamples in one
    product: the same interval as ranking each resample (:func:`rank_auc`; a test checks it, ties
    included) from the same draws, in 0.07-0.10x the time (``benchmarks/bench_prefetch.py --auc``:
    1000 resamples of 120 samples in 40 groups, 21-29 ms against 278-311 ms; the demo's realism
    stage makes 24 such intervals).
    """
    y = np.asarray(y).astype(int)
    values = _resampled_aucs(y, scores, _resample_counts(y, n_boot, seed, groups))
    return _interval(values)


def bootstrap_auc_difference(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, n_boot: int = 1000,
                             seed: int = 0, groups: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile 95% interval of ``AUC(scores_b) - AUC(scores_a)``, both tests on the same samples.

    Two two-sample tests that share their samples (the same real lesions, and generated lesions that
    are one set's volumes before and after a change, in the same order) are resampled together:
    each resample draws the same groups for both, so what the two AUCs owe to which patients and
    donors were drawn cancels in their difference, and the interval is of the change alone (on the
    demo about half as wide as either test's own interval).
    """
    y = np.asarray(y).astype(int)
    counts = _resample_counts(y, n_boot, seed, groups)
    return _interval(_resampled_aucs(y, scores_b, counts) - _resampled_aucs(y, scores_a, counts))


def _resample_counts(y: np.ndarray, n_boot: int, seed: int, groups: np.ndarray | None) -> np.ndarray:
    """``(n_boot, len(y))``: how often each sample is drawn in each resample (:func:`bootstrap_auc`)."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_boot, len(y)))
    if groups is None:
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        for b in range(n_boot):
            idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
            counts[b] = np.bincount(idx, minlength=len(y))
    else:
        names, inverse = np.unique(np.asarray(groups), return_inverse=True)
        for b in range(n_boot):
            counts[b] = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))[inverse]
    return counts


def _resampled_aucs(y: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The AUC of each resample (NaN where a cluster resample drew one class only: it has no AUC)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = y == 1
    s1, s0 = scores[positive], scores[~positive]
    wins = (s1[:, None] > s0[None, :]) + 0.5 * (s1[:, None] == s0[None, :])
    c1, c0 = counts[:, positive], counts[:, ~positive]
    n1, n0 = c1.sum(axis=1), c0.sum(axis=1)
    values = np.full(len(counts), np.nan)
    both = (n1 > 0) & (n0 > 0)
    values[both] = ((c1[both] @ wins) * c0[both]).sum(axis=1) / (n1[both] * n0[both])
    return values


def _interval(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def c2st(x: np.ndarray, y: np.ndarray, groups: np.ndarray, scorer: Scorer, n_splits: int = 5, repeats: int = 3,
         seed: int = 0, n_boot: int = 1000) -> C2STResult:
    """Cross-validated AUC of ``scorer`` telling ``y == 1`` from ``y == 0``.

    ``scorer(x_train, y_train, x_test, seed)`` returns a score per test sample (higher: more
    likely class 1). ``x`` is anything indexable by an index array (features or patches).
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    groups = np.asarray(groups)
    if min((y == 0).sum(), (y == 1).sum()) < 2:
        raise ValueError(f"c2st: need at least 2 samples of each set, got {(y == 0).sum()} and {(y == 1).sum()}")
    few = [c for c in (0, 1) if len(np.unique(groups[y == c])) < 2]
    if few:
        raise ValueError(f"c2st: set {few[0]} comes from a single group (patient or donor); the grouped "
                         "cross-validation needs at least 2 groups per set to hold one out")
    total = np.zeros(len(y))
    folds = fits = constant = 0
    min_train = len(y)
    for r in range(repeats):
        # ranks, not raw scores: folds' classifiers are on different scales
        splits = grouped_folds(y, groups, n_splits, seed + 1000 * r)
        folds = len(splits)
        for f, (train, test) in enumerate(splits):
            s = scorer(x[train], y[train], x[test], seed + 1000 * r + f)
            total[test] += _fractional_ranks(s)
            fits += 1
            constant += int(len(s) > 1 and bool(np.all(np.asarray(s) == np.asarray(s)[0])))
            min_train = min(min_train, len(train))
    scores = total / repeats
    auc = float(roc_auc_score(y, scores))
    return C2STResult(auc, bootstrap_auc(y, scores, n_boot, seed, groups), int((y == 0).sum()), int((y == 1).sum()),
                      len(np.unique(groups)), scores, folds=folds, folds_asked=n_splits, fits=fits,
                      constant_fits=constant, min_train=min_train)


def _fractional_ranks(s: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return (rankdata(s) - 0.5) / max(len(s), 1) if len(s) else s


def feature_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
    """Gradient-boosted trees (scikit-learn, NaN-aware) on lesion features.

    On one OpenMP thread: with a hundred samples, threads cost more than they give, and they
    spin-wait badly when another process (a training) holds the other cores.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_depth=3,
                                           min_samples_leaf=MIN_SAMPLES_LEAF, l2_regularization=1.0,
                                           class_weight="balanced", random_state=seed)
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(x_train, y_train)
        return model.predict_proba(x_test)[:, 1]


def cnn_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int, epochs: int = 30,
               batch_size: int = 16, channels: tuple[int, ...] = (8, 16, 32)) -> np.ndarray:
    """A small MONAI ``Classifier`` (3D CNN) trained from scratch on patches ``(n, D, H, W)``.

    Augmented with random flips and axis permutations of the cube (a lesion has no preferred
    orientation); Adam, binary cross-entropy, classes balanced by weighting. Deterministic for a
    seed at a fixed torch thread count.
    """
    import torch
    from monai.networks.nets import Classifier

    gen = torch.Generator().manual_seed(int(seed) % 2**63)
    torch.manual_seed(int(seed) % 2**63)
    size = x_train.shape[1:]
    strides = tuple(2 for _ in channels)
    net = Classifier(in_shape=(1, *size), classes=1, channels=channels, strides=strides, num_res_units=0,
                     last_act=None)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    xt = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)).unsqueeze(1)
    yt = torch.from_numpy(np.asarray(y_train, dtype=np.float32))
    pos = float(yt.mean())
    weight = torch.where(yt > 0.5, 0.5 / max(pos, 1e-6), 0.5 / max(1 - pos, 1e-6))
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    net.train()
    n = len(xt)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            xb = _augment(xt[idx], gen)
            loss = (loss_fn(net(xb).squeeze(1), yt[idx]) * weight[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        xe = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)).unsqueeze(1)
        out = net(xe).squeeze(1)
        # test-time average over the flips
        for dims in ((2,), (3,), (4,)):
            out = out + net(torch.flip(xe, dims)).squeeze(1)
    return (out / 4).numpy().astype(np.float64)


def _augment(x, gen):
    import torch

    for dim in (2, 3, 4):
        if torch.rand(1, generator=gen).item() < 0.5:
            x = torch.flip(x, (dim,))
    perm = torch.randperm(3, generator=gen).tolist()
    return x.permute(0, 1, *(p + 2 for p in perm)).contiguous()
