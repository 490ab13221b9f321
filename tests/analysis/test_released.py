"""Released one-step models against their teachers (dkd.analysis.released): the catalog, the loading of
each kind of release (full folder, state dict, LoRA fused at its scale, pickle) against hand-built weights."""

from __future__ import annotations

import copy
import pickle
import re

import pytest
import torch
import yaml
from safetensors.torch import save_file

from dkd.analysis import analyse_models, summarize
from dkd.analysis.io import hub_commit
from dkd.analysis.released import load_catalog, load_pair, pair_states, parse_catalog, released_files
from dkd.backbones import config_dir
from dkd.backbones.tiny import tiny_unet
from dkd.fetch import files_for

SHA = "0123456789abcdef0123456789abcdef01234567"


def _catalog(tmp_path, one_step: dict, name: str = "pair") -> str:
    entry = {
        "backbone": "tiny",
        "family": "sd",
        "figure": "test",
        "teacher": {"repo": str(tmp_path / "teacher"), "revision": None, "subfolder": "unet"},
        "one_step": one_step,
        "reference": "https://example.org",
    }
    path = tmp_path / "released.yaml"
    path.write_text(yaml.safe_dump({"pairs": {name: entry}}))
    return str(path)


@pytest.fixture
def teacher(tmp_path):
    torch.manual_seed(0)
    unet = tiny_unet().eval()
    unet.save_pretrained(tmp_path / "teacher" / "unet")
    return unet


def test_the_shipped_catalog_pins_every_pair_the_paper_config_analyses():
    pairs, unavailable = load_catalog()
    config = yaml.safe_load((config_dir() / "config.yaml").read_text())
    assert set(config["analysis"]["released"]["pairs"]) == set(pairs)
    assert "swiftbrushv2-sd21" in unavailable
    for pair in pairs.values():
        for source in (pair.teacher, pair.one_step.source):
            assert source.revision is None or re.fullmatch("[0-9a-f]{40}", source.revision)
            if source.revision is None:  # unpinned only where the catalog says why
                assert "Unpinned" in pair.notes
    assert pairs["dmd2-sd15"].one_step.kind == "state_dict" and pairs["sid-lsg-sd15"].one_step.key == "ema"


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda e: e.update(colour="red"), r"unknown key\(s\) \['colour'\]"),
        (lambda e: e["teacher"].update(revision="main"), "full 40-hex commit"),
        (lambda e: e["one_step"].pop("key"), r"missing key\(s\) \['key'\]"),
        (lambda e: e["one_step"].update(kind="ckpt"), "kind must be one of"),
        (lambda e: e["teacher"].update(file="x.bin"), "model folder .subfolder. or one file"),
        (lambda e: e.update(family="dit"), "family must be one of"),
    ],
)
def test_a_catalog_mistake_is_one_clear_error(edit, message):
    entry = {
        "backbone": "sd15",
        "family": "sd",
        "figure": "12",
        "teacher": {"repo": "a/b", "revision": SHA, "subfolder": "unet"},
        "one_step": {"kind": "pickle", "repo": "c/d", "revision": None, "file": "g.pkl", "key": "ema"},
        "reference": "https://example.org",
    }
    parse_catalog({"pairs": {"ok": copy.deepcopy(entry)}})
    edit(entry)
    with pytest.raises(ValueError, match=message):
        parse_catalog({"pairs": {"bad": entry}})


def test_an_unavailable_pair_says_why(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {"pairs": {}, "unavailable": {"x": {"backbone": "sd21", "figure": "12", "reason": "no weights"}}}
        )
    )
    with pytest.raises(ValueError, match="'x' cannot be analysed: no weights"):
        load_pair("x", path)


def _lora_file(unet, folder, rank=2):
    """A diffusers (PEFT) LoRA of every attention projection: {name: (A, B)} and the file."""
    torch.manual_seed(1)
    factors, tensors = {}, {}
    for name, module in unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")) and isinstance(module, torch.nn.Linear):
            a = torch.randn(rank, module.in_features) * 0.3
            b = torch.randn(module.out_features, rank) * 0.3
            factors[name] = (a, b)
            tensors[f"unet.{name}.lora_A.weight"], tensors[f"unet.{name}.lora_B.weight"] = a, b
    folder.mkdir(parents=True)
    save_file(tensors, folder / "lora.safetensors")
    return factors


