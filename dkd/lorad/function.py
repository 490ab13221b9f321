"""The rotated Linear/Conv2d op, with a plain and a memory-efficient backward.

The paper (appendix A) notes that LoRaD reconstructs a full-rank rotated weight in the
forward pass and leaves "more memory-efficient rotation strategies" to future work. Under
plain autograd each adapted layer keeps the rotated weight, cos and sin (several
weight-sized buffers per layer) alive until backward. ``RotatedOp`` keeps only what it must
(the input, the frozen weight, bias, ``A`` and ``B``: all tensors that exist anyway) and
recomputes the rotated weight in backward; the gradients of ``A`` and ``B`` are closed form
(``rotation.angle_grad_`` and ``rotation.factor_grads``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .rotation import angle_grad_, angles, factor_grads, rotate_pairs


@dataclass(frozen=True)
class ConvArgs:
    """Arguments of ``F.conv2d`` besides input, weight and bias (zero padding only)."""

    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


def compute_dtype_for(x: torch.Tensor) -> torch.dtype:
    """The dtype the matmul/conv runs in: the autocast dtype when autocast is on, else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def apply_op(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], conv: Optional[ConvArgs]
) -> torch.Tensor:
    """``F.linear`` when ``conv`` is None, else ``F.conv2d`` with ``conv``'s arguments."""
    if conv is None:
        return F.linear(x, weight, bias)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _cast(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if t is None else t.to(dtype)


def rotated_forward_plain(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    lorad_A: torch.Tensor,
    lorad_B: torch.Tensor,
    conv: Optional[ConvArgs],
    compute_dtype: torch.dtype,
) -> torch.Tensor:
    """The reference implementation: the formula under plain autograd."""
    with torch.autocast(x.device.type, enabled=False):
        w_rot = rotate_pairs(weight, angles(lorad_A, lorad_B)).to(compute_dtype)
        return apply_op(x.to(compute_dtype), w_rot, _cast(bias, compute_dtype), conv)


def _op_backward(grad_out, x, w, bias, conv, needs_x, needs_b):
    """Gradients of the op w.r.t. its input, weight (always) and bias."""
    if conv is None:
        grad_x = grad_out @ w if needs_x else None
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        grad_w = g2.T @ x.reshape(-1, x.shape[-1])
        grad_b = g2.sum(0) if needs_b else None
        return grad_x, grad_w, grad_b
    bias_sizes = [w.shape[0]] if bias is not None else None
    return torch.ops.aten.convolution_backward(
        grad_out, x, w, bias_sizes, list(conv.stride), list(conv.padding), list(conv.dilation),
        False, [0, 0], conv.groups, [needs_x, True, needs_b and bias is not None],
    )


class RotatedOp(torch.autograd.Function):
    """``op(x, R_{AB} W, b)`` that saves only ``x, W, b, A, B`` for backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, lorad_A, lorad_B, conv, compute_dtype):
        with torch.autocast(x.device.type, enabled=False):
            w_rot = rotate_pairs(weight, angles(lorad_A, lorad_B)).to(compute_dtype)
            out = apply_op(x.to(compute_dtype), w_rot, _cast(bias, compute_dtype), conv)
        ctx.save_for_backward(x, weight, bias, lorad_A, lorad_B)
        ctx.conv, ctx.compute_dtype = conv, compute_dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, lorad_A, lorad_B = ctx.saved_tensors
        dtype = ctx.compute_dtype
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        with torch.autocast(grad_out.device.type, enabled=False):
            theta = angles(lorad_A, lorad_B)
            w_rot = rotate_pairs(weight, theta)
            grad_x, grad_w_rot, grad_b = _op_backward(
                grad_out.to(dtype), x.to(dtype), w_rot.to(dtype), bias, ctx.conv, needs_x, needs_b
            )
            # d(R W)/dW = R^T: rotate the gradient back (only if the base weight is trained).
            grad_weight = rotate_pairs(grad_w_rot, -theta).to(weight.dtype) if needs_w else None
            del theta
            grad_theta = angle_grad_(w_rot, grad_w_rot)
            del grad_w_rot
            grad_A, grad_B = factor_grads(grad_theta, lorad_A, lorad_B)
        return (
            _cast(grad_x, x.dtype),
            grad_weight,
            _cast(grad_b, bias.dtype) if grad_b is not None else None,
            grad_A,
            grad_B,
            None,
            None,
        )


def rotated_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    lorad_A: torch.Tensor,
    lorad_B: torch.Tensor,
    conv: Optional[ConvArgs] = None,
    memory_efficient: bool = True,
) -> torch.Tensor:
    """``op(x, R_{AB} W, b)`` in the autocast dtype (or x's dtype), angles in float32."""
    compute_dtype = compute_dtype_for(x)
    if memory_efficient:
        return RotatedOp.apply(x, weight, bias, lorad_A, lorad_B, conv, compute_dtype)
    return rotated_forward_plain(x, weight, bias, lorad_A, lorad_B, conv, compute_dtype)
