"""``dkd.metrics.bootstrap``: FID's bootstrap interval against hand computations and an independent
float64 loop (its own covariance, an eigenvalue trace for the square root, its own linear percentile,
the shift by the resamples' mean)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dkd.metrics.bootstrap import fid_interval, percentile_interval, resampled_fids


def _root_trace(sigma1, sigma2):
    """``Tr (sigma1 sigma2)^(1/2)`` = the sum of the square roots of the eigenvalues of the symmetric
    ``R sigma1 R``, ``R`` the symmetric square root of ``sigma2`` (the same spectrum as ``sigma1 sigma2``)."""
    values, vectors = np.linalg.eigh(sigma2)
    root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(root @ sigma1 @ root), 0, None)).sum())


def _fid(features, mu, sigma):
    """FID of ``features`` against ``(mu, sigma)``: the mean and the ddof = 1 covariance written out."""
    n = features.shape[0]
    mean = features.sum(axis=0) / n
    centred = features - mean
    cov = centred.T @ centred / (n - 1)
    return float(((mean - mu) ** 2).sum() + np.trace(cov) + np.trace(sigma) - 2 * _root_trace(cov, sigma))


def _linear_percentile(values, q):
    """numpy's default ("linear") percentile by hand: position ``q (S - 1)`` in the sorted values."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def _gaussian(n, d, *, seed, shift=0.0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def _reference(d, *, seed=100, n=4000):
    ref = _gaussian(n, d, seed=seed)
    return ref.mean(axis=0), np.cov(ref, rowvar=False)


def test_two_points_give_the_hand_computed_fids_of_the_resamples():
    """Features {a, b} = {0, 2} (1-d, n = 2) against the reference m = 0, s^2 = 1. A resample is
    {a, a}, {a, b} or {b, b} with probabilities 1/4, 1/2, 1/4; a 1-d FID is (mu - m)^2 + (sd - s)^2
    with the ddof = 1 sd:
      {0, 0}: mu 0, variance 0                -> 0 + (0 - 1)^2        = 1
      {0, 2}: mu 1, variance (0 - 2)^2 / 2 = 2 -> 1 + (sqrt 2 - 1)^2  = 4 - 2 sqrt 2 (about 1.17)
      {2, 2}: mu 2, variance 0                -> 4 + (0 - 1)^2        = 5
    Sorted, the 2000 resample FIDs are about 25% ones, then 50% 4 - 2 sqrt 2, then 25% fives. Level
    0.8 asks for the 10th and 90th percentiles, well inside the first and last blocks (a block's
    share is 0.25 +- 0.01 for 2000 draws): both neighbours the linear interpolation uses are equal,
    so the ends are exactly 1 and 5. Level 0.2 asks for the 40th and 60th, both inside the middle
    block: both ends are 4 - 2 sqrt 2. The interval shifts both by the resamples' mean (counted from
    the draws: 1, 4 - 2 sqrt 2 or 5 by the number of b's) minus the full set's FID, 4 - 2 sqrt 2."""
    features = np.array([[0.0], [2.0]])
    mu, sigma = np.array([0.0]), np.array([[1.0]])
    middle = 4 - 2 * math.sqrt(2)
    draws = np.random.default_rng(1).integers(0, 2, size=(2000, 2)).sum(axis=1)  # the module's draws: b's each
    assert 0.2 < np.mean(draws == 0) < 0.3 and 0.2 < np.mean(draws == 2) < 0.3  # the blocks claimed above
    fids = resampled_fids(features, mu, sigma, samples=2000, seed=1)
    assert fids.tolist() == pytest.approx(np.choose(draws, [1.0, middle, 5.0]).tolist(), rel=1e-12)
    shift = np.mean(np.choose(draws, [1.0, middle, 5.0])) - middle
    outer = fid_interval(features, mu, sigma, samples=2000, level=0.8, seed=1)
    inner = fid_interval(features, mu, sigma, samples=2000, level=0.2, seed=1)
    assert outer == pytest.approx((1.0 - shift, 5.0 - shift), abs=1e-12)
    assert inner == pytest.approx((middle - shift, middle - shift), rel=1e-12)


