"""FID by clean-fid, folder against folder (``docs/reference.md`` section 3).

Both folders hold the 256-pixel PNGs of :func:`dkd.metrics.images.preprocess_folder`; features
come from clean-fid's own code path (``cleanfid.fid.get_files_features``: its ``ResizeDataset``
with the ``mode="clean"`` PIL-bicubic resize to 299, then the model on float ``[0, 255]``
batches of shape ``(B, 3, 299, 299)``). The model is clean-fid's torchscript Inception-v3
(``build_feature_extractor(mode)``, name ``"inception_v3"``) unless ``feature_extractor`` is
given: any callable / ``nn.Module`` mapping such a batch to a ``(B, D)`` tensor (clean-fid's
``custom_feat_extractor``), used on exactly the same path.

The math is split out and pure: :func:`feature_stats` (mean, ``np.cov(rowvar=False)`` as
clean-fid) and :func:`frechet_distance` (clean-fid's algorithm). Reference statistics are
cached once per reference set by :func:`reference_stats` in an ``.npz`` holding ``mu``,
``sigma``, ``count``, ``feature_extractor``, ``mode`` and ``files_digest`` (a hash of the
sorted relative file names); a cache whose extractor name, mode, count or file names
disagree raises.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_open, atomic_write_text
from .images import list_images

DEFAULT_EXTRACTOR = "inception_v3"  # clean-fid's model_name of its torchscript Inception-v3
MODES = ("clean", "legacy_pytorch", "legacy_tensorflow")
STATS_KEYS = ("mu", "sigma", "count", "feature_extractor", "mode", "files_digest")
Extractor = Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module


def clean_fid_version() -> str:
    return importlib.metadata.version("clean-fid")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of a ``(N, D)`` feature array in float64: mean and ``np.cov(rowvar=False)``."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2; got shape {features.shape}")
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2, *, eps: float = 1e-6) -> float:
    """``||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``, clean-fid's algorithm.

    The same steps as ``cleanfid.fid.frechet_distance`` (``scipy.linalg.sqrtm`` of the product;
    ``eps`` on the diagonals if that is not finite; an imaginary part above 1e-3 on the diagonal
    raises), written out because clean-fid 0.1.35 passes ``disp=False``, which SciPy 1.17
    deprecates (and then returns no tuple for 1 x 1 input) and 1.18 removes. Not clamped: a set
    against itself may give a tiny negative number (rounding).
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    dim = mu1.shape[0]
    if mu1.shape != (dim,) or mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"frechet_distance: shapes disagree: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
            f"mu2 {mu2.shape}, sigma2 {sigma2.shape}"
        )
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(dim) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def resolve_extractor_name(feature_extractor: Extractor | None, name: str | None = None) -> str:
    """The name recorded with the statistics: ``name`` if given, else ``"inception_v3"`` for
    clean-fid's model, else the extractor's ``name`` / ``__name__`` attribute or class name."""
    if name:
        return name
    if feature_extractor is None:
        return DEFAULT_EXTRACTOR
    return (
        getattr(feature_extractor, "name", None)
        or getattr(feature_extractor, "__name__", None)
        or type(feature_extractor).__name__
    )


