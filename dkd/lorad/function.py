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

import torch
import torch.nn.functional as F

from .rotation import angle_grad_, angles, factor_grads, rotate_pairs, rotated_weight, row_blocks


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


def apply_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv: ConvArgs | None) -> torch.Tensor:
    """``F.linear`` when ``conv`` is None, else ``F.conv2d`` with ``conv``'s arguments."""
    if conv is None:
        return F.linear(x, weight, bias)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


def rotated_forward_plain(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lorad_A: torch.Tensor,
    lorad_B: torch.Tensor,
    conv: ConvArgs | None,
    compute_dtype: torch.dtype,
) -> torch.Tensor:
    """The reference implementation: the formula under plain autograd."""
    with torch.autocast(x.device.type, enabled=False):
        w_rot = rotated_weight(weight, lorad_A, lorad_B).to(compute_dtype)
        return apply_op(x.to(compute_dtype), w_rot, _cast(bias, compute_dtype), conv)


def _input_and_bias_grads(grad_out, x, w, bias, conv, needs_x, needs_b):
    needs_b = needs_b and bias is not None
    if conv is None:
        grad_x = grad_out @ w if needs_x else None
        grad_b = grad_out.reshape(-1, grad_out.shape[-1]).sum(0) if needs_b else None
        return grad_x, grad_b
    grad_x, _, grad_b = torch.ops.aten.convolution_backward(
        grad_out,
        x,
        w,
        [w.shape[0]] if needs_b else None,
        list(conv.stride),
        list(conv.padding),
        list(conv.dilation),
        False,
        [0, 0],
        conv.groups,
        [needs_x, False, needs_b],
    )
    return grad_x, grad_b


def _weight_grad(grad_out, x, w_rot, rows, conv):
    """``dL/dW'`` for the output rows ``rows`` of the rotated weight ``w_rot``."""
    if conv is None:
        return grad_out.reshape(-1, grad_out.shape[-1])[:, rows].T @ x.reshape(-1, x.shape[-1])
    grad_block = grad_out[:, rows].contiguous()
    w_block = w_rot[rows].to(x.dtype)
    groups = conv.groups if rows == slice(None) else 1
    return torch.ops.aten.convolution_backward(
        grad_block,
        x,
        w_block,
        None,
        list(conv.stride),
        list(conv.padding),
        list(conv.dilation),
        False,
        [0, 0],
        groups,
        [False, True, False],
    )[1]


class RotatedOp(torch.autograd.Function):
    """``op(x, R_{AB} W, b)`` that saves only ``x, W, b, A, B`` for backward.

    Backward rebuilds ``R_{AB} W`` once (for the input gradient), then works through blocks
    of output rows: the block's weight gradient, the angle gradient written in place over the
    block of the rotated weight, and the block's share of ``dL/dA`` and ``dL/dB``. Beyond the
    rotated weight it holds one block-sized buffer at a time.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lorad_A, lorad_B, conv, compute_dtype):
        with torch.autocast(x.device.type, enabled=False):
            w_rot = rotated_weight(weight, lorad_A, lorad_B).to(compute_dtype)
            out = apply_op(x.to(compute_dtype), w_rot, _cast(bias, compute_dtype), conv)
        ctx.save_for_backward(x, weight, bias, lorad_A, lorad_B)
        ctx.conv, ctx.compute_dtype = conv, compute_dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, lorad_A, lorad_B = ctx.saved_tensors
        conv, dtype = ctx.conv, ctx.compute_dtype
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        with torch.autocast(grad_out.device.type, enabled=False):
            w_rot = rotated_weight(weight, lorad_A, lorad_B)
            grad_out, x_c = grad_out.to(dtype), x.to(dtype)
            grad_x, grad_b = _input_and_bias_grads(grad_out, x_c, w_rot.to(dtype), bias, conv, needs_x, needs_b)
            grad_A = torch.zeros(lorad_A.shape, dtype=w_rot.dtype, device=w_rot.device)
            grad_B = torch.empty(lorad_B.shape, dtype=w_rot.dtype, device=w_rot.device)
            grad_weight = torch.empty_like(weight) if needs_w else None
            grouped = conv is not None and conv.groups > 1
            blocks = [slice(None)] if grouped else row_blocks(weight.shape[0], weight[0].numel())
            for rows in blocks:
                grad_w_rot = _weight_grad(grad_out, x_c, w_rot, rows, conv)
                if needs_w:  # d(R W)/dW = R^T: rotate the gradient back
                    grad_weight[rows] = rotate_pairs(grad_w_rot, -angles(lorad_A, lorad_B[:, rows]))
                grad_theta = angle_grad_(w_rot[rows], grad_w_rot)
                del grad_w_rot
                block_A, grad_B[:, rows] = factor_grads(grad_theta, lorad_A, lorad_B[:, rows])
                grad_A += block_A
        return (
            _cast(grad_x, x.dtype),
            grad_weight,
            _cast(grad_b, bias.dtype) if grad_b is not None else None,
            grad_A.to(lorad_A.dtype),
            grad_B.to(lorad_B.dtype),
            None,
            None,
        )


def rotated_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lorad_A: torch.Tensor,
    lorad_B: torch.Tensor,
    conv: ConvArgs | None = None,
    memory_efficient: bool = True,
) -> torch.Tensor:
    """``op(x, R_{AB} W, b)`` in the autocast dtype (or x's dtype), angles in float32."""
    compute_dtype = compute_dtype_for(x)
    if memory_efficient:
        return RotatedOp.apply(x, weight, bias, lorad_A, lorad_B, conv, compute_dtype)
    return rotated_forward_plain(x, weight, bias, lorad_A, lorad_B, conv, compute_dtype)
