"""Norm/direction weight analysis of the paper's Fig. 2 and appendix E (Eq. 13-17), Table 2 NM/DM.

Orientation (``docs/reference.md`` section 1): the paper writes ``W = eta V`` (Eq. 13) with
one norm per *output neuron*. In PyTorch layout (``Linear.weight`` is ``out x in``; a Conv2d
weight ``(out, in, kh, kw)`` is flattened to ``(out, in*kh*kw)``) that is one norm per ROW::

    eta[o] = ||W[o, :]||_2        V[o, :] = W[o, :] / eta[o]

so ``k`` of Eq. 14-17 is the number of output neurons. Everything is computed in float64,
whatever the dtype of the weights.

Zero-norm rows: a row whose norm is exactly zero in either model has no direction (and, in
the reference, no relative norm change), so it is EXCLUDED from the statistics and counted in
``zero_rows``; ``rows_used`` is ``k`` minus that count. A layer with no usable row gets NaN
statistics. In the direction residual of the SVD an excluded row is a zero row.

Units: every per-layer number here is a fraction (0.021 means 2.1%); :func:`summarize`
reports the over-layer means as percentages, the unit of Table 2 and section 1.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

KINDS = {2: "linear", 4: "conv"}
# Last module-name components of nn.Embedding tables (2-D ``.weight`` tensors that are not a
# Linear): diffusers' ``class_embedding`` and ``AdaLayerNorm.emb``, text encoders' tables.
EMBEDDING_SUFFIXES = ("embedding", "embeddings", "embed_tokens", "embed_positions")
EMBEDDING_NAMES = ("emb", "wte", "wpe")
COLUMNS = [
    "name", "kind", "out", "in_flat", "rows_used", "zero_rows", "norm_mean", "norm_std",
    "direction_mean", "direction_std", "energy_at_30pct", "rank_fraction_90pct",
]  # fmt: skip


def as_rows(weight: torch.Tensor) -> torch.Tensor:
    """The weight as an ``(out, in_flat)`` float64 matrix (a Conv2d kernel flattened per output)."""
    if weight.ndim < 2:
        raise ValueError(f"a weight needs at least 2 dims (out, in, ...); got shape {tuple(weight.shape)}")
    return weight.detach().reshape(weight.shape[0], -1).to(torch.float64)


def norm_direction(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 13, ``W = eta V``: per-row norms ``eta`` (``out``) and unit rows ``V`` (``out x in_flat``).

    A zero row gets a zero direction row (its direction is undefined).
    """
    rows = as_rows(weight)
    eta = torch.linalg.vector_norm(rows, dim=1)
    direction = rows / torch.where(eta > 0, eta, torch.ones_like(eta)).unsqueeze(1)
    return eta, direction


def _check_pair(w_ref: torch.Tensor, w_new: torch.Tensor) -> None:
    if w_ref.shape != w_new.shape:
        raise ValueError(f"the two weights differ in shape: {tuple(w_ref.shape)} vs {tuple(w_new.shape)}")


def _stats(values: torch.Tensor) -> tuple[float, float]:
    """Mean and population standard deviation (Eq. 14-17 divide by k); NaN for no values."""
    if values.numel() == 0:
        return math.nan, math.nan
    mean = values.mean()
    return float(mean), float(((values - mean) ** 2).mean().sqrt())


def _change(
    eta_ref: torch.Tensor, v_ref: torch.Tensor, eta_new: torch.Tensor, v_new: torch.Tensor
) -> tuple[dict, torch.Tensor]:
    """Eq. 14-17 from decomposed weights, and the direction residual with excluded rows zeroed."""
    used = (eta_ref > 0) & (eta_new > 0)
    residual = (v_new - v_ref) * used.unsqueeze(1)
    ratios = ((eta_new - eta_ref).abs() / eta_ref)[used]
    distances = torch.linalg.vector_norm(residual, dim=1)[used]
    norm_mean, norm_std = _stats(ratios)
    direction_mean, direction_std = _stats(distances)
    stats = {
        "norm_mean": norm_mean,
        "norm_std": norm_std,
        "direction_mean": direction_mean,
        "direction_std": direction_std,
        "rows_used": int(used.sum()),
        "zero_rows": int((~used).sum()),
    }
    return stats, residual