def build_extractor(
    feature_extractor: Extractor | None = None,
    *,
    mode: str = "clean",
    device=None,
    inception_dir: str | os.PathLike | None = None,
) -> Extractor:
    """clean-fid's Inception for ``mode`` when ``feature_extractor`` is None, else the given model,
    put in eval mode on ``device``.

    clean-fid downloads the Inception torchscript file to ``/tmp`` on first use. With
    ``inception_dir`` (modes "clean" and "legacy_tensorflow") the file is loaded from that folder
    instead, never downloaded (``dkd.fetch`` fetches it there: compute nodes without network).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    device = torch.device(device) if device is not None else default_device()
    if feature_extractor is None and inception_dir is not None:
        from cleanfid.inception_torchscript import InceptionV3W

        from ..fetch import INCEPTION_FILE

        if mode == "legacy_pytorch":
            raise ValueError(
                "inception_dir holds the torchscript Inception of modes 'clean' and 'legacy_tensorflow'; "
                "mode 'legacy_pytorch' uses another network"
            )
        if not (Path(inception_dir) / INCEPTION_FILE).is_file():
            raise FileNotFoundError(
                f"clean-fid's Inception weights {Path(inception_dir) / INCEPTION_FILE} are missing: "
                "fetch them with dkd.fetch (the workflow's fetch_model rule) or put the file there"
            )
        feature_extractor = InceptionV3W(str(inception_dir), download=False, resize_inside=mode == "legacy_tensorflow")
    if feature_extractor is None:
        from cleanfid import features

        return features.build_feature_extractor(mode, device, use_dataparallel=False)
    if isinstance(feature_extractor, torch.nn.Module):
        feature_extractor.eval().to(device)
    return feature_extractor


def files_digest(folder: str | os.PathLike, files) -> str:
    """SHA-256 of the sorted relative names of ``files`` (which reference set the stats are of)."""
    names = "\n".join(Path(path).relative_to(folder).as_posix() for path in files)
    return hashlib.sha256(names.encode("utf-8")).hexdigest()


def folder_features(
    folder: str | os.PathLike,
    *,
    model: Extractor,
    mode: str = "clean",
    batch_size: int = 32,
    num_workers: int = 0,
    device=None,
    verbose: bool = False,
) -> np.ndarray:
    """``(N, D)`` features of every image under ``folder`` (recursive, as clean-fid's folder
    glob) through clean-fid's ``get_files_features`` with ``model`` (see :func:`build_extractor`)."""
    from cleanfid.fid import get_files_features

    files = list_images(folder, recursive=True)
    if not files:
        raise ValueError(f"no images in {str(folder)!r}")
    device = torch.device(device) if device is not None else default_device()
    features = get_files_features(
        [str(path) for path in files],
        model=model,
        num_workers=num_workers,
        batch_size=batch_size,
        device=device,
        mode=mode,
        description=f"features {Path(folder).name}",
        verbose=verbose,
    )
    if features.ndim != 2 or features.shape[0] != len(files):
        raise ValueError(
            f"the feature extractor must return (B, D) features; got {features.shape} for {len(files)} images"
        )
    return features


def load_stats(path: str | os.PathLike) -> dict:
    """Statistics written by :func:`reference_stats` (plain Python scalars, NumPy arrays)."""
    with np.load(path, allow_pickle=False) as data:
        missing = [key for key in STATS_KEYS if key not in data.files]
        if missing:
            raise ValueError(f"reference stats {str(path)!r} lack {missing}; delete it and recompute")
        stats = {key: data[key] for key in STATS_KEYS}
    for key in ("count",):
        stats[key] = int(stats[key])
    for key in ("feature_extractor", "mode", "files_digest"):
        stats[key] = str(stats[key])
    return stats


def check_stats(stats: Mapping, *, feature_extractor: str, mode: str, source: str = "reference stats") -> None:
    """Raise unless ``stats`` were made with ``feature_extractor`` and ``mode``."""
    missing = [key for key in ("mu", "sigma", "count", "feature_extractor", "mode") if key not in stats]
    if missing:
        raise ValueError(f"{source} lack {missing}")
    if stats["feature_extractor"] != feature_extractor or stats["mode"] != mode:
        raise ValueError(
            f"{source} were computed with feature extractor {stats['feature_extractor']!r} (mode {stats['mode']!r}), "
            f"not {feature_extractor!r} (mode {mode!r}); delete the cache or pass the matching extractor"
        )


def reference_stats(
    ref_folder: str | os.PathLike | None,
    cache_file: str | os.PathLike,
    *,
    mode: str = "clean",
    feature_extractor: Extractor | None = None,
    extractor_name: str | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device=None,
    verbose: bool = False,
    model: Extractor | None = None,
) -> dict:
    """Statistics of the reference set, computed once and cached in ``cache_file`` (``.npz``).

    A present cache is reused without reading any image; it must match the extractor's name
    and ``mode``, and, when ``ref_folder`` still exists, its image count and file names (listing
    names reads no image). Any disagreement raises rather than mixing two reference sets.
    ``model`` is an already built extractor (saves building Inception twice).
    """
    cache_file = Path(cache_file)
    wanted = resolve_extractor_name(feature_extractor, extractor_name)
    folder = Path(ref_folder) if ref_folder is not None else None
    if cache_file.exists():
        stats = load_stats(cache_file)
        check_stats(stats, feature_extractor=wanted, mode=mode, source=f"reference stats {str(cache_file)!r}")
        if folder is not None and folder.is_dir():
            files = list_images(folder, recursive=True)
            if len(files) != stats["count"] or files_digest(folder, files) != stats["files_digest"]:
                raise ValueError(
                    f"reference stats {str(cache_file)!r} are of {stats['count']} images, but {str(folder)!r} "
                    f"now holds {len(files)} images (or other file names); delete the cache to recompute"
                )
        return stats
    if folder is None:
        raise FileNotFoundError(f"no reference stats at {str(cache_file)!r} and no reference folder to compute them")
    model = model if model is not None else build_extractor(feature_extractor, mode=mode, device=device)
    features = folder_features(folder, model=model, mode=mode, batch_size=batch_size, num_workers=num_workers,
                               device=device, verbose=verbose)  # fmt: skip
    return save_stats(features, cache_file, folder=folder, feature_extractor=wanted, mode=mode)


