"""Improved precision and recall (Kynkaanniemi et al. 2019) with k = 3 on Inception features.

``docs/reference.md`` section 3. The math is the maintained ``prdc`` package (Naver,
``prdc.compute_prdc``): each real sample's manifold ball has the radius of its k-th nearest
real neighbour (itself excluded), likewise for fake samples;

* precision = share of fake samples inside at least one real ball (strict ``<``);
* recall    = share of real samples inside at least one fake ball;
* density / coverage (Naeem et al. 2020) come for free and are reported too.

Both scores depend on the sizes of the two sets (more samples, smaller balls), so they are computed
on sets of equal size, as Kynkaenniemi et al. do: :func:`equal_size_subsets` draws a seeded random
subset of the larger one (COCO2014: 30,000 of the 40,504 reference images against 30,000 generated;
FID keeps every image).

Features of a folder come from the same clean-fid path and extractor as FID
(:func:`dkd.metrics.fid.folder_features`; Inception-v3 pool features by default). ``prdc``
builds full distance matrices and ``argpartition``'s int64 indices: its peak is 12-14 ``N^2``
bytes for N = the larger of the two image counts (``benchmarks/prdc_memory.py``: 1.9-2.0 GB for 12k
real and 9k fake; extrapolated, 11-12 GB for the 30k/30k of COCO2014).
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np

from ..io import atomic_write_text
from .fid import Extractor, build_extractor, clean_fid_version, folder_features, resolve_extractor_name

K = 3


def _features(name: str, features, k: int) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"{name} features must be (N, D); got shape {features.shape}")
    if features.shape[0] < k + 2:  # prdc's argpartition needs the self distance plus k neighbours, kth < N
        raise ValueError(f"{name} features: need at least k + 2 = {k + 2} samples for k = {k}; got {features.shape[0]}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} features contain NaN or infinity")
    return features


def equal_size_subsets(real_features, fake_features, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two feature sets cut to the smaller one's size: a random subset of the larger set's rows
    (``numpy.random.default_rng(seed)``, kept in their order); the smaller set as it is."""
    real, fake = np.asarray(real_features), np.asarray(fake_features)
    count = min(len(real), len(fake))

    def subset(x: np.ndarray) -> np.ndarray:
        return x if len(x) == count else x[np.sort(np.random.default_rng(seed).choice(len(x), count, replace=False))]

    return subset(real), subset(fake)


def precision_recall_equal_sizes(real_features, fake_features, *, k: int = K, seed: int = 0) -> dict:
    """:func:`precision_recall` on :func:`equal_size_subsets` of the two sets (``count_real`` =
    ``count_fake``), plus ``subset_seed`` and the sets' full sizes ``total_real``, ``total_fake``."""
    real, fake = np.asarray(real_features), np.asarray(fake_features)
    return precision_recall(*equal_size_subsets(real, fake, seed=seed), k=k) | {
        "subset_seed": seed,
        "total_real": int(len(real)),
        "total_fake": int(len(fake)),
    }


def precision_recall(real_features, fake_features, *, k: int = K) -> dict:
    """``prdc.compute_prdc(real, fake, nearest_k=k)`` as plain floats, with the counts and ``k``.

    Returns ``{"precision", "recall", "density", "coverage", "k", "count_real", "count_fake"}``.
    """
    from prdc import compute_prdc

    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    real = _features("real", real_features, k)
    fake = _features("fake", fake_features, k)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the two counts
        scores = compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    result = {key: float(scores[key]) for key in ("precision", "recall", "density", "coverage")}
    return result | {"k": k, "count_real": int(real.shape[0]), "count_fake": int(fake.shape[0])}


def precision_recall_folders(
    real_folder: str | os.PathLike,
    fake_folder: str | os.PathLike,
    *,
    k: int = K,
    mode: str = "clean",
    feature_extractor: Extractor | None = None,
    extractor_name: str | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device=None,
    out_file: str | os.PathLike | None = None,
    verbose: bool = False,
    seed: int = 0,
) -> dict:
    """:func:`precision_recall` on the features of two image folders, extracted as for FID, cut to
    equal sizes (:func:`equal_size_subsets` with ``seed``).

    Returns its dict plus ``subset_seed``, ``total_real``, ``total_fake``, ``feature_extractor``,
    ``mode`` and ``clean_fid_version``; with
    ``out_file`` the dict is also written atomically as JSON.
    """
    model = build_extractor(feature_extractor, mode=mode, device=device)
    options = dict(model=model, mode=mode, batch_size=batch_size, num_workers=num_workers, device=device,
                   verbose=verbose)  # fmt: skip
    real = folder_features(real_folder, **options)
    fake = folder_features(fake_folder, **options)
    result = precision_recall_equal_sizes(real, fake, k=k, seed=seed) | {
        "feature_extractor": resolve_extractor_name(feature_extractor, extractor_name),
        "mode": mode,
        "clean_fid_version": clean_fid_version(),
    }
    if out_file is not None:
        atomic_write_text(out_file, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result