def norm_direction_change(w_ref: torch.Tensor, w_new: torch.Tensor) -> dict:
    """Norm and direction change of one layer, Eq. 14-17 (``ref`` = multi-step, ``new`` = one-step).

    ``norm_mean``/``norm_std``: mean and population STD over output neurons of
    ``|eta_new - eta_ref| / eta_ref`` (Eq. 14, 16); ``direction_mean``/``direction_std``: the
    same of ``||V_new[o] - V_ref[o]||_2`` (Eq. 15, 17; the printed Eq. 17 misplaces a bracket,
    the STD is meant). Fractions, not percentages. Also ``rows_used`` and ``zero_rows`` (rows
    excluded because their norm is zero in either weight, see the module docstring).
    """
    _check_pair(w_ref, w_new)
    stats, _ = _change(*norm_direction(w_ref), *norm_direction(w_new))
    return stats


def energy_at_rank_fraction(singular_values: torch.Tensor, fraction: float = 0.3) -> float:
    """Share of the energy ``sum s_i^2`` kept by the top ``ceil(fraction * n)`` singular values.

    ``n = len(singular_values)`` is the full rank ``min(out, in)`` (``svdvals`` returns that many).
    Fig. 2(b): 30% of the rank of the DMD2 - SD1.5 direction residual keeps 93%. NaN when the
    residual is zero (no energy to keep).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    energy = singular_values.to(torch.float64) ** 2
    total = float(energy.sum())
    if total == 0:
        return math.nan
    keep = max(1, math.ceil(fraction * energy.numel() - 1e-9))
    return float(energy.sort(descending=True).values[:keep].sum()) / total


def rank_fraction_for_energy(singular_values: torch.Tensor, energy: float = 0.9) -> float:
    """Smallest fraction ``r / n`` of the full rank whose top ``r`` singular values keep ``energy``.

    Energy is ``sum s_i^2``; NaN when the residual is zero.
    """
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1]; got {energy}")
    squared = singular_values.to(torch.float64).sort(descending=True).values ** 2
    total = float(squared.sum())
    if total == 0:
        return math.nan
    kept = torch.cumsum(squared, dim=0) / total
    rank = int((kept < energy - 1e-12).sum()) + 1
    return min(rank, squared.numel()) / squared.numel()


def _residual_energy(residual: torch.Tensor, energy: float, rank_fraction: float) -> dict:
    singular_values = torch.linalg.svdvals(residual)
    return {
        "singular_values": singular_values,
        "full_rank": singular_values.numel(),
        "energy_at_rank_fraction": energy_at_rank_fraction(singular_values, rank_fraction),
        "rank_fraction_for_energy": rank_fraction_for_energy(singular_values, energy),
    }


def direction_residual_energy(
    w_ref: torch.Tensor, w_new: torch.Tensor, *, energy: float = 0.9, rank_fraction: float = 0.3
) -> dict:
    """SVD of the direction residual ``Delta V = V_new - V_ref`` of one layer (Fig. 2b).

    Returns the float64 ``singular_values`` (``min(out, in_flat)`` of them, descending),
    ``full_rank``, ``energy_at_rank_fraction`` (share of ``sum s^2`` kept by the top
    ``rank_fraction`` of the rank) and ``rank_fraction_for_energy`` (smallest share of the rank
    that keeps ``energy``). Rows with a zero norm in either weight are zero rows of ``Delta V``.
    """
    _check_pair(w_ref, w_new)
    _, residual = _change(*norm_direction(w_ref), *norm_direction(w_new))
    return _residual_energy(residual, energy, rank_fraction)


def swap_norm_direction(w_norms_from: torch.Tensor, w_directions_from: torch.Tensor) -> torch.Tensor:
    """``eta(w_norms_from) V(w_directions_from)``: the norm/direction swap of Fig. 2(c, d).

    Same shape and dtype as ``w_directions_from``; a row whose direction source is zero stays zero.
    """
    _check_pair(w_norms_from, w_directions_from)
    eta, _ = norm_direction(w_norms_from)
    _, direction = norm_direction(w_directions_from)
    swapped = eta.unsqueeze(1) * direction
    return swapped.reshape(w_directions_from.shape).to(w_directions_from.dtype)


def layer_kind(name: str, tensor: torch.Tensor, include_conv: bool = False) -> str | None:
    """``"linear"``, ``"conv"`` or None (not analysed) for one state-dict entry.

    Analysed: floating ``*.weight`` tensors with 2 dims (Linear) and, with ``include_conv``,
    4 dims (Conv2d). Not analysed: 1-D tensors (norms, biases), other parameters
    (``scale_shift_table``), and embedding tables whose module name ends in one of
    ``EMBEDDING_SUFFIXES`` or is one of ``EMBEDDING_NAMES``.
    """
    if not name.endswith(".weight") or not tensor.is_floating_point():
        return None
    kind = KINDS.get(tensor.ndim)
    if kind is None or (kind == "conv" and not include_conv):
        return None
    module = name[: -len(".weight")].rsplit(".", 1)[-1]
    if module.endswith(EMBEDDING_SUFFIXES) or module in EMBEDDING_NAMES:
        return None
    return kind


def analysed_layers(state_ref: dict, state_new: dict, include_conv: bool = False) -> dict[str, str]:
    """``{name: kind}`` of the analysed layers, checked to match between the two state dicts."""
    ref = {k: kind for k, v in state_ref.items() if (kind := layer_kind(k, v, include_conv))}
    new = {k: kind for k, v in state_new.items() if (kind := layer_kind(k, v, include_conv))}
    problems = [f"only in the first: {k}" for k in ref if k not in new]
    problems += [f"only in the second: {k}" for k in new if k not in ref]
    problems += [
        f"shape of {k}: {tuple(state_ref[k].shape)} vs {tuple(state_new[k].shape)}"
        for k in ref
        if k in new and state_ref[k].shape != state_new[k].shape
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ValueError(f"the two models do not have the same analysed layers ({len(problems)} differences): {shown}")
    if not ref:
        raise ValueError("no Linear (or Conv2d) '.weight' tensors to analyse in these state dicts")
    return ref


def energy_curve(singular_values: torch.Tensor, fractions) -> list[float]:
    """Fig. 2b: the share of the energy kept at each rank fraction (:func:`energy_at_rank_fraction`)."""
    return [energy_at_rank_fraction(singular_values, float(f)) for f in fractions]


CURVE_FRACTIONS = tuple(round(0.01 * i, 2) for i in range(1, 101))  # the rank fractions of Fig. 2b's curves


def analyse_models(
    state_ref: dict, state_new: dict, include_conv: bool = False, *, fractions=CURVE_FRACTIONS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`compare_models`'s per-layer frame and, from the same SVDs, Fig. 2b's energy curves: one row
    per (layer, rank fraction) with the share of the direction residual's energy kept (columns ``name``,
    ``rank_fraction``, ``energy``; layers with a zero residual have none)."""
    rows, curves = [], []
    for name, kind in analysed_layers(state_ref, state_new, include_conv).items():
        row, singular_values = _layer(name, kind, state_ref[name], state_new[name], with_svd=True)
        rows.append(row)
        if float((singular_values**2).sum()) > 0:
            energy = energy_curve(singular_values, fractions)
            curves += [{"name": name, "rank_fraction": f, "energy": e} for f, e in zip(fractions, energy)]
    return pd.DataFrame(rows, columns=COLUMNS), pd.DataFrame(curves, columns=["name", "rank_fraction", "energy"])