def test_interval_equals_an_independent_float64_loop():
    features = _gaussian(60, 3, seed=5, shift=0.3)
    mu, sigma = _reference(3)
    samples, level, seed = 300, 0.9, 7
    draws = np.random.default_rng(seed).integers(0, 60, size=(samples, 60))  # as documented in the module
    fids = [_fid(features[rows], mu, sigma) for rows in draws]
    shift = sum(fids) / len(fids) - _fid(features, mu, sigma)
    expected = (_linear_percentile(fids, 0.05) - shift, _linear_percentile(fids, 0.95) - shift)
    assert fid_interval(features, mu, sigma, samples=samples, level=level, seed=seed) == pytest.approx(
        expected, rel=1e-9
    )
    assert expected[1] - expected[0] > 0.05 and shift > 0  # a real spread, and the resamples' upward bias
    assert percentile_interval(fids, level) == pytest.approx([e + shift for e in expected], rel=1e-12)


def test_the_seed_fixes_the_interval():
    features = _gaussian(80, 2, seed=2, shift=0.5)
    mu, sigma = _reference(2)
    first = fid_interval(features, mu, sigma, samples=200, seed=3)
    assert fid_interval(features, mu, sigma, samples=200, seed=3) == first
    other = fid_interval(features, mu, sigma, samples=200, seed=4)
    assert other != first and other == pytest.approx(first, rel=0.3)


def test_interval_contains_the_full_sample_fid_of_gaussian_features():
    features = _gaussian(400, 4, seed=11, shift=0.5)
    mu, sigma = _reference(4)
    low, high = fid_interval(features, mu, sigma, samples=500, level=0.95, seed=0)
    full = _fid(features, mu, sigma)
    assert low < full < high
    assert full == pytest.approx(1.0, abs=0.3)  # ||shift||^2 = 4 x 0.25, the covariances agree


def test_interval_narrows_as_the_generated_set_grows():
    """The FID's spread falls as 1 / sqrt(N) (its mean term's, here): 16 times the images, about a
    quarter of the width."""
    mu, sigma = _reference(4)
    widths = {}
    for n in (100, 1600):
        low, high = fid_interval(_gaussian(n, 4, seed=n, shift=0.5), mu, sigma, samples=300, seed=0)
        widths[n] = high - low
    assert widths[100] / widths[1600] == pytest.approx(4, rel=0.5)


@pytest.mark.parametrize(
    ("features", "kwargs", "message"),
    [
        (np.zeros((4, 2)), {"samples": 0}, "samples"),
        (np.zeros((4, 2)), {"samples": 2.0}, "samples"),
        (np.zeros((4, 2)), {"samples": True}, "samples"),
        (np.zeros((4, 2)), {"samples": 5, "level": 0.0}, "level"),
        (np.zeros((4, 2)), {"samples": 5, "level": 1.0}, "level"),
        (np.zeros((4, 2)), {"samples": 5, "level": "0.9"}, "level"),
        (np.zeros((4, 2)), {"samples": 5, "seed": -1}, "seed"),
        (np.zeros(4), {"samples": 5}, "features"),
        (np.zeros((1, 2)), {"samples": 5}, "features"),
        (np.zeros((2, 2, 2)), {"samples": 5}, "features"),
    ],
)
def test_bad_arguments_raise_one_clear_error(features, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fid_interval(features, np.zeros(2), np.eye(2), **kwargs)


def test_percentile_interval_refuses_bad_input():
    with pytest.raises(ValueError, match="values"):
        percentile_interval([], 0.9)
    with pytest.raises(ValueError, match="level"):
        percentile_interval([1.0, 2.0], 1.5)
    assert percentile_interval([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == (2.0, 4.0)  # positions 1 and 3 of 0..4
