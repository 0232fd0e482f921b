"""Classifier two-sample tests: AUC of separable and identical sets, grouped folds, cluster bootstrap, CNN."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from metsynth.realism.c2st import (
    C2STResult,
    bootstrap_auc,
    bootstrap_auc_difference,
    c2st,
    cnn_scores,
    feature_scores,
    grouped_folds,
    rank_auc,
)


def gaussian_sets(shift, n=40, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(0.0, 1.0, (n, d)), rng.normal(shift, 1.0, (n, d))])
    y = np.r_[np.zeros(n), np.ones(n)].astype(int)
    groups = np.arange(2 * n) // 2  # pairs of samples of one class share a group
    return x, y, groups


# --- c2st with gradient-boosted trees ---------------------------------------------------------------

@pytest.fixture(scope="module")
def separable():
    x, y, g = gaussian_sets(2.0)
    return c2st(x, y, g, feature_scores, n_splits=5, repeats=2, seed=0, n_boot=200)


def test_c2st_separates_shifted_gaussians(separable):
    assert isinstance(separable, C2STResult)
    assert separable.auc > 0.9
    lo, hi = separable.ci
    assert lo <= separable.auc <= hi <= 1.0
    assert lo > 0.8
    assert (separable.n_a, separable.n_b, separable.groups) == (40, 40, 40)
    assert separable.scores.shape == (80,)
    d = separable.to_dict()
    assert d["auc"] == round(separable.auc, 4) and d["n_a"] == 40 and len(d["ci95"]) == 2


def test_c2st_identical_distributions_near_chance():
    x, y, g = gaussian_sets(0.0, seed=1)
    res = c2st(x, y, g, feature_scores, n_splits=5, repeats=2, seed=0, n_boot=200)
    assert 0.25 <= res.auc <= 0.75
    assert res.ci[0] < 0.5 + 0.05  # chance is (about) inside the interval
    assert res.ci[0] <= res.auc <= res.ci[1]


def test_c2st_deterministic(separable):
    x, y, g = gaussian_sets(2.0)
    again = c2st(x, y, g, feature_scores, n_splits=5, repeats=2, seed=0, n_boot=200)
    assert again.auc == separable.auc
    assert again.ci == separable.ci
    np.testing.assert_array_equal(again.scores, separable.scores)


def test_c2st_scores_are_held_out():
    """A scorer that only memorises its training set cannot score held-out samples: AUC ~ chance."""
    x, y, g = gaussian_sets(0.0, n=20, seed=2)

    def memorise(x_train, y_train, x_test, seed):
        seen = {tuple(r): c for r, c in zip(np.round(x_train, 12), y_train)}
        return np.array([seen.get(tuple(r), 0.5) for r in np.round(x_test, 12)], dtype=float)

    res = c2st(x, y, g, memorise, n_splits=4, repeats=1, seed=0, n_boot=50)
    assert res.auc == pytest.approx(0.5)


def test_c2st_scorer_gets_train_and_test_of_each_fold():
    x, y, g = gaussian_sets(0.0, n=10, seed=3)
    calls = []

    def record(x_train, y_train, x_test, seed):
        calls.append((len(x_train), len(x_test), set(np.unique(y_train)), seed))
        return np.zeros(len(x_test))

    c2st(x, y, g, record, n_splits=5, repeats=2, seed=7, n_boot=10)
    assert len(calls) == 10
    for n_train, n_test, classes, _ in calls:
        assert n_train + n_test == 20 and classes == {0, 1}
    assert len({c[3] for c in calls}) == 10  # every fold gets its own seed


def test_c2st_needs_two_of_each():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="at least 2"):
        c2st(x, np.array([0, 0, 0, 0, 1]), np.arange(5), feature_scores)


# --- grouped folds ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_folds_never_split_a_group(seed):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(30), np.ones(30)].astype(int)
    groups = np.r_[rng.integers(0, 8, 30), rng.integers(100, 108, 30)]  # groups of one class each
    folds = grouped_folds(y, groups, 5, seed)
    assert len(folds) == 5
    test_union = np.concatenate([te for _, te in folds])
    assert sorted(test_union.tolist()) == list(range(60))  # test folds partition the samples
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert set(train.tolist()) | set(test.tolist()) == set(range(60))


def test_grouped_folds_seeded():
    """Same seed, same folds; another seed (another CV repeat) assigns the groups otherwise."""
    y = np.r_[np.zeros(30), np.ones(30)].astype(int)
    groups = np.arange(60) // 3

    def assignment(seed):
        fold = np.empty(60, int)
        for i, (_, test) in enumerate(grouped_folds(y, groups, 5, seed)):
            fold[test] = i
        return fold

    np.testing.assert_array_equal(assignment(0), assignment(0))
    a, b = assignment(0), assignment(1000)
    # not merely the same partition with the folds renumbered
    same_fold = lambda f: f[:, None] == f[None, :]  # noqa: E731
    assert not np.array_equal(same_fold(a), same_fold(b))


def test_grouped_folds_mixed_class_groups():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 50)
    groups = rng.integers(0, 12, 50)
    for train, test in grouped_folds(y, groups, 5, 0):
        assert not set(groups[train]) & set(groups[test])


def test_grouped_folds_fewer_when_few_groups():
    y = np.r_[np.zeros(12), np.ones(12)].astype(int)
    groups = np.r_[np.repeat([0, 1, 2], 4), np.repeat([10, 11, 12], 4)]
    folds = grouped_folds(y, groups, 5, 0)
    assert len(folds) == 3
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert set(y[test].tolist()) == {0, 1}


# --- bootstrap --------------------------------------------------------------------------------------

def clustered_scores(n_groups=8, size=6, seed=1):
    rng = np.random.default_rng(seed)
    per_group = np.r_[rng.normal(0, 1, n_groups), rng.normal(1, 1, n_groups)]
    y = np.repeat(np.r_[np.zeros(n_groups), np.ones(n_groups)], size).astype(int)
    return y, np.repeat(per_group, size), np.repeat(np.arange(2 * n_groups), size)


def test_bootstrap_contains_point_auc_and_groups_widen_it():
    y, s, g = clustered_scores()
    auc = roc_auc_score(y, s)
    plain = bootstrap_auc(y, s, n_boot=400, seed=0)
    grouped = bootstrap_auc(y, s, n_boot=400, seed=0, groups=g)
    for lo, hi in (plain, grouped):
        assert 0.0 <= lo <= auc <= hi <= 1.0
    assert grouped[1] - grouped[0] >= plain[1] - plain[0]
    assert grouped[1] - grouped[0] > 1.3 * (plain[1] - plain[0])  # clusters of copies: clearly wider


def test_bootstrap_deterministic_and_seeded():
    y, s, g = clustered_scores()
    assert bootstrap_auc(y, s, 200, 3, g) == bootstrap_auc(y, s, 200, 3, g)
    assert bootstrap_auc(y, s, 200, 3) != bootstrap_auc(y, s, 200, 4)


def _bootstrap_by_ranking(y, s, n_boot, seed, groups=None, s_b=None):
    """The interval from ranking every resample (rank_auc), drawn as bootstrap_auc draws; with ``s_b``, the
    interval of AUC(s_b) - AUC(s) over the same resamples."""
    rng = np.random.default_rng(seed)
    values = []

    def value(idx):
        auc = rank_auc(y[idx], s[idx])
        return auc if s_b is None else rank_auc(y[idx], s_b[idx]) - auc

    if groups is None:
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        for _ in range(n_boot):
            values.append(value(np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])))
    else:
        names, inverse = np.unique(groups, return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(len(names))]
        for _ in range(n_boot):
            idx = np.concatenate([members[g] for g in rng.integers(0, len(names), len(names))])
            if 0 < y[idx].sum() < len(idx):
                values.append(value(idx))
    return tuple(np.percentile(values, [2.5, 97.5]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_is_the_ranked_resamples_interval(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(57) < 0.45).astype(int)
    s = np.round(rng.normal(size=57) + 0.4 * y, 1)  # rounded: many ties
    g = rng.integers(0, 13, 57)  # groups mixing both classes, some holding one
    for groups in (None, g):
        ours = bootstrap_auc(y, s, 300, seed, groups)
        assert ours == pytest.approx(_bootstrap_by_ranking(y, s, 300, seed, groups), abs=1e-12)
        assert ours[0] < ours[1]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_paired_difference_is_resampled_with_the_same_draws_for_both_tests(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(80) < 0.5).astype(int)
    s = np.round(rng.normal(size=80) + 0.8 * y, 1)
    g = rng.integers(0, 20, 80)
    s_b = s + np.round(rng.normal(scale=0.3, size=80), 1) + 0.3 * y  # the same lesions, told apart a little more
    for groups in (None, g):
        paired = bootstrap_auc_difference(y, s, s_b, 300, seed, groups)
        assert paired == pytest.approx(_bootstrap_by_ranking(y, s, 300, seed, groups, s_b), abs=1e-12)
        # the shared draws cancel: narrower than either test's own interval
        own = [bootstrap_auc(y, x, 300, seed, groups) for x in (s, s_b)]
        assert paired[1] - paired[0] < min(hi - lo for lo, hi in own)
    assert bootstrap_auc_difference(y, s, s, 200, seed, g) == (0.0, 0.0)
    assert bootstrap_auc_difference(y, s, s_b, 200, seed, g)[0] > 0  # b is told apart more on every resample


def test_bootstrap_perfect_separation():
    y = np.r_[np.zeros(10), np.ones(10)].astype(int)
    s = np.r_[np.zeros(10), np.ones(10)]
    assert bootstrap_auc(y, s, 100, 0) == (1.0, 1.0)
    assert bootstrap_auc(y, s, 100, 0, groups=np.arange(20)) == (1.0, 1.0)


def test_bootstrap_degenerate_groups():
    y = np.r_[np.zeros(5), np.ones(5)].astype(int)
    s = np.r_[np.arange(5.0), np.arange(5.0) + 2.5]
    auc = roc_auc_score(y, s)
    # one group holding everything: every resample is the whole set
    lo, hi = bootstrap_auc(y, s, 50, 0, groups=np.zeros(10))
    assert lo == pytest.approx(auc) and hi == pytest.approx(auc)
    # no resample with both classes: no interval
    lo, hi = bootstrap_auc(np.ones(10, int), s, 50, 0, groups=np.arange(10))
    assert np.isnan(lo) and np.isnan(hi)


# --- CNN discriminator ------------------------------------------------------------------------------

def patches(n, bright, rng, size=8):
    p = rng.normal(0.0, 0.3, (n, size, size, size)).astype(np.float32)
    if bright:
        p[:, 2:6, 2:6, 2:6] += 1.5
    return p


@pytest.fixture(scope="module")
def patch_sets():
    rng = np.random.default_rng(0)
    x_train = np.concatenate([patches(12, False, rng), patches(12, True, rng)])
    y_train = np.r_[np.zeros(12), np.ones(12)]
    x_test = np.concatenate([patches(8, False, rng), patches(8, True, rng)])
    y_test = np.r_[np.zeros(8), np.ones(8)]
    return x_train, y_train, x_test, y_test


@pytest.fixture
def one_thread():
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_cnn_scores_rank_bright_cubes_higher(patch_sets, one_thread):
    x_train, y_train, x_test, y_test = patch_sets
    s = cnn_scores(x_train, y_train, x_test, seed=0, epochs=15)
    assert s.shape == (len(x_test),) and s.dtype == np.float64 and np.all(np.isfinite(s))
    assert roc_auc_score(y_test, s) > 0.8


def test_cnn_scores_deterministic_for_a_seed(patch_sets, one_thread):
    x_train, y_train, x_test, _ = patch_sets
    a = cnn_scores(x_train, y_train, x_test, seed=3, epochs=5)
    b = cnn_scores(x_train, y_train, x_test, seed=3, epochs=5)
    np.testing.assert_array_equal(a, b)
    c = cnn_scores(x_train, y_train, x_test, seed=4, epochs=5)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("seed", range(5))
def test_rank_auc_is_roc_auc_score_ties_included(seed):
    """The bootstrap's fast AUC gives scikit-learn's value, tied scores (coarse CNN outputs) included."""
    from metsynth.realism.c2st import rank_auc

    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 150))
    y = np.r_[0, 1, rng.integers(0, 2, n - 2)]
    scores = np.round(rng.normal(size=n) + 0.7 * y, int(rng.integers(0, 3)))  # rounding makes ties
    assert rank_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


# --- too few lesions ----------------------------------------------------------------------------------

def test_c2st_that_learned_nothing_is_marked_not_meaningful(separable):
    """7 vs 7 lesions in 2 groups each (the tiny audit cohort): 2 folds, the trees cannot split on 7
    training lesions, every held-out score is equal and the AUC is 0.5 [0.5, 0.5] by construction
    (although the sets are far apart): reported as not meaningful, without the number."""
    x, y, _ = gaussian_sets(3.0, n=7)
    groups = np.r_[[0, 0, 0, 1, 1, 1, 1], [10, 10, 10, 11, 11, 11, 11]]
    result = c2st(x, y, groups, feature_scores, n_splits=5, repeats=2, seed=0, n_boot=100)
    assert result.auc == 0.5 and result.ci == (0.5, 0.5)  # what used to be reported
    assert result.constant_fits == result.fits == 4 and result.folds == 2
    assert result.not_meaningful and "learned nothing" in result.not_meaningful
    record = result.to_dict()
    assert record["auc"] is None and record["ci95"] is None and record["folds"] == 2
    assert "learned nothing" in record["not_meaningful"] and str(result) == "not meaningful"
    # enough lesions: nothing marked, the record as before
    assert separable.not_meaningful is None and separable.constant_fits == 0
    assert set(separable.to_dict()) == {"auc", "ci95", "n_a", "n_b", "groups"}