def _layer(name: str, kind: str, w_ref: torch.Tensor, w_new: torch.Tensor, with_svd: bool) -> tuple[dict, torch.Tensor]:
    eta_ref, v_ref = norm_direction(w_ref)
    eta_new, v_new = norm_direction(w_new)
    stats, residual = _change(eta_ref, v_ref, eta_new, v_new)
    energy = _residual_energy(residual, 0.9, 0.3) if with_svd else {}
    row = {
        "name": name,
        "kind": kind,
        "out": v_ref.shape[0],
        "in_flat": v_ref.shape[1],
        **stats,
        "energy_at_30pct": energy.get("energy_at_rank_fraction", math.nan),
        "rank_fraction_90pct": energy.get("rank_fraction_for_energy", math.nan),
    }
    return row, energy.get("singular_values")


def compare_models(
    state_ref: dict, state_new: dict, include_conv: bool = False, *, with_svd: bool = True
) -> pd.DataFrame:
    """One row per analysed layer (see :func:`layer_kind`), in state-dict order: Eq. 14-17 and Fig. 2b.

    Columns ``COLUMNS``; ``energy_at_30pct`` and ``rank_fraction_90pct`` come from the SVD of the
    direction residual (NaN with ``with_svd=False``). All values are fractions.
    """
    rows = [
        _layer(name, kind, state_ref[name], state_new[name], with_svd)[0]
        for name, kind in analysed_layers(state_ref, state_new, include_conv).items()
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def _pooled(frame: pd.DataFrame, prefix: str) -> tuple[float, float]:
    """Mean and population STD over all output neurons of all layers, from per-layer moments."""
    valid = frame[frame["rows_used"] > 0]
    counts = valid["rows_used"].to_numpy(dtype=np.float64)
    means, stds = valid[f"{prefix}_mean"].to_numpy(), valid[f"{prefix}_std"].to_numpy()
    if counts.sum() == 0:
        return math.nan, math.nan
    mean = float((counts * means).sum() / counts.sum())
    second = float((counts * (stds**2 + means**2)).sum() / counts.sum())
    return mean, math.sqrt(max(second - mean**2, 0.0))


def summarize(frame: pd.DataFrame) -> dict:
    """Over-layer summary of :func:`compare_models`, in PERCENT for the change statistics.

    ``norm_mean_pct``/``direction_mean_pct`` are Table 2's NM/DM ("norm mean and direction mean
    for all layers"): 100 x the unweighted mean over layers of the per-layer Eq. 14/15 means
    (section 1's "mean of 0.1%/2.2%" for DMD2 equals Table 2's FT row 0.10/2.21).
    ``norm_std_pct``/``direction_std_pct``: 100 x the mean over layers of the per-layer Eq. 16/17
    STDs (our reading of section 1's STD). Also the other readings: ``*_mean_layer_std_pct``
    (STD across layers of the per-layer means) and ``pooled_*`` (over all output neurons of all
    layers, neuron-weighted). ``energy_at_30pct`` / ``rank_fraction_90pct``: means over layers
    (fractions; layers with a zero residual skipped). ``direction_to_norm_mean``/``_std``: the ratios of
    the direction statistics to the norm ones (section 1: 22x and 10x for DMD2). Layers with no usable
    row are skipped.
    """
    valid = frame[frame["rows_used"] > 0]
    summary: dict = {"layers": int(len(frame)), "layers_used": int(len(valid))}
    summary["kinds"] = {k: int(n) for k, n in frame["kind"].value_counts().sort_index().items()}
    for prefix in ("norm", "direction"):
        summary[f"{prefix}_mean_pct"] = 100 * float(valid[f"{prefix}_mean"].mean())
        summary[f"{prefix}_std_pct"] = 100 * float(valid[f"{prefix}_std"].mean())
        summary[f"{prefix}_mean_layer_std_pct"] = 100 * float(valid[f"{prefix}_mean"].std(ddof=0))
        pooled_mean, pooled_std = _pooled(frame, prefix)
        summary[f"pooled_{prefix}_mean_pct"] = 100 * pooled_mean
        summary[f"pooled_{prefix}_std_pct"] = 100 * pooled_std
    for stat in ("mean", "std"):  # section 1's "ratios of 22x and 10x" (direction over norm)
        norm, direction = summary[f"norm_{stat}_pct"], summary[f"direction_{stat}_pct"]
        summary[f"direction_to_norm_{stat}"] = direction / norm if norm > 0 else math.nan
    summary["energy_at_30pct"] = float(frame["energy_at_30pct"].mean())
    summary["rank_fraction_90pct"] = float(frame["rank_fraction_90pct"].mean())
    summary["zero_rows"] = int(frame["zero_rows"].sum())
    return summary


def swap_models(state_a: dict, state_b: dict, norms_from: str = "a", include_conv: bool = False) -> dict:
    """A state dict whose analysed weights take their norms from one model, directions from the other.

    ``norms_from="a"``: norms of ``state_a``, directions of ``state_b`` (and the reverse for
    ``"b"``). Every other tensor (biases, norms, embeddings, and convs unless ``include_conv``)
    is the DIRECTION model's, so the result is that model with only its per-row norms replaced.
    """
    if norms_from not in ("a", "b"):
        raise ValueError(f"norms_from must be 'a' or 'b'; got {norms_from!r}")
    norms, directions = (state_a, state_b) if norms_from == "a" else (state_b, state_a)
    layers = analysed_layers(norms, directions, include_conv)
    return {k: swap_norm_direction(norms[k], v) if k in layers else v for k, v in directions.items()}
