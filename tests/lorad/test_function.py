"""The rotation math and the memory-efficient autograd function against independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dkd.lorad.function import ConvArgs, RotatedOp, rotated_forward
from dkd.lorad.rotation import angles, rotate_pairs

CONV = ConvArgs(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
CONV1 = ConvArgs(stride=(1, 2), padding=(0, 1), dilation=(2, 1), groups=1)


@pytest.fixture(params=["one-block", "row-blocks"])
def blocks(request, monkeypatch):
    """Run the memory-efficient op in one block, or in blocks of 2 output rows."""
    if request.param == "row-blocks":
        from dkd.lorad import function, rotation

        def tiny_blocks(rows, row_size, **_):
            return [slice(i, min(i + 2, rows)) for i in range(0, rows, 2)]

        monkeypatch.setattr(function, "row_blocks", tiny_blocks)
        monkeypatch.setattr(rotation, "row_blocks", tiny_blocks)
    return request.param


def dense_rotation(theta_row: torch.Tensor) -> torch.Tensor:
    """Eq. 5 for one row, built entry by entry: block-diagonal 2x2 rotations."""
    n = theta_row.numel()
    matrix = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    for j, angle in enumerate(theta_row.tolist()):
        c, s = torch.cos(torch.tensor(angle, dtype=torch.float64)), torch.sin(torch.tensor(angle, dtype=torch.float64))
        matrix[2 * j : 2 * j + 2, 2 * j : 2 * j + 2] = torch.stack([torch.stack([c, -s]), torch.stack([s, c])])
    return matrix


def _factors(in_flat, out, r, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(in_flat // 2, r, generator=g, dtype=dtype) * 0.5
    b = torch.randn(r, out, generator=g, dtype=dtype) * 0.5
    return a, b


@pytest.mark.parametrize("shape", [(6, 10), (4, 6, 3, 3), (5, 2, 1, 1)])
def test_elementwise_rotation_equals_dense_block_diagonal_matrix(shape):
    weight = torch.randn(*shape, dtype=torch.float64)
    in_flat = weight[0].numel()
    a, b = _factors(in_flat, shape[0], r=2)
    theta = angles(a, b)
    assert theta.shape == (shape[0], in_flat // 2)
    torch.testing.assert_close(theta, (a @ b).T, rtol=1e-12, atol=1e-12)
    rotated = rotate_pairs(weight, theta).reshape(shape[0], -1)
    for o, row in enumerate(weight.reshape(shape[0], -1)):
        torch.testing.assert_close(rotated[o], dense_rotation(theta[o]) @ row, rtol=1e-12, atol=1e-12)


def _op_inputs(conv, requires_weight_grad=True):
    g = torch.Generator().manual_seed(1)
    if conv is None:
        x = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
        weight = torch.randn(5, 6, generator=g, dtype=torch.float64)
    else:
        x = torch.randn(2, 4, 7, 6, generator=g, dtype=torch.float64)
        weight = torch.randn(6 if conv.groups > 1 else 7, 4 // conv.groups, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(weight.shape[0], generator=g, dtype=torch.float64)
    a, b = _factors(weight[0].numel(), weight.shape[0], r=3)
    tensors = [x, weight, bias, a, b]
    for t in tensors:
        t.requires_grad_(True)
    weight.requires_grad_(requires_weight_grad)
    return tensors


@pytest.mark.parametrize("conv", [None, CONV, CONV1], ids=["linear", "conv-groups", "conv"])
def test_custom_backward_passes_gradcheck(conv, blocks):
    x, weight, bias, a, b = _op_inputs(conv)
    assert torch.autograd.gradcheck(
        lambda *t: RotatedOp.apply(*t, conv, torch.float64), (x, weight, bias, a, b), eps=1e-6, atol=1e-7
    )


def _apply(x, weight, bias, conv):
    if conv is None:
        return F.linear(x, weight, bias)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _plain_formula(x, weight, bias, a, b, conv):
    """Eq. 8/10 written out with autograd, independent of the package."""
    theta = (a @ b).T
    w = weight.reshape(weight.shape[0], -1, 2)
    rotated = torch.stack(
        (theta.cos() * w[..., 0] - theta.sin() * w[..., 1], theta.sin() * w[..., 0] + theta.cos() * w[..., 1]), -1
    ).reshape(weight.shape)
    return _apply(x, rotated, bias, conv)


@pytest.mark.parametrize("conv", [None, CONV, CONV1], ids=["linear", "conv-groups", "conv"])
def test_custom_backward_matches_autograd_of_plain_formula(conv, blocks):
    tensors = _op_inputs(conv)
    grad_out = torch.randn_like(_plain_formula(*tensors, conv))
    ours = torch.autograd.grad(RotatedOp.apply(*tensors, conv, torch.float64), tensors, grad_out)
    reference = torch.autograd.grad(_plain_formula(*tensors, conv), tensors, grad_out)
    for got, want in zip(ours, reference):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _new_saved_bytes(fn, inputs):
    """Bytes that autograd saves for backward beyond storages that already exist."""
    existing = {t.untyped_storage().data_ptr() for t in inputs}
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    new = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
        for t in saved
        if t.untyped_storage().data_ptr() not in existing
    }
    return out, sum(new.values())


@pytest.mark.parametrize("conv", [None, CONV], ids=["linear", "conv"])
def test_memory_efficient_backward_saves_no_new_tensors(conv):
    x, weight, bias, a, b = _op_inputs(conv, requires_weight_grad=False)
    weight_bytes = weight.numel() * weight.element_size()
    _, efficient = _new_saved_bytes(lambda: rotated_forward(x, weight, bias, a, b, conv, True), [x, weight, bias, a, b])
    _, plain = _new_saved_bytes(lambda: rotated_forward(x, weight, bias, a, b, conv, False), [x, weight, bias, a, b])
    assert efficient == 0
    assert plain >= weight_bytes


@pytest.mark.parametrize("conv", [None, CONV], ids=["linear", "conv"])
@pytest.mark.parametrize("efficient", [True, False], ids=["eff", "plain"])
def test_bf16_autocast_rotates_in_float32(conv, efficient):
    x, weight, bias, a, b = (t.detach().float().requires_grad_(True) for t in _op_inputs(conv))
    weight.requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rotated_forward(x, weight, bias, a, b, conv, efficient)
    # Reference: rotation in float64 then rounded to float32, cast to bf16 only for the matmul.
    rotated32 = rotate_pairs(weight.double(), angles(a.double(), b.double())).float()
    with torch.no_grad():
        expected = _apply(x.bfloat16(), rotated32.bfloat16(), bias.bfloat16(), conv)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.float().square().sum().backward()
    assert a.grad.dtype == torch.float32 and b.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_half_weight_with_float32_factors_runs_in_weight_dtype():
    x, weight, bias, a, b = (t.detach() for t in _op_inputs(None))
    w16, x16, b16 = weight.bfloat16(), x.bfloat16(), bias.bfloat16()
    out = rotated_forward(x16, w16, b16, a.float(), b.float())
    expected = F.linear(x16, rotate_pairs(w16, angles(a.float(), b.float())).bfloat16(), b16)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
