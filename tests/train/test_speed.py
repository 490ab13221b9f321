"""Speed settings (channels_last, compiled repeated blocks) leave outputs and gradients unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dkd.adapters import AdapterSpec, apply_adapter
from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.train.speed import repeated_blocks, tune_for_speed


@pytest.fixture(scope="module", params=["sd", "pixart"])
def teacher(request, tmp_path_factory):
    folder = save_tiny_backbone(request.param, tmp_path_factory.mktemp(request.param), seed=1)
    return load_teacher(f"tiny-{request.param}", str(folder))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    yield
    torch._dynamo.reset()


def _student(teacher, layers="linear"):
    # Xavier-initialised A and B: the adapter rotates from the start, so its gradients are non-trivial
    spec = AdapterSpec(teacher.spec.name, role="student", method="lorad", rank=4, init="xavier_xavier", layers=layers)
    torch.manual_seed(0)
    return apply_adapter(copy.deepcopy(teacher.denoiser), spec)


def _forward_backward(teacher, model):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, *teacher.latent_shape, generator=g)
    t = torch.tensor([999, 400])
    out = teacher.predict(x, t, teacher.encode(["a red apple", "a handwritten digit seven"]), denoiser=model)
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_repeated_blocks_are_the_transformer_blocks(teacher):
    blocks = repeated_blocks(teacher.denoiser)
    assert len(blocks) > 0 and all(type(b).__name__ == "BasicTransformerBlock" for b in blocks)
    with pytest.raises(ValueError, match="no module of the classes"):
        tune_for_speed([nn.Linear(2, 2)], compile_blocks=True)


def test_named_block_classes(teacher):
    names = ("BasicTransformerBlock", "ResnetBlock2D")
    found = {type(b).__name__ for b in repeated_blocks(teacher.denoiser, names)}
    # the tiny SD U-Net has both kinds; PixArt has transformer blocks only (a missing class is no error)
    assert found == (set(names) if teacher.spec.family == "sd" else {"BasicTransformerBlock"})
    with pytest.raises(ValueError, match="no module of the classes"):
        tune_for_speed([teacher.denoiser], compile_blocks=("NoSuchBlock",))


RESNET = ("BasicTransformerBlock", "ResnetBlock2D")


# channels_last alone, with the compiled transformer blocks (the trainer's setting), and with the ResNet
# blocks compiled too; tracing is the slow part (each block is compiled), so no case repeats another's.
@pytest.mark.parametrize(
    "channels_last,compile_blocks,layers",
    [
        (True, False, "linear"),
        (True, True, "linear"),
        (True, RESNET, "linear+conv"),
    ],
)
def test_speed_settings_keep_outputs_and_gradients(teacher, channels_last, compile_blocks, layers):
    reference = _student(teacher, layers)
    tuned = copy.deepcopy(reference)
    # aot_eager traces forward and backward as inductor does (LoRaD's autograd.Function included)
    # without compiling kernels, which would take minutes on a CPU
    tune_for_speed(
        [tuned],
        channels_last=channels_last,
        compile_blocks=compile_blocks,
        compile_options={"backend": "aot_eager", "fullgraph": True},
    )
    if channels_last:
        convs = [m.weight for m in tuned.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    if compile_blocks:
        names = None if compile_blocks is True else compile_blocks
        assert all(b._compiled_call_impl is not None for b in repeated_blocks(tuned, names))
    out_ref, grads_ref = _forward_backward(teacher, reference)
    out, grads = _forward_backward(teacher, tuned)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    assert grads.keys() == grads_ref.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-4, atol=1e-7, msg=name)
