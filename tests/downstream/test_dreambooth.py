"""DreamBooth with LoRaD / LoRA / full fine-tuning (paper F.2): the prior-preservation loss against a float64
hand computation, the adapters on the tiny SD U-Net through diffusers' ``add_adapter`` (what trains, the
step-0 output, one real Adam step, parameter counts against the closed forms, save/load and merge), the
paper's settings and validation, and the photos' transforms against pixel arithmetic."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from peft import get_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from dkd.backbones.tiny import tiny_unet
from dkd.downstream.dreambooth.method import (
    DREAMBOOTH_TARGETS,
    DreamBoothConfig,
    adapter_config,
    apply_adapter,
    class_prompt,
    instance_images,
    instance_prompt,
    load_adapter,
    prior_preservation_loss,
    save_adapter,
    trainable_parameters,
)
from dkd.lorad import LoRaDConfig
from dkd.train.export import merge_adapters

ADAPTER_KEYS = {"lorad": ("lorad_A", "lorad_B"), "lora": ("lora_A", "lora_B")}


# -- the prior-preservation loss ---------------------------------------------------------------------
def _hand_mse(pred: np.ndarray, target: np.ndarray) -> float:
    values = [(float(p) - float(t)) ** 2 for p, t in zip(pred.ravel(), target.ravel())]
    return sum(values) / len(values)


def test_prior_preservation_loss_matches_a_float64_hand_computation():
    pred = torch.tensor(
        [[[1.0, -2.0, 0.5]], [[3.0, 0.25, -1.0]], [[0.0, 4.0, 2.0]], [[-1.5, 1.0, 1.0]]], requires_grad=True
    )
    target = torch.tensor([[[0.0, -1.0, 0.5]], [[1.0, 0.25, 1.0]], [[2.0, 1.0, -2.0]], [[0.5, 0.0, 1.0]]])
    p, t = pred.detach().numpy().astype(np.float64), target.numpy().astype(np.float64)
    instance, prior = _hand_mse(p[:2], t[:2]), _hand_mse(p[2:], t[2:])
    assert (instance, prior) == (pytest.approx((1 + 1 + 4 + 4) / 6), pytest.approx((4 + 9 + 16 + 4 + 1) / 6))
    loss, logs = prior_preservation_loss(pred, target, prior_weight=0.75)
    assert loss.dtype == torch.float32
    assert float(loss.detach()) == pytest.approx(instance + 0.75 * prior, rel=1e-7)
    assert float(logs["instance_loss"]) == pytest.approx(instance, rel=1e-7)
    assert float(logs["prior_loss"]) == pytest.approx(prior, rel=1e-7)
    assert not logs["instance_loss"].requires_grad and not logs["prior_loss"].requires_grad
    loss.backward()  # d/dpred: 2 (p - t) / 6 on the instance half, 0.75 * 2 (p - t) / 6 on the class half
    expected = 2 * (p - t) / 6 * np.array([1, 1, 0.75, 0.75])[:, None, None]
    np.testing.assert_allclose(pred.grad.numpy(), expected, rtol=1e-6)


def test_prior_preservation_loss_of_half_precision_inputs_is_float32():
    generator = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 3, 3, generator=generator), torch.randn(2, 4, 3, 3, generator=generator)
    half_pred, half_target = pred.bfloat16(), target.bfloat16()
    loss, logs = prior_preservation_loss(half_pred, half_target, prior_weight=1.0)
    p, t = half_pred.double().numpy(), half_target.double().numpy()
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(_hand_mse(p[:1], t[:1]) + _hand_mse(p[1:], t[1:]), rel=1e-6)


@pytest.mark.parametrize(
    "pred,target,weight,message",
    [
        (torch.zeros(3, 2), torch.zeros(3, 2), 1.0, "two equal halves"),
        (torch.zeros(0, 2), torch.zeros(0, 2), 1.0, "two equal halves"),
        (torch.tensor(1.0), torch.tensor(1.0), 1.0, "two equal halves"),
        (torch.zeros(2, 2), torch.zeros(2, 3), 1.0, "one shape"),
        (torch.zeros(2, 2), torch.zeros(2, 2), -1.0, "prior_weight"),
        (torch.zeros(2, 2), torch.zeros(2, 2), float("nan"), "prior_weight"),
    ],
)
def test_prior_preservation_loss_refuses_bad_input(pred, target, weight, message):
    with pytest.raises(ValueError, match=message):
        prior_preservation_loss(pred, target, prior_weight=weight)


# -- settings and prompts ----------------------------------------------------------------------------
def test_paper_settings_per_method():
    ft, lora, lorad = (DreamBoothConfig.paper(m) for m in ("ft", "lora", "lorad"))
    assert (ft.lr, ft.steps) == (5e-6, 800)
    assert (lora.lr, lora.steps, lora.rank) == (1e-4, 1500, 64) == (lorad.lr, lorad.steps, lorad.rank)
    for config in (ft, lora, lorad):
        assert (config.prior_weight, config.class_images, config.batch_size, config.resolution) == (1.0, 200, 1, 512)
        assert config.targets == ("to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_v_proj")
        assert config.center_crop is False and config.grad_clip == 1.0  # diffusers' max_grad_norm
    assert DreamBoothConfig.paper("lorad", rank=4, steps=3).rank == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        lorad.rank = 8


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"method": "dora"}, "method must be one of"),
        ({"lr": 0}, "lr must be"),
        ({"lr": float("inf")}, "lr must be"),
        ({"steps": 0}, "steps must be"),
        ({"steps": 1.5}, "steps must be"),
        ({"rank": True}, "rank must be"),
        ({"prior_weight": -0.5}, "prior_weight must be"),
        ({"class_images": 0}, "class_images must be"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"resolution": 500}, "resolution must be a positive multiple of 8"),
        ({"seed": "0"}, "seed must be"),
        ({"center_crop": 1}, "center_crop must be a bool"),
        ({"grad_clip": 0}, "grad_clip must be None or a finite number > 0"),
        ({"targets": ()}, "targets must be"),
        ({"targets": "to_q"}, "targets must be"),
        ({"targets": ("to_q", "")}, "targets must be"),
    ],
)
def test_config_validation(changes, message):
    settings = {"method": "lorad", "lr": 1e-4, "steps": 10, **changes}
    with pytest.raises(ValueError, match=message):
        DreamBoothConfig(**settings)
    if "method" in changes:
        with pytest.raises(ValueError, match=message):
            DreamBoothConfig.paper(changes["method"])


def test_prompts():
    assert instance_prompt("dog") == "a photo of sks dog"
    assert instance_prompt("teapot", identifier="zwx") == "a photo of zwx teapot"
    assert class_prompt("backpack") == "a photo of backpack"
    for bad in (lambda: instance_prompt(""), lambda: class_prompt("  "), lambda: instance_prompt("dog", "s k")):
        with pytest.raises(ValueError):
            bad()


# -- adapters on the tiny SD U-Net -------------------------------------------------------------------
def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An instance example then a class example: noisy latents, timesteps, text states."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    return latents, torch.tensor([999, 400]), torch.randn(2, 5, 16, generator=generator)


def _output(unet: nn.Module, seed: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return unet(*_inputs(seed)).sample


def _base_unet() -> nn.Module:
    torch.manual_seed(0)
    return tiny_unet().eval()


def _config(method: str, **changes) -> DreamBoothConfig:
    return DreamBoothConfig.paper(method, rank=4, **changes)


def _matched_linears(targets) -> list[nn.Linear]:
    """The nn.Linear modules of the tiny U-Net whose name is a target or ends in ``.target`` (PEFT's rule)."""
    modules = []
    for name, module in tiny_unet().named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            modules.append(module)
    return modules


def _adam_step(unet: nn.Module, lr: float) -> None:
    """One Adam step on the prior-preservation loss of an epsilon-prediction batch."""
    latents, timesteps, states = _inputs(1)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.Adam([p for p in unet.parameters() if p.requires_grad], lr=lr)
    loss, _ = prior_preservation_loss(unet(latents, timesteps, states).sample, noise, prior_weight=1.0)
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("method", ["lorad", "lora"])
def test_adapter_trains_alone_starts_at_the_base_and_moves_after_one_adam_step(method):
    unet = _base_unet()
    base = {name: p.detach().clone() for name, p in unet.named_parameters()}
    base_output = _output(unet)
    config = _config(method)
    assert apply_adapter(unet, config) is unet
    assert isinstance(unet.peft_config["default"], type(adapter_config(config)))
    trainable = {name for name, p in unet.named_parameters() if p.requires_grad}
    assert trainable and all(any(f".{key}." in name for key in ADAPTER_KEYS[method]) for name in trainable)
    frozen = {name: p for name, p in unet.named_parameters() if not p.requires_grad}
    assert len(frozen) == len(base)  # every base weight kept, frozen, under PEFT's base_layer names
    assert torch.equal(_output(unet), base_output)  # LoRaD: A = 0; LoRA "gaussian": B = 0
    _adam_step(unet, config.lr)
    assert not torch.equal(_output(unet), base_output)
    unwrapped = {name.replace(".base_layer.", "."): p for name, p in frozen.items()}
    assert unwrapped.keys() == base.keys()
    assert all(torch.equal(unwrapped[name], base[name]) for name in base)


@pytest.mark.parametrize("method,per_linear", [("lorad", lambda i, o: i // 2 + o), ("lora", lambda i, o: i + o)])
@pytest.mark.parametrize("rank", [4, 64])
def test_trainable_count_is_the_closed_form(method, per_linear, rank):
    """LoRaD: r (in/2 + out) per adapted Linear (docs/lorad.md); LoRA: r (in + out)."""
    config = DreamBoothConfig.paper(method, rank=rank)
    linears = _matched_linears(config.targets)
    assert len(linears) == 32  # to_q/to_k/to_v/to_out.0 of 8 attentions (no add_k_proj/add_v_proj in SD)
    expected = sum(rank * per_linear(m.in_features, m.out_features) for m in linears)
    assert trainable_parameters(apply_adapter(_base_unet(), config)) == expected


def test_full_fine_tuning_trains_every_parameter():
    unet = _base_unet().requires_grad_(False)
    total = sum(p.numel() for p in unet.parameters())
    assert adapter_config(_config("ft")) is None
    apply_adapter(unet, _config("ft"))
    assert all(p.requires_grad for p in unet.parameters())
    assert trainable_parameters(unet) == total
    assert not getattr(unet, "_hf_peft_config_loaded", False)


def test_lorad_config_follows_the_project_convention():
    config = adapter_config(_config("lorad", targets=("to_q", "to_v")))
    assert isinstance(config, LoRaDConfig)
    assert (config.r, config.init_weights, config.target_modules) == (4, "zero_xavier", {"to_q", "to_v"})
    lora = adapter_config(_config("lora"))
    assert (lora.r, lora.lora_alpha, lora.init_lora_weights) == (4, 4, "gaussian")
    assert lora.target_modules == set(DREAMBOOTH_TARGETS)


def _randomise_adapter(unet: nn.Module, scale: float) -> None:
    """Adapter weights far from their initialisation, so that the adapted U-Net differs from the base."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, p in sorted((n, p) for n, p in unet.named_parameters() if p.requires_grad):
            p.copy_(torch.randn(p.shape, generator=generator) * scale)


@pytest.mark.parametrize("method", ["lorad", "lora"])
def test_save_load_round_trip_and_merge(method, tmp_path):
    config = _config(method)
    unet = apply_adapter(_base_unet(), config)
    _randomise_adapter(unet, 0.3)
    adapted = _output(unet, seed=5)
    assert not torch.allclose(adapted, _output(_base_unet(), seed=5), atol=1e-3)
    path = save_adapter(unet, tmp_path / "adapter" / "adapter_model.safetensors", config)
    saved = load_file(str(path))
    expected = get_peft_model_state_dict(unet)
    assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in saved)
    torch.manual_seed(123)  # another initialisation of the new adapter, overwritten by the load
    loaded = load_adapter(_base_unet(), path, config)
    assert torch.equal(_output(loaded, seed=5), adapted)
    merged = merge_adapters(loaded)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(_output(merged, seed=5), adapted, rtol=1e-5, atol=1e-5)


def test_load_adapter_refuses_another_adapter(tmp_path):
    unet = apply_adapter(_base_unet(), _config("lorad"))
    path = save_adapter(unet, tmp_path / "a.safetensors", _config("lorad"))
    with pytest.raises(ValueError, match="does not match the lorad adapter"):
        load_adapter(_base_unet(), path, _config("lorad", targets=("to_q",)))
    for call in (save_adapter, lambda u, p, c: load_adapter(_base_unet(), p, c)):
        with pytest.raises(ValueError, match="'ft' has no adapter"):
            call(unet, path, _config("ft"))
    with pytest.raises(ValueError, match="no adapter 'default'"):
        save_adapter(_base_unet(), tmp_path / "c.safetensors", _config("lora"))


# -- the subject's photos ------------------------------------------------------------------------------
def _pixels(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _as_model_input(array: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) in [-1, 1], by hand in float64."""
    return array.astype(np.float64).transpose(2, 0, 1) / 255.0 * 2.0 - 1.0


def test_instance_images_center_crop_is_the_middle_window(tmp_path):
    wide, tall = _pixels(4, 10, 0), _pixels(7, 4, 1)
    Image.fromarray(wide).save(tmp_path / "a.png")
    Image.fromarray(tall).save(tmp_path / "b.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = instance_images(tmp_path, resolution=4, center_crop=True)
    assert images.shape == (2, 3, 4, 4) and images.dtype == torch.float32
    np.testing.assert_allclose(images[0].numpy(), _as_model_input(wide[:, 3:7]), atol=1e-6)  # left = (10-4)/2
    np.testing.assert_allclose(images[1].numpy(), _as_model_input(tall[2:6]), atol=1e-6)  # top = round(1.5) = 2


def test_instance_images_random_crop_is_seeded_and_a_window(tmp_path):
    wide = _pixels(4, 12, 2)
    Image.fromarray(wide).save(tmp_path / "a.png")
    windows = [_as_model_input(wide[:, left : left + 4]) for left in range(9)]
    crops = [instance_images(tmp_path, resolution=4, center_crop=False, seed=seed)[0].numpy() for seed in range(6)]
    for crop in crops:
        assert any(np.allclose(crop, window, atol=1e-6) for window in windows)
    again = instance_images(tmp_path, resolution=4, center_crop=False, seed=3)[0].numpy()
    assert np.array_equal(again, crops[3])
    assert any(not np.array_equal(a, b) for a, b in itertools.combinations(crops, 2))


def test_instance_images_resize_the_shorter_side_and_apply_exif_orientation(tmp_path):
    photo = _pixels(8, 16, 3)
    Image.fromarray(photo).save(tmp_path / "a.png")
    resized = np.asarray(Image.fromarray(photo).resize((8, 4), Image.BILINEAR))
    images = instance_images(tmp_path, resolution=4, center_crop=True)
    np.testing.assert_allclose(images[0].numpy(), _as_model_input(resized[:, 2:6]), atol=1e-6)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; shown rotated 90 degrees clockwise
    rotated_folder = tmp_path / "exif"
    rotated_folder.mkdir()
    tall = _pixels(4, 6, 4)
    Image.fromarray(tall).save(rotated_folder / "a.png", exif=exif.tobytes())
    upright = np.rot90(tall, k=-1)  # (6, 4): clockwise
    images = instance_images(rotated_folder, resolution=4, center_crop=True)
    np.testing.assert_allclose(images[0].numpy(), _as_model_input(upright[1:5]), atol=1e-6)


def test_instance_images_errors(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        instance_images(tmp_path, resolution=4, center_crop=True)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="cannot read the image .*broken.png"):
        instance_images(tmp_path, resolution=4, center_crop=True)
    with pytest.raises(ValueError, match="resolution"):
        instance_images(tmp_path, resolution=0, center_crop=True)