def save_stats(
    features: np.ndarray,
    cache_file: str | os.PathLike,
    *,
    folder: str | os.PathLike,
    feature_extractor: str,
    mode: str = "clean",
) -> dict:
    """Write the statistics of ``features`` (of the images of ``folder``, as :func:`folder_features`
    lists them) in :func:`reference_stats`' cache format, atomically; returns them."""
    files = list_images(folder, recursive=True)
    if len(files) != len(features):
        raise ValueError(f"{len(features)} features for {len(files)} images in {str(folder)!r}")
    mu, sigma = feature_stats(features)
    stats = {"mu": mu, "sigma": sigma, "count": len(files), "feature_extractor": feature_extractor, "mode": mode,
             "files_digest": files_digest(folder, files)}  # fmt: skip
    with atomic_open(cache_file, "wb") as handle:
        np.savez(handle, **{key: np.asarray(value) for key, value in stats.items()})
    return stats


def compute_fid(
    gen_folder: str | os.PathLike,
    ref_folder: str | os.PathLike | None = None,
    *,
    ref_stats: str | os.PathLike | Mapping | None = None,
    mode: str = "clean",
    feature_extractor: Extractor | None = None,
    extractor_name: str | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device=None,
    out_file: str | os.PathLike | None = None,
    verbose: bool = False,
) -> dict:
    """FID of the images in ``gen_folder`` against a reference set (``docs/reference.md`` section 3).

    Reference: ``ref_folder`` alone (features computed, nothing cached); ``ref_stats`` a path
    alone (a cache of :func:`reference_stats`, which must exist); both (the cache is made from
    the folder on first use, reused afterwards); or ``ref_stats`` a mapping with ``mu``,
    ``sigma``, ``count``, ``feature_extractor``, ``mode``. Returns (and, with ``out_file``,
    writes atomically as JSON) ``{"fid", "count_gen", "count_ref", "feature_extractor",
    "mode", "clean_fid_version"}``.
    """
    if ref_folder is None and ref_stats is None:
        raise ValueError("compute_fid needs ref_folder, ref_stats or both")
    if isinstance(ref_stats, Mapping) and ref_folder is not None:
        raise ValueError("compute_fid: give a stats mapping or a ref_folder, not both")
    wanted = resolve_extractor_name(feature_extractor, extractor_name)
    model = build_extractor(feature_extractor, mode=mode, device=device)
    options = dict(mode=mode, batch_size=batch_size, num_workers=num_workers, device=device, verbose=verbose)
    if isinstance(ref_stats, Mapping):
        check_stats(ref_stats, feature_extractor=wanted, mode=mode)
        ref = dict(ref_stats)
    elif ref_stats is not None:
        if ref_folder is None and not Path(ref_stats).exists():
            raise FileNotFoundError(
                f"reference stats {str(ref_stats)!r} do not exist (give ref_folder to compute them)"
            )
        ref = reference_stats(ref_folder, ref_stats, feature_extractor=feature_extractor,
                              extractor_name=extractor_name, model=model, **options)  # fmt: skip
    else:
        features = folder_features(ref_folder, model=model, **options)
        ref = dict(zip(("mu", "sigma"), feature_stats(features)), count=features.shape[0])
    gen = folder_features(gen_folder, model=model, **options)
    mu, sigma = feature_stats(gen)
    result = {
        "fid": frechet_distance(mu, sigma, ref["mu"], ref["sigma"]),
        "count_gen": int(gen.shape[0]),
        "count_ref": int(ref["count"]),
        "feature_extractor": wanted,
        "mode": mode,
        "clean_fid_version": clean_fid_version(),
    }
    if out_file is not None:
        atomic_write_text(out_file, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result
