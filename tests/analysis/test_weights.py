"""The weight analysis (Fig. 2, appendix E Eq. 13-17, Table 2 NM/DM) against closed forms."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from dkd.__main__ import main
from dkd.analysis import (
    compare_models,
    direction_residual_energy,
    energy_at_rank_fraction,
    load_state_dict,
    norm_direction_change,
    rank_fraction_for_energy,
    summarize,
    swap_models,
    swap_norm_direction,
)
from dkd.analysis.weights import layer_kind
from dkd.backbones.tiny import tiny_unet
from dkd.lorad.rotation import rotate_pairs

T = torch.tensor


def _rows(weight):
    rows = weight.detach().reshape(weight.shape[0], -1).double()
    norms = rows.norm(dim=1)
    return norms, rows / norms[:, None]


# ----------------------------------------------------------------- Eq. 14-17 on one layer


def test_rotation_changes_direction_by_the_chord_and_keeps_norms():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    angle = torch.rand(6, generator=gen, dtype=torch.float64) * 2 - 1  # one angle per row, all pairs
    rotated = rotate_pairs(weight, angle[:, None].expand(6, 4).contiguous())
    result = norm_direction_change(weight, rotated)
    assert result["norm_mean"] < 1e-14 and result["norm_std"] < 1e-14
    # every pair turned by a: ||R v - v|| = |exp(ia) - 1| ||v|| = 2 |sin(a/2)| for a unit row v
    chord = (2 * (angle / 2).sin().abs()).numpy()
    assert result["direction_mean"] == pytest.approx(chord.mean(), rel=1e-12)
    assert result["direction_std"] == pytest.approx(chord.std(), rel=1e-10)
    assert result["rows_used"] == 6 and result["zero_rows"] == 0


def test_orthogonal_matrix_per_row_keeps_norms_float32_input():
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=torch.float64))
    weight = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    result = norm_direction_change(weight.float(), (weight @ q.T).float())
    assert result["norm_mean"] < 1e-6  # float32 rounding of the inputs only
    assert result["direction_mean"] > 0.1


def test_positive_rescaling_changes_only_norms():
    gen = torch.Generator().manual_seed(2)
    weight = torch.randn(5, 3, 2, 2, generator=gen, dtype=torch.float64)  # a conv kernel
    scale = torch.rand(5, generator=gen, dtype=torch.float64) + 0.5
    result = norm_direction_change(weight, weight * scale[:, None, None, None])
    assert result["direction_mean"] < 1e-14 and result["direction_std"] < 1e-14
    change = (scale - 1).abs().numpy()
    assert result["norm_mean"] == pytest.approx(change.mean(), rel=1e-12)
    assert result["norm_std"] == pytest.approx(change.std(), rel=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_hand_computed_2x2(dtype):
    # row 0: (3,4) -> (4,3): norm 5 -> 5 (ratio 0), direction (.6,.8) -> (.8,.6): distance sqrt(.08)
    # row 1: (1,0) -> (0,2): norm 1 -> 2 (ratio 1), direction (1,0) -> (0,1): distance sqrt(2)
    result = norm_direction_change(T([[3.0, 4.0], [1.0, 0.0]], dtype=dtype), T([[4.0, 3.0], [0.0, 2.0]], dtype=dtype))
    assert result["norm_mean"] == pytest.approx(0.5, abs=1e-15)
    assert result["norm_std"] == pytest.approx(0.5, abs=1e-15)
    assert result["direction_mean"] == pytest.approx((math.sqrt(0.08) + math.sqrt(2)) / 2, rel=1e-14)
    assert result["direction_std"] == pytest.approx((math.sqrt(2) - math.sqrt(0.08)) / 2, rel=1e-13)


def test_hand_computed_3x2_with_a_zero_row():
    # row 0: (1,0) -> (2,0): ratio 1, distance 0; row 1: zero in ref -> excluded;
    # row 2: (2,2) -> (1,1): ratio |sqrt2 - 2sqrt2| / 2sqrt2 = 0.5, distance 0
    result = norm_direction_change(T([[1.0, 0.0], [0.0, 0.0], [2.0, 2.0]]), T([[2.0, 0.0], [5.0, 5.0], [1.0, 1.0]]))
    assert (result["rows_used"], result["zero_rows"]) == (2, 1)
    assert result["norm_mean"] == pytest.approx(0.75, abs=1e-15)
    assert result["norm_std"] == pytest.approx(0.25, abs=1e-15)
    assert result["direction_mean"] == 0 and result["direction_std"] == 0
    empty = norm_direction_change(torch.zeros(2, 3), torch.ones(2, 3))
    assert empty["zero_rows"] == 2 and math.isnan(empty["norm_mean"]) and math.isnan(empty["direction_mean"])


def test_bad_pairs_raise():
    with pytest.raises(ValueError, match="differ in shape"):
        norm_direction_change(torch.ones(2, 3), torch.ones(3, 2))
    with pytest.raises(ValueError, match="at least 2 dims"):
        norm_direction_change(torch.ones(3), torch.ones(3))


# ----------------------------------------------------------------- SVD of the residual (Fig. 2b)


def _two_block_pair():
    """4 x 6 weights whose direction residual has singular values sqrt(6), sqrt(2), 0, 0.

    Rows 0-2 turn from e1 to e2 (residual e2 - e1, three times), row 3 from e3 to e4
    (residual e4 - e3, orthogonal): squared singular values 3*2 and 1*2. Norms vary freely.
    """
    eye = torch.eye(6, dtype=torch.float64)
    ref = torch.stack([2.0 * eye[0], 0.5 * eye[0], 3.0 * eye[0], 1.5 * eye[2]])
    new = torch.stack([1.0 * eye[1], 4.0 * eye[1], 3.0 * eye[1], 0.2 * eye[3]])
    return ref, new


def test_residual_with_known_singular_values():
    ref, new = _two_block_pair()
    result = direction_residual_energy(ref, new, energy=0.9, rank_fraction=0.25)
    assert result["full_rank"] == 4
    torch.testing.assert_close(
        result["singular_values"], T([6.0, 2.0, 0.0, 0.0], dtype=torch.float64).sqrt(), rtol=0, atol=1e-12
    )
    assert result["energy_at_rank_fraction"] == pytest.approx(0.75, rel=1e-12)
    assert result["rank_fraction_for_energy"] == 0.5
    s = result["singular_values"]
    assert energy_at_rank_fraction(s, 0.5) == pytest.approx(1.0, rel=1e-12)
    assert energy_at_rank_fraction(s, 0.3) == pytest.approx(1.0, rel=1e-12)  # ceil(1.2) = 2 values
    assert rank_fraction_for_energy(s, 0.75) == 0.25  # exactly on the boundary
    assert rank_fraction_for_energy(s, 0.7) == 0.25


def test_rank_one_residual_keeps_everything_at_any_fraction():
    gen = torch.Generator().manual_seed(3)
    norms_ref, norms_new = torch.rand(5, 1, generator=gen) + 0.5, torch.rand(5, 1, generator=gen) + 0.5
    e1, turned = torch.zeros(7, dtype=torch.float64), torch.zeros(7, dtype=torch.float64)
    e1[0], turned[0], turned[1] = 1.0, math.cos(0.3), math.sin(0.3)
    result = direction_residual_energy(norms_ref * e1, norms_new * turned)
    s = result["singular_values"]
    assert s[0] == pytest.approx(math.sqrt(5) * 2 * math.sin(0.15), rel=1e-12) and s[1:].abs().max() < 1e-12
    for fraction in (0.01, 0.2, 1.0):
        assert energy_at_rank_fraction(s, fraction) == pytest.approx(1.0, abs=1e-15)
    assert result["rank_fraction_for_energy"] == pytest.approx(0.2)


def test_energy_functions_on_given_singular_values():
    s = T([1.0, 0.0, 3.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # unsorted; energies 9, 4, 1 of 14
    assert energy_at_rank_fraction(s, 0.1) == pytest.approx(9 / 14)
    assert energy_at_rank_fraction(s, 0.2) == pytest.approx(13 / 14)
    assert energy_at_rank_fraction(s, 0.3) == pytest.approx(1.0)
    assert rank_fraction_for_energy(s, 0.9) == pytest.approx(0.2)
    assert rank_fraction_for_energy(s, 0.95) == pytest.approx(0.3)
    assert math.isnan(energy_at_rank_fraction(torch.zeros(3))) and math.isnan(rank_fraction_for_energy(torch.zeros(3)))
    with pytest.raises(ValueError, match="fraction"):
        energy_at_rank_fraction(s, 0.0)
    with pytest.raises(ValueError, match="energy"):
        rank_fraction_for_energy(s, 1.5)


# ----------------------------------------------------------------- norm/direction swap (Fig. 2c/d)


def test_swap_takes_norms_from_one_and_directions_from_the_other():
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(5, 3, 2, 2, generator=gen), torch.randn(5, 3, 2, 2, generator=gen)
    swapped = swap_norm_direction(a, b)
    assert swapped.shape == b.shape and swapped.dtype == b.dtype
    (norms_s, dirs_s), (norms_a, _), (_, dirs_b) = _rows(swapped), _rows(a), _rows(b)
    torch.testing.assert_close(norms_s, norms_a, rtol=1e-6, atol=0)
    torch.testing.assert_close(dirs_s, dirs_b, rtol=1e-6, atol=1e-7)


def test_swap_models_copies_other_tensors_from_the_direction_model():
    gen = torch.Generator().manual_seed(5)
    a = {
        "l.weight": torch.randn(4, 3, generator=gen),
        "l.bias": torch.randn(4, generator=gen),
        "c.weight": torch.randn(4, 2, 1, 1, generator=gen),
    }
    b = {k: torch.randn(v.shape, generator=gen) for k, v in a.items()}
    out = swap_models(a, b, norms_from="a")
    torch.testing.assert_close(_rows(out["l.weight"])[0], _rows(a["l.weight"])[0])
    torch.testing.assert_close(_rows(out["l.weight"])[1], _rows(b["l.weight"])[1])
    assert out["l.bias"] is b["l.bias"] and out["c.weight"] is b["c.weight"]  # conv not swapped by default
    back = swap_models(a, b, norms_from="b", include_conv=True)
    torch.testing.assert_close(_rows(back["c.weight"])[0], _rows(b["c.weight"])[0])
    torch.testing.assert_close(_rows(back["c.weight"])[1], _rows(a["c.weight"])[1])
    assert back["l.bias"] is a["l.bias"]
    with pytest.raises(ValueError, match="norms_from"):
        swap_models(a, b, norms_from="teacher")


# ----------------------------------------------------------------- whole models


@pytest.fixture(scope="module")
def tiny_pair():
    torch.manual_seed(0)
    ref = tiny_unet().eval()
    new = copy.deepcopy(ref)
    with torch.no_grad():
        for parameter in new.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return ref, new


def _weight_names(model, types):
    return {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, types)}


def test_compare_models_layer_sets_follow_module_types(tiny_pair):
    ref, new = tiny_pair
    state_ref, state_new = ref.state_dict(), new.state_dict()
    linear = compare_models(state_ref, state_new)
    assert set(linear["name"]) == _weight_names(ref, nn.Linear) and set(linear["kind"]) == {"linear"}
    both = compare_models(state_ref, state_new, include_conv=True)
    assert set(both["name"]) == _weight_names(ref, (nn.Linear, nn.Conv2d))
    assert set(both.loc[both["kind"] == "conv", "name"]) == _weight_names(ref, nn.Conv2d)
    row = both.set_index("name").loc["down_blocks.0.resnets.0.conv1.weight"]
    assert (row["out"], row["in_flat"]) == (16, 16 * 9)
    expected = norm_direction_change(
        state_ref["down_blocks.0.resnets.0.conv1.weight"], state_new["down_blocks.0.resnets.0.conv1.weight"]
    )
    assert row["direction_mean"] == pytest.approx(expected["direction_mean"], rel=1e-12)
    assert (both["direction_mean"] > 0).all() and both["energy_at_30pct"].between(0.3, 1).all()
    assert layer_kind("class_embedding.weight", torch.ones(3, 4)) is None
    assert layer_kind("norm1.emb.weight", torch.ones(3, 4)) is None


def test_compare_models_rejects_mismatched_state_dicts(tiny_pair):
    ref, new = tiny_pair
    state_ref, state_new = ref.state_dict(), dict(new.state_dict())
    del state_new["conv_in.bias"]  # not analysed: fine
    compare_models(state_ref, state_new)
    del state_new["time_embedding.linear_1.weight"]
    with pytest.raises(ValueError, match="only in the first: time_embedding.linear_1.weight"):
        compare_models(state_ref, state_new)
    state_new = dict(new.state_dict(), **{"conv_in.weight": torch.ones(16, 4, 1, 1)})
    compare_models(state_ref, state_new)  # convs excluded
    with pytest.raises(ValueError, match=r"shape of conv_in.weight: \(16, 4, 3, 3\) vs \(16, 4, 1, 1\)"):
        compare_models(state_ref, state_new, include_conv=True)


def test_summarize_matches_neuron_level_statistics_computed_apart(tiny_pair):
    ref, new = tiny_pair
    state_ref, state_new = ref.state_dict(), new.state_dict()
    frame = compare_models(state_ref, state_new, with_svd=False)
    per_layer_ratio, per_layer_dist = [], []
    for name in frame["name"]:
        w_ref = state_ref[name].numpy().astype(np.float64).reshape(len(state_ref[name]), -1)
        w_new = state_new[name].numpy().astype(np.float64).reshape(len(state_new[name]), -1)
        n_ref, n_new = np.linalg.norm(w_ref, axis=1), np.linalg.norm(w_new, axis=1)
        per_layer_ratio.append(np.abs(n_new - n_ref) / n_ref)
        per_layer_dist.append(np.linalg.norm(w_new / n_new[:, None] - w_ref / n_ref[:, None], axis=1))
    summary = summarize(frame)
    assert summary["layers"] == len(frame) == summary["kinds"]["linear"]
    for prefix, values in (("norm", per_layer_ratio), ("direction", per_layer_dist)):
        means = np.array([v.mean() for v in values])
        assert summary[f"{prefix}_mean_pct"] == pytest.approx(100 * means.mean(), rel=1e-10)
        assert summary[f"{prefix}_std_pct"] == pytest.approx(100 * np.mean([v.std() for v in values]), rel=1e-10)
        assert summary[f"{prefix}_mean_layer_std_pct"] == pytest.approx(100 * means.std(), rel=1e-10)
        pooled = np.concatenate(values)
        assert summary[f"pooled_{prefix}_mean_pct"] == pytest.approx(100 * pooled.mean(), rel=1e-10)
        assert summary[f"pooled_{prefix}_std_pct"] == pytest.approx(100 * pooled.std(), rel=1e-8)
    assert math.isnan(summary["energy_at_30pct"])  # no SVD asked


# ----------------------------------------------------------------- loading and the command line


def test_load_state_dict_sources_and_errors(tiny_pair, tmp_path, monkeypatch):
    ref, _ = tiny_pair
    ref.save_pretrained(tmp_path / "pipe" / "unet")
    state = load_state_dict(tmp_path / "pipe")  # finds the unet subfolder
    assert state.keys() == ref.state_dict().keys()
    single = load_state_dict(tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors")
    torch.testing.assert_close(single["conv_in.weight"], ref.state_dict()["conv_in.weight"])
    save_file(
        {"blocks.10.weight": torch.ones(2, 2), "blocks.2.weight": torch.ones(2, 2), "a.weight": torch.ones(1, 1)},
        tmp_path / "order.safetensors",
    )
    assert list(load_state_dict(tmp_path / "order.safetensors")) == ["a.weight", "blocks.2.weight", "blocks.10.weight"]
    with pytest.raises(FileNotFoundError, match="looked in"):
        load_state_dict(tmp_path / "pipe", subfolder="transformer")
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        load_state_dict(tmp_path / "nowhere.safetensors")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="'dkd-tests/no-such-model'.*HF_HUB_OFFLINE"):
        load_state_dict("dkd-tests/no-such-model")


def test_cli_analyze_and_swap_end_to_end(tiny_pair, tmp_path, capsys):
    from diffusers import UNet2DConditionModel

    ref, new = tiny_pair
    ref.save_pretrained(tmp_path / "a")
    new.save_pretrained(tmp_path / "b" / "unet")  # a pipeline layout
    out = tmp_path / "out"
    assert main(["analyze-weights", str(tmp_path / "a"), str(tmp_path / "b"), "--include-conv", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((out / "summary.json").read_text())
    expected = summarize(compare_models(ref.state_dict(), new.state_dict(), include_conv=True))
    assert printed == written
    assert written.keys() == expected.keys()
    for key, value in expected.items():
        assert written[key] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value), key
    frame = pd.read_csv(out / "weights.csv")
    assert len(frame) == expected["layers"] and set(frame["kind"]) == {"linear", "conv"}
    assert (out / "weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))

    assert main(["analyze-weights", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err

    swapped_dir = tmp_path / "swapped"
    assert (
        main(["swap-weights", str(tmp_path / "a"), str(tmp_path / "b"), "--norms-from", "a", "--out", str(swapped_dir)])
        == 0
    )
    swapped = UNet2DConditionModel.from_pretrained(swapped_dir).state_dict()
    state_a, state_b = ref.state_dict(), new.state_dict()
    for name in _weight_names(ref, nn.Linear):
        torch.testing.assert_close(_rows(swapped[name])[0], _rows(state_a[name])[0], rtol=1e-6, atol=0)
        torch.testing.assert_close(_rows(swapped[name])[1], _rows(state_b[name])[1], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(swapped["conv_in.weight"], state_b["conv_in.weight"], rtol=0, atol=0)
    torch.testing.assert_close(swapped["conv_norm_out.weight"], state_b["conv_norm_out.weight"], rtol=0, atol=0)
    assert not list(swapped_dir.glob(".*.tmp"))
