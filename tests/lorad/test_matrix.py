"""One parametrized matrix over tiny models, both inits, float32/float64 and both backwards."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel, get_peft_model

from dkd.lorad import LoRaDConfig, LoRaDLayer
from dkd.lorad.rotation import rotate_pairs

from .models import CASES, batch_size, cat_inputs, output, sample

MATRIX = [
    pytest.param(
        case, init, dtype, efficient, id=f"{case.name}-{init}-{str(dtype)[6:]}-{'eff' if efficient else 'plain'}"
    )
    for case in CASES
    for init in ("zero_xavier", "xavier_xavier")
    for dtype in (torch.float32, torch.float64)
    for efficient in (True, False)
]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def _setup(case, init, dtype, efficient, seed=0):
    torch.manual_seed(seed)
    base = case.build().to(dtype).eval()
    reference = copy.deepcopy(base)
    config = LoRaDConfig(r=3, target_modules=case.targets, init_weights=init, memory_efficient_backward=efficient)
    model = get_peft_model(base, config)
    inputs = case.inputs(torch.Generator().manual_seed(seed + 1), dtype)
    return model, reference, inputs


def _layers(model):
    return [m for m in model.modules() if isinstance(m, LoRaDLayer)]


@pytest.mark.parametrize("case,init,dtype,efficient", MATRIX)
def test_rotation_keeps_every_row_norm(case, init, dtype, efficient):
    model, _, _ = _setup(case, init, dtype, efficient)
    for layer in _layers(model):
        weight = layer.get_base_layer().weight.detach()
        rotated = rotate_pairs(weight, layer.get_angles("default").detach())
        rows, rows_rot = weight.reshape(weight.shape[0], -1), rotated.reshape(weight.shape[0], -1)
        torch.testing.assert_close(rows_rot.norm(dim=1), rows.to(rotated.dtype).norm(dim=1), **TOL[dtype])
        if init == "xavier_xavier":
            assert not torch.allclose(rotated, weight.to(rotated.dtype))


@pytest.mark.parametrize("case,init,dtype,efficient", MATRIX)
def test_initial_output_against_base(case, init, dtype, efficient):
    model, reference, inputs = _setup(case, init, dtype, efficient)
    with torch.no_grad():
        ours, base = output(model, inputs), output(reference, inputs)
    if init == "zero_xavier":
        torch.testing.assert_close(ours, base, rtol=0, atol=0)
    else:
        assert not torch.allclose(ours, base)


@pytest.mark.parametrize("case,init,dtype,efficient", MATRIX)
def test_merge_unmerge_and_disable(case, init, dtype, efficient):
    model, reference, inputs = _setup(case, init, dtype, efficient)
    with torch.no_grad():
        adapted = output(model, inputs)
        with model.disable_adapter():
            torch.testing.assert_close(output(model, inputs), output(reference, inputs), rtol=0, atol=0)
        base_weights = {n: p.clone() for n, p in reference.named_parameters()}
        model.merge_adapter()
        torch.testing.assert_close(output(model, inputs), adapted, **TOL[dtype])
        model.unmerge_adapter()
        restored = {
            n.removeprefix("base_model.model.").replace(".base_layer", ""): p
            for n, p in model.named_parameters()
            if "lorad_" not in n
        }
        for name, weight in base_weights.items():
            torch.testing.assert_close(restored[name], weight, **TOL[dtype])
        merged = copy.deepcopy(model).merge_and_unload()
        assert not _layers(merged)
        torch.testing.assert_close(output(merged, inputs), adapted, **TOL[dtype])


@pytest.mark.parametrize("case,init,dtype,efficient", MATRIX)
def test_only_factors_train_and_grads_match_plain_autograd(case, init, dtype, efficient):
    model, _, inputs = _setup(case, init, dtype, efficient)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lorad_A." in n or ".lorad_B." in n for n in trainable)
    # independent count: Linear/Conv2d modules of a fresh model whose names match a target (PEFT's rule)
    fresh = case.build()
    matched = [
        n
        for n, m in fresh.named_modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
        and any(n == t or n.endswith("." + t) for t in case.targets)
    ]
    assert matched and len(trainable) == 2 * len(matched)
    output(model, inputs).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    for layer in _layers(model):
        layer.memory_efficient = not efficient
    model.zero_grad()
    output(model, inputs).square().mean().backward()
    for name, grad in grads.items():
        other = dict(model.named_parameters())[name].grad
        torch.testing.assert_close(grad, other, **TOL[dtype])
    assert any(g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize("case,init,dtype,efficient", MATRIX)
def test_save_load_round_trip(case, init, dtype, efficient, tmp_path):
    model, reference, inputs = _setup(case, init, dtype, efficient)
    with torch.no_grad():
        for layer in _layers(model):  # non-trivial angles for both inits
            layer.lorad_A["default"].normal_(std=0.1)
        expected = output(model, inputs)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    loaded = PeftModel.from_pretrained(copy.deepcopy(reference), tmp_path)
    assert isinstance(loaded.peft_config["default"], LoRaDConfig)
    with torch.no_grad():
        torch.testing.assert_close(output(loaded, inputs), expected, rtol=0, atol=0)


@pytest.mark.parametrize("case,init,dtype,efficient", MATRIX)
def test_mixed_adapter_batch_matches_each_sample_alone(case, init, dtype, efficient):
    model, _, _ = _setup(case, init, dtype, efficient)
    # a second adapter that the layers of the last target lack: those serve its samples unrotated
    model.add_adapter(
        "other",
        LoRaDConfig(
            r=2, target_modules=case.targets[:-1], init_weights="xavier_xavier", memory_efficient_backward=efficient
        ),
    )
    with torch.no_grad():
        for layer in _layers(model):  # non-trivial angles for both inits
            layer.lorad_A["default"].normal_(std=0.1)
    model.eval()
    g = torch.Generator().manual_seed(1)
    inputs = cat_inputs([case.inputs(g, dtype), case.inputs(g, dtype)])
    names = ["other", "__base__", "default", "other", "__base__", "default"][: batch_size(inputs)]
    with torch.no_grad():
        mixed = output(model, {**inputs, "adapter_names": names})
        assert not torch.allclose(mixed, output(model, inputs))  # not every sample through "default"
        for i, name in enumerate(names):  # reference: each sample alone, its adapter set the usual way
            if name == "__base__":
                with model.disable_adapter():
                    expected = output(model, sample(inputs, i))
            else:
                model.set_adapter(name)
                expected = output(model, sample(inputs, i))
            torch.testing.assert_close(mixed[i : i + 1], expected, **TOL[dtype])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bf16_autocast_efficient_matches_plain(case):
    model, _, inputs = _setup(case, "xavier_xavier", torch.float32, True)
    results = []
    for efficient in (True, False):
        for layer in _layers(model):
            layer.memory_efficient = efficient
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = output(model, inputs)
        out.float().square().mean().backward()
        results.append((out, {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (out_eff, grads_eff), (out_plain, grads_plain) = results
    torch.testing.assert_close(out_eff, out_plain, rtol=2e-2, atol=2e-2)
    for name, grad in grads_eff.items():
        assert grad.dtype == torch.float32
        torch.testing.assert_close(grad, grads_plain[name], rtol=5e-2, atol=1e-3 * grads_plain[name].abs().max())
