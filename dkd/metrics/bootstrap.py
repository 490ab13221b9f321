"""A bootstrap interval of FID over the generated images.

FID compares the mean and covariance of the generated images' features with the reference set's.
With few generated images those statistics, and so the FID, vary with which images happened to be
generated. :func:`fid_interval` estimates that variation by a bootstrap:

1. the reference statistics ``mu_ref``, ``sigma_ref`` are held fixed (the reference set's own
   sampling is not resampled);
2. the ``N`` rows of the generated ``features`` are resampled with replacement ``samples`` times,
   all indices drawn at once as ``numpy.random.default_rng(seed).integers(0, N, size=(samples, N))``
   (row ``b`` of that array indexes resample ``b``; a test reproduces the draws from this line);
3. each resample's FID is :func:`dkd.metrics.fid.frechet_distance` of its
   :func:`dkd.metrics.fid.feature_stats` against the reference (the same code as the FID itself);
4. the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of those FIDs, by
   ``numpy.percentile`` with its default ``method="linear"`` (:func:`percentile_interval`), both
   shifted down by the resamples' mean FID minus the FID of all the images.

The interval is for the expected FID of ``N`` generated images, the quantity an FID of ``N`` images
estimates (FID is biased in ``N``: fewer images, a larger FID). The shift removes the resampling's
extra bias: a resample holds only about 63% distinct images, so the resamples' FIDs lie above the
full set's (``benchmarks/fid_bootstrap_bias.py`` on 500 toy images: FID 27.75, the resamples' mean
32.98, standard deviation 4.53; the plain percentile interval [25.72, 43.00] lies nearly all above the
estimate, the shifted one [20.49, 37.77] around it). A 95% interval needs a few hundred resamples or
more. It covers the sampling of
the generated images only: not the variance over training seeds (that is the spread over seeds) and
not the reference set's.

Cost: each resample takes a covariance (``N x D x D``) and a ``D x D`` ``scipy.linalg.sqrtm``, and
the index array holds ``samples x N`` integers. For the toy (64-d features, 500 images) 1000
resamples take about a second; for 2048-d Inception features each resample costs seconds (the
2048 x 2048 ``sqrtm`` dominates: about 7 s on two CPU cores), so a paper-scale run should use few
samples (tens).
"""

from __future__ import annotations

import numbers

import numpy as np

from .fid import feature_stats, frechet_distance


def percentile_interval(values, level: float) -> tuple[float, float]:
    """The ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of ``values`` (numpy's default
    ``method="linear"``): the central ``level`` interval."""
    _check_level(level)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-d array; got shape {values.shape}")
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)], method="linear")
    return float(low), float(high)


def resampled_fids(features, mu_ref, sigma_ref, *, samples: int, seed: int = 0) -> np.ndarray:
    """The FIDs against the fixed reference ``mu_ref``, ``sigma_ref`` of ``samples`` resamples with
    replacement of the rows of ``features`` (``(N, D)``; the draws: see the module docstring)."""
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
        raise ValueError(f"samples must be a whole number >= 1; got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0; got {seed!r}")
    features = _check_features(features)
    n = features.shape[0]
    draws = np.random.default_rng(seed).integers(0, n, size=(int(samples), n))
    return np.array([frechet_distance(*feature_stats(features[rows]), mu_ref, sigma_ref) for rows in draws])


def fid_interval(
    features,
    mu_ref,
    sigma_ref,
    *,
    samples: int,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """``(low, high)``: the bootstrap interval of the FID of ``features`` (``(N, D)``, the generated
    images') against the fixed reference ``mu_ref``, ``sigma_ref``: the central ``level`` percentile
    interval of :func:`resampled_fids`, shifted by their mean minus the FID of all of ``features``
    (see the module docstring for the draws, the shift and the cost)."""
    _check_level(level)
    features = _check_features(features)
    fids = resampled_fids(features, mu_ref, sigma_ref, samples=samples, seed=seed)
    shift = float(fids.mean()) - frechet_distance(*feature_stats(features), mu_ref, sigma_ref)
    low, high = percentile_interval(fids, level)
    return low - shift, high - shift


def _check_features(features) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2; got shape {features.shape}")
    return features


def _check_level(level) -> None:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"level must be a number with 0 < level < 1; got {level!r}")
