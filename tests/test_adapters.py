"""Adapter presets against structural definitions and the paper's parameter counts."""

from __future__ import annotations

import pytest
from torch import nn

from dkd.adapters import AdapterSpec, apply_adapter, count_parameters, count_trainable
from dkd.backbones import build_denoiser
from dkd.lorad import LoRaDConfig, plan_targets
from dkd.params import parameter_table


def _names(model, kind, exclude_prefixes=(), exclude=()):
    return {
        n
        for n, m in model.named_modules()
        if isinstance(m, kind) and not n.startswith(exclude_prefixes) and n.split(".")[-1] not in exclude
    }


@pytest.mark.parametrize("backbone", ["sd15", "sd21", "pixart256"])
def test_targets_equal_their_structural_definition(backbone):
    model = build_denoiser(backbone)
    time_prefixes = ("time_embedding.", "adaln_single.")
    linear = _names(model, nn.Linear, exclude_prefixes=time_prefixes)
    convs = _names(model, nn.Conv2d) - {"conv_in", "conv_out"}

    def adapted(spec):
        return set(plan_targets(model, LoRaDConfig(r=1, target_modules=spec.target_modules())).adapted)

    # Student: every Linear but the timestep embedding (F.1: "all linear layers").
    assert adapted(AdapterSpec(backbone)) == linear
    # Fake: the student's targets without time_emb_proj.
    assert adapted(AdapterSpec(backbone, role="fake")) == {n for n in linear if not n.endswith("time_emb_proj")}
    # Table 7: plus every Conv2d except conv_in and conv_out.
    assert adapted(AdapterSpec(backbone, layers="linear+conv")) == linear | convs


def test_closed_form_count_of_sd15_student():
    model = build_denoiser("sd15")
    linears = [m for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.startswith("time_embedding.")]
    per_rank = sum(m.in_features // 2 + m.out_features for m in linears)
    assert per_rank == 327_328  # docs/reference.md: 0.327328M per rank
    for rank in (64, 256):
        assert count_trainable(AdapterSpec("sd15", rank=rank)) == rank * per_rank


def test_lora_and_ft_counts():
    model = build_denoiser("sd15")
    targets = [
        m for n, m in model.named_modules() if n.endswith(tuple(AdapterSpec("sd15", method="lora").target_modules()))
    ]
    lora = sum(256 * (m.weight[0].numel() + m.weight.shape[0]) for m in targets)
    assert count_trainable(AdapterSpec("sd15", method="lora")) == lora
    dora = lora + sum(m.weight.shape[0] for m in targets)
    assert count_trainable(AdapterSpec("sd15", method="dora")) == dora
    assert count_trainable(AdapterSpec("sd15", method="ft")) == count_parameters(model, trainable_only=False)


def test_apply_adapter_freezes_everything_but_the_adapter():
    model = apply_adapter(
        build_denoiser("pixart256"), AdapterSpec("pixart256", role="fake", rank=8), low_cpu_mem_usage=True
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lorad_A." in n or ".lorad_B." in n for n in trainable)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"backbone": "sd3"}, "Unknown backbone"),
        ({"backbone": "sd15", "role": "teacher"}, "role must be"),
        ({"backbone": "sd15", "method": "oft"}, "method must be"),
        ({"backbone": "sd15", "rank": 0}, "rank must be"),
        ({"backbone": "sd15", "layers": "conv"}, "layers must be"),
        ({"backbone": "sd15", "init": "zero"}, "init must be"),
        ({"backbone": "sd15", "method": "ft", "layers": "linear+conv"}, "trains every parameter"),
    ],
)
def test_invalid_spec_fails_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdapterSpec(**kwargs)


def test_parameter_table_matches_every_paper_count():
    table = parameter_table()
    assert len(table) == 16
    assert (table["match"] == "yes").all(), table[table["match"] != "yes"].to_string()
