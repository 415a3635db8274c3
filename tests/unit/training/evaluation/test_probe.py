"""The ridge probe: recovers a known linear map, scores constants and noise at or below zero, and
never lets a clip sit on both sides of a split."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.probe import cross_fitted, fit_probe, grouped_folds, probe_r2, r2_scores


def grouped_data(seed: int = 0, groups: int = 40, per_group: int = 8, features: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(groups * per_group, features)) * rng.uniform(0.1, 10.0, size=features)  # unequal scales
    w = rng.normal(size=(features, 3))
    y = x @ w + 0.05 * rng.normal(size=(len(x), 3)) + np.array([5.0, -2.0, 0.0])
    return x, y, np.repeat(np.arange(groups), per_group), w


def test_probe_recovers_a_known_linear_map_and_a_constant_scores_at_most_zero() -> None:
    x, y, g, _ = grouped_data()
    assert min(probe_r2(x, y, g)["r2"]) > 0.99
    constant = probe_r2(np.ones((len(x), 1)), y, g)["r2"]
    assert all(v <= 0 for v in constant)


def test_pure_noise_features_score_about_zero_not_above() -> None:
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(30), 10)
    noise = probe_r2(rng.normal(size=(300, 64)), rng.normal(size=(300, 2)), g)
    assert all(v < 0.02 for v in noise["r2"])  # cross-validation chose a strength that does not overfit
    assert all(a >= 10 for a in noise["alpha"])


def test_grouped_folds_put_every_group_in_exactly_one_fold() -> None:
    g = np.repeat(np.arange(23), 5)[np.random.default_rng(0).permutation(115)]
    folds = grouped_folds(g, folds=5, seed=3)
    assert len(folds) == 5 and np.array_equal(np.sum(folds, axis=0), np.ones(len(g)))
    for test in folds:
        assert not set(g[test]) & set(g[~test])


def test_a_held_out_clip_never_informs_its_own_prediction() -> None:
    """Change one group's targets arbitrarily: its out-of-fold predictions must not move."""
    x, y, g, _ = grouped_data(seed=2)
    before, _ = cross_fitted(x, y, g, seed=0)
    changed = y.copy()
    changed[g == 7] += 1000.0
    after, _ = cross_fitted(x, changed, g, seed=0)
    assert np.allclose(before[g == 7], after[g == 7])
    assert not np.allclose(before[g != 7], after[g != 7])  # the others did see it


def test_constant_features_standardise_without_dividing_by_zero() -> None:
    x, y, g, _ = grouped_data(seed=3)
    x[:, 0] = 4.0
    probe = fit_probe(x, y, g)
    assert np.isfinite(probe.predict(x)).all()
    assert np.allclose(probe.weights[0], 0.0)


def test_r2_is_none_for_a_constant_truth() -> None:
    y = np.stack([np.arange(5.0), np.full(5, 3.0)], axis=1)
    assert r2_scores(y, y) == [1.0, None]
    assert r2_scores(y, np.zeros_like(y))[0] == pytest.approx(1 - (y[:, 0] ** 2).sum() / 10.0)
