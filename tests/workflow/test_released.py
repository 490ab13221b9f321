"""The released-model analysis through the workflow (rule released_weights, a report table): a pair whose
every Linear row is rotated by a known angle and one whose rows are rescaled by known factors."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dkd.analysis.weights import layer_kind
from dkd.backbones.tiny import tiny_unet

ROOT = Path(__file__).resolve().parents[2]
THETA = 0.3  # radians: every row's direction moves by 2 sin(theta / 2), its norm not at all


def _rotated(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each row r turned by THETA towards a random unit vector u orthogonal to it: cos r + sin |r| u."""
    rows = weight.double()
    g = torch.randn(rows.shape, generator=generator, dtype=torch.float64)
    u = g - (g * rows).sum(1, keepdim=True) / (rows * rows).sum(1, keepdim=True) * rows
    u = u / u.norm(dim=1, keepdim=True)
    return (math.cos(THETA) * rows + math.sin(THETA) * rows.norm(dim=1, keepdim=True) * u).to(weight.dtype)


def _factors(out: int) -> torch.Tensor:
    return 1 + 0.01 * (torch.arange(out, dtype=torch.float64) % 5 + 1)  # row o: +1% ... +5%


@pytest.fixture
def pairs(tmp_path):
    torch.manual_seed(0)
    teacher = tiny_unet().eval()
    teacher.save_pretrained(tmp_path / "teacher" / "unet")
    rotated, rescaled, generator, expected_norm = copy.deepcopy(teacher), copy.deepcopy(teacher), torch.Generator(), []
    generator.manual_seed(1)
    with torch.no_grad():
        for name, weight in teacher.state_dict().items():
            if layer_kind(name, weight):
                rotated.get_parameter(name).copy_(_rotated(weight, generator))
                factors = _factors(weight.shape[0])
                rescaled.get_parameter(name).copy_((weight.double() * factors[:, None]).float())
                expected_norm.append(float((factors - 1).mean()))
    rotated.save_pretrained(tmp_path / "rotated" / "unet")
    rescaled.save_pretrained(tmp_path / "rescaled" / "unet")
    entry = {
        "backbone": "tiny",
        "family": "sd",
        "figure": "test",
        "teacher": {"repo": str(tmp_path / "teacher"), "revision": None, "subfolder": "unet"},
        "reference": "https://example.org",
    }
    catalog = {
        "pairs": {
            name: {
                **entry,
                "one_step": {"kind": "model", "repo": str(tmp_path / name), "revision": None, "subfolder": "unet"},
            }
            for name in ("rotated", "rescaled")
        }
    }
    (tmp_path / "released.yaml").write_text(yaml.safe_dump(catalog))
    return 100 * sum(expected_norm) / len(expected_norm)


def test_known_rotations_and_rescales_come_out_of_the_rule_and_into_the_table(tmp_path, pairs):
    columns = ["norm_mean_pct", "dir_mean_pct", "dir_std_pct", "dir_norm_mean_ratio"]
    rows = [{"label": name, "backbone": "tiny", "model": f"rel-{name}"} for name in ("rotated", "rescaled")]
    extra = {
        "results": str(tmp_path / "results"),
        "analysis": {"released": {"catalog": str(tmp_path / "released.yaml"), "pairs": ["rotated", "rescaled"]}},
        "report": {"tables": {"fig2rel": {"title": "released", "columns": columns, "rows": rows}}},
    }
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(extra))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "fig2rel", "fig2_released", "--cores", "2"]
        + ["--configfile", "config/toy.yaml", str(tmp_path / "extra.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    values = {
        name: json.loads((tmp_path / "results" / "tiny" / f"rel-{name}" / "weights.json").read_text())["values"]
        for name in ("rotated", "rescaled")
    }
    chord = 100 * 2 * math.sin(THETA / 2)  # |v' - v| of a unit row turned by THETA, in %
    assert values["rotated"]["dir_mean_pct"] == pytest.approx(chord, rel=1e-5)
    assert values["rotated"]["dir_std_pct"] < 1e-4 and values["rotated"]["norm_mean_pct"] < 1e-4
    assert values["rescaled"]["norm_mean_pct"] == pytest.approx(pairs, rel=1e-5)
    assert values["rescaled"]["dir_mean_pct"] < 1e-4
    assert values["rescaled"]["dir_norm_mean_ratio"] < 1e-3
    table = (tmp_path / "results" / "tables" / "fig2rel.md").read_text()
    assert f"{chord:.2f}" in table and f"{pairs:.2f}" in table
    for name in ("rotated", "rescaled"):
        folder = tmp_path / "results" / "tiny" / f"rel-{name}" / "weights"
        assert {p.name for p in folder.iterdir()} >= {"weights.csv", "energy.csv", "weights.png", "energy.png"}
