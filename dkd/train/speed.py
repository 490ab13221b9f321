"""Speed settings of a run that do not change what is computed: memory format and compilation.

``channels_last`` stores the convolution weights (and so the activations they produce) as NHWC,
which cuDNN's bf16/fp16 kernels prefer. ``compile_blocks`` compiles, with ``torch.compile``, each
repeated block of the denoiser (diffusers' ``_repeated_blocks``: ``BasicTransformerBlock`` in the
SD U-Net and in PixArt-α), the regional compilation diffusers' ``compile_repeated_blocks`` does:
the blocks share one compiled graph per input shape, so compiling takes seconds, not minutes, and
adapters injected by PEFT inside the blocks are compiled with them. ``compile_blocks`` may also
name the block classes, e.g. ``("BasicTransformerBlock", "ResnetBlock2D")`` to compile the U-Net's
ResNet blocks too (GroupNorm, SiLU, convolution and their autocast casts fused per block).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

DEFAULT_BLOCKS = ("BasicTransformerBlock",)
RECOMPILE_LIMIT = 64  # (shapes of the U-Net's levels) x (batch sizes) x (grad / no grad) x (adapter kinds)


def repeated_blocks(model: nn.Module, names: Sequence[str] | None = None) -> list[nn.Module]:
    """The modules of ``model`` whose class is one of ``names`` (default: the model's
    ``_repeated_blocks``, diffusers' list for regional compilation)."""
    names = tuple(names or getattr(model, "_repeated_blocks", None) or DEFAULT_BLOCKS)
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no module of the classes {names} to compile; "
            "set compile_blocks to false for it."
        )
    return blocks


def tune_for_speed(
    models: Iterable[nn.Module],
    *,
    channels_last: bool = False,
    compile_blocks: bool | Sequence[str] = False,
    compile_options: dict | None = None,
) -> None:
    """Apply the speed settings to ``models`` in place (the teacher's denoiser, student, fake).

    ``compile_blocks``: ``True`` compiles each model's ``_repeated_blocks``, a sequence of class
    names the modules of those classes; ``compile_options`` go to ``torch.compile`` (default:
    inductor)."""
    models = list(models)
    if compile_blocks:
        import torch._dynamo as dynamo

        dynamo.config.recompile_limit = max(dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        dynamo.config.accumulated_recompile_limit = max(
            dynamo.config.accumulated_recompile_limit, 4 * dynamo.config.recompile_limit
        )
    for model in models:
        if channels_last:
            model.to(memory_format=torch.channels_last)
        if compile_blocks:
            names = None if compile_blocks is True else compile_blocks
            for block in repeated_blocks(model, names):
                block.compile(**(compile_options or {}))
