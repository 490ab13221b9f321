"""The math of LoRaD (paper section 3.2), as pure functions of tensors.

Orientation (``docs/reference.md`` section 1): a weight in PyTorch layout ``(out, in)``
(a Conv2d weight flattened to ``(out, in * kh * kw)``) is rotated row by row, in pairs of
*input* coordinates ``(W[o, 2j], W[o, 2j+1])`` by the angle ``theta[o, j]``::

    W'[o, 2j]     = cos(theta) W[o, 2j] - sin(theta) W[o, 2j+1]
    W'[o, 2j + 1] = sin(theta) W[o, 2j] + cos(theta) W[o, 2j+1]

with ``theta = (A B)^T``, ``A`` of shape ``(in/2, r)`` and ``B`` of shape ``(r, out)``.
Every output row keeps its norm; only its direction changes.

Everything here is elementwise (Eq. 6 and 8): no dense rotation matrix is ever built.
Angles and the rotation are computed in float32 (float64 if the inputs are float64), whatever
the dtype of the weight, so that bf16/fp16 training keeps every row norm to float32 precision
(the cos/sin pairs are orthogonal whatever the angles' own rounding: with TF32 matmuls on, as
the trainer sets on CUDA, the angles ``A B`` carry TF32's 10-bit mantissa, the norms do not).
"""

from __future__ import annotations

import torch


def rotation_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, float32 otherwise (never a half type)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def angles(lorad_A: torch.Tensor, lorad_B: torch.Tensor) -> torch.Tensor:
    """``theta = (A B)^T``: shape ``(out, in/2)``, in the rotation dtype."""
    dtype = rotation_dtype(lorad_A, lorad_B)
    return lorad_B.to(dtype).T @ lorad_A.to(dtype).T


def rotate_pairs(weight: torch.Tensor, theta: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate each pair of input coordinates of each row of ``weight`` by ``theta``.

    ``weight`` has shape ``(out, ...)`` whose trailing dims flatten to an even ``in``;
    ``theta`` has shape ``(out, in/2)``. Returns a tensor shaped like ``weight`` in the dtype
    of ``theta`` (the rotation is computed in that dtype).

    Under autograd: the elementwise formula of Eq. 6/8. Otherwise fused: each pair is a
    complex number ``w = W[2j] + i W[2j+1]`` and the rotation is ``w * exp(i theta)`` (three
    kernels: copy into ``out``, ``polar``, complex multiply), the way RoPE is usually applied.
    """
    rows = weight.shape[0]
    if torch.is_grad_enabled() and (weight.requires_grad or theta.requires_grad):
        first, second = weight.reshape(rows, -1, 2).to(theta.dtype).unbind(-1)
        cos, sin = theta.cos(), theta.sin()
        rotated = torch.stack((cos * first - sin * second, sin * first + cos * second), dim=-1)
        return rotated.reshape(weight.shape)
    if out is None:
        out = torch.empty(weight.shape, dtype=theta.dtype, device=weight.device)
    out.copy_(weight)
    rotor = torch.polar(torch.ones((), dtype=theta.dtype, device=theta.device).expand_as(theta), theta)
    torch.view_as_complex(out.view(rows, -1, 2)).mul_(rotor)
    return out


BLOCK_ELEMS = 2**24  # elements per block of rows in the memory-efficient backward (SD layers: one block)


def row_blocks(rows: int, row_size: int, max_blocks: int = 8, block_elems: int | None = None) -> list[slice]:
    """Split ``rows`` into up to ``max_blocks`` slices of about ``block_elems`` elements.

    Working block by block keeps the angle, cos/sin and weight-gradient buffers at a fraction
    of the weight's size; small layers stay in one block (one large matmul is faster).
    """
    block_elems = block_elems or BLOCK_ELEMS
    blocks = max(1, min(max_blocks, rows, -(-rows * row_size // block_elems)))
    size = -(-rows // blocks)
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def rotated_weight(weight: torch.Tensor, lorad_A: torch.Tensor, lorad_B: torch.Tensor) -> torch.Tensor:
    """``R_{AB} W`` (Eq. 10) in the rotation dtype.

    Under autograd: the differentiable formula. Otherwise built block of rows by block of rows
    into one buffer, so that the full angle matrix never exists.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (weight, lorad_A, lorad_B)):
        return rotate_pairs(weight, angles(lorad_A, lorad_B))
    dtype = rotation_dtype(lorad_A, lorad_B)
    out = torch.empty(weight.shape, dtype=dtype, device=weight.device)
    for rows in row_blocks(weight.shape[0], weight[0].numel()):
        rotate_pairs(weight[rows], angles(lorad_A, lorad_B[:, rows]), out=out[rows])
    return out


def angle_grad_(rotated: torch.Tensor, grad_rotated: torch.Tensor) -> torch.Tensor:
    """Closed-form ``dL/dtheta`` given ``W' = R_theta W`` and ``dL/dW'``; overwrites ``rotated``.

    ``d W'[2j] / d theta = -W'[2j+1]`` and ``d W'[2j+1] / d theta = W'[2j]``, hence
    ``dL/dtheta = g[2j+1] W'[2j] - g[2j] W'[2j+1] = Im(g * conj(w'))`` with pairs read as
    complex numbers: cos and sin are not needed. Computed in place over ``rotated``, whose
    imaginary slots are returned as a strided ``(out, in/2)`` view, so that backward holds no
    extra weight-sized buffer.
    """
    rows = rotated.shape[0]
    w = torch.view_as_complex(rotated.view(rows, -1, 2))
    # copied into a fresh buffer, not reshaped: a Conv2d weight gradient may come back channels_last
    # (oneDNN/cuDNN with NHWC inputs) where torch.compile's meta functions predict a contiguous one
    g = torch.empty(rotated.shape, dtype=rotated.dtype, device=rotated.device).copy_(grad_rotated)
    w.conj_physical_().mul_(torch.view_as_complex(g.view(rows, -1, 2)))
    return torch.view_as_real(w)[..., 1]


def factor_grads(
    grad_theta: torch.Tensor, lorad_A: torch.Tensor, lorad_B: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``A`` and ``B`` from ``dL/dtheta`` where ``theta = (A B)^T``.

    For a block of rows (``grad_theta[rows]`` with ``B[:, rows]``) this returns that block's
    contribution to ``dL/dA`` and the columns ``rows`` of ``dL/dB``; both in ``grad_theta``'s
    dtype.
    """
    grad_t = grad_theta.T.contiguous()  # dL/d(A B), shape (in/2, out)
    return grad_t @ lorad_B.to(grad_t.dtype).T, lorad_A.to(grad_t.dtype).T @ grad_t