def test_a_lora_release_fused_at_its_scale_equals_the_merge_by_hand(tmp_path, teacher):
    factors = _lora_file(teacher, tmp_path / "lora")
    one_step = {"kind": "lora", "repo": str(tmp_path / "lora"), "revision": None, "file": "lora.safetensors"}
    pair = load_pair("pair", _catalog(tmp_path, {**one_step, "scale": 0.7}))
    ref, new, provenance = pair_states(pair)
    by_hand = {k: v.clone() for k, v in teacher.state_dict().items()}
    for name, (a, b) in factors.items():  # W + scale * (alpha / r) B A, alpha = r when the file gives none
        by_hand[f"{name}.weight"] += 0.7 * b @ a
    assert set(new) == set(by_hand)
    for key in by_hand:
        torch.testing.assert_close(new[key], by_hand[key], rtol=1e-5, atol=1e-6)
    frame, _ = analyse_models(ref, new)
    expected, _ = analyse_models(teacher.state_dict(), by_hand)
    mine, theirs = frame.set_index("name"), expected.set_index("name").loc[frame["name"]]  # same layers, by name
    for column in ("norm_mean", "direction_mean", "direction_std", "energy_at_30pct"):
        torch.testing.assert_close(
            torch.tensor(mine[column].values), torch.tensor(theirs[column].values), equal_nan=True
        )
    changed = frame[frame["direction_mean"] > 1e-6]["name"].tolist()
    assert sorted(changed) == sorted(f"{name}.weight" for name in factors)  # only the LoRA's layers moved
    assert provenance["one_step"].endswith("x 0.7") and provenance["teacher_commit"] is None


def test_a_pickled_generator_and_a_state_dict_file_are_read_as_the_teacher_layout(tmp_path, teacher):
    torch.manual_seed(2)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "g.pkl").write_bytes(pickle.dumps({"ema": student}))
    torch.save(student.state_dict(), tmp_path / "release" / "model.bin")
    for one_step in (
        {"kind": "pickle", "file": "g.pkl", "key": "ema"},
        {"kind": "state_dict", "file": "model.bin"},
    ):
        catalog = _catalog(tmp_path, {"repo": str(tmp_path / "release"), "revision": None, **one_step})
        _, new, _ = pair_states(load_pair("pair", catalog))
        expected = student.state_dict()
        assert list(new) == sorted(expected, key=list(new).index) and set(new) == set(expected)
        assert all(torch.equal(new[k], expected[k]) for k in expected)
    torch.save({"conv_in.weight": student.conv_in.weight}, tmp_path / "release" / "part.bin")
    catalog = _catalog(
        tmp_path, {"kind": "state_dict", "repo": str(tmp_path / "release"), "revision": None, "file": "part.bin"}
    )
    with pytest.raises(ValueError, match="do not match the teacher's denoiser"):
        pair_states(load_pair("pair", catalog))


def test_a_full_model_release_matches_the_folder_and_the_summary_sees_its_change(tmp_path, teacher):
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for module in student.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(1.02)  # every row's norm +2%, directions unchanged
    student.save_pretrained(tmp_path / "release" / "unet")
    catalog = _catalog(
        tmp_path, {"kind": "model", "repo": str(tmp_path / "release"), "revision": None, "subfolder": "unet"}
    )
    ref, new, _ = pair_states(load_pair("pair", catalog))
    summary = summarize(analyse_models(ref, new)[0])
    assert summary["norm_mean_pct"] == pytest.approx(2.0, rel=1e-4)
    assert summary["direction_mean_pct"] < 1e-4


def test_fetching_a_pair_asks_for_its_hub_parts_at_their_revisions(tmp_path, teacher):
    assert (
        released_files(
            "pair",
            _catalog(
                tmp_path, {"kind": "model", "repo": str(tmp_path / "teacher"), "revision": None, "subfolder": "unet"}
            ),
        )
        == []
    )
    files = {f.describe() for f in files_for("released", name="sid-lsg-sd15")}
    assert files == {
        "model_folder stable-diffusion-v1-5/stable-diffusion-v1-5 (unet) at 451f4fe16113bff5a5d2269ed5ad43b0592e9a14",
        "hub_file UT-Austin-PML/SiD-LSG (batch512_cfg1.51.51.5_t625_18789_v2.pkl) at "
        "08b9319239ee023737744d5790ee7466268bffed",
    }


def test_the_commit_of_a_cached_hub_file_is_read_from_its_path():
    assert hub_commit(f"/h/hub/models--a--b/snapshots/{SHA}/unet/x.safetensors") == SHA
    assert hub_commit("/data/local/unet/x.safetensors") is None


def test_offline_a_missing_hub_file_is_one_message_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    pair = load_pair("sid-lsg-sd15")
    with pytest.raises(FileNotFoundError) as error:
        pair_states(pair)
    message = str(error.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message and "'unet'" in message
    assert "451f4fe16113bff5a5d2269ed5ad43b0592e9a14" in message and "HF_HUB_OFFLINE is set" in message
