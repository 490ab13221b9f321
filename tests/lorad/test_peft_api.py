"""LoRaD through PEFT's and diffusers' public APIs, config validation, target planning."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from dkd.adapters import AdapterSpec
from dkd.backbones.tiny import tiny_unet
from dkd.lorad import LoRaDConfig, LoRaDLayer, OddDimensionError, plan_targets
from dkd.lorad.rotation import rotate_pairs

from .models import CASES, MLP, batch_size, output


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"r": 0}, "r must be a positive integer"),
        ({"r": 2.5}, "r must be a positive integer"),
        ({"r": True}, "r must be a positive integer"),
        ({"init_weights": "gaussian"}, "init_weights must be one of"),
        ({"bias": "some"}, "bias must be"),
        ({"rank_pattern": {"lin0": -1}}, "rank_pattern"),
        ({"memory_efficient_backward": "yes"}, "memory_efficient_backward must be a bool"),
    ],
)
def test_invalid_config_fails_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoRaDConfig(target_modules=["lin0"], **kwargs)


class OddNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.even = nn.Linear(4, 3)
        self.odd = nn.Linear(3, 2)

    def forward(self, x):
        return self.odd(self.even(x))


def test_odd_dimension_error_names_the_module_unless_excluded():
    with pytest.raises(OddDimensionError, match="'odd'.*exclude_modules"):
        get_peft_model(OddNet(), LoRaDConfig(r=2, target_modules=["even", "odd"]))
    config = LoRaDConfig(r=2, target_modules=["even", "odd"], exclude_modules=["odd"])
    net = OddNet()
    plan = plan_targets(net, config)
    assert plan.adapted == ("even",) and plan.skipped == ("odd",) and plan.odd == ()
    assert plan_targets(net, LoRaDConfig(r=2, target_modules=["even", "odd"])).odd == ("odd",)
    model = get_peft_model(net, config)
    assert model.targeted_module_names == ["even"]
    assert plan.trainable_parameters(OddNet(), r=2) == model.get_nb_trainable_parameters()[0] == 2 * (2 + 3)


def test_inject_adapter_in_model_and_rank_pattern():
    config = LoRaDConfig(r=2, target_modules=["lin0", "lin1"], rank_pattern={"lin1": 4})
    model = inject_adapter_in_model(config, MLP())
    assert model.lin0.lorad_A["default"].shape == (5, 2) and model.lin0.lorad_B["default"].shape == (2, 12)
    assert model.lin1.lorad_A["default"].shape == (6, 4) and model.lin1.lorad_B["default"].shape == (4, 6)


def test_diffusers_add_adapter_disable_and_enable():
    torch.manual_seed(0)
    unet = tiny_unet()
    case = next(c for c in CASES if c.name == "unet")
    inputs = case.inputs(torch.Generator().manual_seed(0), torch.float32)
    with torch.no_grad():
        base = output(unet, inputs)
        spec = AdapterSpec("sd15", rank=4, init="xavier_xavier")
        unet.add_adapter(spec.peft_config())
        adapted = output(unet, inputs)
        unet.disable_adapters()
        torch.testing.assert_close(output(unet, inputs), base, rtol=0, atol=0)
        unet.enable_adapters()
        torch.testing.assert_close(output(unet, inputs), adapted, rtol=0, atol=0)
    assert not torch.allclose(adapted, base)
    assert {type(m).__name__ for m in unet.modules() if isinstance(m, LoRaDLayer)} == {"Linear"}


def test_two_active_adapters_compose_by_adding_angles():
    torch.manual_seed(0)
    net = MLP().double()
    reference = copy.deepcopy(net)
    model = get_peft_model(net, LoRaDConfig(r=2, target_modules=["lin0", "lin1"], init_weights="xavier_xavier"))
    model.add_adapter("second", LoRaDConfig(r=3, target_modules=["lin0", "lin1"], init_weights="xavier_xavier"))
    model.base_model.set_adapter(["default", "second"])
    x = torch.randn(4, 10, dtype=torch.float64)
    with torch.no_grad():
        for name in ("lin0", "lin1"):
            layer = getattr(model.base_model.model, name)
            theta = layer.get_angles("default") + layer.get_angles("second")
            getattr(reference, name).weight.copy_(rotate_pairs(getattr(reference, name).weight, theta))
        torch.testing.assert_close(model(x), reference(x), rtol=1e-12, atol=1e-12)
        model.base_model.merge_adapter(["default", "second"])
        torch.testing.assert_close(model(x), reference(x), rtol=1e-12, atol=1e-12)


def test_adapter_weights_are_float32_on_a_bf16_model():
    model = get_peft_model(MLP().to(torch.bfloat16), LoRaDConfig(r=2, target_modules=["lin0", "lin1"]))
    dtypes = {p.dtype for n, p in model.named_parameters() if "lorad_" in n}
    assert dtypes == {torch.float32}
    out = model(torch.randn(2, 10, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


# --- LoRaD against PEFT's LoRA on the same model ---------------------------------------------


def _twins(case, mergeable=False):
    """LoRaD and LoRA (rank 2) on copies of one base model, same targets, in eval mode.

    ``mergeable`` excludes grouped convs, which LoRA cannot merge.
    """
    torch.manual_seed(0)
    base = case.build().eval()
    exclude = [n for n, m in base.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1] if mergeable else []
    kwargs = dict(r=2, target_modules=case.targets, exclude_modules=exclude or None)
    lorad = get_peft_model(copy.deepcopy(base), LoRaDConfig(init_weights="xavier_xavier", **kwargs))
    lora = get_peft_model(copy.deepcopy(base), LoraConfig(**kwargs))
    return lorad.eval(), lora.eval()


def _tuner_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (LoRaDLayer, LoraLayer))}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_in_and_out_features_match_lora(case):
    lorad, lora = _twins(case)
    ours, theirs = _tuner_layers(lorad), _tuner_layers(lora)
    assert ours.keys() == theirs.keys()
    for name, layer in ours.items():
        assert type(layer.get_base_layer()) is type(theirs[name].get_base_layer())
        assert (layer.in_features, layer.out_features) == (theirs[name].in_features, theirs[name].out_features)


@pytest.mark.parametrize("how", ["merge_adapter", "merge_and_unload"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_safe_merge_of_a_broken_adapter_fails_like_lora(case, how):
    errors = []
    for model in _twins(case, mergeable=True):
        first = next(iter(_tuner_layers(model).values()))  # the first layer merged
        factor = getattr(first, "lorad_A", None) or first.lora_A
        with torch.no_grad():
            factor = factor["default"]
            (factor if isinstance(factor, nn.Parameter) else factor.weight).view(-1)[0] = float("nan")
        before = {n: p.clone() for n, p in model.named_parameters() if "lora" not in n}
        with pytest.raises(Exception) as info:
            getattr(model, how)(safe_merge=True)
        errors.append((type(info.value), str(info.value)))
        after = dict(model.named_parameters())
        assert all(torch.equal(weight, after[n]) for n, weight in before.items())
        assert not any(layer.merged for layer in _tuner_layers(model).values())
    assert errors[0] == errors[1]
    assert errors[0][0] is ValueError and "The adapter default seems to be broken" in errors[0][1]


BAD_MIXED_BATCHES = {  # each gets the model, run(adapter_names) and the batch size
    "unknown-adapter": lambda model, run, n: run(["default", "nope"] + ["__base__"] * (n - 2)),
    "length-mismatch": lambda model, run, n: run(["default"] * (n + 1)),
    "merged": lambda model, run, n: (model.merge_adapter(), run(["default"] * n)),
    "training": lambda model, run, n: (model.train(), run(["default"] * n)),
}


@pytest.mark.parametrize("bad", list(BAD_MIXED_BATCHES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_mixed_batches_fail_like_lora(case, bad):
    inputs = case.inputs(torch.Generator().manual_seed(0), torch.float32)
    errors = []
    for model in _twins(case, mergeable=True):

        def run(names, model=model):
            return output(model, {**inputs, "adapter_names": names})

        with pytest.raises(Exception) as info:
            BAD_MIXED_BATCHES[bad](model, run, batch_size(inputs))
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]
    assert errors[0][0] is ValueError


def test_mixed_batch_routes_modules_to_save_too():
    torch.manual_seed(0)
    config = dict(r=2, target_modules=["lin0"], modules_to_save=["lin1"], init_weights="xavier_xavier")
    model = get_peft_model(MLP().double(), LoRaDConfig(**config))
    model.add_adapter("other", LoRaDConfig(**config))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "modules_to_save" in name:  # each adapter's copy of lin1 differs from the base lin1
                param.add_(torch.randn_like(param))
    model.eval()
    x = torch.randn(3, 10, dtype=torch.float64)
    names = ["other", "__base__", "default"]
    with torch.no_grad():
        mixed = model(x, adapter_names=names)
        for i, name in enumerate(names):
            if name == "__base__":
                with model.disable_adapter():
                    expected = model(x[i : i + 1])
            else:
                model.set_adapter(name)
                expected = model(x[i : i + 1])
            torch.testing.assert_close(mixed[i : i + 1], expected, rtol=1e-12, atol=1e-12)
