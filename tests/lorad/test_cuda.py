"""LoRaD on a CUDA device (skipped without one): the same references as on the CPU.

Self-contained (torch and peft only) so that it runs on a bare GPU machine:
``PYTHONPATH=. python -m pytest tests/lorad/test_cuda.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dkd.lorad.function import ConvArgs, RotatedOp, rotated_forward
from dkd.lorad.rotation import angles, rotate_pairs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CONV = ConvArgs(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)


def _inputs(conv, dtype=torch.float32, big=False):
    g = torch.Generator(device="cuda").manual_seed(0)
    if conv is None:
        shape_x, shape_w = ((4096, 1280), (10240, 1280)) if big else ((64, 48), (40, 48))
    else:
        shape_x, shape_w = (4, 32, 16, 16), (48, 32, 3, 3)
    x = torch.randn(*shape_x, generator=g, device="cuda", dtype=dtype)
    weight = torch.randn(*shape_w, generator=g, device="cuda", dtype=dtype) / shape_w[1] ** 0.5
    bias = torch.randn(shape_w[0], generator=g, device="cuda", dtype=dtype)
    a = (
        torch.randn(
            weight[0].numel() // 2,
            8,
            generator=g,
            device="cuda",
            dtype=torch.float32 if dtype != torch.float64 else dtype,
        )
        * 0.05
    )
    b = torch.randn(8, shape_w[0], generator=g, device="cuda", dtype=a.dtype) * 0.05
    return [t.requires_grad_(True) for t in (x, weight, bias, a, b)]


@pytest.mark.parametrize("conv", [None, CONV], ids=["linear", "conv"])
def test_gradcheck_float64_on_cuda(conv):
    x, weight, bias, a, b = _inputs(conv, torch.float64)
    small = (x[:3] if conv is None else x[:1, :, :5, :5]).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda *t: RotatedOp.apply(*t, conv, torch.float64), (small, weight, bias, a, b), eps=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("conv", [None, CONV], ids=["linear", "conv"])
@pytest.mark.parametrize("amp", [None, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("big", [False, True], ids=["small", "sd15-geglu"])
def test_efficient_equals_plain_on_cuda(conv, amp, big):
    if big and conv is not None:
        pytest.skip("one large shape is enough")
    tensors = _inputs(conv, big=big)
    tensors[1].requires_grad_(False)
    results = []
    for efficient in (True, False):
        with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
            out = rotated_forward(*tensors, conv=conv, memory_efficient=efficient)
        grads = torch.autograd.grad(out.float().square().mean(), [tensors[0], tensors[3], tensors[4]])
        results.append((out, *grads))
    tol = dict(rtol=2e-2, atol=1e-2) if amp is not None else dict(rtol=1e-4, atol=1e-5)
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, **tol)
    # Rotation in float32 under autocast: the output equals the matmul of the fp32-rotated weight.
    x, weight, bias, a, b = (t.detach() for t in tensors)
    w_rot = rotate_pairs(weight, angles(a, b)).to(amp or torch.float32)
    cast = (lambda t: t.to(amp)) if amp is not None else (lambda t: t)
    expected = (
        F.linear(cast(x), w_rot, cast(bias))
        if conv is None
        else F.conv2d(cast(x), w_rot, cast(bias), conv.stride, conv.padding, conv.dilation, conv.groups)
    )
    torch.testing.assert_close(results[0][0], expected, rtol=0, atol=0)


def _peak_bytes(efficient, tensors, grad):
    """Peak allocation of one forward+backward above the level before it (after a warm-up)."""
    for _ in range(2):  # a warm-up, then the measured pass
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = rotated_forward(*tensors, memory_efficient=efficient)
        kept = torch.cuda.memory_allocated() - base - out.numel() * out.element_size()
        out.backward(grad)
        del out
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        for t in tensors:
            t.grad = None
    return kept, peak


def test_memory_efficient_backward_peak_on_cuda():
    """Forward keeps nothing weight-sized alive; the step peaks at least one weight below plain autograd."""
    tensors = _inputs(None, big=True)
    tensors[1].requires_grad_(False)
    weight_bytes = tensors[1].numel() * tensors[1].element_size()
    grad = torch.ones(tensors[0].shape[0], tensors[1].shape[0], device="cuda")
    kept_eff, peak_eff = _peak_bytes(True, tensors, grad)
    kept_plain, peak_plain = _peak_bytes(False, tensors, grad)
    assert kept_eff < 0.01 * weight_bytes
    assert kept_plain >= weight_bytes
    assert peak_eff <= peak_plain - weight_bytes, (peak_eff / weight_bytes, peak_plain / weight_bytes)
