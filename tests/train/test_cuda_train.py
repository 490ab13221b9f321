"""The trainer on a CUDA device (skipped without one): what the CPU tests cannot show.

* DKD trains in bf16 with a bf16 teacher; an interrupted and resumed run ends where the
  uninterrupted one does (bit-identical if the kernels are deterministic; printed).
* The speed settings compiled with inductor (``channels_last`` + the U-Net's transformer and
  ResNet blocks, LoRaD on Linear and Conv2d) keep outputs and gradients as close to a float32
  reference as eager bf16 is.
* The embedding cache on a GPU: rows encoded in blocks of 64 against the same prompts encoded
  in training micro-batches of 16, for a CLIP ViT-L-shaped text encoder (printed: the share of
  bit-identical values and the largest difference; asserted: within the dtype's rounding).

On a bare GPU machine without open_clip (which the tiny tokenizer is built from), set
``DKD_TINY_SD`` to a tiny SD folder written elsewhere with
``python -c "from dkd.backbones.tiny import save_tiny_backbone as s; s('sd', 'DIR', seed=1)"``.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import pytest
import torch

from dkd.adapters import AdapterSpec
from dkd.backbones import load_teacher
from dkd.train.checkpoint import load_state, training_cost
from dkd.train.config import DistillConfig
from dkd.train.embeddings import EmbeddingCache
from dkd.train.loop import Distiller, distill
from dkd.train.models import build_role
from dkd.train.speed import tune_for_speed
from tests.train.test_loop import killed_at_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
PROMPTS = [
    f"a photo of {thing} number {i}, {style}"
    for i in range(8)
    for thing, style in (("a red cube", "studio light"), ("two cats", "oil painting"))
]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    if os.environ.get("DKD_TINY_SD"):
        return os.environ["DKD_TINY_SD"]
    from dkd.backbones.tiny import save_tiny_backbone

    return str(save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd"), seed=1))


def _teacher(folder):
    return load_teacher("tiny-sd", folder, dtype=torch.bfloat16, device="cuda")


def _config(**overrides):
    values = dict(
        backbone="tiny-sd",
        student=AdapterSpec("tiny-sd", "student", "lorad", rank=4),
        fake=AdapterSpec("tiny-sd", "fake", "lorad", rank=2),
        batch_size=8,
        per_device_batch=4,
        max_steps=4,
        checkpoint_every=2,
        log_every=1,
        seed=3,
        mixed_precision="bf16",
    )
    values.update(overrides)
    return DistillConfig(**values)


def _trained(result):
    return {
        f"{role}.{n}": p.detach().clone()
        for role in ("student", "fake")
        for n, p in getattr(result, role).named_parameters()
        if p.requires_grad
    }


def test_dkd_trains_in_bf16_and_resumes(tiny_sd, tmp_path, monkeypatch):
    teacher = _teacher(tiny_sd)
    frozen = {n: p.clone() for n, p in teacher.denoiser.named_parameters()}
    initial = {
        f"{role}.{n}": p.detach().clone()
        for role, model in Distiller(_config(), _teacher(tiny_sd), PROMPTS, tmp_path / "init").models.items()
        for n, p in model.named_parameters()
        if p.requires_grad
    }
    result = distill(_config(), teacher, PROMPTS, tmp_path / "a", progress=False)
    reference = _trained(result)
    memory = training_cost(load_state(result.checkpoint))["memory_mb"]  # Table 4: this GPU's peak, MiB
    assert 0 < memory <= torch.cuda.get_device_properties(0).total_memory / 2**20
    assert all(torch.equal(p, frozen[n]) for n, p in teacher.denoiser.named_parameters())
    assert reference.keys() == initial.keys()
    assert all(p.dtype == torch.float32 and p.isfinite().all() for p in reference.values())
    assert all(not torch.equal(reference[n], initial[n]) for n in reference)

    killed_at_step(
        3, lambda: distill(_config(), _teacher(tiny_sd), PROMPTS, tmp_path / "b", progress=False), monkeypatch
    )  # between the checkpoints of steps 2 and 4
    resumed = _trained(distill(_config(), _teacher(tiny_sd), PROMPTS, tmp_path / "b", progress=False))
    identical = sum(torch.equal(resumed[n], reference[n]) for n in reference)
    print(f"\nresumed run: {identical} of {len(reference)} trained tensors bit-identical to the uninterrupted run")
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=1e-3, atol=1e-5, msg=name)


def _forward_backward(teacher, model, autocast=True):
    g = torch.Generator(device="cuda").manual_seed(3)
    x = torch.randn(4, *teacher.latent_shape, generator=g, device="cuda")
    t = torch.tensor([999, 700, 400, 50], device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        out = teacher.predict(x, t, teacher.encode(PROMPTS[:4]), denoiser=model)
    out.float().square().mean().backward()
    return out.detach().float(), {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}


def _relative_error(got, reference):
    return ((got - reference).norm() / reference.norm()).item()


def test_compiled_resnet_and_transformer_blocks_keep_outputs_and_gradients(tiny_sd):
    """Compiled bf16 is as close to a float32 reference as eager bf16 (bf16 rounding differs by
    kernel fusion, so the two bf16 results are compared through the float32 one)."""
    spec = AdapterSpec("tiny-sd", "student", "lorad", rank=4, init="xavier_xavier", layers="linear+conv")
    teacher = _teacher(tiny_sd)
    torch.manual_seed(0)
    eager = build_role(teacher, spec)  # fp32 adapter weights on the bf16 teacher, as in training
    compiled = copy.deepcopy(eager)
    tune_for_speed([compiled], channels_last=True, compile_blocks=("BasicTransformerBlock", "ResnetBlock2D"))
    teacher32 = load_teacher("tiny-sd", tiny_sd, device="cuda")
    exact = build_role(teacher32, spec)
    exact.load_state_dict(eager.state_dict())
    results = {}
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        results["fp32"] = _forward_backward(teacher32, exact, autocast=False)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    results["eager"] = _forward_backward(teacher, eager)
    results["compiled"] = _forward_backward(teacher, compiled)
    torch._dynamo.reset()
    (out32, grads32), (out_e, grads_e), (out_c, grads_c) = results["fp32"], results["eager"], results["compiled"]
    assert _relative_error(out_c, out32) <= 1.5 * _relative_error(out_e, out32) + 1e-3
    assert grads_c.keys() == grads_e.keys() == grads32.keys() and len(grads32) > 0
    for name, reference in grads32.items():
        bound = 1.5 * _relative_error(grads_e[name], reference) + 1e-3
        assert _relative_error(grads_c[name], reference) <= bound, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_embedding_cache_against_micro_batch_encoding(tiny_sd, tmp_path, dtype):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    clip_l = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, projection_dim=768, num_hidden_layers=12, num_attention_heads=12
        )
    )
    teacher = dataclasses.replace(
        load_teacher("tiny-sd", tiny_sd, device="cuda"),
        text_encoder=clip_l.to("cuda", dtype).eval().requires_grad_(False),
    )
    prompts = [f"{p}, variation {k}" for k in range(16) for p in PROMPTS]  # 256 prompts
    cache = EmbeddingCache(tmp_path, teacher, prompts, block_size=128, encode_batch=64)
    cache.fill(progress=False)
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(0)).tolist()
    equal = total = 0
    worst = 0.0
    for start in range(0, len(order), 16):
        batch = [prompts[i] for i in order[start : start + 16]]
        cached, direct = cache.encode(batch).hidden_states, teacher.encode(batch).hidden_states
        assert cached.dtype == direct.dtype == dtype and cached.shape == direct.shape
        equal += (cached == direct).sum().item()
        total += direct.numel()
        worst = max(worst, ((cached.float() - direct.float()).abs().max() / direct.float().abs().max()).item())
        torch.testing.assert_close(
            cached,
            direct,
            rtol=0.02 if dtype == torch.bfloat16 else 1e-3,
            atol=0.02 * direct.float().abs().max().item(),
        )
    print(
        f"\nembedding cache ({dtype}, {torch.cuda.get_device_name()}): {equal / total:.4%} of the values "
        f"bit-identical to micro-batch encoding; largest difference {worst:.2e} of the largest value"
    )
